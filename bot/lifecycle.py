"""The life of one unit of work, in one place, with the store as its only memory.

    stored ──claim──▶ queued in its chat's lane ──▶ generating ──▶ reply stored
        ──▶ chunk k sending ──▶ chunk k sent ──▶ … ──▶ done: delivered
                                                  └──▶ done: given up (reason logged)
              generating ··▶ preview message kept (streaming: its id on the row)

A unit is an inbound update (answered by an agent turn) or a spawned task (its result
is the reply). Every path — a fresh update, the replay after a crash, a reload, a retry
after Telegram failed, a spawned task's result — is a ``Ticket`` run by ``Lifecycle.run``
inside its chat's lane, so per-chat order and the exactly-once rules hold for all of them:

- the reply is stored before any of it is sent; a stored reply is never generated again;
- each chunk is marked ``sending`` before and ``sent`` after (the last one's ``sent``
  together with ``done``, one write); a restart resumes from the first unconfirmed
  chunk (only a chunk in flight at a crash can arrive twice, and that is logged:
  Telegram has no idempotency key);
- Telegram unreachable: the lane retries the same ticket with backoff before this chat's
  later messages — never "later, out of order", never marked done;
- rate limits are waited out by the sender and never count as failure;
- a row is done only when delivered, or deliberately given up with a logged reason
  (the bot was blocked, the chat is gone, Telegram refuses that message for good);
- a group that became a supergroup: the reply, the sessions and the routing follow it;
- streaming (SPEC §10): while generating, the channel's preview shows the answer growing;
  the preview's message id is kept on the row the moment it exists, and the reply's first
  chunk *edits* that message instead of sending one. After a crash mid-stream the turn is
  generated again into the same preview, so the chat never shows a half answer beside a
  whole one. Only a preview whose send was in flight at the crash can be left behind.

Rows are claimed by the process (``owner``) whose lane holds them; a channel's start
claims only rows nobody in this process holds, so a reload never re-answers anything.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from bot.channels.base import Channel, InboundMessage
from bot.errors import (
    ChannelAuthError,
    ChannelError,
    ChannelUnavailable,
    ChatMoved,
    RecipientGone,
)
from bot.lanes import RetryLater
from bot.sessions.inbox import InboxRow
from bot.sessions.outbox import InboxDelivery
from bot.sessions.store import SessionStore
from bot.streaming.preview import Preview

log = logging.getLogger(__name__)

DELIVERED = "delivered"
GIVEN_UP = "given_up"
SKIPPED = "skipped"
MAX_RETRY_DELAY_S = 60.0


@dataclass
class Ticket:
    """One unit of work held by a lane; mirrors its inbox row (``inbox_id`` None: not
    durable, e.g. the terminal chat)."""

    channel: str
    chat_id: str
    topic_id: str | None
    inbox_id: int | None
    message: InboundMessage | None  # None for a spawned task's result
    reply: str | None = None
    next_chunk: int = 0
    in_flight: bool = False  # after a crash: chunk ``next_chunk`` may have arrived already
    failures: int = 0
    preview_id: str | None = None  # the streamed preview the reply's first chunk replaces
    settled: str | None = None  # nothing to send: done as skipped, with this note (a /stop)

    @classmethod
    def of(cls, message: InboundMessage) -> Ticket:
        return cls(message.channel, message.chat_id, message.topic_id, message.inbox_id, message)

    @classmethod
    def resumed(cls, row: InboxRow, message: InboundMessage | None) -> Ticket:
        """A stored row picked up again after a restart (or a channel's return)."""
        in_flight = row.sending is not None and row.sending == row.chunks_sent
        chat_id = row.chat_id or (message.chat_id if message else "")
        topic_id = row.topic_id if row.chat_id else (message.topic_id if message else None)
        return cls(
            row.channel,
            chat_id,
            topic_id,
            row.update_id,
            message,
            row.reply,
            row.chunks_sent,
            in_flight and row.reply is not None,
            preview_id=row.preview_id,
        )

    @property
    def key(self) -> tuple[str, str, str | None]:
        """The lane it runs in. A group's turns share one lane whichever of our bots
        they came to (bot.groups): the personas there hold one conversation."""
        if in_group(self.chat_id):
            return (GROUP_LANE, self.chat_id, self.topic_id)
        return (self.channel, self.chat_id, self.topic_id)


GROUP_LANE = "group"


def in_group(chat_id: str) -> bool:
    """Telegram gives groups and supergroups negative ids, people positive ones."""
    return chat_id.startswith("-")


Generate = Callable[[InboundMessage, Channel, Preview | None], Awaitable[str | None]]
OnMove = Callable[[str, str, str], Awaitable[None]]
OnDone = Callable[[str, str], Awaitable[None]]


class Lifecycle:
    """Runs tickets: generate once, store, deliver chunk by chunk, finish with an outcome."""

    def __init__(
        self,
        store: SessionStore,
        channels: Mapping[str, Channel],
        *,
        generate: Generate,
        on_move: OnMove,
        on_done: OnDone,
    ) -> None:
        self._store = store
        self._channels = channels
        self._generate = generate
        self._on_move = on_move
        self._on_done = on_done

    async def run(self, ticket: Ticket) -> None:
        """One lane job. Raises ``RetryLater`` to be run again before the chat's next job."""
        if self._channels.get(ticket.channel) is None:
            await self._release(ticket, "its channel is not running")
            return
        if ticket.settled is not None:
            await self._finish(ticket, SKIPPED, ticket.settled)
            return
        if ticket.reply is None:
            if ticket.message is None:  # a task row without result: its task owns it
                return
            channel = self._channels[ticket.channel]
            reply = await self._generate_previewed(ticket, ticket.message, channel)
            if reply is None:
                await self._finish(ticket, SKIPPED, "not answered (no binding, or not for us)")
                return
            if ticket.inbox_id is not None:
                await self._store.inbox_reply(ticket.channel, ticket.inbox_id, reply)
            ticket.reply = reply
        elif ticket.in_flight:
            log.warning(
                "channel=%s update=%s: chunk %d was being sent when the bridge stopped; "
                "sending it again (it may arrive twice)",
                ticket.channel,
                ticket.inbox_id,
                ticket.next_chunk,
            )
            ticket.in_flight = False
        await self._deliver(ticket, ticket.reply)

    async def skip(self, ticket: Ticket, note: str) -> None:
        """Finish a row deliberately left unanswered (another persona answers it, or our
        own bot wrote it): an everyday outcome, so logged quietly."""
        log.debug("channel=%s update=%s skipped: %s", ticket.channel, ticket.inbox_id, note)
        if ticket.inbox_id is not None:
            await self._store.inbox_done(
                ticket.channel, ticket.inbox_id, outcome=SKIPPED, note=note
            )
        await self._on_done(ticket.channel, SKIPPED)

    async def _generate_previewed(
        self, ticket: Ticket, message: InboundMessage, channel: Channel
    ) -> str | None:
        """Generate with the channel's preview (if it streams) showing the answer grow."""

        async def keep(message_id: str) -> None:
            ticket.preview_id = message_id
            if ticket.inbox_id is not None:
                await self._store.inbox_preview(ticket.channel, ticket.inbox_id, message_id)

        preview = channel.preview(
            ticket.chat_id,
            ticket.topic_id,
            message.chat_type,
            message_id=ticket.preview_id,
            keep=keep,
        )
        try:
            return await self._generate(message, channel, preview)
        finally:
            if preview is not None:
                await preview.finish()
                ticket.preview_id = preview.message_id or ticket.preview_id

    async def _deliver(self, ticket: Ticket, reply: str) -> None:
        # Looked up now, not at the start of the turn: after a reload the new channel sends.
        channel = self._channels.get(ticket.channel)
        if channel is None:
            await self._release(ticket, "its channel stopped")
            return
        delivery = None
        if ticket.inbox_id is not None:
            delivery = InboxDelivery(
                self._store, ticket.channel, ticket.inbox_id, ticket.next_chunk
            )
        try:
            await channel.send(
                ticket.chat_id,
                reply,
                topic_id=ticket.topic_id,
                delivery=delivery,
                replace=ticket.preview_id,
            )
        except ChatMoved as exc:
            if delivery is not None:
                ticket.next_chunk = delivery.next_chunk
            log.warning(
                "channel=%s: chat %s became supergroup %s; sessions, pending replies and "
                "routing follow it (update a binding's match.chat_id in the config)",
                ticket.channel,
                ticket.chat_id,
                exc.new_chat_id,
            )
            await self._on_move(ticket.channel, ticket.chat_id, exc.new_chat_id)
            ticket.chat_id = exc.new_chat_id
            raise RetryLater(0) from exc
        except ChannelUnavailable as exc:
            if delivery is not None:
                ticket.next_chunk = delivery.next_chunk
            ticket.failures += 1
            delay = min(2.0 ** (ticket.failures - 1), MAX_RETRY_DELAY_S)
            log.error(
                "reply to channel=%s chat=%s not delivered (%s); retrying in %.0fs before "
                "this chat's later messages",
                ticket.channel,
                ticket.chat_id,
                exc,
                delay,
            )
            raise RetryLater(delay) from exc
        except RecipientGone as exc:
            await self._finish(ticket, GIVEN_UP, str(exc))
            return
        except ChannelAuthError as exc:
            await self._release(ticket, f"{exc}; kept for when the bot runs again")
            return
        except ChannelError as exc:
            # Telegram refuses this message for good (and our fallbacks did not help).
            await self._finish(ticket, GIVEN_UP, str(exc))
            return
        await self._finish(ticket, DELIVERED, delivery=delivery)

    async def _finish(
        self,
        ticket: Ticket,
        outcome: str,
        note: str | None = None,
        *,
        delivery: InboxDelivery | None = None,
    ) -> None:
        if outcome != DELIVERED:
            log.warning(
                "channel=%s chat=%s update=%s %s: %s",
                ticket.channel,
                ticket.chat_id,
                ticket.inbox_id,
                outcome.replace("_", " "),
                note,
            )
        if delivery is not None:
            await delivery.delivered()  # the last chunk's "sent" and "done" in one write
        elif ticket.inbox_id is not None:
            await self._store.inbox_done(
                ticket.channel, ticket.inbox_id, outcome=outcome, note=note
            )
        if ticket.inbox_id is not None:
            for part in _grouped(ticket):  # an album's other rows end with it
                album = f"album answered with update {ticket.inbox_id}"
                await self._store.inbox_done(ticket.channel, part, outcome=outcome, note=album)
        await self._on_done(ticket.channel, outcome)

    async def _release(self, ticket: Ticket, why: str) -> None:
        log.error(
            "channel=%s update=%s not answered now: %s; it stays pending",
            ticket.channel,
            ticket.inbox_id,
            why,
        )
        if ticket.inbox_id is not None:
            await self._store.inbox_release(ticket.channel, ticket.inbox_id)
            for part in _grouped(ticket):
                await self._store.inbox_release(ticket.channel, part)


def _grouped(ticket: Ticket) -> tuple[int, ...]:
    return ticket.message.grouped_inbox_ids if ticket.message is not None else ()
