"""Bindings decide which agent answers a chat: most specific match wins, then config order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bot.config.schema import Binding


@dataclass(frozen=True)
class Route:
    """Where a message goes: attached to every inbound message before its turn runs."""

    channel: str
    chat_id: str
    topic_id: str | None
    agent_id: str


class Router:
    def __init__(self, bindings: Iterable[Binding]) -> None:
        self._bindings = tuple(bindings)

    def route(self, channel: str, chat_id: str, topic_id: str | None = None) -> Route | None:
        best: Binding | None = None
        for binding in self._bindings:
            match = binding.match
            if match.channel != channel:
                continue
            if match.chat_id is not None and match.chat_id != chat_id:
                continue
            # A chat-specific binding beats a channel-wide one; among equals, the first wins.
            if best is None or (match.chat_id is not None and best.match.chat_id is None):
                best = binding
        if best is None:
            return None
        return Route(channel=channel, chat_id=chat_id, topic_id=topic_id, agent_id=best.agent_id)
