"""Importing this package registers every backward rule (one module per op family)."""

from . import activation, arith, conv, linear, norm, pool, shape  # noqa: F401
