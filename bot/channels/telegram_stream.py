"""A reply growing in a Telegram chat while the model writes it (SPEC §10).

``EditPreview`` sends one message after the first ~30 visible characters (or 1 s) and edits
it as the text grows; ``DraftPreview`` animates a ``sendMessageDraft`` bubble in private
chats. Both share one update loop with the rules the peers learnt the hard way:

- at most one update per ``stream_interval_s`` per chat, and only when the *rendered* HTML
  changed (a newline-only delta renders the same: no "message is not modified" storms);
- every update asks the bot's pacer for a slot and skips the tick when there is none;
- a 429 pauses this preview for ``retry_after``; the final answer is not a preview and is
  never dropped (it waits out rate limits in ``TelegramSender``);
- "message is not modified" is success; any other refusal ends the preview quietly and the
  final answer goes out as usual;
- half-written Markdown is held back at its end (bot.streaming.partial) and the preview shows
  only the first message's worth: what lies beyond 4096 arrives with the final answer.

The final answer is delivered by ``TelegramSender.reply`` with ``replace`` = the preview's
message id: chunk 0 edits the preview, later chunks are new messages. A draft leaves no
message, so the final goes out with ``sendMessage``; the first 400 to a draft latches the
bot to edits until restart (Telegram refuses drafts outside private chats and in older API
versions), and that turn carries on as an edit preview.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from abc import abstractmethod
from collections.abc import Callable

from telegram import Bot
from telegram import error as tg
from telegram.constants import ParseMode

from bot.channels import telegram_errors
from bot.channels.telegram_render import TELEGRAM_LIMIT, render_markdown
from bot.channels.telegram_split import escape_text
from bot.errors import ChannelError, ChannelRateLimited, MessageRejected
from bot.streaming.pacing import BotPacer
from bot.streaming.partial import stable_markdown
from bot.streaming.preview import KeepPreview, Preview

log = logging.getLogger(__name__)

FIRST_PREVIEW_CHARS = 30  # visible characters before the first preview …
FIRST_PREVIEW_WAIT_S = 1.0  # … or this long after the first text, whichever comes first
PREVIEW_LIMIT = TELEGRAM_LIMIT - 96  # leaves room for the progress note under the text
PREVIEW_SOURCE_CHARS = 3 * TELEGRAM_LIMIT  # Markdown past this never shows in a preview
SLOT_JITTER_S = 0.05  # spreads the previews that all wait for the same free slot
FINISH_WAIT_S = 10.0  # an update in flight when the answer is complete may take this long


def preview_html(text: str, note: str | None) -> str | None:
    """The preview's HTML: the first message's worth of the text so far, the note under it.
    Only the start of a long text is rendered: the rest cannot reach the first message."""
    body = stable_markdown(text[:PREVIEW_SOURCE_CHARS])
    html = render_markdown(body, PREVIEW_LIMIT)[0].html if body.strip() else ""
    if note:
        line = f"<i>{escape_text(note)}</i>"
        html = f"{html}\n\n{line}" if html else line
    return html or None


class _PacedPreview(Preview):
    """The update loop: waits its turn, renders the latest text, updates when it changed."""

    def __init__(
        self,
        bot: Bot,
        pacer: BotPacer,
        chat_id: int,
        thread: int | None,
        *,
        interval_s: float,
        name: str,
    ) -> None:
        self._bot = bot
        self._pacer = pacer
        self._chat_id = chat_id
        self._thread = thread
        self._interval_s = interval_s
        self._name = name
        self._text = ""
        self._note: str | None = None
        self._first_text_at: float | None = None
        self._last_update_at: float | None = None  # the chat was last updated
        self._last_tick_at: float | None = None  # the text was last rendered (maybe unchanged)
        self._rendered: tuple[str, str | None] | None = None  # what that render was of
        self._paused_until = 0.0
        self._shown: str | None = None
        self._changed = asyncio.Event()
        self._poke = asyncio.Event()
        self._closing = False
        self._dead = False
        self._task: asyncio.Task[None] | None = None

    def show(self, text: str, note: str | None = None) -> None:
        if self._closing or self._dead:
            return
        self._text, self._note = text, note
        if self._first_text_at is None and (text.strip() or note):
            self._first_text_at = time.monotonic()
        self._changed.set()
        if self._last_tick_at is None:
            self._poke.set()  # the first preview waits for enough text; later ones for time
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"preview {self._name}")

    async def finish(self) -> None:
        """Stop the loop (an update in flight completes first), then wait out the rest of
        the interval: the final answer is one more update of this chat."""
        self._closing = True
        self._poke.set()
        self._changed.set()
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), FINISH_WAIT_S)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._last_update_at is not None:
            rest = self._last_update_at + self._interval_s - time.monotonic()
            await asyncio.sleep(min(max(rest, 0.0), self._interval_s))

    async def _run(self) -> None:
        while not self._closing and not self._dead:
            await self._changed.wait()
            if not await self._my_turn():
                return
            self._changed.clear()
            source = (self._text[:PREVIEW_SOURCE_CHARS], self._note)
            if source == self._rendered:
                continue  # the growth is past what a preview shows
            html = preview_html(*source)
            if html is None:
                continue
            self._rendered, self._last_tick_at = source, time.monotonic()
            if html == self._shown:
                continue  # e.g. a newline-only delta: nothing visible changed
            while not self._pacer.try_preview():
                # No slot this moment: try again when one frees, with newer text by then.
                await asyncio.sleep(self._pacer.preview_wait() + random.uniform(0, SLOT_JITTER_S))
                if self._closing:
                    return
            await self._update(html)

    async def _my_turn(self) -> bool:
        """Wait until this chat may be updated; False once the preview is finishing."""
        while not self._closing:
            wait = self._next_update_at() - time.monotonic()
            if wait <= 0:
                return True
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), wait)
        return False

    def _next_update_at(self) -> float:
        if self._last_tick_at is not None:
            last = max(self._last_tick_at, self._last_update_at or 0.0)
            at = last + self._interval_s
        elif self._starts_now():
            at = 0.0
        else:
            at = (self._first_text_at or time.monotonic()) + FIRST_PREVIEW_WAIT_S
        return max(at, self._paused_until)

    def _starts_now(self) -> bool:
        return bool(self._note) or len(stable_markdown(self._text).strip()) >= FIRST_PREVIEW_CHARS

    async def _update(self, html: str) -> None:
        """One update with the pacer slot the caller took."""
        try:
            await self._put(html)
            self._shown = html
        except ChannelRateLimited as exc:
            log.warning(
                "bot %s: previews in chat %s paused %.0fs (rate limited)",
                self._name,
                self._chat_id,
                exc.retry_after,
            )
            self._paused_until = time.monotonic() + exc.retry_after
            self._rendered = None
            self._changed.set()  # the newest text goes out once the pause is over
        except MessageRejected as exc:
            if "not modified" in str(exc).lower():
                self._shown = html
            else:
                log.warning("bot %s: preview stopped: %s", self._name, exc)
                self._dead = True
        except ChannelError as exc:  # unreachable for a moment: the next tick tries again
            log.warning("bot %s: preview update failed: %s", self._name, exc)
            self._rendered = None
            self._changed.set()
        finally:
            self._pacer.release()
        self._last_update_at = time.monotonic()

    @abstractmethod
    async def _put(self, html: str) -> None:
        """One update of the chat; raises ``ChannelError``."""

    async def _api(self, call: Callable[[], object]) -> object:
        try:
            return await call()  # type: ignore[misc]
        except tg.TelegramError as exc:
            raise telegram_errors.translate(exc) from exc


SHOWN_KEPT = 4096


class EditPreview(_PacedPreview):
    """One message, sent once and then edited in place."""

    def __init__(
        self,
        bot: Bot,
        pacer: BotPacer,
        chat_id: int,
        thread: int | None,
        *,
        interval_s: float,
        name: str,
        message_id: int | None = None,
        keep: KeepPreview | None = None,
        shown: dict[int, str] | None = None,
    ) -> None:
        super().__init__(bot, pacer, chat_id, thread, interval_s=interval_s, name=name)
        self._message_id = message_id
        self._keep = keep
        # message id → the HTML it shows now, so the final answer skips an edit that
        # would change nothing (Telegram answers it "message is not modified").
        self._shown_by_id = shown

    @property
    def message_id(self) -> str | None:
        return None if self._message_id is None else str(self._message_id)

    async def _put(self, html: str) -> None:
        if self._message_id is not None:
            await self._api(
                lambda: self._bot.edit_message_text(
                    html, chat_id=self._chat_id, message_id=self._message_id, parse_mode="HTML"
                )
            )
            self._remember(self._message_id, html)
            return
        message = await self._api(
            lambda: self._bot.send_message(
                self._chat_id, html, parse_mode=ParseMode.HTML, message_thread_id=self._thread
            )
        )
        self._message_id = message.message_id  # type: ignore[attr-defined]
        self._remember(self._message_id, html)
        if self._keep is not None:
            await self._keep(str(self._message_id))

    def _remember(self, message_id: int, html: str) -> None:
        shown = self._shown_by_id
        if shown is None:
            return
        shown.pop(message_id, None)
        shown[message_id] = html
        while len(shown) > SHOWN_KEPT:  # bounded: a preview whose turn never ended
            del shown[next(iter(shown))]


class DraftPreview(_PacedPreview):
    """An animated ``sendMessageDraft`` bubble (private chats), one draft id per turn, with
    Telegram's stop button; on the first 400 the bot latches to edits and this turn goes on
    as an ``EditPreview``."""

    def __init__(
        self,
        bot: Bot,
        pacer: BotPacer,
        chat_id: int,
        thread: int | None,
        *,
        interval_s: float,
        name: str,
        refused: Callable[[], None],
        fallback: Callable[[], EditPreview],
    ) -> None:
        super().__init__(bot, pacer, chat_id, thread, interval_s=interval_s, name=name)
        self.draft_id = random.randint(1, 2**31 - 1)
        self._refused = refused
        self._fallback = fallback
        self._edit: EditPreview | None = None

    @property
    def message_id(self) -> str | None:
        return self._edit.message_id if self._edit is not None else None

    async def _put(self, html: str) -> None:
        if self._edit is not None:
            await self._edit._put(html)
            return
        try:
            await self._api(
                lambda: self._bot.send_message_draft(
                    self._chat_id,
                    self.draft_id,
                    text=html,
                    message_thread_id=self._thread,
                    parse_mode=ParseMode.HTML,
                    api_kwargs={"can_stop": True},
                )
            )
        except MessageRejected as exc:
            log.warning(
                "bot %s: Telegram refused a draft (%s); using edits until restart", self._name, exc
            )
            self._refused()
            self._edit = self._fallback()
            await self._edit._put(html)
