"""A method's settings from the model card: what ``pydevis tune`` writes and ``visualize`` and
``experiment`` read.

A card may hold, beside the preprocessing keys, the tuned settings of each method::

    "ascent": {"yosinski": {"settings": {"decay": 0.002, "blur_sigma": 0.8, ...},
                            "objective": 0.61, "trial": 7, "trials": 20, ...}}

Where a picture's settings come from (``settings_source`` in every image's JSON):

- ``"flags"``: a setting was given (``--steps``, ``--step-size``, ... on the command line, or
  keys of a method entry in an experiment config), on top of the card's or the paper's;
- ``"card"``: the model's card has ``ascent.METHOD`` and no ``--preset`` was given (an explicit
  yosinski preset is the paper's);
- ``"paper"``: the method's published defaults (:data:`pydevis.methods.ascent.METHODS`,
  Yosinski et al.'s Table 1).

The card is the one the model was loaded with (``pydevis.load(path, card=...)``, ``--card``),
else the sidecar ``MODEL.onnx.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import PydevisError
from .files import MAX_CARD_BYTES, read_json
from .methods.ascent import AscentConfig, method_config
from .model import Model

SOURCES = ("paper", "card", "flags")


def card_path(model: Model) -> Path:
    """The card the model reads: the one given to ``load``, else its sidecar path (which may
    not exist)."""
    given = getattr(model, "card_path", None)
    return Path(given) if given else model.path.with_name(model.path.name + ".json")


def card_entry(model: Model, method: str) -> dict[str, Any] | None:
    """The card's ``ascent.METHOD`` settings, checked, or None when the card has none."""
    path = card_path(model)
    if not path.is_file():
        return None
    card = read_json(path, "model card", MAX_CARD_BYTES)
    entry = card.get("ascent", {}).get(method) if isinstance(card, dict) and \
        isinstance(card.get("ascent", {}), dict) else None
    if entry is None:
        return None
    settings = entry.get("settings") if isinstance(entry, dict) else None
    if not isinstance(settings, dict):
        raise PydevisError(f"{path}: ascent.{method} must be an object with \"settings\"")
    try:
        method_config(method, None, **settings)
    except (TypeError, ValueError) as exc:
        raise PydevisError(f"{path}: ascent.{method}: {exc}") from None
    return dict(settings)


def resolve_settings(model: Model, method: str, preset: int | None,
                     overrides: dict[str, Any]) -> tuple[AscentConfig, str, Path | None]:
    """(config, source, card): the method's config for ``model``, where it came from (module
    docstring) and the card whose settings it starts from (None: the paper's). ``overrides``
    with value None count as not given."""
    given = {k: v for k, v in overrides.items() if v is not None}
    entry = card_entry(model, method) if preset is None else None
    if entry is not None:
        config = method_config(method, None, **{**entry, **given})
        return config, "flags" if given else "card", card_path(model)
    if method == "yosinski" and preset is None:
        from .ascent_images import DEFAULT_PRESET

        preset = DEFAULT_PRESET
    return method_config(method, preset, **given), "flags" if given else "paper", None


def writable_card(model_path: Path, card: str | os.PathLike | None) -> Path:
    """Where ``tune`` writes: ``card`` if given, else the model's sidecar ``MODEL.onnx.json``;
    refused (before any work) when that file, or the folder a new one goes in, is not
    writable."""
    path = Path(card) if card is not None else model_path.with_name(model_path.name + ".json")
    if path.is_dir():
        raise PydevisError(f"--card {path}: is a folder, not a model card file")
    folder = path.parent if str(path.parent) else Path(".")
    ok = folder.is_dir() and _writable(folder) and (not path.exists() or _writable(path))
    if not ok:
        hint = "" if card is not None else \
            "; pass --card PATH to write a copy of it elsewhere (then give --card PATH to " \
            "visualize, or keep the copy as the sidecar of a link to the model)"
        raise PydevisError(f"{path}: the model card cannot be written{hint}")
    if path.exists():
        data = read_json(path, "model card", MAX_CARD_BYTES)
        if not isinstance(data, dict):
            raise PydevisError(f"{path}: model card must be a JSON object")
    return path


def _writable(path: Path) -> bool:
    """Writable for this process and not marked read-only: a file or folder without any write
    bit (shared data, ``chmod a-w``) is refused even to root, whom ``os.access`` lets write."""
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)


def card_with_entry(model: Model, target: Path, method: str, entry: dict) -> dict:
    """The card to write at ``target``: its present content (or a copy of the model's card,
    its relative labels path made absolute), with ``ascent.METHOD`` set to ``entry``."""
    if target.is_file():
        data = read_json(target, "model card", MAX_CARD_BYTES)
    else:
        source = card_path(model)
        data = read_json(source, "model card", MAX_CARD_BYTES) if source.is_file() else {}
        labels = data.get("labels") if isinstance(data, dict) else None
        if isinstance(labels, str) and not Path(labels).is_absolute():
            data["labels"] = str((source.parent / labels).resolve())
    if not isinstance(data, dict):
        raise PydevisError(f"{target}: model card must be a JSON object")
    ascent = data.get("ascent")
    data["ascent"] = {**(ascent if isinstance(ascent, dict) else {}), method: entry}
    return data
