"""Delivering one reply through the Bot API: chunks, outbox progress, retries, fallbacks.

Each chunk is sent as Telegram HTML; if Telegram cannot parse it, the same chunk goes as
plain text; if Telegram finds it too long, as plain text in smaller pieces. 429s are
waited out however many come (a rate limit is not a failure), and 5xx answers, timeouts
and dropped connections retried a few times before ``ChannelUnavailable`` hands the reply
back to its lane (a retried send may arrive twice if only its answer was lost: preferred
to losing it). A reply longer than ``max_messages`` chunks is cut, and its last message
says so.

A streamed reply already has a message in the chat, its preview: chunk 0 then *edits* that
message instead of sending one (an edit that changes nothing — "message is not modified",
e.g. the same chunk after a crash — is success; a preview that is gone gets a new message).
Every message call waits for the bot's pacer (bot.streaming.pacing), finals before previews.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from telegram import Bot
from telegram import error as tg
from telegram.constants import ParseMode

from bot.channels import telegram_errors
from bot.channels.base import DeliveryLog
from bot.channels.telegram_render import TELEGRAM_LIMIT, RenderedChunk, render_markdown
from bot.channels.telegram_split import chunk_ranges
from bot.errors import ChannelRateLimited, ChannelUnavailable, MessageRejected
from bot.streaming.pacing import BotPacer

log = logging.getLogger(__name__)

MAX_UNAVAILABLE_RETRIES = 2  # 0.5 s, 1 s apart; then the chat's lane retries with backoff
# Longer replies are rendered on a worker thread: a pathological 100 KB takes about a second
# of markdown-it (4 KB of dense emphasis ~50 ms), which would stall every other chat on the
# event loop meanwhile.
RENDER_INLINE_CHARS = 1024

T = TypeVar("T")


async def render_reply(text: str) -> list[RenderedChunk]:
    """``render_markdown(text)``, off the event loop when the text is long."""
    if len(text) <= RENDER_INLINE_CHARS:
        return render_markdown(text)
    with _cyclic_gc_paused():
        return await asyncio.to_thread(render_markdown, text)


_renders_off_loop = 0  # touched on the event loop only


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """The cycle collector off while a long reply renders on a thread: the parser's
    hundred thousand short-lived tokens would trigger full collections, and each holds the
    GIL — stalling the event loop — for as long as it walks the heap. Reference counting
    still frees them; a collection may run after the render as usual."""
    global _renders_off_loop
    if _renders_off_loop == 0 and not gc.isenabled():
        yield  # someone else turned it off: theirs to turn back on
        return
    _renders_off_loop += 1
    gc.disable()
    try:
        yield
    finally:
        _renders_off_loop -= 1
        if _renders_off_loop == 0:
            gc.enable()


def capped(chunks: list[RenderedChunk], max_messages: int) -> list[RenderedChunk]:
    """At most ``max_messages`` chunks; when cut, the last one says how much was left out."""
    if len(chunks) <= max_messages:
        return chunks
    note = (
        f"(The answer was cut here: it would have taken {len(chunks)} messages, "
        f"and this bot sends at most {max_messages} per answer.)"
    )
    return [*chunks[: max_messages - 1], RenderedChunk(f"<i>{note}</i>", note)]


class TelegramSender:
    def __init__(
        self, bot: Bot, name: str, max_messages: int = 10, pacer: BotPacer | None = None
    ) -> None:
        self._bot = bot
        self.name = name
        self._max_messages = max_messages
        self.pacer = pacer or BotPacer()

    async def reply(
        self,
        chat_id: int,
        text: str,
        thread: int | None,
        delivery: DeliveryLog | None,
        replace: int | None = None,
        replace_shows: str | None = None,
    ) -> None:
        """Send ``text`` from ``delivery.first_chunk`` on; chunk 0 edits message ``replace``
        (the streamed preview) when given — unless it already shows ``replace_shows``, the
        same HTML (an identical edit is refused as "message is not modified")."""
        first = delivery.first_chunk if delivery is not None else 0
        rendered = await render_reply(text)
        chunks = capped(rendered, self._max_messages)
        if first == 0 and len(chunks) < len(rendered):
            log.warning(
                "bot %s: a reply of %d messages was cut to %d (max_reply_messages)",
                self.name,
                len(rendered),
                len(chunks),
            )
        # Rendering is deterministic, so chunk indices survive a restart.
        for index, chunk in enumerate(chunks):
            if index < first:
                continue
            if delivery is not None:
                await delivery.sending(index)
            if index == 0 and replace is not None:
                if chunk.html != replace_shows:
                    await self._edit_chunk(chat_id, replace, chunk, thread)
            else:
                await self._send_chunk(chat_id, chunk, thread)
            if delivery is not None:
                await delivery.sent(index, last=index == len(chunks) - 1)

    async def plain(self, chat_id: int, text: str, thread: int | None = None) -> None:
        await self.paced(
            lambda: self._bot.send_message(chat_id=chat_id, text=text, message_thread_id=thread)
        )

    async def _edit_chunk(
        self, chat_id: int, message_id: int, chunk: RenderedChunk, thread: int | None
    ) -> None:
        for text, mode in ((chunk.html, ParseMode.HTML), (chunk.plain, None)):
            try:
                await self.edit(chat_id, message_id, text, mode)
                return
            except MessageRejected as exc:
                reason = str(exc).lower()
                if "not modified" in reason:
                    return  # it already shows exactly this (a resumed delivery)
                if "parse entities" in reason and mode is not None:
                    log.warning("bot %s: Telegram refused our HTML; editing as plain", self.name)
                    continue
                # The preview is gone (deleted, too old to edit) or this chunk does not fit
                # as an edit: the chunk goes as a new message instead.
                log.warning("bot %s: could not edit the preview (%s); sending anew", self.name, exc)
                break
        await self._send_chunk(chat_id, chunk, thread)

    async def edit(self, chat_id: int, message_id: int, text: str, mode: str | None) -> None:
        await self.paced(
            lambda: self._bot.edit_message_text(
                text, chat_id=chat_id, message_id=message_id, parse_mode=mode
            )
        )

    async def _send_chunk(self, chat_id: int, chunk: RenderedChunk, thread: int | None) -> None:
        try:
            await self.paced(
                lambda: self._bot.send_message(
                    chat_id=chat_id,
                    text=chunk.html,
                    parse_mode=ParseMode.HTML,
                    message_thread_id=thread,
                )
            )
        except MessageRejected as exc:
            reason = str(exc).lower()
            if "parse entities" in reason:
                log.warning("bot %s: Telegram refused our HTML; resending as plain text", self.name)
                pieces = [chunk.plain]
            elif "too long" in reason:
                # Our count and Telegram's disagreed: plain text in pieces half the size.
                log.warning(
                    "bot %s: Telegram found a chunk too long; resending it smaller", self.name
                )
                text = chunk.plain
                pieces = [text[a:b] for a, b in chunk_ranges(text, TELEGRAM_LIMIT // 2)]
            else:
                raise
            for piece in pieces:
                await self.plain(chat_id, piece, thread)

    async def paced(self, request: Callable[[], Awaitable[T]]) -> T:
        """``call`` for a message call: it holds one of the bot's pacer slots."""
        await self.pacer.final()
        try:
            return await self.call(request)
        finally:
            self.pacer.release()

    async def call(self, request: Callable[[], Awaitable[T]]) -> T:
        """One Bot API call, with the bounded waiting and retrying described above."""
        unavailable = 0
        while True:
            try:
                return await request()
            except tg.TelegramError as exc:
                error = telegram_errors.translate(exc)
                if isinstance(error, ChannelRateLimited):
                    log.warning("bot %s: rate limited; waiting %.0fs", self.name, error.retry_after)
                    await asyncio.sleep(error.retry_after)
                    continue
                if isinstance(error, ChannelUnavailable) and unavailable < MAX_UNAVAILABLE_RETRIES:
                    unavailable += 1
                    log.warning("bot %s: %s; retry %d", self.name, error, unavailable)
                    await asyncio.sleep(0.5 * 2.0 ** (unavailable - 1))
                    continue
                raise error from exc
