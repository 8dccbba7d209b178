"""The run report: one self-contained HTML file (jinja2 template, matplotlib figures and image
thumbnails embedded as data URIs) and ``summary.md``, both written atomically into the run
folder. See ``templates/report.html.j2`` for the layout and the "how to read this" lines."""

from __future__ import annotations

import base64
import io
import json
from collections import defaultdict
from pathlib import Path

import jinja2
import numpy as np
from PIL import Image

from ..atomic import write_text
from ..image import read_rgb, to_uint8
from . import figures
from .markdown import acc_ci, markdown_table, per_class
from .perturb import PERTURBATIONS

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)


def _thumb(pixels: np.ndarray) -> str:
    """An image as a data URI: PNG up to 64 px a side, else JPEG quality 90 (for size)."""
    buf = io.BytesIO()
    im = Image.fromarray(to_uint8(pixels), mode="RGB")
    small = max(im.size) <= 64
    im.save(buf, format="PNG" if small else "JPEG", quality=90)
    kind = "png" if small else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buf.getvalue()).decode()


def _per_image(rows: list[dict]) -> dict[str, dict]:
    """image → {own: p on its generator (or the original, for randomized copies), others:
    mean p on the other models, status, label}."""
    acc: dict[str, dict] = defaultdict(lambda: {"own": None, "others": [], "status": "ok",
                                                "label": ""})
    for r in rows:
        a = acc[r["image"]]
        a["status"], a["label"] = r.get("status") or "ok", r["target_label"]
        if r["same_model"] in (True, "True"):
            a["own"] = float(r["probability"])
        else:
            a["others"].append(float(r["probability"]))
    return acc


def _galleries(out: Path, rows: list[dict]) -> list[dict]:
    """Per (generating model, method): the first image of each class, with its caption."""
    info = _per_image(rows)
    result = []
    for folder in sorted((out / "images").glob("*/*")):
        files = [f for f in sorted(folder.glob("*.png")) if not _is_copy(f)]
        if not files:
            continue
        cells = []
        for f in files:
            rel = str(f.relative_to(out))
            i = info.get(rel, {"own": None, "others": [], "status": "?", "label": f.stem})
            cells.append({"uri": _thumb(read_rgb(f)), "name": rel,
                          "label": i["label"].split(",")[0], "own": i["own"],
                          "others": float(np.mean(i["others"])) if i["others"] else None,
                          "status": i["status"]})
        result.append({"generator": folder.parent.name, "method": folder.name,
                       "randomized": "~" in folder.parent.name, "cells": cells})
    return result


def _is_copy(png: Path) -> bool:
    """CLASS_label_K.png (K ≥ 1) is an extra image of a class: its sidecar says copy ≥ 1."""
    side = png.with_suffix(".json")
    try:
        return int(json.loads(side.read_text()).get("copy", 0)) > 0
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def _models(rows: list[dict]) -> tuple[list[str], list[str]]:
    gens = sorted({r["generating_model"] for r in rows if "~" not in r["generating_model"]})
    scorers = sorted({r["scoring_model"] for r in rows} - set(gens))
    return gens, scorers


def write_report(out: Path, rows: list[dict], summary: dict) -> Path:
    """Write ``report.html`` and ``summary.md`` into the run folder ``out``."""
    html, md = render_report(out, rows, summary)
    write_text(out / "summary.md", md)
    write_text(out / "report.html", html)
    return out / "report.html"


def render_report(out: Path, rows: list[dict], summary: dict) -> tuple[str, str]:
    """The text of ``report.html`` and of ``summary.md``, nothing written."""
    methods = list(summary.get("per_method", {})) or sorted({r["method"] for r in rows})
    pm = summary.get("per_method", {})
    gens, scorers = _models(rows)
    trained = summary.get("train_on_generated", [])
    context = {
        "rows": len(rows), "images": len({r["image"] for r in rows}), "methods": methods,
        "generators": gens, "scorers": scorers, "per_method": pm,
        "perturbations": PERTURBATIONS, "status": summary.get("status", {}),
        "cells": summary["cells"], "gaps": summary["transfer_gaps"],
        "sensitivity": summary.get("class_sensitivity", []),
        "randomized": any("~" in r["generating_model"] for r in rows),
        "skipped": summary.get("skipped", []),
        "trained": [{**r, "acc_ci": acc_ci(r) if r.get("status") == "ok" else "",
                     "per_class": per_class(r)} for r in trained],
        "fig": {"faithfulness": figures.faithfulness(pm),
                "robust_same": figures.robustness(pm, "same_model"),
                "robust_other": figures.robustness(pm, "other_models"),
                "scatter": figures.same_vs_other(rows, methods),
                "gaps": figures.transfer_gaps(summary["transfer_gaps"]),
                "accuracy": figures.accuracy_bars(trained)},
        "galleries": _galleries(out, rows),
    }
    return _ENV.get_template("report.html.j2").render(**context), markdown_table(summary)
