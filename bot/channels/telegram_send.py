"""Delivering one reply through the Bot API: chunks, outbox progress, retries, fallbacks.

Each chunk is sent as Telegram HTML; if Telegram cannot parse it, the same chunk goes as
plain text; if Telegram finds it too long, as plain text in smaller pieces. 429s are
waited out however many come (a rate limit is not a failure), and 5xx answers, timeouts
and dropped connections retried a few times before ``ChannelUnavailable`` hands the reply
back to its lane (a retried send may arrive twice if only its answer was lost: preferred
to losing it). A reply longer than ``max_messages`` chunks is cut, and its last message
says so.
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
    def __init__(self, bot: Bot, name: str, max_messages: int = 10) -> None:
        self._bot = bot
        self.name = name
        self._max_messages = max_messages

    async def reply(
        self, chat_id: int, text: str, thread: int | None, delivery: DeliveryLog | None
    ) -> None:
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
            await self._send_chunk(chat_id, chunk, thread)
            if delivery is not None:
                await delivery.sent(index, last=index == len(chunks) - 1)

    async def plain(self, chat_id: int, text: str, thread: int | None = None) -> None:
        await self.call(
            lambda: self._bot.send_message(chat_id=chat_id, text=text, message_thread_id=thread)
        )

    async def _send_chunk(self, chat_id: int, chunk: RenderedChunk, thread: int | None) -> None:
        try:
            await self.call(
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
