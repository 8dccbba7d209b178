"""Draws docs/export_graph.png: the graph ``pydevis export`` writes for a tiny classifier
(conv-relu-maxpool-conv-relu-GAP-gemm, tests/tiny.py) in deconvnet mode, forward nodes in grey,
the backward translation in blue. Needs Graphviz's ``dot`` (Debian package graphviz); run
``python docs/export_graph.py`` from the repository root."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import pydevis  # noqa: E402
from tiny import tiny_classifier  # noqa: E402


def dot_source(model, forward: set[str]) -> str:
    g = model.graph
    lines = ["digraph G {", "rankdir=TB; node [fontname=Helvetica, fontsize=10];",
             'edge [fontname=Helvetica, fontsize=8, color="#777777"];']
    producer: dict[str, str] = {}
    for i, n in enumerate(g.node):
        fill = "#dddddd" if n.name in forward else "#cfe0f5"
        lines.append(f'n{i} [shape=box, style="rounded,filled", fillcolor="{fill}", '
                     f'label="{n.op_type}"];')
        for o in n.output:
            producer[o] = f"n{i}"
    for vi in list(g.input) + list(g.output):
        lines.append(f'"{vi.name}" [shape=ellipse, style=filled, fillcolor="#fff3c4"];')
        producer.setdefault(vi.name, f'"{vi.name}"')
    for i, n in enumerate(g.node):
        for t in n.input:
            if t in producer:
                lines.append(f"{producer[t]} -> n{i};")
    for vi in g.output:  # an output's producer is its node (set first): node -> ellipse
        lines.append(f'{producer[vi.name]} -> "{vi.name}";')
    lines.append("}")
    return "\n".join(lines)


def main() -> Path:
    with tempfile.TemporaryDirectory() as d:
        m = pydevis.load(tiny_classifier(Path(d) / "tiny.onnx"))
        forward = {n.name for n in m.proto.graph.node}
        exported = pydevis.export_backward(m, "deconvnet")
    # node names of the forward graph survive the export; the rest is the backward translation
    src = dot_source(exported, forward)
    out = ROOT / "docs" / "export_graph.png"
    subprocess.run(["dot", "-Tpng", "-Gdpi=72", "-o", str(out)], input=src.encode(), check=True)
    return out


if __name__ == "__main__":
    print(main())
