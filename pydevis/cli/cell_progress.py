"""Progress of ``pydevis experiment`` on the driver, on stderr: cells done/total, rate and ETA
(a rich bar on a terminal, a plain line per finished cell otherwise), and one line per cell
that is retried or failed. Nothing with ``--quiet``."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def rate_text(per_second: float) -> str:
    return f"{per_second:.2f} cells/s" if per_second >= 1 else \
        f"{per_second * 60:.2f} cells/min"


class CellProgress:
    """``with CellProgress(quiet) as p:`` then ``p.progress`` for run_experiment's ``progress``
    and ``p.watch`` for its ``watch``."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None,
                 tty: bool | None = None):
        self.quiet = quiet
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._bar: Any = None
        self._task: Any = None
        self._t0 = time.monotonic()
        self._first: int | None = None  # cells already done when this run started

    def __enter__(self) -> CellProgress:
        if not self.quiet and self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("cells"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]} ETA {task.fields[eta]}"),
                            TextColumn("{task.description}"),
                            console=Console(file=self.stream), transient=False)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def progress(self, label: str, done: int, total: int) -> None:
        """``label`` finished; ``done`` of ``total`` cells are complete."""
        if self.quiet:
            return
        now = time.monotonic()
        if self._first is None:
            self._first = done if label == "already done" else done - 1
            self._t0 = now
        ran = done - self._first
        rate = ran / (now - self._t0) if ran > 0 and now > self._t0 else 0.0
        eta = clock((total - done) / rate) if rate else "?"
        if self._bar is not None:
            fields = {"rate": rate_text(rate) if rate else "", "eta": eta}
            if self._task is None:
                self._task = self._bar.add_task(label, total=total, **fields)
            self._bar.update(self._task, completed=done, total=total, description=label,
                             **fields)
            return
        print(f"cells {done}/{total} ({100 * done // max(total, 1)}%) {label}"
              + (f", {rate_text(rate)}, ETA {eta}" if rate and done < total else "")
              + (f", {clock(now - self._t0)}" if done == total else ""),
              file=self.stream, flush=True)

    def watch(self, event: str, cell: Any, info: dict) -> None:
        if event == "retry":
            self.line(f"retrying cell {cell.key} ({cell.describe()}): {info['error']}")
        elif event == "failed":
            self.line(f"FAILED cell {cell.key} ({cell.describe()}) after {info['attempt']} "
                      f"attempts: {info['error']}")
