"""Property-based fuzz (issue 20, item 8) of the experiment config and the model card, beside the
kernel fuzz: any value either works or is refused in one line with a PydevisError (the CLI's
exit code 2), never another exception, a hang or an unbounded allocation."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pydevis.errors import PydevisError
from tiny import tiny_classifier

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# hostile scalars: huge, negative, non-finite, paths that climb out, devices, odd text
SCALARS = st.one_of(
    st.integers(-2**63, 2**63 - 1), st.sampled_from([0, 1, -1, 10**12, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.sampled_from(["", "../../../x", "/abs/dir", "/dev/zero", "random:0", "random:99999999",
                     "random:x", "thing 1", "..", "~", "a\x00b", "é" * 50, "nan", "inf"]),
    st.text(max_size=12))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4),
                   st.dictionaries(st.sampled_from(["name", "label", "steps", "preset",
                                                    "step_size", "jitter", "blur_sigma",
                                                    "start", "start_std", "x"]), SCALARS,
                                   max_size=4))


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return str(v)


BASE = {"out": '"run"', "generators": '["tiny.onnx"]', "scorers": '["tiny.onnx"]',
        "classes": "[0, 1]", "methods": '[{ name = "gradient", steps = 2 }]'}
KEYS = [*BASE, "seed", "batch_size", "sanity", "bootstrap", "images_per_class"]


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    tiny_classifier(d / "tiny.onnx")
    return d


def one_line(exc: Exception) -> None:
    assert isinstance(exc, PydevisError), f"{type(exc).__name__}: {exc}"
    assert "\n" not in str(exc).strip() and str(exc).strip(), repr(str(exc))


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=3),
       method=st.one_of(st.none(), VALUES))
def test_config_values_work_or_are_refused_in_one_line(d, changes, method):
    from pydevis.evaluation.config import load_config

    text = {**BASE, **{k: toml_value(v) for k, v in changes.items()}}
    if method is not None:
        text["methods"] = "[" + toml_value(method) + "]"
    p = d / "fuzz.toml"
    p.write_text("".join(f"{k} = {v}\n" for k, v in text.items()))
    try:
        cfg = load_config(p)
    except Exception as exc:  # noqa: BLE001  (the property: only one-line PydevisErrors)
        one_line(exc)
        return
    for spec in cfg.methods:  # what a run does with the values, short of running it
        assert "/" not in spec.label and not spec.label.startswith(".")
    assert cfg.out.resolve().is_relative_to(d.resolve()) or cfg.out.is_absolute()


CARD_KEYS = ["size", "channels", "mean", "std", "crop_fraction", "labels"]


@FUZZ
@given(card=st.dictionaries(st.sampled_from(CARD_KEYS), VALUES, max_size=3))
def test_model_card_values_work_or_are_refused_in_one_line(d, card):
    import numpy as np

    import pydevis

    path = d / "carded.onnx"
    if not path.exists():
        path.write_bytes((d / "tiny.onnx").read_bytes())
    base = json.loads((d / "tiny.onnx.json").read_text())
    try:
        path.with_name(path.name + ".json").write_text(json.dumps({**base, **card}))
    except ValueError:  # not JSON-serialisable (NaN is, as a non-standard token)
        return
    try:
        m = pydevis.load(path)
        if m.spec.size[0] * m.spec.size[1] > 256 * 256:
            return  # valid, but too slow a forward for a fuzz example
        x = m.preprocess(np.full((20, 18, 3), 128.0, np.float32))
        p = m.predict(x)
        assert np.isfinite(p).all()
        assert len(m.labels) == m.num_classes and m.labels[int(p.argmax())]
    except Exception as exc:  # noqa: BLE001
        one_line(exc)
