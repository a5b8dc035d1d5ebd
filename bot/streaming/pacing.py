"""Per bot token pacing of message calls (sendMessage, editMessageText, sendMessageDraft).

Telegram allows a bot about 30 messages a second overall (edits count); past that it answers
429 with ``retry_after`` for minutes. Fifty chats streaming at once would want fifty edits a
second, so every message call of one bot token asks this pacer first:

- a final answer (or its chunks) waits for a slot: it is never dropped, only delayed;
- a preview takes a slot only if one is free now *and* finals keep ``reserve`` slots of
  headroom; otherwise the preview skips this tick and tries again shortly with newer text.

Why our own and not PTB's ``AIORateLimiter``: that one needs the ``aiolimiter`` extra (a new
runtime dependency), queues every call alike — previews would delay finals, and a queued
preview is stale by the time it goes — and sleeps through a 429 inside the call, where we
want previews to pause while finals still go. A sliding window, counted in the same
process, is all the bookkeeping this needs.
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
# Counted over a little more than a second: calls wait for a pooled connection and cross
# the network after taking their slot, so they can reach Telegram closer together.
WINDOW_S = 1.2


class BotPacer:
    """One per bot token: at most ``per_second`` message calls in any ``WINDOW_S``."""

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
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()

    def _in_window(self, now: float) -> int:
        while self._sent and self._sent[0] <= now - WINDOW_S:
            self._sent.popleft()
        return len(self._sent)

    async def final(self) -> None:
        """Wait for a slot for a final answer's message; FIFO among finals."""
        async with self._lock:
            while True:
                now = self._clock()
                if self._in_window(now) < self.per_second:
                    self._sent.append(now)
                    return
                await asyncio.sleep(self._sent[0] + WINDOW_S - now)

    def preview_wait(self) -> float:
        """Seconds until ``try_preview`` can say yes again (a final waiting: a moment)."""
        now = self._clock()
        over = self._in_window(now) - self._preview_limit
        if self._lock.locked() or over < 0:
            return 0.05
        return max(self._sent[over] + WINDOW_S - now, 0.0)

    def try_preview(self) -> bool:
        """Take a slot for a preview update now, or say no (the caller retries later)."""
        now = self._clock()
        if self._lock.locked() or self._in_window(now) >= self._preview_limit:
            return False
        self._sent.append(now)
        return True
