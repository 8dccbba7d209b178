"""Seed question 3: do the generated class images teach a classifier anything about real data?

Per (generating model, method) of a run folder, a small numpy net (:mod:`.smallnet`) is trained
on the method's images (``images/GEN/METHOD/*.png``, several per class with ``images_per_class``)
and tested on real images of the same classes: a balanced subset of the test split of a labelled
dataset. A baseline row trains the same net, with the same seed, on as many real images per
class drawn from the dataset's train split. Results are written one file per row::

    train_on_generated/generated/GEN/METHOD.json
    train_on_generated/real/GEN.json

each atomically and skipped when present, so a killed run resumes here too. (A run folder that
an older pydevis started has them under ``transfer/``; it keeps using that folder, see
:func:`rows_dir`.)

The dataset is an ``.npz`` with ``{split}_jpeg`` (concatenated JPEG bytes), ``{split}_offsets``
(N+1 byte offsets), ``{split}_labels`` for ``split`` in ``train``/``test``, and optionally
``class_names``. Generated classes map to dataset classes by label name (the first
comma-separated synonym, case-insensitive; see :func:`.cross_score.class_map`); without
``class_names`` the dataset's labels are taken to be the generating model's class indices.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..image import decode_rgb, read_rgb
from ..outputs import write_json
from .config import MAX_DATASET_BYTES, ConfigError, TrainOnGeneratedSpec
from .cross_score import _key
from .smallnet import fit_predict
from .validate import OutputError, read_sidecar, read_train_row

#: the folder of the rows in a run folder; LEGACY_FOLDER is its name before pydevis 0.1.x
#: called it after what it does (it read like the same-vs-other-model "transfer gap")
FOLDER, LEGACY_FOLDER = "train_on_generated", "transfer"


def rows_dir(out: Path) -> Path:
    """``out/train_on_generated``, or ``out/transfer`` when an older pydevis started the run
    there (its rows are kept and the run resumes in it)."""
    legacy = out / LEGACY_FOLDER
    return legacy if legacy.is_dir() else out / FOLDER


def check_npz(path: Path) -> None:
    """Refuse (one line) a dataset that is not an ``.npz`` of plain arrays, or whose arrays
    declare more bytes than they hold (an array header can ask numpy for any size)."""
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{path}: the dataset is not an .npz file")
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.file_size > MAX_DATASET_BYTES:
                    raise ConfigError(f"{path}: array {info.filename!r} is too large")
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                if dtype.hasobject:
                    raise ConfigError(f"{path}: array {info.filename!r} holds Python objects")
                if int(np.prod(shape, dtype=object)) * dtype.itemsize > info.file_size:
                    raise ConfigError(f"{path}: array {info.filename!r} declares {shape}, more "
                                      "than it holds")
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ConfigError(f"{path}: unreadable dataset ({str(exc)[:80]})") from None


class Dataset:
    """A JPEG ``.npz`` dataset, decoded lazily, image by image."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._arrays: dict[str, np.ndarray] = {}
        check_npz(self.path)
        with np.load(self.path) as z:
            self.names = [str(n) for n in z["class_names"]] if "class_names" in z.files else None

    def _array(self, key: str) -> np.ndarray:
        if key not in self._arrays:  # read once, on first use
            with np.load(self.path) as z:
                if key not in z.files:
                    raise ConfigError(f"{self.path}: the dataset has no array {key!r}")
                self._arrays[key] = z[key]
        return self._arrays[key]

    def labels(self, split: str) -> np.ndarray:
        return self._array(f"{split}_labels").astype(np.int64)

    def images(self, split: str, idx: np.ndarray) -> np.ndarray:
        jpeg, o = self._array(f"{split}_jpeg"), self._array(f"{split}_offsets")
        n = len(self._array(f"{split}_labels"))
        if o.ndim != 1 or len(o) != n + 1 or o.dtype.kind not in "iu" or jpeg.ndim != 1 \
                or (n and (o[0] < 0 or o[-1] > len(jpeg) or (np.diff(o) < 0).any())):
            raise ConfigError(f"{self.path}: {split}_offsets must be {n + 1} increasing byte "
                              f"offsets into {split}_jpeg")
        out = [decode_rgb(jpeg[o[i]:o[i + 1]].tobytes(), f"{self.path.name}[{split} {i}]")
               for i in idx]
        if len({p.shape for p in out}) > 1:
            raise ConfigError(f"{self.path}: the {split} images do not all have one size")
        return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.float32)

    def class_of(self, index: int, label: str) -> int | None:
        """The dataset class of a generated image's class (index, label), or None."""
        if self.names is None:
            return index
        keys = [_key(n) for n in self.names]
        return keys.index(_key(label)) if _key(label) in keys else None


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n (test-set sampling only)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(mid - half), float(mid + half))


