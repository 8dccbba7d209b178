"""pydevis.render: robust contrast of signed signals, labelled figures, full grids."""

from __future__ import annotations

import numpy as np
import pytest

from pydevis.render import (
    exact_columns,
    label,
    projection_figure,
    signal_to_pixels,
    top9_block,
    top9_figure,
)

MAGENTA = (255, 1, 128)  # a signal of (+s, -s, 0) at full contrast
GREEN = (20, 200, 20)


def test_one_outlier_does_not_flatten_the_rest(rng):
    """A single huge pixel used to set the scale (everything else ~grey 128); now most of the
    box spans a wide grey range and only the outlier saturates."""
    s = rng.standard_normal((40, 40, 3))
    s[7, 9] = 1000.0
    px = signal_to_pixels(s)
    lo, hi = np.percentile(px, [5, 95])
    assert hi - lo > 100  # N(0, 1) clipped near 2.8σ: the 5–95 % band is ±1.64σ, ~150 levels
    assert np.all(px[7, 9] >= 254.5)
    assert np.mean((px <= 1.5) | (px >= 254.5)) < 0.02  # saturates little besides the outlier
    assert np.all((px >= 1) & (px <= 255))


def test_zero_is_grey_and_sign_is_kept(rng):
    s = rng.standard_normal((10, 10, 3))
    s[2, 3] = 0.0
    px = signal_to_pixels(s)
    assert np.all(px[2, 3] == 128.0)
    assert np.all((px > 128) == (s > 0)) and np.all((px < 128) == (s < 0))
    assert np.all(signal_to_pixels(np.zeros((4, 5, 3))) == 128.0)


def test_contrast_is_measured_inside_the_box(rng):
    """A projection is zero outside its receptive field: those zeros must not set the scale
    (which would saturate a quarter of the box)."""
    s = np.zeros((60, 60, 3))
    s[20:28, 30:38] = rng.standard_normal((8, 8, 3))
    px = signal_to_pixels(s, box=(20, 28, 30, 38))
    assert px.shape == s.shape  # full size, scale from the box
    inside = px[20:28, 30:38]
    assert np.mean((inside <= 1.5) | (inside >= 254.5)) <= 0.02
    assert np.all(px[:20] == 128.0)
    whole = signal_to_pixels(s)[20:28, 30:38]
    assert np.mean((whole <= 1.5) | (whole >= 254.5)) > 0.1


def test_mostly_zero_signal_falls_back_to_its_peak():
    s = np.zeros((50, 50, 3))
    s[1, 1, 0], s[2, 2, 0], s[3, 3, 0] = 1.0, -2.0, 4.0
    px = signal_to_pixels(s)
    assert px[3, 3, 0] == pytest.approx(255.0)
    assert 128 < px[1, 1, 0] < 200 and 60 < px[2, 2, 0] < 128


@pytest.mark.parametrize(("n", "most", "cols"), [
    (1, None, 1), (2, None, 2), (4, None, 2), (5, None, 5), (6, None, 3), (8, None, 4),
    (9, None, 3), (1, 4, 1), (2, 4, 2), (5, 4, 1), (6, 4, 3), (8, 4, 4), (64, 4, 4)])
def test_exact_columns_fill_every_row(n, most, cols):
    assert exact_columns(n, most) == cols
    assert n % cols == 0


def _bbox(img: np.ndarray, colour) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(np.all(np.abs(img - np.asarray(colour, np.float32)) <= 2, axis=-1))
    assert ys.size, f"no {colour} pixels"
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


def test_projection_figure_crops_to_the_box_and_puts_the_patch_beside():
    h, w, box = 60, 80, (10, 30, 20, 50)  # a 20×30 box
    signal = np.zeros((h, w, 3))
    signal[10:30, 20:50] = (1.0, -1.0, 0.0)
    pixels = np.zeros((h, w, 3), np.float32)
    pixels[:] = (230, 10, 10)  # red outside the box
    pixels[10:30, 20:50] = GREEN
    fig = projection_figure(signal, pixels, box, "a title", cell=224)
    py0, py1, px0, px1 = _bbox(fig, MAGENTA)
    gy0, gy1, gx0, gx1 = _bbox(fig, GREEN)
    for y0, y1, x0, x1 in ((py0, py1, px0, px1), (gy0, gy1, gx0, gx1)):
        assert x1 - x0 == pytest.approx(224, abs=2)  # enlarged, aspect kept
        assert y1 - y0 == pytest.approx(224 * 20 / 30, abs=2)
    assert gx0 > px1  # patch to the right of the projection, same rows
    assert abs(gy0 - py0) <= 1
    assert not np.any(np.all(np.abs(fig - (230, 10, 10)) <= 2, axis=-1))  # nothing outside
    assert fig.shape[1] < 2 * 224 + 60


def _dark_rows(strip: np.ndarray) -> int:
    return int(np.count_nonzero((strip.max(axis=-1) < 80).any(axis=1)))


def test_labels_are_readable_text():
    px = np.full((100, 300, 3), 128.0, np.float32)
    a = label(px, "fire9/concat_1 channel 10 (deconvnet)", size=16)
    assert a.shape[1] == 300 and a.shape[0] > 100
    assert np.array_equal(a[-100:], px)
    strip = a[:-100]
    assert _dark_rows(strip) >= 10  # glyphs at least 10 px tall
    assert np.count_nonzero((strip.max(axis=-1) < 80).any(axis=0)) > 150  # a wide line of text
    assert not np.array_equal(strip, label(px, "other words", size=16)[:-100])


@pytest.mark.parametrize("n", [1, 2, 4, 5, 9])
def test_top9_block_is_a_full_grid_of_projections_beside_patches(n):
    proj = [np.tile(np.array([1.0, -1.0, 0.0]), (12, 12, 1)) for _ in range(n)]
    patch = [np.full((12, 12, 3), GREEN, np.float32) for _ in range(n)]
    block = top9_block(proj, patch, "layer channel 3", [f"act {i}" for i in range(n)],
                       [f"img{i}.png" for i in range(n)], cell=40)
    for colour in (MAGENTA, GREEN):
        mask = np.all(np.abs(block - np.asarray(colour, np.float32)) <= 2, axis=-1)
        assert np.count_nonzero(mask) == n * 40 * 40
        # n cells as a full rectangle: (#cell columns) × (#cell rows) == n
        ncols, nrows = _runs(mask.any(axis=0)), _runs(mask.any(axis=1))
        assert ncols * nrows == n, (ncols, nrows)
        assert np.count_nonzero(mask.any(axis=0)) == ncols * 40
    assert _bbox(block, MAGENTA)[3] < _bbox(block, GREEN)[2]  # projections left of patches
    assert _dark_rows(block[:20]) >= 8  # the title


def _runs(flags: np.ndarray) -> int:
    """Number of runs of True in a 1-D boolean array."""
    f = np.concatenate([[False], flags, [False]]).astype(np.int8)
    return int(np.count_nonzero(np.diff(f) == 1))


@pytest.mark.parametrize(("blocks", "rows", "cols"), [(1, 1, 1), (2, 1, 2), (5, 5, 1),
                                                      (6, 2, 3), (8, 2, 4)])
def test_top9_figure_leaves_no_empty_block(blocks, rows, cols):
    cells = [np.full((30, 50, 3), GREEN, np.float32) for _ in range(blocks)]
    fig = top9_figure(cells)
    mask = np.all(np.abs(fig - np.asarray(GREEN, np.float32)) <= 2, axis=-1)
    assert (_runs(mask.any(axis=1)), _runs(mask.any(axis=0))) == (rows, cols)
