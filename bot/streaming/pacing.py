"""Per bot token pacing of message calls (sendMessage, editMessageText, sendMessageDraft).

Telegram allows a bot about 30 messages a second overall (edits count); past that it answers
429 with ``retry_after`` for minutes. Fifty chats streaming at once would want fifty edits a
second, so every message call of one bot token asks this pacer first:

- a final answer (or its chunks) waits for a slot: it is never dropped, only delayed;
- a preview takes a slot only if one is free now *and* finals keep ``reserve`` slots of
  headroom; otherwise the preview skips this tick and tries again when a slot frees, with
  newer text by then.

A call holds its slot from before it is sent until one second after it *finished*: a call
that waited for a pooled connection or crossed a slow network still counts. So however the
calls are delayed on the way, no one-second window at Telegram sees more than
``per_second`` of them (the last one to start in any window found all the others in flight
or finished less than a second before).

Why our own and not PTB's ``AIORateLimiter``: that one needs the ``aiolimiter`` extra (a new
runtime dependency), queues every call alike — previews would delay finals, and a queued
preview is stale by the time it goes — and sleeps through a 429 inside the call, where we
want previews to pause while finals still go.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

# Under Telegram's ~30/s with room for clock skew between us and its counter.
MESSAGES_PER_SECOND = 25
# Slots previews leave free for finals in any second.
FINAL_RESERVE = 5
WINDOW_S = 1.0


class BotPacer:
    """One per bot token: at most ``per_second`` message calls in any ``WINDOW_S``.

    ``final()`` or a successful ``try_preview()`` takes a slot; ``release()`` must follow
    once the call finished (however it ended)."""

    def __init__(
        self,
        per_second: int = MESSAGES_PER_SECOND,
        reserve: int = FINAL_RESERVE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= reserve < per_second:
            raise ValueError("reserve must leave previews at least one slot")
        self.per_second = per_second
        self._preview_limit = per_second - reserve
        self._clock = clock
        self._in_flight = 0
        self._finished: deque[float] = deque()  # when calls ended, within the window
        self._lock = asyncio.Lock()
        self._freed = asyncio.Event()

    @classmethod
    def at(cls, per_second: int, clock: Callable[[], float] = time.monotonic) -> BotPacer:
        """A pacer for a bot's ``messages_per_second``, keeping a fifth of the slots (at most
        ``FINAL_RESERVE``) for finals."""
        return cls(per_second, min(FINAL_RESERVE, per_second // 5), clock)

    def _busy(self, now: float) -> int:
        while self._finished and self._finished[0] <= now - WINDOW_S:
            self._finished.popleft()
        return self._in_flight + len(self._finished)

    async def final(self) -> None:
        """Wait for a slot for a final answer's message; FIFO among finals."""
        async with self._lock:
            while self._busy(self._clock()) >= self.per_second:
                self._freed.clear()
                wait = self._free_in(self.per_second)
                if wait is None:  # every slot is in flight: the next release frees one
                    await self._freed.wait()
                else:
                    await asyncio.sleep(wait)
            self._in_flight += 1

    def try_preview(self) -> bool:
        """Take a slot for a preview update now, or say no (the caller retries later)."""
        if self._lock.locked() or self._busy(self._clock()) >= self._preview_limit:
            return False
        self._in_flight += 1
        return True

    def release(self) -> None:
        """The call that held a slot is over; the slot frees a window later."""
        self._in_flight -= 1
        self._finished.append(self._clock())
        self._freed.set()

    def preview_wait(self) -> float:
        """Seconds until ``try_preview`` may say yes again (a guess when calls are in flight)."""
        if self._lock.locked():
            return 0.05  # a final is waiting: it goes first
        wait = self._free_in(self._preview_limit)
        return 0.05 if wait is None else wait

    def _free_in(self, limit: int) -> float | None:
        """How long until fewer than ``limit`` slots are taken, counting finished calls only;
        None when the finished ones alone cannot get there."""
        now = self._clock()
        over = self._busy(now) - limit  # slots that must free first, minus one
        if over < 0:
            return 0.0
        if over >= len(self._finished):
            return None
        return max(self._finished[over] + WINDOW_S - now, 0.0)
