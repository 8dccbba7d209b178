"""Reading files named by a config, a model card or an earlier output: regular files only, of
bounded size, opened without blocking (a FIFO, a device such as ``/dev/zero`` or a folder is
refused in one line before a byte is read), and safe names for what a config calls things."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from .errors import PydevisError

#: bounds on what is read back whole (text files: configs, cards, labels, JSON sidecars)
MAX_TEXT_BYTES = 256 << 20  # labels of 10^7 classes fit
MAX_CARD_BYTES = 16 << 20
MAX_CONFIG_BYTES = 1 << 20
MAX_JSON_BYTES = 64 << 20


def check_regular(path: str | os.PathLike, what: str, limit: int | None = None,
                  error: type[PydevisError] = PydevisError) -> Path:
    """``path`` if it is a regular file (symlinks followed) of at most ``limit`` bytes."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{p}: no such {what}") from None
    except OSError as exc:
        raise error(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p}: {what} is not a regular file")
    if limit is not None and st.st_size > limit:
        raise error(f"{p}: {what} is too large ({st.st_size} bytes, at most {limit})")
    return p


def read_bytes(path: str | os.PathLike, what: str, limit: int,
               error: type[PydevisError] = PydevisError) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; anything else is refused in one
    line (``error``) without blocking: the open is non-blocking and checked with fstat, so a
    file swapped for a FIFO between the checks cannot hang the read either."""
    p = Path(path)
    check_regular(p, what, limit, error)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise error(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    chunks: list[bytes] = []
    try:  # plain os.read: no Python file object (os.fdopen is for files pydevis writes)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{p}: {what} is not a regular file")
        size = 0
        while size <= limit:
            block = os.read(fd, min(1 << 20, limit + 1 - size))
            if not block:
                break
            chunks.append(block)
            size += len(block)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise error(f"{p}: {what} is too large (over {limit} bytes)")
    return data


def read_text(path: str | os.PathLike, what: str, limit: int,
              error: type[PydevisError] = PydevisError) -> str:
    try:
        return read_bytes(path, what, limit, error).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text ({exc.reason})") from None


def read_json(path: str | os.PathLike, what: str, limit: int = MAX_JSON_BYTES,
              error: type[PydevisError] = PydevisError) -> Any:
    text = read_text(path, what, limit, error)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{path}: {what} is not valid JSON ({str(exc)[:80]})") from None


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(text: str, limit: int = 64) -> str:
    """``text`` as one safe path component: letters, digits and ``._+-`` kept, runs of anything
    else (``/``, ``\\``, ``~``, spaces, control characters) turned into ``_``, leading dots and
    dashes dropped, runs of dots made one (no ``..``, no hidden file, no option), at most
    ``limit`` characters; ``x`` when nothing is left. Ordinary names (``yosinski3``,
    ``cifar10_alexnet``) are kept."""
    name = re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", str(text))).lstrip("._-")[:limit].rstrip(".")
    return name or "x"
