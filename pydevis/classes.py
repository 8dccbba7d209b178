"""Class indices from what users type: indices, label names or synonyms, ``all``."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from .errors import TargetError
from .model import Model


def resolve_class(model: Model, cls: int | str) -> int:
    """A class index from an index or a label name.

    Names are case-insensitive and match a whole label line or any one of its comma-separated
    synonyms (``Persian`` matches ``Persian cat``: a synonym's words, whole); a name matching
    several classes is refused with the list of them; an unknown one gets a did-you-mean.
    """
    labels = model.labels
    text = str(cls).strip()
    if text.lstrip("-").isdigit():
        idx = int(text)
        if not 0 <= idx < len(labels):
            raise TargetError(f"class {idx} out of range 0–{len(labels) - 1} "
                              f"({model.path.name} has {len(labels)} classes)")
        return idx
    key = " ".join(text.lower().split())
    if model.spec.labels is None and key.startswith("class_") and key[6:].isdigit():
        return resolve_class(model, key[6:])  # the default names, without building an index
    # exact names: a dict built once per model (O(1)); else the whole-word scan
    hits = model.label_index.get(key) or match_classes(labels, text)
    if len(hits) == 1:
        return hits[0]
    if hits:
        shown = ", ".join(f"{i} {labels[i]!r}" for i in hits[:20])
        more = f", … ({len(hits)} in all)" if len(hits) > 20 else ""
        raise TargetError(f"class {text!r} is ambiguous in {model.path.name}: {shown}{more}; "
                          "give the index or a fuller name")
    names = {syn.strip().lower() for label in labels for syn in label.split(",")}
    close = difflib.get_close_matches(text.lower(), sorted(names), n=3)
    hint = ("; did you mean " + ", ".join(repr(c) for c in close) + "?") if close else ""
    raise TargetError(f"unknown class {text!r} for {model.path.name}{hint}")


def match_classes(labels: Sequence[str], name: str) -> list[int]:
    """Indices of the labels ``name`` names (case-insensitive), best kind of match first found:
    the whole label line or one synonym exactly; else a synonym containing ``name`` as whole
    words (``cat`` → ``tabby cat``, ``Persian cat``...)."""
    key = " ".join(name.lower().split())
    if not key:
        return []
    exact = [i for i, label in enumerate(labels)
             if key == label.strip().lower()
             or key in (" ".join(s.lower().split()) for s in label.split(","))]
    if exact:
        return exact
    words = key.split()
    out = []
    for i, label in enumerate(labels):
        for syn in label.split(","):
            sw = syn.lower().replace("-", " ").split()
            if any(sw[k:k + len(words)] == words for k in range(len(sw) - len(words) + 1)):
                out.append(i)
                break
    return out


def expand_classes(model: Model, classes: Sequence[int | str]) -> list[int]:
    """Class indices of ``classes``: indices, label names, or ``"all"`` (every class)."""
    out: list[int] = []
    for c in classes:
        if str(c).strip().lower() == "all":
            out += range(model.num_classes)
        else:
            out.append(resolve_class(model, c))
    return out
