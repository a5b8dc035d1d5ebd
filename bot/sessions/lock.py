"""One bridge per SQLite database: an exclusive lock held for the life of ``run``.

Two processes on one SQLite file would both replay the pending inbox and answer every
pending update twice; SQLite's own locking only serialises their writes. The lock is an
``flock`` on ``<database>.lock`` (it ends with the process, even on kill -9, so a crash
never leaves a stale lock). Read-only tools (``sessions``, ``chat``) do not take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from bot.errors import StoreBusy


class StoreLock:
    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``StoreBusy`` naming the process that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreBusy(
                f"session.database {self.path.with_suffix('')} is in use by persona-bridge "
                f"(pid {holder}); stop that one first, or give this one its own database"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
