"""The Channel seam: start (delivering inbound messages), send, stop."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from bot.errors import MediaUnavailable
from bot.streaming.preview import KeepPreview, Preview
from bot.types import Attachment


@dataclass(frozen=True)
class InboundMessage:
    """A message a person sent, already admitted by the channel's access rules."""

    channel: str
    chat_id: str
    sender_id: str
    text: str
    message_id: str = ""
    topic_id: str | None = None
    sender_username: str | None = None
    chat_type: str = "private"
    # The durable-inbox id (Telegram update_id); the lifecycle marks it done once answered.
    inbox_id: int | None = None
    # Set on Telegram's "this group is now supergroup N" service message: not a turn.
    moved_to: str | None = None
    # Groups (bot.groups): the same for every bot's copy of one message; the accounts it
    # @mentions (lower case, in text order) and the account it replies to.
    shared_id: str = ""
    mentions: tuple[str, ...] = ()
    reply_to_user: str | None = None
    # Files sent with it (photos, voice, documents …), fetched only at turn time.
    attachments: tuple[Attachment, ...] = ()
    # A voice note in a group under ``mention`` that does not reply to the bot: answered
    # only when its transcript names the bot by one of these (lower-case) names.
    voice_must_name: tuple[str, ...] = ()
    # The other inbox rows of an album answered by this one turn (done with it).
    grouped_inbox_ids: tuple[int, ...] = ()

    # The person pressed the stop button of a streamed draft: like /stop, not a turn.
    generation_stopped: bool = False

    @property
    def media_group_id(self) -> str | None:
        return next((a.media_group_id for a in self.attachments if a.media_group_id), None)

    @property
    def chat_key(self) -> tuple[str, str, str | None]:
        """Messages with the same key are answered one at a time, in arrival order."""
        return (self.channel, self.chat_id, self.topic_id)


@dataclass(frozen=True)
class Account:
    """Who a channel is on its platform: how others mention it and address its messages."""

    user_id: str
    username: str


MessageHandler = Callable[[InboundMessage], Awaitable[None]]


class Inbox(Protocol):
    """Where a channel parks raw updates before confirming them to the platform."""

    async def inbox_put(
        self,
        channel: str,
        update_id: int,
        payload: str,
        *,
        chat_id: str | None = None,
        topic_id: str | None = None,
    ) -> bool:
        """Store the update; False when it was stored before (answered then, or pending)."""
        ...

    def poll_turn(self, channel: str, stopping: asyncio.Event) -> AbstractAsyncContextManager[bool]:
        """Held while this process is the one that polls ``channel`` (SPEC §14: several
        processes on one database elect one poller per bot; alone, it is held at once).
        Yields False when ``stopping`` was set before the turn came."""
        ...


class DeliveryLog(Protocol):
    """Told before and after each chunk of a reply goes out, so a crash can resume it."""

    first_chunk: int

    async def sending(self, index: int) -> None: ...

    async def sent(self, index: int, *, last: bool = False) -> None:
        """``last``: the reply's final chunk; the log may record it with the reply's outcome."""
        ...


class Channel(ABC):
    """One connection to a chat platform (one Telegram bot token, the terminal, …)."""

    name: str

    @abstractmethod
    async def start(self, handler: MessageHandler) -> None:
        """Connect and begin delivering messages to ``handler``; return once receiving."""

    @abstractmethod
    async def send(
        self,
        chat_id: str,
        text: str,
        *,
        topic_id: str | None = None,
        delivery: DeliveryLog | None = None,
        replace: str | None = None,
    ) -> None:
        """Deliver one reply, from ``delivery.first_chunk`` on; raises ``ChannelError`` only.
        ``replace``: the streamed preview's message id, which the reply's start replaces."""

    def preview(
        self,
        chat_id: str,
        topic_id: str | None,
        chat_type: str,
        *,
        message_id: str | None = None,
        keep: KeepPreview | None = None,
    ) -> Preview | None:
        """A preview for a reply about to be generated, or None when this channel does not
        stream. ``message_id``: a preview left by an earlier attempt (a crash mid-stream),
        to be grown again in place; ``keep`` is told the id of a new preview message."""
        return None

    @abstractmethod
    async def stop(self) -> None:
        """Stop receiving and release connections; sending after this is an error."""

    async def close(self) -> None:  # noqa: B027 - most channels hold nothing to release
        """Release connections; called after ``stop()`` once the last reply was sent."""

    async def download(self, attachment: Attachment, max_bytes: int) -> bytes:
        """The attachment's bytes, at most ``max_bytes`` of them: ``FileTooLarge`` before
        or while downloading, ``MediaUnavailable`` when it cannot be fetched."""
        raise MediaUnavailable(f"channel {self.name} cannot fetch files")

    def restore(self, payload: str) -> InboundMessage | None:
        """Rebuild a stored update's message for its replay; None when it holds none."""
        return None

    def status(self) -> dict[str, object]:
        """What /readyz shows for this channel; ``polling`` False means not ready."""
        return {"polling": True}

    def account(self) -> Account | None:
        """The channel's own account on its platform, once known (None: it has none)."""
        return None

    @contextlib.asynccontextmanager
    async def typing(self, chat_id: str, topic_id: str | None = None) -> AsyncIterator[None]:
        """Show that a reply is being prepared, for as long as the block runs."""
        yield
