"""The explorer's page in a real browser (headless Chromium over the DevTools Protocol): load
it, upload a photo through the file input, see the right top-1, open a layer, click a channel
in the activation grid, receive its projections (and its top-9 with --images). tests/run.sh
installs Chromium when absent and sets PYDEVIS_REQUIRE_BROWSER=1, so in CI this test runs;
elsewhere it skips when no Chromium is found. Shared MobileNet v1 0.25 and a shared photo when
../shared is there, else the tiny classifier and a generated image."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import pydevis
from pydevis.image import load_for
from servers import SHARED, serving
from tiny import tiny_classifier

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
REQUIRED = os.environ.get("PYDEVIS_REQUIRE_BROWSER") == "1"
pytestmark = pytest.mark.skipif(CHROMIUM is None and not REQUIRED,
                                reason="headless Chromium is not installed")


def test_explorer_in_chromium(tmp_path):
    assert CHROMIUM is not None, "PYDEVIS_REQUIRE_BROWSER=1 but no Chromium on PATH"
    pytest.importorskip("websocket")
    pytest.importorskip("starlette")
    from cdp import Page

    shared = SHARED / "models" / "mobilenet_v1_0.25_128_qat.onnx"
    if shared.is_file() and (SHARED / "images" / "coral_parrot.jpg").is_file():
        model, photo, images = shared, SHARED / "images" / "coral_parrot.jpg", SHARED / "images"
    else:
        model = tiny_classifier(tmp_path / "tiny.onnx")
        images = tmp_path / "imgs"
        images.mkdir()
        for i in range(3):
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(
                images / f"r{i}.png")
        photo = images / "r0.png"
    m = pydevis.load(model)
    probs = m.predict(m.preprocess(load_for(photo, m.spec.size, m.spec.crop_fraction)[None]))
    want = m.labels[int(probs.argmax())]

    with serving(model, "--images", str(images)) as (client, port):
        tensors = client.json("/api/tensors")[1]["tensors"]
        page = Page(CHROMIUM, tmp_path / "profile")
        try:
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait(f"document.querySelectorAll('#layers li').length === {len(tensors)}")
            page.set_file("#file", photo)
            top1 = page.wait("document.querySelector('#top1')?.textContent")
            assert top1.startswith(want + " ("), (top1, want)

            k = len(tensors) // 2
            page.click_element(f"#layers li:nth-child({k + 1})")
            name = tensors[k]["name"]
            page.wait(f"(() => {{ const g = document.querySelector('#grid'); return !g.hidden "
                      f"&& g.complete && g.naturalWidth > 0 && g.dataset.tensor === "
                      f"{json.dumps(name)}; }})()")
            # a real click on the cell of one channel (not the strongest, to see it move)
            channels = tensors[k]["shape"][1]
            c = min(2, channels - 1)
            layout = client.json("/api/activations", photo=page.eval("S.photo"),
                                 tensor=name)[1]["grid"]
            step = layout["cell"] + layout["pad"]
            x, y = page.eval(f"""(() => {{ const g = document.querySelector('#grid');
                g.scrollIntoView({{block: 'center'}});
                const r = g.getBoundingClientRect(), s = r.width / g.naturalWidth;
                return [r.left + ({c % layout['cols']} * {step} + {layout['pad']}
                                  + {layout['cell']} / 2) * s,
                        r.top + ({c // layout['cols']} * {step} + {layout['pad']}
                                 + {layout['cell']} / 2) * s]; }})()""")
            page.click(x, y)
            page.wait(f"document.querySelector('#unitname').textContent.endsWith('channel {c}')")
            for sel in ("#proj-deconvnet", "#proj-guided", "#top9"):
                page.wait(f"document.querySelector('{sel}').dataset.ready === '1' && "
                          f"document.querySelector('{sel}').naturalWidth > 100")
            assert page.eval("document.querySelector('#sel').style.display") == "block"
            assert page.eval("document.querySelector('#status').className") != "err"
            assert page.errors() == []
        finally:
            page.close()
