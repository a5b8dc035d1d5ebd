"""One Telegram bot as a Channel: python-telegram-bot's ``Bot`` and our own long-poll loop.

We drive ``getUpdates`` ourselves instead of PTB's ``Updater`` because the Updater
confirms an update's offset before our code has stored it; owning the loop lets the
offset advance only after the handler accepted the update (SPEC §5, durable inbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from telegram import Bot, Message, Update
from telegram import error as tg
from telegram.request import HTTPXRequest

from bot.channels import telegram_errors
from bot.channels.base import Channel, InboundMessage, MessageHandler
from bot.config.schema import TelegramBot
from bot.errors import ChannelAuthError, ChannelError, ChannelRateLimited

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 25
MAX_BACKOFF_S = 30.0
TELEGRAM_LIMIT = 4096  # UTF-16 code units of visible text per message


class TelegramChannel(Channel):
    def __init__(self, spec: TelegramBot, *, poll_timeout: int = POLL_TIMEOUT_S) -> None:
        self.name = spec.channel
        self.spec = spec
        self._poll_timeout = poll_timeout
        self._bot = Bot(
            spec.token.get_secret_value(),
            base_url=f"{spec.api_base}/bot",
            base_file_url=f"{spec.api_base}/file/bot",
            request=HTTPXRequest(connection_pool_size=16, read_timeout=30.0),
            get_updates_request=HTTPXRequest(read_timeout=poll_timeout + 10.0),
        )
        self._poller: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._strangers_told: set[str] = set()
        self.username = ""
        self.polling = False

    async def start(self, handler: MessageHandler) -> None:
        try:
            await self._bot.initialize()  # getMe: fails fast on a rejected token
            await self._bot.delete_webhook(drop_pending_updates=False)
        except tg.TelegramError as exc:
            raise telegram_errors.translate(exc) from exc
        self.username = self._bot.username
        if not self.spec.allow_from:
            log.warning("bot @%s: allow_from is empty, nobody is admitted", self.username)
        self._poller = asyncio.create_task(self._poll(handler), name=f"poll {self.name}")
        log.info("bot @%s polling as channel %s", self.username, self.name)

    async def stop(self) -> None:
        self._stopping.set()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        self.polling = False
        await self._bot.shutdown()

    async def send(self, chat_id: str, text: str, *, topic_id: str | None = None) -> None:
        for chunk in split_text(text):
            await self._call(
                self._bot.send_message,
                chat_id=int(chat_id),
                text=chunk,
                message_thread_id=int(topic_id) if topic_id else None,
            )

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        """One Bot API call, honouring a single 429 ``retry_after``."""
        for attempt in range(2):
            try:
                return await method(**kwargs)
            except tg.TelegramError as exc:
                error = telegram_errors.translate(exc)
                if isinstance(error, ChannelRateLimited) and attempt == 0:
                    await asyncio.sleep(error.retry_after)
                    continue
                raise error from exc
        raise ChannelError("unreachable")  # pragma: no cover

    async def _poll(self, handler: MessageHandler) -> None:
        offset: int | None = None
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                updates = await self._bot.get_updates(
                    offset=offset, timeout=self._poll_timeout, allowed_updates=["message"]
                )
            except tg.TelegramError as exc:
                error = telegram_errors.translate(exc)
                if isinstance(error, ChannelAuthError):
                    log.error("bot %s: %s; polling stopped", self.name, error)
                    self.polling = False
                    return
                delay = error.retry_after if isinstance(error, ChannelRateLimited) else backoff
                log.warning(
                    "bot %s: polling failed (%s); retrying in %.0fs", self.name, error, delay
                )
                self.polling = False
                await self._pause(delay)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            self.polling = True
            backoff = 1.0
            for update in updates:
                await self._deliver(update, handler)
                offset = update.update_id + 1

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _deliver(self, update: Update, handler: MessageHandler) -> None:
        message = update.message
        if message is None or message.text is None or message.from_user is None:
            return
        if message.from_user.is_bot and not self.spec.allow_bots:
            return
        if not self._admitted(message):
            await self._tell_stranger(message)
            return
        if message.chat.type != "private" and not self._addressed(message):
            return
        await handler(
            InboundMessage(
                channel=self.name,
                chat_id=str(message.chat.id),
                sender_id=str(message.from_user.id),
                sender_username=message.from_user.username,
                text=message.text,
                message_id=str(message.message_id),
                topic_id=str(message.message_thread_id) if message.is_topic_message else None,
                chat_type=message.chat.type,
            )
        )

    def _admitted(self, message: Message) -> bool:
        assert message.from_user is not None
        allowed = self.spec.allow_from
        user = message.from_user
        username = f"@{user.username}".lower() if user.username else None
        return (
            "*" in allowed
            or str(user.id) in allowed
            or (username is not None and username in (a.lower() for a in allowed))
        )

    def _addressed(self, message: Message) -> bool:
        policy = self.spec.group_policy
        if policy == "off":
            return False
        if policy == "all":
            return True
        text = message.text or ""
        mention = f"@{self.username}".lower()
        replied = message.reply_to_message
        return mention in text.lower() or (
            replied is not None
            and replied.from_user is not None
            and replied.from_user.id == self._bot.id
        )

    async def _tell_stranger(self, message: Message) -> None:
        assert message.from_user is not None
        sender = str(message.from_user.id)
        if sender in self._strangers_told or message.chat.type != "private":
            return
        self._strangers_told.add(sender)
        log.info("bot %s: refused a message from a stranger", self.name)
        try:
            await self._call(
                self._bot.send_message,
                chat_id=message.chat.id,
                text=f"Sorry, I only talk to people on my list. Your Telegram id is {sender}.",
            )
        except ChannelError as exc:
            log.warning("bot %s: could not answer a stranger: %s", self.name, exc)


def split_text(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Split at paragraph, then line, then hard boundaries; limits count UTF-16 units."""
    chunks: list[str] = []
    rest = text
    while _units(rest) > limit:
        window = _prefix_within(rest, limit)
        cut = max(window.rfind("\n\n"), window.rfind("\n"))
        if cut <= 0:
            cut = len(window)
        chunks.append(rest[:cut])
        rest = rest[cut:].lstrip("\n")
    if rest.strip():
        chunks.append(rest)
    return chunks or [text or "…"]


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, limit: int) -> str:
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text
