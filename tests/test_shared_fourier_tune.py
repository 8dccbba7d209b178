"""Issue 18's "done when": ``fourier`` and ``tune`` work from the installed command on every
shared ImageNet net. Per net, a two-trial tune of fourier (three steps each) writes its winner to
a card of our own (the shared card is read-only and must stay byte-identical), then ``visualize``
with that card makes a picture of the model's input size and records ``settings_source: card``.
Short runs: this checks the path through real graphs (quantized, depthwise, grouped, BGR Caffe),
not picture quality (docs/fourier.md does that). Skipped when ../shared is absent."""

from __future__ import annotations

import hashlib
import json

import pytest
from PIL import Image
from test_cli_researcher import pydevis as run
from test_shared_models import MODELS

import pydevis

pytestmark = [pytest.mark.models,
              pytest.mark.skipif(not MODELS, reason="../shared/models is absent")]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_tune_then_visualize_fourier(path, tmp_path):
    shared_card = path.with_name(path.name + ".json")
    before = _digest(shared_card)
    card = tmp_path / "card.json"
    rc, out, err = run("tune", path, "-m", "fourier", "-c", "1", "--steps", "3", "--trials",
                       "2", "--out", tmp_path / "t", "--card", card, "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert _digest(shared_card) == before
    settings = json.loads(card.read_text())["ascent"]["fourier"]["settings"]
    assert settings["steps"] == 3
    assert len(list((tmp_path / "t").glob("trial_*/trial.json"))) == 2, summary

    rc, _, err = run("visualize", path, "-m", "fourier", "-c", "1", "--card", card,
                     "-o", tmp_path / "v", "-q")
    assert rc == 0, err
    side = json.loads(next((tmp_path / "v").glob("fourier_0001_*.json")).read_text())
    assert side["settings_source"] == "card" and side["settings"]["steps"] == 3
    png = next((tmp_path / "v").glob("fourier_0001_*.png"))
    h, w = pydevis.load(path).spec.size
    with Image.open(png) as im:
        assert im.size == (w, h)
