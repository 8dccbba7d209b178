"""Progress of long commands on stderr: a rich bar (what runs, step, rate, ETA) on a terminal,
plain newline-terminated lines otherwise (a log file, a pipe), nothing with ``--quiet``."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress as Bar
    from rich.progress import TaskID


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """``with Progress(label, quiet) as show: ...; show(done, total, what)``.

    ``label`` names the job (``yosinski3``), ``what`` the part running now (``class 1
    goldfish``); ``done``/``total`` count steps. On a terminal a rich progress bar; otherwise a
    line at every tenth of the job, at every change of ``what`` and at the end, e.g.
    ``yosinski3 class 1 goldfish: step 100/1000 (10%), 41.2 steps/s, ETA 0:00:21``.
    """

    def __init__(self, label: str, quiet: bool = False, stream=None, tty: bool | None = None):
        self.label = label
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._bar: Bar | None = None
        self._task: TaskID | None = None
        self._start: tuple[float, int] | None = None
        self._last_tenth = -1
        self._last_what: str | None = None

    def __enter__(self):
        if self.quiet:
            return self
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as Bar,
            )

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("step"), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(),
                            console=Console(file=self.stream), transient=False)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def __call__(self, done: int, total: int, what: str = "") -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self._start is None:
            self._start = (now, done - 1 if done > 0 else 0)
        t0, d0 = self._start
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else 0.0
        desc = f"{self.label} {what}".strip()
        if self._bar is not None:
            fields: dict[str, Any] = {"rate": f"{rate:.1f}/s" if rate else ""}
            if self._task is None:
                self._task = self._bar.add_task(desc, total=total, rate=fields["rate"])
            self._bar.update(self._task, completed=done, total=total, description=desc,
                             **fields)
            return
        tenth = 10 * done // max(total, 1)
        if tenth == self._last_tenth and what == self._last_what and done != total:
            return
        if done == total and self._last_tenth == 10:
            return
        self._last_tenth, self._last_what = tenth, what
        eta = f", ETA {_clock((total - done) / rate)}" if rate and done < total else ""
        took = f", {_clock(now - t0)}" if done == total else ""
        print(f"{desc}: step {done}/{total} ({100 * done // max(total, 1)}%)"
              + (f", {rate:.1f} steps/s" if rate else "") + eta + took,
              file=self.stream, flush=True)
