"""pydevis: what an ONNX image classifier has learned — deconvnet, guided backprop and
regularized activation maximization on any ONNX classifier, and cross-scoring of the pictures.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .api import cross_score, deconvolve, isolate, project, top9, tune, visualize
from .errors import ImageError, ModelError, PydevisError, TargetError, UnsupportedOpError
from .evaluation.experiment import report, run_experiment
from .export import export_backward
from .model import MODES, BackwardPass, Model, Signal, load

try:  # the one version is pyproject.toml's, read from the installed metadata
    __version__ = _version("pydevis")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "MODES",
    "BackwardPass",
    "ImageError",
    "Model",
    "ModelError",
    "PydevisError",
    "Signal",
    "TargetError",
    "UnsupportedOpError",
    "__version__",
    "cross_score",
    "deconvolve",
    "export_backward",
    "isolate",
    "load",
    "project",
    "report",
    "run_experiment",
    "top9",
    "tune",
    "visualize",
]
