"""Per-chat lanes: turns of one chat run one at a time in order; chats run concurrently.

A job that cannot finish yet (Telegram is down) raises ``RetryLater``: the lane waits —
without holding one of the concurrency slots — and runs the same job again before any
later job of that chat, so a chat's replies always go out in arrival order. Once the
lanes are closing, a waiting lane gives up its queue: everything in it is in the store
and is picked up at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class RetryLater(Exception):
    """Raised by a job: run me again after ``delay_s``, before this chat's later jobs."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"retry in {delay_s:g}s")
        self.delay_s = delay_s


class ChatLanes:
    """A FIFO queue and worker per chat key, with a bound on turns running at once."""

    def __init__(self, max_concurrent: int = 32) -> None:
        self._slots = asyncio.Semaphore(max_concurrent)
        self._queues: dict[Hashable, asyncio.Queue[Job]] = {}
        self._workers: dict[Hashable, asyncio.Task[None]] = {}
        self._closing = asyncio.Event()

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
                while True:
                    async with self._slots:
                        try:
                            await job()
                            break
                        except RetryLater as retry:
                            delay = retry.delay_s
                        except Exception:
                            log.exception("turn failed in lane %s", key)
                            break
                    if await self._closed_within(delay):
                        return
        finally:
            # The worker retires with its queue empty; the next message starts a new one.
            del self._queues[key]
            del self._workers[key]

    async def _closed_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)
        return self._closing.is_set()

    def close(self) -> None:
        """Lanes waiting to retry give up their queue (it is in the store); others drain."""
        self._closing.set()

    async def join(self, within_s: float | None = None) -> bool:
        """Wait until every lane is empty; False if ``within_s`` passed first."""
        try:
            async with asyncio.timeout(within_s):
                while workers := list(self._workers.values()):
                    await asyncio.wait(workers)
        except TimeoutError:
            return False
        return True

    async def join_where(
        self, wanted: Callable[[Hashable], bool], within_s: float | None = None
    ) -> bool:
        """Wait until no lane whose key is ``wanted`` has work; False on timeout."""
        try:
            async with asyncio.timeout(within_s):
                while workers := [t for k, t in self._workers.items() if wanted(k)]:
                    await asyncio.wait(workers)
        except TimeoutError:
            return False
        return True

    async def cancel(self) -> None:
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
