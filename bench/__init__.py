"""Benchmark scripts (``python bench/NAME.py``, or ``bench.NAME.main(argv)``); see README.md."""
