"""Checks of the JSON files pydevis reads back (chunk files under ``scores/``, image sidecars,
``train_on_generated/`` rows): each must have the shape pydevis writes, or a one-line error
names the file.
Extra keys are accepted (newer versions add columns); the keys below are required.

Also the completeness of a chunk against the config: every (image, scoring model) of the chunk
is either a row or a recorded skip, so a resumed run never trusts a file that merely exists.
"""

from __future__ import annotations

import numbers
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import PydevisError
from ..files import MAX_JSON_BYTES, read_json


class OutputError(PydevisError):
    """A file pydevis wrote earlier was altered or damaged."""


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _int(v: Any, low: int = 0) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= low


def _num(v: Any, low: float = float("-inf"), high: float = float("inf")) -> bool:
    return (isinstance(v, numbers.Real) and not isinstance(v, bool)
            and low <= float(v) <= high)


def _opt_num(v: Any) -> bool:
    return v is None or _num(v)


def _image(v: Any) -> bool:
    """A run-relative image path: ``images/...``, no ``..``, not absolute."""
    if not isinstance(v, str) or "\\" in v or "\x00" in v:
        return False
    p = PurePosixPath(v)
    return not p.is_absolute() and ".." not in p.parts and p.parts[:1] == ("images",)


# the keys of a chunk row today, and what each must hold
ROW = {"image": _image, "method": _str, "generating_model": _str, "scoring_model": _str,
       "target_class": _int, "target_label": _str,
       "probability": lambda v: _num(v, 0.0, 1.0), "rank": lambda v: _int(v, 1),
       "top1": lambda v: isinstance(v, bool), "top5": lambda v: isinstance(v, bool),
       "entropy": _opt_num, "same_model": lambda v: isinstance(v, bool), "top5_labels": _str}
# keys that newer rows carry; checked when present
ROW_OPTIONAL = {"p_jpeg": _opt_num, "p_blur": _opt_num, "p_half": _opt_num, "p_crop": _opt_num,
                "status": _str}


def _fail(path: Path, what: str) -> OutputError:
    return OutputError(f"{path}: {what}; the file was altered or damaged (delete it to redo "
                       "that part of the run)")


def check_row(row: Any, path: Path, where: str) -> dict:
    if not isinstance(row, dict):
        raise _fail(path, f"{where} is not an object")
    for key, ok in ROW.items():
        if key not in row:
            raise _fail(path, f"{where} has no {key!r}")
        if not ok(row[key]):
            raise _fail(path, f"{where}: {key!r} is invalid ({str(row[key])[:40]!r})")
    for key, ok in ROW_OPTIONAL.items():
        if key in row and not ok(row[key]):
            raise _fail(path, f"{where}: {key!r} is invalid ({str(row[key])[:40]!r})")
    return row


def read_chunk(path: Path) -> dict:
    """A chunk file ``{"rows": [...], "skipped": [...]}``, checked row by row."""
    data = read_json(path, "chunk file", MAX_JSON_BYTES, OutputError)
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) \
            or not isinstance(data.get("skipped"), list):
        raise _fail(path, "not a chunk file (an object with 'rows' and 'skipped' lists)")
    for k, row in enumerate(data["rows"]):
        check_row(row, path, f"row {k}")
    if not all(isinstance(s, str) for s in data["skipped"]):
        raise _fail(path, "'skipped' holds something that is not a string")
    return data


def chunk_complete(path: Path, out: Path, gname: str, label: str, classes: list[int],
                   scorers: list[str]) -> bool:
    """Whether the chunk file at ``path`` is valid and whole: one image per (class, copy) of the
    chunk under ``images/GNAME/LABEL/``, on disk, each with a row or a skip for every scorer."""
    try:
        data = read_chunk(path)
    except OutputError:
        return False
    folder = f"images/{gname}/{label}/"
    seen: dict[str, set[str]] = {}
    for r in data["rows"]:
        if r["generating_model"] != gname or r["method"] != label:
            return False
        seen.setdefault(r["image"], set()).add(r["scoring_model"])
    for s in data["skipped"]:
        image, sep, rest = s.partition(" on ")
        scorer = rest.split(":", 1)[0]
        if not sep or scorer not in scorers:
            return False
        seen.setdefault(image, set()).add(scorer)
    if len(seen) != len(classes) or any(v != set(scorers) for v in seen.values()):
        return False
    got = []
    for image in seen:
        stem = PurePosixPath(image).stem.split("_")[0]
        if not image.startswith(folder) or not stem.isdigit() or not (out / image).is_file():
            return False
        got.append(int(stem))
    return sorted(got) == sorted(classes)


def read_sidecar(path: Path) -> dict:
    """The JSON beside a generated image: an object with ``label`` (a string) or
    ``target_class`` (an index)."""
    data = read_json(path, "image sidecar", 1 << 20, OutputError)
    if not isinstance(data, dict):
        raise _fail(path, "the sidecar is not a JSON object")
    if "label" in data and not _str(data["label"]):
        raise _fail(path, "'label' is not a string")
    if "target_class" in data and not _int(data["target_class"]):
        raise _fail(path, "'target_class' is not a class index")
    if "label" not in data and "target_class" not in data:
        raise _fail(path, "the sidecar has neither 'label' nor 'target_class'")
    return data


_TRANSFER = {"generating_model": _str, "method": _str, "source": lambda v: v in ("generated",
                                                                                "real"),
             "status": _str, "skipped": lambda v: isinstance(v, list)
             and all(isinstance(s, str) for s in v)}
_TRANSFER_OK = {"train_images": _int, "test_images": _int, "accuracy": _opt_num,
                "chance": _num, "classes": lambda v: isinstance(v, list)
                and all(isinstance(s, str) for s in v),
                "accuracy_ci": lambda v: isinstance(v, list) and len(v) == 2
                and all(_opt_num(x) for x in v),
                "per_class_accuracy": lambda v: isinstance(v, dict)
                and all(_opt_num(x) for x in v.values()),
                "images_per_class": lambda v: isinstance(v, dict)
                and all(_int(x) for x in v.values())}


def read_train_row(path: Path) -> dict:
    """One train-on-generated row, as :mod:`.train_on_generated` writes it."""
    data = read_json(path, "train-on-generated row", 16 << 20, OutputError)
    if not isinstance(data, dict):
        raise _fail(path, "not a JSON object")
    checks = {**_TRANSFER, **(_TRANSFER_OK if data.get("status") == "ok" else {})}
    for key, ok in checks.items():
        if key not in data:
            raise _fail(path, f"no {key!r}")
        if not ok(data[key]):
            raise _fail(path, f"{key!r} is invalid ({str(data[key])[:40]!r})")
    return data
