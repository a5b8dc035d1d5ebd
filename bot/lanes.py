"""Per-chat lanes: turns of one chat run one at a time in order; chats run concurrently."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class ChatLanes:
    """A FIFO queue and worker per chat key, with a bound on turns running at once."""

    def __init__(self, max_concurrent: int = 32) -> None:
        self._slots = asyncio.Semaphore(max_concurrent)
        self._queues: dict[Hashable, asyncio.Queue[Job]] = {}
        self._workers: dict[Hashable, asyncio.Task[None]] = {}

    def submit(self, key: Hashable, job: Job) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._workers[key] = asyncio.create_task(self._drain(key, queue))
        queue.put_nowait(job)

    @property
    def busy(self) -> int:
        """Chats with work queued or running."""
        return len(self._workers)

    async def _drain(self, key: Hashable, queue: asyncio.Queue[Job]) -> None:
        try:
            while not queue.empty():
                job = queue.get_nowait()
                async with self._slots:
                    try:
                        await job()
                    except Exception:
                        log.exception("turn failed in lane %s", key)
        finally:
            # The worker retires with its queue empty; the next message starts a new one.
            del self._queues[key]
            del self._workers[key]

    async def join(self, within_s: float | None = None) -> bool:
        """Wait until every lane is empty; False if ``within_s`` passed first."""
        try:
            async with asyncio.timeout(within_s):
                while workers := list(self._workers.values()):
                    await asyncio.wait(workers)
        except TimeoutError:
            return False
        return True

    async def cancel(self) -> None:
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
