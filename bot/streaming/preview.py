"""What a channel implements to show an answer while it is being written."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

# Told the preview message's id as soon as the platform gave one, so it is kept with the
# inbox row before anything else happens (a crash then edits this message, not a new one).
KeepPreview = Callable[[str], Awaitable[None]]


class Preview(ABC):
    """One per generated reply. ``show`` is cheap and never blocks on the platform: the
    preview decides when (and whether) to update the chat. ``finish`` ends the updates; the
    final answer is then delivered into ``message_id`` when there is one."""

    @abstractmethod
    def show(self, text: str, note: str | None = None) -> None:
        """The answer so far (Markdown, possibly cut mid-markup) and a one-line progress
        note (a tool round) shown under it."""

    @abstractmethod
    async def finish(self) -> None:
        """Stop updating; an update in flight completes first (bounded)."""

    @property
    def message_id(self) -> str | None:
        """The message the final answer replaces (edits), if the preview made one."""
        return None