def generated(folder: Path, ds: Dataset) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A method's images, their dataset classes, and the images skipped (with why)."""
    pixels, classes, skipped = [], [], []
    for png in sorted(folder.glob("*.png")):
        meta = read_sidecar(png.with_suffix(".json"))
        if "target_class" not in meta or "label" not in meta:
            raise OutputError(f"{png.with_suffix('.json')}: needs 'target_class' and 'label'")
        c = ds.class_of(int(meta["target_class"]), str(meta["label"]))
        if c is None:
            skipped.append(f"{png.name}: class {meta['label']!r} is not in {ds.path.name}")
            continue
        pixels.append(read_rgb(png))
        classes.append(c)
    return (np.stack(pixels) if pixels else np.zeros((0, 1, 1, 3), np.float32),
            np.array(classes, np.int64), skipped)


def balanced_test_indices(labels: np.ndarray, classes: list[int], n: int) -> np.ndarray:
    """The first ``n // len(classes)`` (at least 1) test images of each class, in file order."""
    per = max(1, n // len(classes))
    return np.concatenate([np.flatnonzero(labels == c)[:per] for c in classes])


def train_indices(labels: np.ndarray, counts: dict[int, int], rng: np.random.Generator
                 ) -> np.ndarray:
    """``counts[c]`` train images of each class c (at most all of them), drawn without
    replacement."""
    pools = [np.flatnonzero(labels == c) for c in sorted(counts)]
    return np.concatenate([rng.choice(pool, size=min(counts[c], len(pool)), replace=False)
                           for c, pool in zip(sorted(counts), pools, strict=True)])


def evaluate(train_px: np.ndarray, train_c: np.ndarray, test: tuple[np.ndarray, np.ndarray],
             spec: TrainOnGeneratedSpec, seed: int, names: dict[int, str]) -> dict:
    """Train on (pixels, dataset classes), test on ``test``; the numbers of one row."""
    classes = sorted(names)
    index = {c: k for k, c in enumerate(classes)}
    test_px, test_c = test
    pred = fit_predict(train_px, np.array([index[c] for c in train_c]), test_px,
                       len(classes), spec.net, np.random.default_rng(seed))
    truth = np.array([index[c] for c in test_c], np.int64)
    hits = pred == truth

    def rate(mask: np.ndarray) -> float | None:  # None: no test image there
        return float(hits[mask].mean()) if mask.any() else None

    return {"train_images": int(len(train_px)),
            "images_per_class": {names[c]: int((train_c == c).sum()) for c in classes},
            "classes": [names[c] for c in classes], "test_images": int(len(truth)),
            "accuracy": rate(np.ones(len(hits), bool)),
            "accuracy_ci": wilson(int(hits.sum()), len(hits)), "chance": 1.0 / len(classes),
            "per_class_accuracy": {names[c]: rate(truth == k) for k, c in enumerate(classes)}}


def _fill(row: dict, px: np.ndarray, cls: np.ndarray, ds: Dataset, spec: TrainOnGeneratedSpec,
          seed: int, tests: dict) -> dict:
    """``row`` with its status and, when there is something to learn and test, its numbers."""
    classes = sorted({int(c) for c in cls})
    test = _test(ds, classes, spec, tests) if len(classes) >= 2 else None
    if test is None:
        row["status"] = "fewer than 2 classes with a dataset counterpart"
    elif len(set(test[1].tolist())) < len(classes):
        row["status"] = f"a class has no test images in {ds.path.name}"
    else:
        names = {c: ds.names[c] if ds.names else str(c) for c in classes}
        row.update(status="ok", **evaluate(px, cls, test, spec, seed, names))
    return row


def _write_generated(out: Path, folder: Path, ds: Dataset, spec: TrainOnGeneratedSpec, seed: int,
                     tests: dict) -> dict[int, int]:
    """Train/test one method's images; returns its per-class image counts."""
    gname, method = folder.parent.name, folder.name
    target = rows_dir(out) / "generated" / gname / f"{method}.json"
    px, cls, skipped = generated(folder, ds)
    counts = {int(c): int((cls == c).sum()) for c in np.unique(cls)}
    if not _valid_row(target):
        row = {"generating_model": gname, "method": method, "source": "generated",
               "skipped": skipped}
        write_json(target, _fill(row, px, cls, ds, spec, seed, tests))
    return counts


def _test(ds: Dataset, classes: list[int], spec: TrainOnGeneratedSpec, tests: dict):
    """The test subset of ``classes`` (pixels, dataset classes), cached in ``tests``."""
    key = tuple(classes)
    if key not in tests:  # decoded once per class set
        idx = balanced_test_indices(ds.labels("test"), classes, spec.test_images)
        tests[key] = (ds.images("test", idx), ds.labels("test")[idx])
    return tests[key]


def _write_baseline(out: Path, gname: str, counts: dict[int, int], ds: Dataset,
                    spec: TrainOnGeneratedSpec, seed: int, tests: dict) -> None:
    target = rows_dir(out) / "real" / f"{gname}.json"
    if _valid_row(target) or len(counts) < 2:
        return
    labels = ds.labels("train")
    idx = np.sort(train_indices(labels, counts, np.random.default_rng([seed, 1])))
    row = {"generating_model": gname, "method": "real (train split)", "source": "real",
           "skipped": []}
    write_json(target, _fill(row, ds.images("train", idx), labels[idx], ds, spec, seed, tests))


def _valid_row(target: Path) -> bool:
    """Whether a row file from an earlier run can be kept (else it is redone)."""
    try:
        return target.exists() and bool(read_train_row(target))
    except OutputError:
        return False


def run_train_on_generated(out: Path, spec: TrainOnGeneratedSpec, seed: int,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
    """Every (generating model, method) of the run folder ``out``, plus one real-data baseline
    per generating model (not for the weight-randomized copies, whose classes are the same)."""
    folders = [f for f in sorted((out / "images").glob("*/*")) if f.is_dir()]
    ds = Dataset(spec.dataset)
    tests: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
    counts: dict[str, dict[int, int]] = {}
    for k, folder in enumerate(folders):
        got = _write_generated(out, folder, ds, spec, seed, tests)
        prev = counts.setdefault(folder.parent.name, {})
        for c, n in got.items():
            prev[c] = max(prev.get(c, 0), n)
        if progress is not None:
            progress(f"train on {folder.parent.name} {folder.name}", k + 1, len(folders) + 1)
    for gname, cnt in counts.items():
        if spec.baseline and "~" not in gname:
            _write_baseline(out, gname, cnt, ds, spec, seed, tests)
    if progress is not None:
        progress("train on real (baseline)", len(folders) + 1, len(folders) + 1)


def collect_train_on_generated(out: Path) -> list[dict]:
    """The rows written so far: per generating model, its methods then its real baseline."""
    files = sorted(rows_dir(out).rglob("*.json"), key=str)
    rows = [read_train_row(f) for f in files if not f.name.startswith(".tmp-")]
    return sorted(rows, key=lambda r: (r["generating_model"], r["source"] == "real",
                                       r["method"]))
