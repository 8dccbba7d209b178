"""The run report: a self-contained HTML file (grids embedded as PNG data, tables, SVG bar
charts) and a Markdown summary table, both written atomically into the run folder."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_text
from ..image import read_rgb, to_uint8
from ..render import fit, grid

_COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac"]
_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px}"
          "table{border-collapse:collapse}\n"
          "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
          "figure{display:inline-block;margin:8px}\n"
          "img{image-rendering:pixelated;max-width:100%}")




def _png_data(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(pixels), mode="RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _grids(out: Path, rows: list[dict]) -> list[tuple[str, str]]:
    """One grid per (generating model, method) with the same-model probability as caption."""
    prob = {(r["image"]): float(r["probability"]) for r in rows
            if r["same_model"] in (True, "True")}
    result = []
    for folder in sorted((out / "images").glob("*/*")):
        files = sorted(folder.glob("*.png"))
        if not files:
            continue
        rel = [str(f.relative_to(out)) for f in files]
        cells = [fit(read_rgb(f), 96) for f in files]
        caps = [f"{f.stem[:10]} {prob.get(r, float('nan')):.2f}" for f, r in zip(files, rel,
                                                                                 strict=True)]
        result.append((f"{folder.parent.name} / {folder.name}",
                       _png_data(grid(cells, min(8, len(cells)), captions=caps))))
    return result


def _bars(title: str, groups: dict[str, dict[str, float]], vmax: float = 1.0) -> str:
    """A grouped bar chart as inline SVG: groups (x) × series (colours)."""
    series = sorted({s for g in groups.values() for s in g})
    width, height, pad = max(360, 60 + len(groups) * (len(series) * 18 + 20)), 240, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 60}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{pad}" y="16" font-size="13">{html.escape(title)}</text>',
             f'<line x1="{pad}" y1="{height}" x2="{width - 10}" y2="{height}" stroke="#333"/>']
    for tick in (0.0, 0.5, 1.0):
        y = height - tick / vmax * (height - 30) if vmax else height
        parts.append(f'<text x="4" y="{y + 4:.0f}" font-size="10">{tick * vmax:.2g}</text>')
    x = pad + 10
    for gname, vals in groups.items():
        for k, s in enumerate(series):
            v = vals.get(s)
            if v is None or not np.isfinite(v):
                continue
            h = max(0.0, v) / vmax * (height - 30) if vmax else 0
            parts.append(f'<rect x="{x + k * 18}" y="{height - h:.1f}" width="16" '
                         f'height="{h:.1f}" fill="{_COLORS[k % len(_COLORS)]}">'
                         f'<title>{html.escape(gname)} / {html.escape(s)}: {v:.3f}</title></rect>')
        parts.append(f'<text x="{x}" y="{height + 14}" font-size="10">'
                     f'{html.escape(gname[:22])}</text>')
        x += len(series) * 18 + 20
    for k, s in enumerate(series):
        parts.append(f'<rect x="{pad + k * 130}" y="{height + 30}" width="10" height="10" '
                     f'fill="{_COLORS[k % len(_COLORS)]}"/><text x="{pad + k * 130 + 14}" '
                     f'y="{height + 39}" font-size="10">{html.escape(s[:20])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ci(c) -> str:
    return f"[{c[0]:.3f}, {c[1]:.3f}]"


def markdown_table(summary: dict) -> str:
    lines = ["| method | generating model | scoring model | n | mean p (95% CI) | median rank | "
             "top-1 | top-5 |", "|---|---|---|---|---|---|---|---|"]
    for c in summary["cells"]:
        lines.append(f"| {c['method']} | {c['generating_model']} | {c['scoring_model']} | "
                     f"{c['n']} | {c['mean_probability']:.3f} {_ci(c['mean_probability_ci'])} | "
                     f"{c['median_rank']:g} | {c['top1_rate']:.2f} | {c['top5_rate']:.2f} |")
    if summary["transfer_gaps"]:
        lines += ["", "| method | generating model | p same model | p other models | "
                  "transfer gap |", "|---|---|---|---|---|"]
        for g in summary["transfer_gaps"]:
            lines.append(f"| {g['method']} | {g['generating_model']} | {g['same_model']:.3f} | "
                         f"{g['other_models']:.3f} | {g['transfer_gap']:+.3f} |")
    lines += transfer_markdown(summary.get("train_on_generated", []))
    return "\n".join(lines) + "\n"


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _per_class(r: dict) -> str:
    return ", ".join(f"{k} {_f(v, 2)}" for k, v in r.get("per_class_accuracy", {}).items())


def _acc_ci(r: dict) -> str:
    lo, hi = r["accuracy_ci"]
    return f"[{_f(lo)}, {_f(hi)}]"


def transfer_markdown(rows: list[dict]) -> list[str]:
    """Lines of the train-on-generated table (none without rows)."""
    if not rows:
        return []
    lines = ["", "Trained on generated images, tested on real ones:", "",
             "| generating model | trained on | train images | test images | accuracy (95% CI) "
             "| chance | per class |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['generating_model']} | {r['method']} | | | {r.get('status')} "
                         "| | |")
            continue
        lines.append(f"| {r['generating_model']} | {r['method']} | {r['train_images']} | "
                     f"{r['test_images']} | {_f(r['accuracy'])} {_acc_ci(r)} | "
                     f"{r['chance']:.3f} | {_per_class(r)} |")
    return lines


def _transfer_html(rows: list[dict]) -> str:
    if not rows:
        return ""
    acc: dict[str, dict[str, float]] = defaultdict(dict)
    body = []
    for r in rows:
        ok = r.get("status") == "ok"
        if ok and r["accuracy"] is not None:
            acc[r["generating_model"]][r["method"]] = r["accuracy"]
        cells = ([r["train_images"], r["test_images"], _f(r["accuracy"]),
                  _acc_ci(r), f"{r['chance']:.3f}", _per_class(r)] if ok
                 else ["", "", str(r.get("status")), "", "", ""])
        body.append(f"<tr><td>{html.escape(r['generating_model'])}</td><td>"
                    f"{html.escape(r['method'])}</td>"
                    + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return (f"<h2>Trained on generated images, tested on real ones</h2><p>A small net "
            f"(numpy MLP on standardized pixels, with crop/flip/noise augmentation) trained on "
            f"each method's images, tested on real images of the same classes; the baseline "
            f"trains it on as many real images per class. 95 % Wilson intervals over the test "
            f"images only (one training seed).</p>"
            f"{_bars('accuracy on real images', acc)}<table><tr><th>generating</th>"
            f"<th>trained on</th><th>train images</th><th>test images</th><th>accuracy</th>"
            f"<th>95% CI</th><th>chance</th><th>per class</th></tr>{''.join(body)}</table>")


def write_report(out: Path, rows: list[dict], summary: dict) -> Path:
    """Write ``report.html`` and ``summary.md`` into the run folder ``out``."""
    write_text(out / "summary.md", markdown_table(summary))
    conf: dict[str, dict[str, float]] = defaultdict(dict)
    for c in summary["cells"]:
        conf[f"{c['generating_model']}→{c['scoring_model']}"][c["method"]] = c["mean_probability"]
    gaps: dict[str, dict[str, float]] = defaultdict(dict)
    for g in summary["transfer_gaps"]:
        gaps[g["generating_model"]][g["method"]] = g["transfer_gap"]
    table = ["<table><tr><th>method</th><th>generating</th><th>scoring</th><th>n</th>"
             "<th>mean p</th><th>95% CI</th><th>median rank</th><th>top-1</th><th>top-5</th></tr>"]
    for c in summary["cells"]:
        table.append(f"<tr><td>{html.escape(c['method'])}</td>"
                     f"<td>{html.escape(c['generating_model'])}</td>"
                     f"<td>{html.escape(c['scoring_model'])}</td><td>{c['n']}</td>"
                     f"<td>{c['mean_probability']:.3f}</td><td>{_ci(c['mean_probability_ci'])}</td>"
                     f"<td>{c['median_rank']:g}</td><td>{c['top1_rate']:.2f}</td>"
                     f"<td>{c['top5_rate']:.2f}</td></tr>")
    table.append("</table>")
    sens = "".join(f"<tr><td>{html.escape(s['generating_model'])}</td><td>"
                   f"{html.escape(s['method'])}</td><td>{s['mean_interclass_correlation']:.3f}"
                   f"</td></tr>" for s in summary.get("class_sensitivity", []))
    grids = "".join(f"<figure><img alt='{html.escape(t)}' src='{d}'><figcaption>"
                    f"{html.escape(t)} (caption: class, probability on its own model)"
                    f"</figcaption></figure>" for t, d in _grids(out, rows))
    skipped = "".join(f"<li>{html.escape(s)}</li>" for s in summary.get("skipped", []))
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>pydevis report</title>
<style>{_STYLE}</style></head><body>
<h1>pydevis report</h1>
<p>Each generated image was saved as an 8-bit PNG, read back and scored by every model with that
model's own preprocessing. Confidence intervals: {html.escape(str(len(rows)))} rows, bootstrap
over images (95 %, percentile).</p>
<h2>Confidence per method and model pair</h2>{_bars("mean probability of the intended class",
                                                     conf)}
<h2>Transfer gap (same model − other models)</h2>{_bars("transfer gap", gaps)}
<h2>Scores</h2>{''.join(table)}
<h2>Class sensitivity</h2><p>Mean correlation between images of different classes (near 1:
the method ignores the class).</p><table><tr><th>generating</th><th>method</th>
<th>correlation</th></tr>{sens}</table>
{_transfer_html(summary.get("train_on_generated", []))}
<h2>Images</h2>{grids}
<h2>Skipped</h2><ul>{skipped or "<li>nothing</li>"}</ul>
</body></html>"""
    write_text(out / "report.html", doc)
    return out / "report.html"
