"""Atomic writes: whole files only, and the mode an ordinary open() would give."""

from __future__ import annotations

import os
import stat

import pytest

from pydevis.atomic import atomic_open, write_text


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_mode_follows_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        p = write_text(tmp_path / "a.txt", "x")
        plain = tmp_path / "b.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~mask


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "c.bin", "wb") as f:
        f.write(b"half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
