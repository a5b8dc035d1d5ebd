"""The outbox: how far a reply's delivery got, kept on its inbox row.

Before a chunk goes out its index is recorded as ``sending``; once Telegram accepted it,
``chunks_sent`` moves past it. After a crash the reply is re-sent from the first chunk not
confirmed — and only a chunk whose send had started but was never confirmed can arrive
twice; that case is logged.

The final chunk's confirmation is recorded with the row's outcome in one write
(``inbox_delivered``, by the lifecycle just after the send returns): a crash between the
two costs what a crash during that send does, the chunk may arrive twice (logged).
"""

from __future__ import annotations

from bot.sessions.store import SessionStore


class InboxDelivery:
    def __init__(self, store: SessionStore, channel: str, update_id: int, first: int) -> None:
        self._store = store
        self._channel = channel
        self._update_id = update_id
        self.first_chunk = first
        self.next_chunk = first  # the first chunk not yet confirmed delivered

    async def sending(self, index: int) -> None:
        await self._store.inbox_progress(
            self._channel, self._update_id, sending=index, chunks_sent=index
        )

    async def sent(self, index: int, *, last: bool = False) -> None:
        if not last:
            await self._store.inbox_progress(
                self._channel, self._update_id, sending=None, chunks_sent=index + 1
            )
        self.next_chunk = index + 1

    async def delivered(self) -> None:
        """Every chunk went out: the last one confirmed and the row done, in one write."""
        await self._store.inbox_delivered(
            self._channel, self._update_id, chunks_sent=self.next_chunk
        )
