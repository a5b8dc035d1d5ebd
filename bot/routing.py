"""Bindings decide which agent answers a chat: most specific match wins, then config order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    """``moved`` maps (channel, supergroup id) to the group id it had before Telegram
    upgraded it, so a binding written for the old id keeps routing the chat."""

    def __init__(
        self, bindings: Iterable[Binding], moved: Mapping[tuple[str, str], str] | None = None
    ) -> None:
        self._bindings = tuple(bindings)
        self._moved = moved if moved is not None else {}

    def route(self, channel: str, chat_id: str, topic_id: str | None = None) -> Route | None:
        best: Binding | None = None
        known_as = {chat_id}
        if (old := self._moved.get((channel, chat_id))) is not None:
            known_as.add(old)
        for binding in self._bindings:
            match = binding.match
            if match.channel != channel:
                continue
            if match.chat_id is not None and match.chat_id not in known_as:
                continue
            # A chat-specific binding beats a channel-wide one; among equals, the first wins.
            if best is None or (match.chat_id is not None and best.match.chat_id is None):
                best = binding
        if best is None:
            return None
        return Route(channel=channel, chat_id=chat_id, topic_id=topic_id, agent_id=best.agent_id)
