"""One Telegram bot as a Channel: python-telegram-bot's ``Bot`` and our own long-poll loop.

We drive ``getUpdates`` ourselves instead of PTB's ``Updater`` because the Updater
confirms an update's offset before our code has stored it. Here every admitted update
is written to the durable inbox first; the next ``getUpdates`` (offset = last + 1) then
confirms it to Telegram. After a crash, pending inbox rows are answered before anything
new, and an update Telegram delivers twice is stored — and answered — once.

Starting is forgiving: only a rejected token is final. Any other failure of getMe,
deleteWebhook or setMyCommands (a 502, a timeout) is retried in the background with
backoff, and ``status()`` says why the bot is not polling meanwhile. Updates are fetched
as raw JSON and parsed one by one, so one that cannot be read is skipped (logged by id,
never by content) instead of wedging the bot on the same offset for ever.

A bot with ``updates: "webhook"`` never calls getUpdates (that would silently delete its
webhook): it registers with the ``WebhookServer`` and calls setWebhook instead, and each
update Telegram POSTs takes the same store-then-hand-over path as a polled one. A polling
bot deletes any webhook at start, so switching a bot back to polling removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from telegram import Bot, BotCommand, Update
from telegram import error as tg
from telegram.constants import ChatAction
from telegram.request import HTTPXRequest

from bot.channels import telegram_errors
from bot.channels.base import (
    Account,
    Channel,
    DeliveryLog,
    InboundMessage,
    Inbox,
    MessageHandler,
)
from bot.channels.telegram_access import (
    BotIdentity,
    NameOnlyAdmissions,
    Verdict,
    judge,
    mentioned_accounts,
    shared_message_id,
    strip_mention,
)
from bot.channels.telegram_media import TelegramFiles, attachments_of
from bot.channels.telegram_pairing import PairingBook, PairingDoor
from bot.channels.telegram_send import TelegramSender
from bot.channels.telegram_strangers import StrangerNotices
from bot.channels.telegram_stream import DraftPreview, EditPreview
from bot.channels.telegram_webhook import WebhookServer
from bot.config.schema import TelegramBot
from bot.errors import (
    ChannelAuthError,
    ChannelError,
    ChannelRateLimited,
    PersonaBridgeError,
)
from bot.media.album import AlbumGatherer
from bot.streaming.preview import KeepPreview, Preview
from bot.tls import client_context
from bot.types import Attachment

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 25
MAX_BACKOFF_S = 30.0
MAX_START_BACKOFF_S = 60.0
TYPING_EVERY_S = 4.0
# An answer within this long needs no typing indicator: most instant replies skip a request.
TYPING_AFTER_S = 0.3
BOT_LOOP_LIMIT = 3  # consecutive bot-authored turns per chat when allow_bots is on
ALLOWED_UPDATES = ["message"]
COMMANDS = (
    BotCommand("start", "say hello"),
    BotCommand("help", "what I can do"),
    BotCommand("new", "start a fresh conversation"),
    BotCommand("status", "agent, models and session size"),
    BotCommand("usage", "tokens you used today and this month"),
    BotCommand("stop", "stop the answer being written"),
)
# A draft's stop button arrives as its own update type (Bot API 10.3).
GENERATION_STOPPED = "stopped_message_generation"


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
        self._inbox = inbox
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
        self._sender = TelegramSender(self._bot, self.name, spec.max_reply_messages)
        files_client = httpx.AsyncClient(follow_redirects=False, verify=client_context())
        self._files = TelegramFiles(self._bot, files_client)
        self._albums: AlbumGatherer | None = None
        self._drafts_refused = False  # latched by the first 400 to a draft, until restart
        self._poller: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._strangers = StrangerNotices(self.name, self._sender.plain)
        self._starter: asyncio.Task[None] | None = None
        self._offset: int | None = None  # next getUpdates offset; confirms what came before
        self._trouble: str | None = None  # why the bot is not polling, for /readyz
        self._rejected = False  # the token was refused: nothing to retry or restart
        self._name_only = NameOnlyAdmissions(self.name, spec.allow_from)
        self._pairing = (
            PairingDoor(self.name, pairing, self._sender.plain, ttl_s=spec.pairing_code_ttl_s)
            if spec.pairing and pairing is not None
            else None
        )
        self._bot_streak: dict[int, int] = {}
        self.me = BotIdentity(0, "")
        self.polling = False
        self.standby = False  # another process polls this bot; this one stands by
        self._handler: MessageHandler | None = None
        self.last_poll_at = time.monotonic()  # start of the latest getUpdates attempt

    async def start(self, handler: MessageHandler) -> None:
        """Raises ``ChannelAuthError`` for a rejected token; other failures retry later."""
        if self.spec.updates == "webhook":
            if self._webhooks is None or not self._webhooks.listening or not self.webhook_url:
                raise ChannelError("the webhook server is not running (see webhook.port)")
            # Registered before setWebhook: Telegram may POST the moment it is set.
            self._webhooks.register(self.spec.id, self)
        try:
            reason = await self._try_connect()
        except ChannelAuthError:
            if self._webhooks is not None:
                self._webhooks.unregister(self.spec.id, self)
            raise
        if reason is not None:
            self._handler = handler
            self._starter = asyncio.create_task(
                self._connect_later(handler, reason), name=f"start {self.name}"
            )
            return
        await self._begin(handler)

    async def _try_connect(self) -> ChannelError | None:
        """None once connected, else why not. A rejected token raises: that is final."""
        try:
            try:
                await self._bot.initialize()  # getMe: fails fast on a rejected token
                if self._webhooks is None:
                    await self._bot.delete_webhook(drop_pending_updates=False)
                await self._bot.set_my_commands(COMMANDS)
                if self._webhooks is not None:
                    self.me = BotIdentity(self._bot.id, self._bot.username)
                    await self._set_webhook()
            except tg.TelegramError as exc:
                raise telegram_errors.translate(exc) from exc
        except ChannelAuthError as exc:
            self._rejected, self._trouble = True, str(exc)
            raise
        except ChannelError as exc:
            return exc
        except Exception as exc:  # not an answer from Telegram: say what, and try again later
            log.exception("bot %s: starting failed unexpectedly", self.name)
            return ChannelError(type(exc).__name__)
        self.me = BotIdentity(self._bot.id, self._bot.username, self._bot.first_name)
        return None

    async def _set_webhook(self) -> None:
        if self.webhook_url is None or self.spec.webhook_secret is None:  # config forbids it
            raise ChannelError("webhook mode without webhook settings")
        await self._bot.set_webhook(
            self.webhook_url,
            secret_token=self.spec.webhook_secret.get_secret_value(),
            allowed_updates=self._wanted(),
            drop_pending_updates=False,
        )

    async def _connect_later(self, handler: MessageHandler, reason: ChannelError) -> None:
        """Retries the start with backoff until it works, the token is refused, or stop()."""
        backoff = 1.0
        while not self._stopping.is_set():
            self._trouble = str(reason)
            delay = backoff
            if isinstance(reason, ChannelRateLimited):
                delay = max(delay, reason.retry_after)
            log.warning("bot %s not started yet (%s); retry in %.0fs", self.name, reason, delay)
            await self._pause(delay)
            if self._stopping.is_set():
                return
            try:
                retried = await self._try_connect()
            except ChannelAuthError as exc:
                log.error("channel %s not started: %s", self.name, exc)
                return
            if retried is None:
                try:
                    await self._begin(handler)
                except Exception as exc:  # the store, most likely: the supervisor retries
                    log.exception("bot %s: connected but could not begin polling", self.name)
                    self._trouble = type(exc).__name__
                return
            reason, backoff = retried, min(backoff * 2, MAX_START_BACKOFF_S)

    async def _begin(self, handler: MessageHandler) -> None:
        """Connected: answer what was left pending, then poll."""
        self._trouble = None
        if not self.spec.allow_from and not self.spec.pairing:
            log.warning("bot @%s: allow_from is empty, nobody is admitted", self.me.username)
        # Updates stored before a restart are replayed by the app (bot.lifecycle), once per
        # process: a reload that restarts this bot must not answer them again.
        self._handler = handler
        self._albums = AlbumGatherer(handler)
        if self._webhooks is not None:
            self.polling = True  # receiving: the webhook is set and the server serves it
            log.info("bot @%s receives by webhook as channel %s", self.me.username, self.name)
            return
        self._poller = asyncio.create_task(self._poll_forever(handler), name=f"poll {self.name}")
        log.info("bot @%s polling as channel %s", self.me.username, self.name)

    def stalled(self, now: float) -> bool:
        """No getUpdates attempt for longer than one long poll, its timeout and a backoff."""
        limit = self._poll_timeout + 10.0 + MAX_BACKOFF_S + 15.0
        alive = self._poller is not None and not self._poller.done()
        starting = self._starter is not None and not self._starter.done()
        if self._webhooks is not None:
            return False  # nothing polls: Telegram pushes, and retries what we refuse
        if self._stopping.is_set() or starting or self._rejected:
            return False  # nothing to restart: not begun yet, or the token was refused
        if self.standby and alive:
            return False  # waiting for its turn to poll (another process polls)
        return not alive or now - self.last_poll_at > limit

    async def restart_polling(self) -> None:
        """The supervisor's remedy for a stalled or dead poller: start a fresh one."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._handler is not None and not self._stopping.is_set() and self._webhooks is None:
            log.warning("bot %s: polling stalled; restarted it", self.name)
            self.last_poll_at = time.monotonic()
            self._poller = asyncio.create_task(
                self._poll_forever(self._handler), name=f"poll {self.name}"
            )

    async def stop(self) -> None:
        """Stops receiving. A webhook stays set: Telegram keeps the updates until the next
        start (or another process behind the same URL) takes them; until ``close`` a POST
        for this bot gets a 503, which Telegram retries."""
        self._stopping.set()
        for task in (self._starter, self._poller):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._strangers.close()
        if self._pairing is not None:
            await self._pairing.close()
        self.polling = False
        if self._albums is not None:  # stored parts still gathering: answer them now
            await self._albums.flush()

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
        await self._sender.reply(int(chat_id), text, thread, delivery, preview)

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
        async def keep_typing() -> None:
            await asyncio.sleep(TYPING_AFTER_S)
            while True:
                with contextlib.suppress(tg.TelegramError):
                    await self._bot.send_chat_action(
                        int(chat_id),
                        ChatAction.TYPING,
                        message_thread_id=int(topic_id) if topic_id else None,
                    )
                await asyncio.sleep(TYPING_EVERY_S)  # Telegram shows it for ~5 s

        task = asyncio.create_task(keep_typing())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _poll_forever(self, handler: MessageHandler) -> None:
        """Polls until stopped (once this process is the bot's poller; SPEC §14); an
        unexpected crash of the loop restarts it after a pause."""
        self.standby = True
        async with self._inbox.poll_turn(self.name, self._stopping) as elected:
            self.standby = False
            if elected:
                await self._poll_elected(handler)

    async def _poll_elected(self, handler: MessageHandler) -> None:
        while not self._stopping.is_set():
            try:
                await self._poll(handler)
            except ChannelAuthError:
                return
            except Exception:
                log.exception("bot %s: polling loop crashed; restarting", self.name)
                self.polling = False
                await self._pause(MAX_BACKOFF_S / 6)

    async def _poll(self, handler: MessageHandler) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            self.last_poll_at = time.monotonic()
            if backoff == 1.0:
                self.polling = True  # a long poll is (about to be) open
            try:
                batch = await self._fetch_updates()
            except tg.TelegramError as exc:
                error = telegram_errors.translate(exc)
                self.polling = False
                if isinstance(error, ChannelAuthError):
                    log.error("bot %s: %s; polling stopped", self.name, error)
                    self._rejected, self._trouble = True, str(error)
                    raise error from exc
                delay = error.retry_after if isinstance(error, ChannelRateLimited) else backoff
                log.warning("bot %s: polling failed (%s); retry in %.0fs", self.name, error, delay)
                self._trouble = str(error)
                await self._pause(delay)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            self.polling, self._trouble = True, None
            backoff = 1.0
            for raw in batch:
                update_id = raw.get("update_id") if isinstance(raw, dict) else None
                if type(update_id) is not int:
                    log.warning("bot %s: an update without an update_id skipped", self.name)
                    continue
                await self._take(raw, update_id, handler)
                self._offset = update_id + 1  # confirmed by the next getUpdates

    async def _fetch_updates(self) -> list[Any]:
        """getUpdates as raw JSON, so one update PTB cannot read cannot fail the batch."""
        params: dict[str, Any] = {"timeout": self._poll_timeout, "allowed_updates": self._wanted()}
        if self._offset is not None:
            params["offset"] = self._offset
        # Bot.get_updates would parse the whole batch at once (and log it, content and
        # all, when that fails); _post is the same call minus that parsing.
        result = await self._bot._post("getUpdates", params, read_timeout=self._poll_timeout + 10.0)
        if not isinstance(result, list):
            raise tg.TelegramError("getUpdates answered something other than a list")
        return result

    async def _take(self, raw: dict[str, Any], update_id: int, handler: MessageHandler) -> None:
        try:
            await self._accept(self._parsed(raw), handler)
        except PersonaBridgeError:
            raise  # the store or Telegram, not this update: polled again from its offset
        except Exception as exc:  # whatever the payload, never log its content
            log.warning(
                "bot %s: update %d skipped: it cannot be read (%s)",
                self.name,
                update_id,
                type(exc).__name__,
            )

    # --- webhook mode (the WebhookBot of bot.channels.telegram_webhook) --------------

    def webhook_secret(self) -> bytes:
        secret = self.spec.webhook_secret
        return secret.get_secret_value().encode() if secret is not None else b""

    def accepting(self) -> bool:
        """Connected (the identity known for the access rules) and not stopping."""
        return self._handler is not None and bool(self.me.id) and not self._stopping.is_set()

    async def receive(self, raw: dict[str, Any], update_id: int) -> None:
        """One POSTed update, stored (or skipped) exactly as a polled one; never its turn.

        The lock only orders the inbox writes of concurrent requests, so the chat lanes get
        updates in the order they were stored; the turn runs later, in the lane."""
        handler = self._handler
        if handler is None:
            raise ChannelError("not connected yet")
        async with self._accepting:
            await self._take(raw, update_id, handler)

    def _parsed(self, raw: dict[str, Any]) -> Update:
        """The update, with every field the bridge relies on checked to be usable."""
        update = Update.de_json(raw, self._bot)
        message = update.message
        if message is not None:
            if type(message.chat.id) is not int or not isinstance(message.chat.type, str):
                raise ValueError("chat")
            message.date.timestamp()
            update.to_dict()  # stored as the inbox payload
        return update

    def _wanted(self) -> list[str]:
        """The update types we ask for; a draft's stop button only where drafts are used."""
        if self.spec.streaming == "draft":
            return [*ALLOWED_UPDATES, GENERATION_STOPPED]
        return list(ALLOWED_UPDATES)

    async def _accept(self, update: Update, handler: MessageHandler) -> None:
        message = update.message
        if message is None:
            await self._generation_stopped(update, handler)
            return
        if message.migrate_to_chat_id is not None:
            log.info(
                "bot %s: group %s became supergroup %s",
                self.name,
                message.chat.id,
                message.migrate_to_chat_id,
            )
            await handler(
                InboundMessage(
                    channel=self.name,
                    chat_id=str(message.chat.id),
                    sender_id="",
                    text="",
                    moved_to=str(message.migrate_to_chat_id),
                )
            )
            return
        verdict = judge(message, self.spec, self.me)
        user = message.from_user
        if verdict is Verdict.STRANGER and user is not None:
            if self._pairing is None or not await self._pairing.approved(user.id):
                if self._pairing is not None and message.chat.type == "private":
                    self._pairing.offer(message.chat.id, user.id, user.username)
                else:
                    self._strangers.refused(message.chat.id, message.chat.type, user.id)
                return
            # Approved by an admin: admitted like an allow_from entry.
        elif verdict is Verdict.ANSWER and user is not None:
            self._name_only.admitted(user.id, user.username)
        if verdict is Verdict.IGNORE or not self._within_bot_loop_limit(update):
            return
        inbound = self._inbound(update)
        if inbound is None:
            return  # nothing we answer: not stored, so never pending
        payload = json.dumps(update.to_dict(), ensure_ascii=False)
        stored = await self._inbox.inbox_put(
            self.name, update.update_id, payload, chat_id=inbound.chat_id, topic_id=inbound.topic_id
        )
        if stored:  # else delivered before: stored then, answered then (or pending)
            await (self._albums.deliver if self._albums else handler)(inbound)

    async def _generation_stopped(self, update: Update, handler: MessageHandler) -> None:
        """The stop button of a draft: handled like /stop, never stored (a crash loses
        only the stop, and the turn it would stop is answered again anyway)."""
        stopped = update.api_kwargs.get(GENERATION_STOPPED)
        if not isinstance(stopped, dict) or not isinstance(stopped.get("chat"), dict):
            return
        chat_id = stopped["chat"].get("id")
        if not isinstance(chat_id, int):
            return
        thread = stopped.get("message_thread_id")
        await handler(
            InboundMessage(
                channel=self.name,
                chat_id=str(chat_id),
                sender_id=str(chat_id),
                text="/stop",
                topic_id=str(thread) if isinstance(thread, int) else None,
                generation_stopped=True,
            )
        )

    def _within_bot_loop_limit(self, update: Update) -> bool:
        message = update.message
        if message is None or message.from_user is None:
            return False
        chat = message.chat.id
        if not message.from_user.is_bot:
            self._bot_streak.pop(chat, None)
            return True
        self._bot_streak[chat] = self._bot_streak.get(chat, 0) + 1
        if self._bot_streak[chat] > BOT_LOOP_LIMIT:
            log.warning("bot %s: chat %s bot-to-bot loop guard tripped", self.name, chat)
            return False
        return True

    def restore(self, payload: str) -> InboundMessage | None:
        return self._inbound(Update.de_json(json.loads(payload), self._bot))

    def _inbound(self, update: Update) -> InboundMessage | None:
        message = update.message
        if message is None or message.from_user is None:
            return None
        replied = message.reply_to_message
        text = message.text if message.text is not None else message.caption
        attachments = attachments_of(message) if message.text is None else ()
        if text is None and not attachments:
            return None
        if_named = judge(message, self.spec, self.me) is Verdict.IF_NAMED
        return InboundMessage(
            channel=self.name,
            chat_id=str(message.chat.id),
            sender_id=str(message.from_user.id),
            sender_username=message.from_user.username,
            text=strip_mention(text, self.me) if text else "",
            message_id=str(message.message_id),
            topic_id=str(message.message_thread_id) if message.is_topic_message else None,
            chat_type=message.chat.type,
            inbox_id=update.update_id,
            shared_id=shared_message_id(message),
            mentions=mentioned_accounts(text or ""),
            reply_to_user=(
                str(replied.from_user.id) if replied and replied.from_user is not None else None
            ),
            attachments=attachments,
            voice_must_name=self.me.spoken_names() if if_named else (),
        )

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def account(self) -> Account | None:
        return Account(str(self.me.id), self.me.username) if self.me.id else None

    def status(self) -> dict[str, object]:
        """``polling`` is the readiness flag of both modes: for a webhook bot, set once
        setWebhook succeeded."""
        state: dict[str, object] = {"polling": self.polling, "username": self.me.username}
        state["mode"] = "polling" if self._webhooks is None else "webhook"
        if self.standby:
            state["standby"] = True  # another process polls this bot (SPEC §14)
        if not self.polling and not self.standby and self._trouble:
            state["error"] = self._trouble
        return state
