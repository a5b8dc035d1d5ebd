"""The getUpdates long-poll loop of one bot, driven by us instead of PTB's ``Updater``.

The Updater confirms an update's offset before our code has stored it. Here each update
is handed to the intake (stored in the durable inbox first); only the next getUpdates
(offset = last + 1) confirms it to Telegram, so a crash loses nothing and an update
delivered twice is stored — and answered — once. Updates are fetched as raw JSON and
parsed one by one, so one that cannot be read is skipped instead of wedging the bot on
the same offset for ever. Only the process elected as the bot's poller polls (SPEC §14).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Bot
from telegram import error as tg

from bot.channels import telegram_errors
from bot.channels.base import Inbox, MessageHandler
from bot.channels.telegram_state import Reception
from bot.errors import ChannelAuthError, ChannelRateLimited

# One logger for every part of a bot, so its journal lines read as before the split.
log = logging.getLogger("bot.channels.telegram")

POLL_TIMEOUT_S = 25
MAX_BACKOFF_S = 30.0

Take = Callable[[dict[str, Any], int, MessageHandler], Awaitable[None]]


class UpdatePoller:
    def __init__(
        self,
        name: str,
        bot: Bot,
        inbox: Inbox,
        reception: Reception,
        *,
        poll_timeout: int,
        wanted: Callable[[], list[str]],
        take: Take,
    ) -> None:
        self.name = name
        self._bot = bot
        self._inbox = inbox
        self._reception = reception
        self.poll_timeout = poll_timeout
        self._wanted = wanted
        self._take = take
        self._offset: int | None = None  # next getUpdates offset; confirms what came before

    async def poll_forever(self, handler: MessageHandler) -> None:
        """Polls until stopped (once this process is the bot's poller; SPEC §14); an
        unexpected crash of the loop restarts it after a pause."""
        state = self._reception
        state.standby = True
        async with self._inbox.poll_turn(self.name, state.stopping) as elected:
            state.standby = False
            if elected:
                await self._poll_elected(handler)

    async def _poll_elected(self, handler: MessageHandler) -> None:
        state = self._reception
        while not state.stopping.is_set():
            try:
                await self._poll(handler)
            except ChannelAuthError:
                return
            except Exception:
                log.exception("bot %s: polling loop crashed; restarting", self.name)
                state.polling = False
                await state.pause(MAX_BACKOFF_S / 6)

    async def _poll(self, handler: MessageHandler) -> None:
        state = self._reception
        backoff = 1.0
        while not state.stopping.is_set():
            state.last_poll_at = time.monotonic()
            if backoff == 1.0:
                state.polling = True  # a long poll is (about to be) open
            try:
                batch = await self._fetch_updates()
            except tg.TelegramError as exc:
                error = telegram_errors.translate(exc)
                state.polling = False
                if isinstance(error, ChannelAuthError):
                    log.error("bot %s: %s; polling stopped", self.name, error)
                    state.rejected, state.trouble = True, str(error)
                    raise error from exc
                delay = error.retry_after if isinstance(error, ChannelRateLimited) else backoff
                log.warning("bot %s: polling failed (%s); retry in %.0fs", self.name, error, delay)
                state.trouble = str(error)
                await state.pause(delay)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            state.polling, state.trouble = True, None
            backoff = 1.0
            for raw in batch:
                update_id = raw.get("update_id") if isinstance(raw, dict) else None
                if type(update_id) is not int:
                    log.warning("bot %s: an update without an update_id skipped", self.name)
                    continue
                # Shielded: a stop (a reload restarting this bot) that cancels the poller
                # must not leave an update stored and claimed by this process but handed
                # to no lane; the stop waits for nothing, the hand-over still happens.
                await asyncio.shield(self._take(raw, update_id, handler))
                self._offset = update_id + 1  # confirmed by the next getUpdates

    async def _fetch_updates(self) -> list[Any]:
        """getUpdates as raw JSON, so one update PTB cannot read cannot fail the batch."""
        params: dict[str, Any] = {"timeout": self.poll_timeout, "allowed_updates": self._wanted()}
        if self._offset is not None:
            params["offset"] = self._offset
        # Bot.get_updates would parse the whole batch at once (and log it, content and
        # all, when that fails); _post is the same call minus that parsing.
        result = await self._bot._post("getUpdates", params, read_timeout=self.poll_timeout + 10.0)
        if not isinstance(result, list):
            raise tg.TelegramError("getUpdates answered something other than a list")
        return result
