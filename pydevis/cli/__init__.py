"""The ``pydevis`` command line (typer): a thin layer over :mod:`pydevis.api`."""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
