"""Connecting one bot to Telegram, and retrying in the background until it works.

Starting is forgiving: only a rejected token is final. Any other failure of getMe,
deleteWebhook, setMyCommands or setWebhook (a 502, a timeout) is retried with backoff
while the rest of the bridge runs, and ``Reception.trouble`` says why the bot is not
receiving meanwhile. A polling bot deletes any webhook here, so switching a bot back to
polling removes it; a webhook bot sets its webhook here instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from telegram import Bot, BotCommand
from telegram import error as tg

from bot.channels import telegram_errors
from bot.channels.base import MessageHandler
from bot.channels.telegram_access import BotIdentity
from bot.channels.telegram_intake import wanted_updates
from bot.channels.telegram_state import Reception
from bot.config.schema import TelegramBot
from bot.errors import ChannelAuthError, ChannelError, ChannelRateLimited

# One logger for every part of a bot, so its journal lines read as before the split.
log = logging.getLogger("bot.channels.telegram")

MAX_START_BACKOFF_S = 60.0
COMMANDS = (
    BotCommand("start", "say hello"),
    BotCommand("help", "what I can do"),
    BotCommand("new", "start a fresh conversation"),
    BotCommand("status", "agent, models and session size"),
    BotCommand("usage", "tokens you used today and this month"),
    BotCommand("stop", "stop the answer being written"),
)


class TelegramConnector:
    def __init__(
        self,
        spec: TelegramBot,
        bot: Bot,
        reception: Reception,
        *,
        webhook: bool,
        webhook_url: str | None,
    ) -> None:
        self.name = spec.channel
        self.spec = spec
        self._bot = bot
        self._reception = reception
        self._webhook = webhook  # receives by webhook; else it polls
        self._webhook_url = webhook_url

    async def try_connect(self) -> ChannelError | None:
        """None once connected, else why not. A rejected token raises: that is final."""
        state = self._reception
        try:
            try:
                await self._bot.initialize()  # getMe: fails fast on a rejected token
                if not self._webhook:
                    await self._bot.delete_webhook(drop_pending_updates=False)
                await self._bot.set_my_commands(COMMANDS)
                if self._webhook:
                    # Known before setWebhook: Telegram may POST the moment it is set.
                    state.me = BotIdentity(self._bot.id, self._bot.username)
                    await self._set_webhook()
            except tg.TelegramError as exc:
                raise telegram_errors.translate(exc) from exc
        except ChannelAuthError as exc:
            state.rejected, state.trouble = True, str(exc)
            raise
        except ChannelError as exc:
            return exc
        except Exception as exc:  # not an answer from Telegram: say what, and try again later
            log.exception("bot %s: starting failed unexpectedly", self.name)
            return ChannelError(type(exc).__name__)
        state.me = BotIdentity(self._bot.id, self._bot.username, self._bot.first_name)
        return None

    async def _set_webhook(self) -> None:
        if self._webhook_url is None or self.spec.webhook_secret is None:  # config forbids it
            raise ChannelError("webhook mode without webhook settings")
        await self._bot.set_webhook(
            self._webhook_url,
            secret_token=self.spec.webhook_secret.get_secret_value(),
            allowed_updates=wanted_updates(self.spec),
            drop_pending_updates=False,
        )

    async def connect_later(
        self,
        handler: MessageHandler,
        reason: ChannelError,
        *,
        begin: Callable[[MessageHandler], Awaitable[None]],
    ) -> None:
        """Retries the start with backoff until it works, the token is refused, or stop()."""
        state = self._reception
        backoff = 1.0
        while not state.stopping.is_set():
            state.trouble = str(reason)
            delay = backoff
            if isinstance(reason, ChannelRateLimited):
                delay = max(delay, reason.retry_after)
            log.warning("bot %s not started yet (%s); retry in %.0fs", self.name, reason, delay)
            await state.pause(delay)
            if state.stopping.is_set():
                return
            try:
                retried = await self.try_connect()
            except ChannelAuthError as exc:
                log.error("channel %s not started: %s", self.name, exc)
                return
            if retried is None:
                try:
                    await begin(handler)
                except Exception as exc:  # the store, most likely: the supervisor retries
                    log.exception("bot %s: connected but could not begin polling", self.name)
                    state.trouble = type(exc).__name__
                return
            reason, backoff = retried, min(backoff * 2, MAX_START_BACKOFF_S)
