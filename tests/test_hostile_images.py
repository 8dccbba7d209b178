"""Hostile and odd images (issue 7, item 2): unreadable and truncated files and decompression
bombs are one-line user errors (exit 2, fast, nothing written); 16-bit, grayscale, RGBA, CMYK and
1×1 images are converted to 8-bit RGB; the EXIF orientation is honoured."""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from hostile import assert_ok, assert_user_error, files, leftovers, run_cli
from pydevis.errors import ImageError
from pydevis.image import read_rgb
from tiny import tiny_classifier

RNG = np.random.default_rng(7)
PHOTO = RNG.integers(0, 256, (40, 30, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_images")
    tiny_classifier(d / "tiny.onnx")
    Image.fromarray(PHOTO).save(d / "photo.png")
    Image.fromarray(PHOTO).save(d / "photo.jpg", quality=95)
    return d


def _png_header_only(path, width: int, height: int):
    """A small PNG whose header declares width × height (RGB, 8-bit) and whose data is short."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    return path


def refused(d, image, *fragments):
    """``predict`` and ``project --out`` refuse the image with one line; nothing is written."""
    assert_user_error(run_cli("predict", d / "tiny.onnx", image), str(image), *fragments)
    out = d / f"out_{image.name}"
    assert_user_error(run_cli("project", d / "tiny.onnx", image, "--unit", "r2:0", "--out", out,
                              "-q"), *fragments)
    assert files(out) == [] and leftovers(d) == []
    with pytest.raises(ImageError):
        read_rgb(image)


def test_garbage_bytes(d):
    bad = d / "garbage.png"
    bad.write_bytes(b"\x89PNG\r\n" + bytes(RNG.integers(0, 256, 2000, dtype=np.uint8)))
    refused(d, bad, "cannot read image (UnidentifiedImageError")


def test_a_folder_is_not_an_image(d):
    (d / "folder.png").mkdir()
    assert_user_error(run_cli("predict", d / "tiny.onnx", d / "folder.png"), "folder.png")


def test_missing_image(d):
    refused(d, d / "nope.jpg", "no such file")


@pytest.mark.parametrize("name", ["photo.png", "photo.jpg"])
def test_truncated(d, name):
    data = (d / name).read_bytes()
    half = d / f"half_{name}"
    half.write_bytes(data[:len(data) // 2])
    refused(d, half, "cannot read image (OSError: image file is truncated")


@pytest.mark.parametrize("size", [(20000, 20000), (9000, 9000)])
def test_decompression_bomb_is_refused_before_decoding(d, size):
    """Declared sizes over 64M pixels: 20000² trips PIL's own error; 9000² (81M) is between the
    limit and twice it, where PIL only warns and decodes; both are refused, fast, no warning."""
    bomb = _png_header_only(d / f"bomb_{size[0]}.png", *size)
    start = time.monotonic()
    refused(d, bomb, "image too large (over 64000000 pixels)")
    assert time.monotonic() - start < 60


def test_sixteen_bit_png(d):
    v = (np.arange(40 * 30).reshape(40, 30) * 50).astype(np.uint16)
    Image.fromarray(v).save(d / "deep.png")
    with Image.open(d / "deep.png") as im:
        assert im.mode.startswith("I;16")
    px = read_rgb(d / "deep.png")
    assert px.shape == (40, 30, 3) and px.dtype == np.float32
    np.testing.assert_allclose(px[..., 0], np.rint(v / 65535.0 * 255.0), atol=1)
    assert_ok(run_cli("predict", d / "tiny.onnx", d / "deep.png"))


def test_grayscale(d):
    Image.fromarray(PHOTO[..., 0]).save(d / "gray.png")
    px = read_rgb(d / "gray.png")
    assert px.shape == (40, 30, 3)
    for c in range(3):
        np.testing.assert_array_equal(px[..., c], PHOTO[..., 0])
    assert_ok(run_cli("predict", d / "tiny.onnx", d / "gray.png"))


def test_rgba_is_composited_on_white(d):
    alpha = np.zeros((40, 30), np.uint8)
    alpha[:, 15:] = 255
    Image.fromarray(np.dstack([PHOTO, alpha])).save(d / "rgba.png")
    px = read_rgb(d / "rgba.png")
    assert (px[:, :15] == 255).all()
    np.testing.assert_array_equal(px[:, 15:], PHOTO[:, 15:])
    assert_ok(run_cli("predict", d / "tiny.onnx", d / "rgba.png"))


def test_cmyk_jpeg(d):
    blocks = np.zeros((40, 30, 3), np.uint8)
    blocks[:20] = (200, 40, 30)
    blocks[20:] = (20, 60, 210)
    Image.fromarray(blocks).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    with Image.open(d / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
    px = read_rgb(d / "cmyk.jpg")
    assert px.shape == (40, 30, 3)
    np.testing.assert_allclose(px[5:15, 5:25], np.broadcast_to(blocks[0, 0], (10, 20, 3)),
                               atol=12)
    np.testing.assert_allclose(px[25:35, 5:25], np.broadcast_to(blocks[-1, 0], (10, 20, 3)),
                               atol=12)
    assert_ok(run_cli("predict", d / "tiny.onnx", d / "cmyk.jpg"))


def test_one_pixel(d):
    Image.new("RGB", (1, 1), (10, 200, 30)).save(d / "one.png")
    out = assert_ok(run_cli("predict", d / "tiny.onnx", d / "one.png", "--json"))
    assert '"probability"' in out
    assert_ok(run_cli("project", d / "tiny.onnx", d / "one.png", "--unit", "r2:1",
                      "--out", d / "out_one", "-q"))
    assert (d / "out_one" / "deconvnet_r2_1.png").is_file()


def test_exif_orientation_6_is_rotated(d):
    """Orientation 6 ("rotate 90° clockwise to display"): the stored image's left half (red)
    ends up on top, its right half (blue) at the bottom, width and height swapped."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (230, 20, 20)
    stored[:, 20:] = (20, 20, 230)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(d / "rotated.jpg", quality=95, exif=exif)
    px = read_rgb(d / "rotated.jpg")
    assert px.shape == (40, 20, 3)
    np.testing.assert_allclose(px[3:17].mean(axis=(0, 1)), (230, 20, 20), atol=15)
    np.testing.assert_allclose(px[23:37].mean(axis=(0, 1)), (20, 20, 230), atol=15)
    want = np.rot90(stored, k=-1)  # clockwise; away from the edge JPEG's chroma blurs
    np.testing.assert_allclose(px[:16], want[:16], atol=20)
    np.testing.assert_allclose(px[24:], want[24:], atol=20)
    assert_ok(run_cli("predict", d / "tiny.onnx", d / "rotated.jpg"))
