"""One album, one turn. Telegram delivers an album (photos or files sharing a
``media_group_id``) as several updates; each is stored in the inbox as it arrives, then
held here briefly until the album is complete, and answered as one message whose other
rows are finished with it. After a crash the pending rows are regrouped the same way
(``regroup``), so an album is answered once however it was interrupted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable

from bot.channels.base import InboundMessage, MessageHandler

log = logging.getLogger(__name__)

# Telegram sends an album's updates back to back; a part later than this starts a new turn.
GATHER_S = 1.0


def merged(parts: list[InboundMessage]) -> InboundMessage:
    """The album's parts as one message: every attachment, the caption(s), the first row's
    inbox id and the others' as grouped ids."""
    first = parts[0]
    texts = [p.text for p in parts if p.text]
    ids = [p.inbox_id for p in parts[1:] if p.inbox_id is not None]
    return dataclasses.replace(
        first,
        text="\n".join(texts),
        attachments=tuple(a for p in parts for a in p.attachments),
        grouped_inbox_ids=(*first.grouped_inbox_ids, *ids),
    )


def regroup(messages: Iterable[InboundMessage]) -> list[InboundMessage]:
    """Messages in arrival order with each album's parts merged where its first part was."""
    out: list[InboundMessage | list[InboundMessage]] = []
    albums: dict[tuple[str, str, str], list[InboundMessage]] = {}
    for message in messages:
        group = message.media_group_id
        if group is None:
            out.append(message)
            continue
        key = (message.channel, message.chat_id, group)
        if key not in albums:
            albums[key] = []
            out.append(albums[key])
        albums[key].append(message)
    return [merged(item) if isinstance(item, list) else item for item in out]


class AlbumGatherer:
    """Between a channel and its handler: album parts wait (in memory, already stored)
    until none came for ``GATHER_S``; any other message of the same chat first releases
    the album before it, so the chat's order holds."""

    def __init__(self, handler: MessageHandler, gather_s: float = GATHER_S) -> None:
        self._handler = handler
        self._gather_s = gather_s
        self._pending: dict[tuple[str, str | None], tuple[str, list[InboundMessage]]] = {}
        self._timers: dict[tuple[str, str | None], asyncio.TimerHandle] = {}
        self._releasing: set[asyncio.Task[None]] = set()

    async def deliver(self, message: InboundMessage) -> None:
        key = (message.chat_id, message.topic_id)
        group = message.media_group_id
        pending = self._pending.get(key)
        if pending is not None and (group is None or pending[0] != group):
            await self._release(key)
            pending = None
        if group is None:
            await self._handler(message)
            return
        if pending is None:
            self._pending[key] = (group, [message])
        else:
            pending[1].append(message)
        self._arm(key)

    def _arm(self, key: tuple[str, str | None]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()

        def release() -> None:
            task = loop.create_task(self._release(key))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

        self._timers[key] = loop.call_later(self._gather_s, release)

    async def _release(self, key: tuple[str, str | None]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        pending = self._pending.pop(key, None)
        if pending is not None:
            log.debug("album %s: %d part(s), one turn", pending[0], len(pending[1]))
            await self._handler(merged(pending[1]))

    async def flush(self) -> None:
        """Release every held album now (the channel is stopping)."""
        for key in list(self._pending):
            await self._release(key)
