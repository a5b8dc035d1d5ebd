"""One Telegram bot as a Channel: the seam the app talks to, composed of small parts.

Each part has its own module, and this class only wires them together and answers the
``Channel`` calls: telegram_connect (getMe, commands and webhook, retried in the
background), telegram_poll (the getUpdates loop that confirms an update only after it is
stored), telegram_intake (what one raw update becomes: skipped, refused, or stored and
handed over), telegram_send, telegram_stream and telegram_typing (replies, previews and
the typing indicator), and telegram_state (how receiving stands, for ``status()`` and the
supervisor).

A bot with ``updates: "webhook"`` never calls getUpdates (that would silently delete its
webhook): it registers with the ``WebhookServer`` and calls setWebhook instead, and each
update Telegram POSTs takes the same store-then-hand-over path as a polled one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from telegram import Bot
from telegram.request import HTTPXRequest

from bot.channels.base import (
    Account,
    Channel,
    DeliveryLog,
    InboundMessage,
    Inbox,
    MessageHandler,
)
from bot.channels.telegram_access import BotIdentity
from bot.channels.telegram_connect import COMMANDS, TelegramConnector
from bot.channels.telegram_intake import (
    ALLOWED_UPDATES,
    BOT_LOOP_LIMIT,
    GENERATION_STOPPED,
    TelegramIntake,
    wanted_updates,
)
from bot.channels.telegram_media import TelegramFiles
from bot.channels.telegram_pairing import PairingBook
from bot.channels.telegram_poll import MAX_BACKOFF_S, POLL_TIMEOUT_S, UpdatePoller
from bot.channels.telegram_send import TelegramSender
from bot.channels.telegram_state import Reception
from bot.channels.telegram_stream import DraftPreview, EditPreview
from bot.channels.telegram_typing import TYPING_AFTER_S, TYPING_EVERY_S, typing_in
from bot.channels.telegram_webhook import WebhookServer
from bot.config.schema import TelegramBot
from bot.errors import ChannelAuthError, ChannelError
from bot.media.album import AlbumGatherer
from bot.streaming.pacing import BotPacer
from bot.streaming.preview import KeepPreview, Preview
from bot.tls import client_context
from bot.types import Attachment

log = logging.getLogger(__name__)

# Still importable from here, where callers and tests found them before the split.
__all__ = [
    "ALLOWED_UPDATES",
    "BOT_LOOP_LIMIT",
    "COMMANDS",
    "GENERATION_STOPPED",
    "MAX_BACKOFF_S",
    "POLL_TIMEOUT_S",
    "TYPING_AFTER_S",
    "TYPING_EVERY_S",
    "TelegramChannel",
    "shared_tls",
]


def shared_tls() -> dict[str, Any]:
    return {"verify": client_context()}


class TelegramChannel(Channel):
    def __init__(
        self,
        spec: TelegramBot,
        inbox: Inbox,
        *,
        poll_timeout: int = POLL_TIMEOUT_S,
        pairing: PairingBook | None = None,
        webhooks: WebhookServer | None = None,
    ) -> None:
        self.name = spec.channel
        self.spec = spec
        self._webhooks = webhooks if spec.updates == "webhook" else None
        public_url = self._webhooks.public_url if self._webhooks is not None else None
        # Where Telegram is told to POST; a reload that changes it restarts the bot.
        self.webhook_url = f"{public_url}/{spec.id}" if public_url else None
        self._accepting = asyncio.Lock()  # webhook requests store in arrival order
        self._poll_timeout = poll_timeout
        self._bot = Bot(
            spec.token.get_secret_value(),
            base_url=f"{spec.api_base}/bot",
            base_file_url=f"{spec.api_base}/file/bot",
            request=HTTPXRequest(
                connection_pool_size=16, read_timeout=30.0, httpx_kwargs=shared_tls()
            ),
            get_updates_request=HTTPXRequest(
                read_timeout=poll_timeout + 10.0, httpx_kwargs=shared_tls()
            ),
        )
        self._sender = TelegramSender(
            self._bot, self.name, spec.max_reply_messages, BotPacer.at(spec.messages_per_second)
        )
        files_client = httpx.AsyncClient(follow_redirects=False, verify=client_context())
        self._files = TelegramFiles(self._bot, files_client)
        self._drafts_refused = False  # latched by the first 400 to a draft, until restart
        self._preview_html: dict[int, str] = {}  # preview message id → what it shows now
        self._state = Reception()
        self._intake = TelegramIntake(
            spec, self._bot, inbox, self._state, plain=self._sender.plain, pairing=pairing
        )
        self._connector = TelegramConnector(
            spec,
            self._bot,
            self._state,
            webhook=self._webhooks is not None,
            webhook_url=self.webhook_url,
        )
        self._updates = UpdatePoller(
            self.name,
            self._bot,
            inbox,
            self._state,
            poll_timeout=poll_timeout,
            wanted=lambda: wanted_updates(spec),
            take=self._intake.take,
        )
        self._poller: asyncio.Task[None] | None = None
        self._starter: asyncio.Task[None] | None = None
        self._handler: MessageHandler | None = None

    # How receiving stands: kept in the shared Reception, read here as before.

    @property
    def me(self) -> BotIdentity:
        return self._state.me

    @property
    def polling(self) -> bool:
        return self._state.polling

    @property
    def standby(self) -> bool:
        """Another process polls this bot; this one stands by."""
        return self._state.standby

    @property
    def last_poll_at(self) -> float:
        """When the latest getUpdates attempt started."""
        return self._state.last_poll_at

    async def start(self, handler: MessageHandler) -> None:
        """Raises ``ChannelAuthError`` for a rejected token; other failures retry later."""
        if self.spec.updates == "webhook":
            if self._webhooks is None or not self._webhooks.listening or not self.webhook_url:
                raise ChannelError("the webhook server is not running (see webhook.port)")
            # Registered before setWebhook: Telegram may POST the moment it is set.
            self._webhooks.register(self.spec.id, self)
        try:
            reason = await self._connector.try_connect()
        except ChannelAuthError:
            if self._webhooks is not None:
                self._webhooks.unregister(self.spec.id, self)
            raise
        if reason is not None:
            self._handler = handler
            self._starter = asyncio.create_task(
                self._connector.connect_later(handler, reason, begin=self._begin),
                name=f"start {self.name}",
            )
            return
        await self._begin(handler)

    async def _begin(self, handler: MessageHandler) -> None:
        """Connected: answer what was left pending, then poll."""
        self._state.trouble = None
        if not self.spec.allow_from and not self.spec.pairing:
            log.warning("bot @%s: allow_from is empty, nobody is admitted", self.me.username)
        # Updates stored before a restart are replayed by the app (bot.lifecycle), once per
        # process: a reload that restarts this bot must not answer them again.
        self._handler = handler
        self._intake.albums = AlbumGatherer(handler)
        if self._webhooks is not None:
            self._state.polling = True  # receiving: the webhook is set and the server serves it
            log.info("bot @%s receives by webhook as channel %s", self.me.username, self.name)
            return
        self._poller = asyncio.create_task(
            self._updates.poll_forever(handler), name=f"poll {self.name}"
        )
        log.info("bot @%s polling as channel %s", self.me.username, self.name)

    def stalled(self, now: float) -> bool:
        """No getUpdates attempt for longer than one long poll, its timeout and a backoff."""
        state = self._state
        limit = self._poll_timeout + 10.0 + MAX_BACKOFF_S + 15.0
        alive = self._poller is not None and not self._poller.done()
        starting = self._starter is not None and not self._starter.done()
        if self._webhooks is not None:
            return False  # nothing polls: Telegram pushes, and retries what we refuse
        if state.stopping.is_set() or starting or state.rejected:
            return False  # nothing to restart: not begun yet, or the token was refused
        if state.standby and alive:
            return False  # waiting for its turn to poll (another process polls)
        return not alive or now - state.last_poll_at > limit

    async def restart_polling(self) -> None:
        """The supervisor's remedy for a stalled or dead poller: start a fresh one."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        stopping = self._state.stopping.is_set()
        if self._handler is not None and not stopping and self._webhooks is None:
            log.warning("bot %s: polling stalled; restarted it", self.name)
            self._state.last_poll_at = time.monotonic()
            self._poller = asyncio.create_task(
                self._updates.poll_forever(self._handler), name=f"poll {self.name}"
            )

    async def stop(self) -> None:
        """Stops receiving. A webhook stays set: Telegram keeps the updates until the next
        start (or another process behind the same URL) takes them; until ``close`` a POST
        for this bot gets a 503, which Telegram retries."""
        self._state.stopping.set()
        for task in (self._starter, self._poller):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._intake.close()
        self._state.polling = False
        albums = self._intake.albums
        if albums is not None:  # stored parts still gathering: answer them now
            await albums.flush()

    async def close(self) -> None:
        """Release the HTTP pools; after the last reply has been sent."""
        if self._webhooks is not None:
            self._webhooks.unregister(self.spec.id, self)
        await self._bot.shutdown()
        await self._files.aclose()

    async def download(self, attachment: Attachment, max_bytes: int) -> bytes:
        return await self._files.download(attachment, max_bytes)

    async def send(
        self,
        chat_id: str,
        text: str,
        *,
        topic_id: str | None = None,
        delivery: DeliveryLog | None = None,
        replace: str | None = None,
    ) -> None:
        thread = int(topic_id) if topic_id else None
        preview = int(replace) if replace else None
        shows = self._preview_html.pop(preview, None) if preview is not None else None
        await self._sender.reply(int(chat_id), text, thread, delivery, preview, shows)

    def preview(
        self,
        chat_id: str,
        topic_id: str | None,
        chat_type: str,
        *,
        message_id: str | None = None,
        keep: KeepPreview | None = None,
    ) -> Preview | None:
        mode = self.spec.streaming
        if mode == "off":
            return None
        chat, thread = int(chat_id), int(topic_id) if topic_id else None
        interval = self.spec.stream_interval_s

        def edits() -> EditPreview:
            return EditPreview(
                self._bot,
                self._sender.pacer,
                chat,
                thread,
                interval_s=interval,
                name=self.name,
                message_id=int(message_id) if message_id else None,
                keep=keep,
                shown=self._preview_html,
            )

        # Drafts exist in private chats only; a preview left by a crash is edited instead.
        drafts = mode == "draft" and chat_type == "private" and not self._drafts_refused
        if drafts and message_id is None:
            return DraftPreview(
                self._bot,
                self._sender.pacer,
                chat,
                thread,
                interval_s=interval,
                name=self.name,
                refused=self._refuse_drafts,
                fallback=edits,
            )
        return edits()

    def _refuse_drafts(self) -> None:
        self._drafts_refused = True

    @contextlib.asynccontextmanager
    async def typing(self, chat_id: str, topic_id: str | None = None) -> AsyncIterator[None]:
        async with typing_in(self._bot, chat_id, topic_id):
            yield

    # --- webhook mode (the WebhookBot of bot.channels.telegram_webhook) --------------

    def webhook_secret(self) -> bytes:
        secret = self.spec.webhook_secret
        return secret.get_secret_value().encode() if secret is not None else b""

    def accepting(self) -> bool:
        """Connected (the identity known for the access rules) and not stopping."""
        stopping = self._state.stopping.is_set()
        return self._handler is not None and bool(self.me.id) and not stopping

    async def receive(self, raw: dict[str, Any], update_id: int) -> None:
        """One POSTed update, stored (or skipped) exactly as a polled one; never its turn.

        The lock only orders the inbox writes of concurrent requests, so the chat lanes get
        updates in the order they were stored; the turn runs later, in the lane."""
        handler = self._handler
        if handler is None:
            raise ChannelError("not connected yet")
        async with self._accepting:
            await self._intake.take(raw, update_id, handler)

    def restore(self, payload: str) -> InboundMessage | None:
        return self._intake.restore(payload)

    def account(self) -> Account | None:
        return Account(str(self.me.id), self.me.username) if self.me.id else None

    def status(self) -> dict[str, object]:
        """``polling`` is the readiness flag of both modes: for a webhook bot, set once
        setWebhook succeeded."""
        state: dict[str, object] = {"polling": self.polling, "username": self.me.username}
        state["mode"] = "polling" if self._webhooks is None else "webhook"
        if self.standby:
            state["standby"] = True  # another process polls this bot (SPEC §14)
        if not self.polling and not self.standby and self._state.trouble:
            state["error"] = self._state.trouble
        return state
