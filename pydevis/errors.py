"""Errors with one-line messages, meant to be shown to the user as they are."""

from __future__ import annotations


class PydevisError(Exception):
    """Base class: a user-facing problem (bad file, bad argument, unsupported model); the CLI
    exits with status 2 (``cli.app.EXIT_USER``) on one."""


class ModelError(PydevisError):
    """The ONNX file cannot be used (unreadable, not a classifier, bad shapes)."""


class UnsupportedOpError(ModelError):
    """An op on the backward path has no backward rule."""

    def __init__(self, op_type: str, node_name: str, detail: str = "") -> None:
        msg = f"op {op_type} (node {node_name!r}) has no backward rule"
        super().__init__(msg + (f": {detail}" if detail else ""))
        self.op_type = op_type
        self.node_name = node_name


class TargetError(PydevisError):
    """The requested unit (class, tensor, channel, position) does not exist."""


class ImageError(PydevisError):
    """An image file cannot be read or converted."""


class BackendError(PydevisError):
    """A requested kernel backend cannot run."""
