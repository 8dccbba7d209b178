"""Hostile and broken models (issue 7, items 1 and 4): every one is refused through the real CLI
with one line on stderr and exit code 2, fast, writing nothing; a diverging ascent stops with
status "diverged" and writes no garbage."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, external_data_helper, helper
from PIL import Image

import pydevis
from hostile import (
    assert_ok,
    assert_user_error,
    convnet,
    exp_model,
    files,
    leftovers,
    run_cli,
    save_model,
)
from pydevis.errors import ModelError
from tiny import tiny_classifier


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_models")
    tiny_classifier(d / "tiny.onnx")
    return d


def refused(d, model, *fragments, args=("info",), out=None):
    """``pydevis ARGS... MODEL`` is a one-line user error; with ``out``, visualize writes
    nothing."""
    assert_user_error(run_cli(*args, model), str(model), *fragments)
    if out is not None:
        res = run_cli("visualize", model, "--class", "0", "--steps", "2", "--out", out, "-q")
        assert_user_error(res, *fragments)
        assert files(out) == [] and leftovers(d) == []


# ---- not an ONNX model -----------------------------------------------------------------------
def test_garbage_bytes(d):
    bad = d / "garbage.onnx"
    bad.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    refused(d, bad, "not an ONNX model")


def test_truncated_model(d):
    data = (d / "tiny.onnx").read_bytes()
    half = d / "half.onnx"
    half.write_bytes(data[:len(data) // 2])
    refused(d, half, "not an ONNX model", out=d / "out_half")


# ---- valid ONNX, but not an image classifier -------------------------------------------------
def test_two_d_input_mlp(d):
    path = d / "mlp.onnx"
    save_model(path, [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
               helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10]),
               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
               {"w": np.ones((4, 10), np.float32)})
    refused(d, path, "input 'x' has shape ['N', 10]", "needs a 4-D N×C×H×W input")


@pytest.mark.parametrize("batch", [2, 8])
def test_fixed_batch_above_one_is_refused_naming_the_file(d, batch):
    m = onnx.load(d / "tiny.onnx")
    for vi in (m.graph.input[0], m.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].Clear()
        vi.type.tensor_type.shape.dim[0].dim_value = batch
    path = d / f"fixed{batch}.onnx"
    onnx.save(m, path)
    refused(d, path, f"fixed batch of {batch}", out=d / f"out_fixed{batch}")


def test_feature_map_output_is_refused(d):
    """Decision: an output with more than one non-singleton dimension after the batch (a
    segmentation/feature map, N×5×8×8) is refused, not flattened into 320 "classes";
    (N, K), (N, K, 1, 1) and (N, 1, K) are class scores."""
    path = d / "map.onnx"
    save_model(path, [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
               helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 8, 8]),
               {"w": np.ones((5, 3, 3, 3), np.float32)})
    refused(d, path, "output 'y' has shape [1, 5, 8, 8]", "not class scores", out=d / "out_map")


def test_k_by_1_by_1_scores_are_accepted(d):
    path = d / "k11.onnx"
    save_model(path, [helper.make_node("Conv", ["x", "w"], ["c"]),
                      helper.make_node("GlobalAveragePool", ["c"], ["y"])],
               helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7, 1, 1]),
               {"w": np.ones((7, 3, 1, 1), np.float32)})
    assert pydevis.load(path).num_classes == 7


# ---- ops, opsets, domains --------------------------------------------------------------------
def test_unsupported_op_is_named(d):
    path = convnet(d / "celu.onnx", [helper.make_node("Celu", ["c"], ["a"], name="mycelu")])
    refused(d, path, "op Celu (node 'mycelu') has no backward rule")


def test_custom_domain_op_is_named(d):
    node = helper.make_node("Frobnicate", ["c"], ["a"], name="frob1", domain="com.example")
    path = convnet(d / "custom.onnx", [node], domains=[helper.make_opsetid("com.example", 1)])
    refused(d, path, "op Frobnicate (node 'frob1') has no backward rule: domain 'com.example'",
            out=d / "out_custom")


def test_opset_99(d):
    path = convnet(d / "opset99.onnx", opset=99)
    refused(d, path, "ONNX opset 99 is not supported", out=d / "out_99")


def test_node_in_a_domain_never_imported(d):
    node = helper.make_node("Relu", ["c"], ["a"], name="relu", domain="no.such.domain")
    path = convnet(d / "nodomain.onnx", [node], check=False)
    refused(d, path, "invalid ONNX model")


def test_unused_unknown_domain_import_is_harmless(d):
    """Decision: an opset import of a domain no node uses changes nothing; the model loads."""
    path = convnet(d / "extradomain.onnx", domains=[helper.make_opsetid("no.such.domain", 3)])
    assert "classes" in json.loads(assert_ok(run_cli("info", path, "--json")))


# ---- shapes ----------------------------------------------------------------------------------
def test_symbolic_height_width_need_a_size(d):
    path = convnet(d / "dyn.onnx", shape=("N", 3, "H", "W"))
    refused(d, path, "height and width (H, W) are not fixed", "--size")
    img = d / "img.png"
    Image.new("RGB", (12, 10), (200, 30, 40)).save(img)
    assert_ok(run_cli("predict", path, img, "--size", "9,7", "--top", "1"))
    path.with_name(path.name + ".json").write_text(json.dumps({"size": [9, 7]}))
    try:
        info = json.loads(assert_ok(run_cli("info", path, "--json")))
        assert info["size"] == [9, 7] and info["sources"]["size"] == "card dyn.onnx.json"
    finally:
        path.with_name(path.name + ".json").unlink()


def test_gigantic_declared_input_fails_fast(d):
    path = convnet(d / "huge.onnx", shape=(1, 3, 100000, 100000))
    start = time.monotonic()
    refused(d, path, "input size 100000x100000", "too large", out=d / "out_huge")
    assert time.monotonic() - start < 60
    assert_user_error(run_cli("info", d / "tiny.onnx", "--size", "50000,50000"),
                      "input size 50000x50000 [flags] is too large")


def test_zero_sized_declared_input(d):
    path = convnet(d / "zero.onnx", shape=("N", 3, 0, 8), check=False)
    assert_user_error(run_cli("info", path), str(path), "(0, 8) are not fixed positive sizes")


# ---- weights ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights(d, bad):
    w = np.ones((5, 3, 3, 3), np.float32)
    w[2, 1, 0, 0] = bad
    path = convnet(d / f"w_{bad}.onnx", weight=w)
    refused(d, path, "non-finite output", args=("info",), out=d / f"out_{bad}")
    with pytest.raises(ModelError, match="non-finite"):
        pydevis.load(path, size=(8, 8)).forward(np.zeros((1, 3, 8, 8), np.float32))


def test_non_finite_deconv_projection_is_refused(d):
    """Model.vjp (the backward of a deconvnet projection, which never runs ``forward``) refuses
    a NaN signal instead of returning it to be saved as a picture."""
    w = np.ones((5, 3, 3, 3), np.float32)
    w[0] = np.nan
    path = convnet(d / "deconv_nan.onnx", weight=w)
    m = pydevis.load(path)
    x = np.zeros((1, 3, 8, 8), np.float32)
    cot = np.zeros((1, 5, 8, 8), np.float32)
    cot[0, 1, 3, 3] = 1.0
    with pytest.raises(ModelError, match="non-finite signal"):
        m.vjp(x, "c", cot, "deconvnet")


def test_float16_model_is_refused(d):
    w = np.ones((5, 3, 3, 3), np.float16)
    path = convnet(d / "half_precision.onnx", weight=w, elem=TensorProto.FLOAT16)
    refused(d, path, "input 'x' is FLOAT16; only float32 is supported", out=d / "out_fp16")


# ---- external data ---------------------------------------------------------------------------
def _external(d, name: str, location: str):
    """A copy of a convnet whose weight is external data at ``location`` (written as given)."""
    folder = d / name
    folder.mkdir()
    path = convnet(folder / "m.onnx")
    m = onnx.load(path)
    external_data_helper.convert_model_to_external_data(m, location="w.bin", size_threshold=0)
    onnx.save(m, path)
    m = onnx.load(path, load_external_data=False)
    for t in external_data_helper._get_all_tensors(m):
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(m, path)
    return path


def test_external_data_inside_the_folder_loads(d):
    assert pydevis.load(_external(d, "ext_ok", "w.bin")).num_classes == 5


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "symlinked_folder"])
def test_external_data_outside_the_folder_is_refused_unread(d, kind):
    """Refused by pydevis's own check (its message; onnx's later checks word theirs
    differently), which runs before any external file is opened: the outside target is a FIFO,
    which would block (time out) if opened for reading."""
    fifo = d / f"outside_{kind}.bin"
    os.mkfifo(fifo)
    folder = d / f"ext_{kind}"
    location = {"absolute": str(fifo), "dotdot": f"../{fifo.name}", "symlink": "link.bin",
                "symlinked_folder": "sub/outside.bin"}[kind]
    path = _external(d, folder.name, location)
    if kind == "symlink":
        os.symlink(fifo, folder / "link.bin")
    if kind == "symlinked_folder":
        (d / "elsewhere").mkdir(exist_ok=True)
        os.mkfifo(d / "elsewhere" / "outside.bin")
        os.symlink(d / "elsewhere", folder / "sub")
    res = run_cli("info", path, timeout=60)
    assert_user_error(res, "external data outside the model's folder", "refused")


# ---- numerics: a diverging ascent ------------------------------------------------------------
def test_diverging_ascent_via_cli(d):
    path = exp_model(d / "exp.onnx")
    out = d / "out_exp"
    res = run_cli("visualize", path, "--class", "0", "--class", "2", "--method", "yosinski",
                  "--preset", "2", "--steps", "30", "--step-norm", "none", "--step-size", "100",
                  "--out", out, "--json", "-q")  # the papers' raw step: exp() blows up
    assert res[0] == 0 and "Traceback" not in res[2], res[2]
    for meta_file in sorted(out.glob("yosinski2_*_c*.json")):
        meta = json.loads(meta_file.read_text(), parse_constant=_no_nan)  # strict JSON
        assert meta["status"] == "diverged"
        assert np.isfinite(meta["best_objective"]) and meta["probability"] is not None
        with Image.open(out / meta["image"]) as im:
            assert im.size == (6, 6) and im.mode == "RGB"
    assert len(list(out.glob("yosinski2_*_c*.json"))) == 2 and leftovers(out) == []


def _no_nan(name):
    raise AssertionError(f"non-standard JSON constant {name}")


def test_diverging_ascent_api(d):
    from pydevis.methods.ascent import ascend, method_config

    m = pydevis.load(exp_model(d / "exp_api.onnx"))
    res = ascend(m, [0, 1, 2], method_config("yosinski", 2, steps=30, step_norm="none",
                                             step_size=100.0))
    for r in res:
        assert r.status == "diverged" and np.isfinite(r.pixels).all()
        assert np.isfinite(r.best_objective) and np.isfinite(r.final_objective)
        assert 0 <= r.pixels.min() and r.pixels.max() <= 255


def test_nan_model_ascent_diverges_at_once_and_visualize_writes_nothing(d, tmp_path):
    from pydevis import api
    from pydevis.methods.ascent import ascend, method_config

    w = np.full((5, 3, 3, 3), np.nan, np.float32)
    m = pydevis.load(convnet(d / "all_nan.onnx", weight=w), size=(8, 8))
    r = ascend(m, [1], method_config("gradient", steps=5))[0]
    assert r.status == "diverged" and r.best_step == 0 and np.isfinite(r.pixels).all()
    with pytest.raises(ModelError, match="non-finite output"):
        api.visualize(m, [1], "gradient", out=tmp_path / "o", steps=3)
    assert files(tmp_path) == []


def test_write_json_is_strict(tmp_path):
    from pydevis.outputs import write_json

    p = write_json(tmp_path / "x.json", {"a": float("nan"), "b": np.float32("inf"),
                                         "c": np.array([1.0, -np.inf]), "d": [2.5, (np.nan,)]})
    assert json.loads(p.read_text(), parse_constant=_no_nan) == \
        {"a": None, "b": None, "c": [1.0, None], "d": [2.5, [None]]}
