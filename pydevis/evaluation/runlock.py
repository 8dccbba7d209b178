"""One process at a time in a run folder: an exclusive ``flock`` on ``OUT/.lock``.

A second ``pydevis experiment`` (or ``report``) on a run folder in use is refused at once, in
one line naming the holder's pid; it does not wait. The lock is held by an open file, so the
kernel drops it when its process ends, however it ends (a SIGKILLed run leaves no stale lock:
the next run takes it). The ``.lock`` file itself stays in the run folder (removing it would let
a third process lock a new file while a second still holds the old one).
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """The lock of one run folder; ``release()`` (or process exit) frees it."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
                finally:
                    os.close(fd)
                raise ConfigError(f"{self.path.parent} is in use by another pydevis process "
                                  f"(pid {holder}); wait for it to end, or use another 'out'"
                                  ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()
