"""The Channel seam: start (delivering inbound messages), send, stop."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Resume:
    """A reply generated before a restart, and how far its delivery got."""

    reply: str
    chunks_sent: int
    in_flight: bool  # a chunk's send had started but was never confirmed


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
    # The durable-inbox id (Telegram update_id); the app marks it done once answered.
    inbox_id: int | None = None
    resume: Resume | None = None

    @property
    def chat_key(self) -> tuple[str, str, str | None]:
        """Messages with the same key are answered one at a time, in arrival order."""
        return (self.channel, self.chat_id, self.topic_id)


MessageHandler = Callable[[InboundMessage], Awaitable[None]]


class Inbox(Protocol):
    """Where a channel parks raw updates before confirming them to the platform."""

    async def inbox_put(self, channel: str, update_id: int, payload: str) -> bool: ...

    async def inbox_pending(self, channel: str | None = None) -> Sequence[InboxEntry]: ...

    async def inbox_done(self, channel: str, update_id: int) -> None: ...


class InboxEntry(Protocol):
    @property
    def update_id(self) -> int: ...

    @property
    def payload(self) -> str: ...

    @property
    def reply(self) -> str | None: ...

    @property
    def chunks_sent(self) -> int: ...

    @property
    def sending(self) -> int | None: ...


def resume_of(entry: InboxEntry) -> Resume | None:
    if entry.reply is None:
        return None
    in_flight = entry.sending is not None and entry.sending == entry.chunks_sent
    return Resume(entry.reply, entry.chunks_sent, in_flight)


class DeliveryLog(Protocol):
    """Told before and after each chunk of a reply goes out, so a crash can resume it."""

    first_chunk: int

    async def sending(self, index: int) -> None: ...

    async def sent(self, index: int) -> None: ...


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
    ) -> None:
        """Deliver one reply, from ``delivery.first_chunk`` on; raises ``ChannelError`` only."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop receiving and release connections; sending after this is an error."""

    async def close(self) -> None:  # noqa: B027 - most channels hold nothing to release
        """Release connections; called after ``stop()`` once the last reply was sent."""

    def status(self) -> dict[str, object]:
        """What /readyz shows for this channel; ``polling`` False means not ready."""
        return {"polling": True}

    @contextlib.asynccontextmanager
    async def typing(self, chat_id: str, topic_id: str | None = None) -> AsyncIterator[None]:
        """Show that a reply is being prepared, for as long as the block runs."""
        yield
