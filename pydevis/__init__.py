"""pydevis: what an ONNX image classifier has learned — deconvnet, guided backprop and
regularized activation maximization on any ONNX classifier, and cross-scoring of the pictures.
"""

from __future__ import annotations

from .errors import ImageError, ModelError, PydevisError, TargetError, UnsupportedOpError
from .model import MODES, Model, Signal, load

__version__ = "0.1.0"

__all__ = [
    "MODES",
    "ImageError",
    "Model",
    "ModelError",
    "PydevisError",
    "Signal",
    "TargetError",
    "UnsupportedOpError",
    "__version__",
    "load",
]
