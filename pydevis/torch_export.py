"""Helpers for people who export their own PyTorch nets to ONNX for pydevis.

Needs torch, which is *not* a dependency of pydevis: import this module only where torch is
installed (nothing in the ``pydevis`` package imports it).

* :class:`LRN` is an ``nn.LocalResponseNorm`` that exports to the single ONNX ``LRN`` op, which
  pydevis back-propagates through as one node; torch's own export decomposes it into
  Pad / AveragePool / Pow... nodes.

Example::

    from pydevis.torch_export import LRN

    features = nn.Sequential(nn.Conv2d(3, 96, 11, 4), nn.ReLU(), LRN(5, 1e-4, 0.75, 1.0), ...)
    torch.onnx.export(model, (x,), "net.onnx", dynamo=False, opset_version=17)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LRN", "LRNFunction"]


class LRNFunction(torch.autograd.Function):
    """torch's LRN, emitted under export (``torch.onnx.export(..., dynamo=False)``) as the single
    ONNX ``LRN`` node."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        return F.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size, alpha, beta, k):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class LRN(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` that exports to ONNX ``LRN`` (the same formula for odd ``size``).

    Outside an ONNX export it is ``nn.LocalResponseNorm``; a subclass may override
    :meth:`forward` for its eager computation and call ``super().forward(x)`` under export.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        if size % 2 != 1:
            raise ValueError("torch and ONNX place an even LRN window differently; use odd size")
        super().__init__(size, alpha, beta, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return LRNFunction.apply(x, self.size, self.alpha, self.beta, self.k)
        return super().forward(x)
