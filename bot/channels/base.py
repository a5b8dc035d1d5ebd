"""The Channel seam: start (delivering inbound messages), send, stop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


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

    @property
    def chat_key(self) -> tuple[str, str, str | None]:
        """Messages with the same key are answered one at a time, in arrival order."""
        return (self.channel, self.chat_id, self.topic_id)


MessageHandler = Callable[[InboundMessage], Awaitable[None]]


class Channel(ABC):
    """One connection to a chat platform (one Telegram bot token, the terminal, …)."""

    name: str

    @abstractmethod
    async def start(self, handler: MessageHandler) -> None:
        """Connect and begin delivering messages to ``handler``; return once receiving."""

    @abstractmethod
    async def send(self, chat_id: str, text: str, *, topic_id: str | None = None) -> None:
        """Deliver one reply; raises ``ChannelError`` subclasses only."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop receiving and release connections; sending after this is an error."""
