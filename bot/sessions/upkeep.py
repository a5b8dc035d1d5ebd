"""Store upkeep: a small background task that watches and tidies the session store.

Two things go wrong slowly with a long-running SQLite store, and neither belongs on the
message path:

- It grows. The WAL is only reset, never shrunk, and answered inbox rows keep the user's
  update for ever. Every ``session.upkeep_interval_s`` the task deletes rows answered more
  than ``session.inbox_retention_hours`` ago and truncates the WAL.
- Its file disappears. A database deleted or replaced under the running bridge is not
  noticed by SQLite: writes go on into the open, now nameless, file and are lost when the
  process ends. The task compares the path with the file the store opened. When they
  differ the bridge keeps serving from the open file (refusing would lose replies now, and
  silently creating a fresh database would hide the loss) but ``/readyz`` turns red with
  the reason and one ERROR line is logged; when the path names the open file again, one
  line says so and readiness returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import StoreError

if TYPE_CHECKING:
    from bot.config.schema import SessionSettings
    from bot.sessions.store import SessionStore

log = logging.getLogger(__name__)

HOUR_S = 3600.0


@dataclass(frozen=True)
class OpenedFile:
    """The database file a store opened: its path, and the device and inode it named."""

    path: str
    device: int
    inode: int

    @classmethod
    def at(cls, path: str) -> OpenedFile:
        stat = os.stat(path)
        return cls(path, stat.st_dev, stat.st_ino)

    def problem(self) -> str | None:
        """Why the path no longer names this file, or None while it does.

        One stat call: cheap enough to run every few seconds. The inode cannot be reused
        while the store holds the file open, so equal numbers mean the same file.
        """
        path = self.path
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return f"database file {path} was deleted or moved away under the running bridge"
        except OSError as exc:
            return f"database file {path} cannot be checked: {exc.strerror or exc}"
        if (stat.st_dev, stat.st_ino) != (self.device, self.inode):
            return f"database path {path} now names another file than the one the bridge writes"
        return None

    def still_open_at(self) -> str | None:
        """Where this process can still read the file (Linux ``/proc``), for the operator."""
        fds = Path("/proc/self/fd")
        with contextlib.suppress(OSError):
            for entry in fds.iterdir():
                with contextlib.suppress(OSError):
                    stat = entry.stat()
                    if (stat.st_dev, stat.st_ino) == (self.device, self.inode):
                        return f"/proc/{os.getpid()}/fd/{entry.name}"
        return None


class StoreUpkeep:
    """Owned by the App: started after the store opens, stopped before it closes.

    ``settings`` is read at every round, so a reload's retention and interval apply
    without restarting the task.
    """

    def __init__(self, store: SessionStore, settings: Callable[[], SessionSettings]) -> None:
        self._store = store
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self.problem: str | None = None  # why the store is not safe, for /readyz

    def status(self) -> dict[str, object]:
        """The ``store`` part of /readyz."""
        if self.problem is None:
            return {"ok": True}
        return {"ok": False, "problem": self.problem}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="store upkeep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a dead upkeep task would go unnoticed: log and carry on
                log.exception("store upkeep round failed")
            await asyncio.sleep(self._settings().upkeep_interval_s)

    async def run_once(self) -> None:
        """One round: check the file, prune answered inbox rows, truncate the WAL."""
        self._watch()
        retention_s = self._settings().inbox_retention_hours * HOUR_S
        try:
            pruned = await self._store.inbox_prune(retention_s)
            truncated = await self._store.truncate_journal()
        except StoreError as exc:
            log.warning("store upkeep: %s", exc)
            return
        if pruned:
            hours = retention_s / HOUR_S
            log.info("store upkeep: deleted %d inbox row(s) answered over %gh ago", pruned, hours)
        if not truncated:
            log.debug("store upkeep: a reader held the WAL; truncating it next round")

    def _watch(self) -> None:
        """Logs once per change of state: loud when the file goes, plain when it is back."""
        opened = self._store.opened_file()
        problem = None if opened is None else opened.problem()
        if problem == self.problem:
            return
        self.problem = problem
        if problem is None:
            log.warning("session store: the database path names the open file again")
            return
        where = None if opened is None else opened.still_open_at()
        rescue = (
            f"copy {where} back to the path and restart the bridge"
            if where
            else "restore the database and restart the bridge"
        )
        log.error(
            "session store: %s. The bridge keeps serving from the open file, but that file "
            "(every conversation and pending update) is gone once the bridge stops: %s. "
            "/readyz stays not ready until the path names the open file again",
            problem,
            rescue,
        )
