"""Short, read-only questions to the Bot API for ``init`` and ``doctor``.

Nothing here changes the bot: no offsets are confirmed (``getUpdates`` without
``offset``), no webhook is touched, no commands are set. Errors come back as
``bot.errors.ChannelError`` through the channel's one translation point.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from telegram import Bot
from telegram import error as tg
from telegram.request import HTTPXRequest

from bot.channels import telegram_errors
from bot.config.schema import DEFAULT_TELEGRAM_API_BASE


@dataclass(frozen=True)
class BotInfo:
    id: int
    username: str
    first_name: str


@dataclass(frozen=True)
class Sender:
    """Someone who wrote to the bot: what ``init`` offers for ``allow_from``."""

    id: int
    username: str
    first_name: str

    def describe(self) -> str:
        name = f" (@{self.username})" if self.username else f" ({self.first_name})"
        return f"{self.id}{name}"


class TelegramProbe:
    """One bot token against one Bot API server; use as ``async with``."""

    def __init__(self, token: str, api_base: str = DEFAULT_TELEGRAM_API_BASE) -> None:
        api_base = api_base.rstrip("/")
        self._bot = Bot(
            token,
            base_url=f"{api_base}/bot",
            base_file_url=f"{api_base}/file/bot",
            request=HTTPXRequest(connect_timeout=10.0, read_timeout=15.0),
        )

    async def __aenter__(self) -> TelegramProbe:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._bot.shutdown()

    async def get_me(self) -> BotInfo:
        try:
            user = await self._bot.get_me()
        except tg.TelegramError as exc:
            raise telegram_errors.translate(exc) from exc
        return BotInfo(user.id, user.username or "", user.first_name)

    async def webhook_url(self) -> str:
        """The webhook Telegram has for this bot; empty when none (polling can work)."""
        try:
            info = await self._bot.get_webhook_info()
        except tg.TelegramError as exc:
            raise telegram_errors.translate(exc) from exc
        return info.url or ""

    async def recent_senders(self) -> list[Sender]:
        """Who wrote to the bot lately, read without confirming anything (no ``offset``)."""
        try:
            updates = await self._bot.get_updates(timeout=0, limit=100)
        except tg.TelegramError as exc:
            raise telegram_errors.translate(exc) from exc
        seen: dict[int, Sender] = {}
        for update in updates:
            message = update.effective_message
            user = message.from_user if message is not None else None
            if user is None or user.is_bot:
                continue
            seen[user.id] = Sender(user.id, user.username or "", user.first_name)
        return list(seen.values())
