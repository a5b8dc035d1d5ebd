"""What one raw Telegram update becomes: skipped, refused, or stored and handed over.

Polling and the webhook both end here, so an update takes the same path however it came:
parsed (one that cannot be read is skipped, logged by id, never by content), judged by the
access rules (strangers, pairing, name-only admissions, the bot-to-bot loop guard), written
to the durable inbox, and only then handed to the chat's lane. ``inbound`` is also how a
stored payload is read back after a restart, so what is stored and what is answered agree.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from telegram import Bot, Update

from bot.channels.base import InboundMessage, Inbox, MessageHandler
from bot.channels.telegram_access import (
    NameOnlyAdmissions,
    Verdict,
    judge,
    mentioned_accounts,
    shared_message_id,
    strip_mention,
)
from bot.channels.telegram_media import attachments_of
from bot.channels.telegram_pairing import PairingBook, PairingDoor
from bot.channels.telegram_state import Reception
from bot.channels.telegram_strangers import Notify, StrangerNotices
from bot.config.schema import TelegramBot
from bot.errors import PersonaBridgeError
from bot.media.album import AlbumGatherer

# One logger for every part of a bot, so its journal lines read as before the split.
log = logging.getLogger("bot.channels.telegram")

BOT_LOOP_LIMIT = 3  # consecutive bot-authored turns per chat when allow_bots is on
ALLOWED_UPDATES = ["message"]
# A draft's stop button arrives as its own update type (Bot API 10.3).
GENERATION_STOPPED = "stopped_message_generation"


def wanted_updates(spec: TelegramBot) -> list[str]:
    """The update types we ask for; a draft's stop button only where drafts are used."""
    if spec.streaming == "draft":
        return [*ALLOWED_UPDATES, GENERATION_STOPPED]
    return list(ALLOWED_UPDATES)


class TelegramIntake:
    def __init__(
        self,
        spec: TelegramBot,
        bot: Bot,
        inbox: Inbox,
        reception: Reception,
        *,
        plain: Notify,
        pairing: PairingBook | None,
    ) -> None:
        self.name = spec.channel
        self.spec = spec
        self._bot = bot
        self._inbox = inbox
        self._reception = reception
        self.albums: AlbumGatherer | None = None  # set once the bot begins receiving
        self._strangers = StrangerNotices(self.name, plain)
        self._name_only = NameOnlyAdmissions(self.name, spec.allow_from)
        self._pairing = (
            PairingDoor(self.name, pairing, plain, ttl_s=spec.pairing_code_ttl_s)
            if spec.pairing and pairing is not None
            else None
        )
        self._bot_streak: dict[int, int] = {}

    async def close(self) -> None:
        """Ends the stranger and pairing notices still waiting to be sent."""
        await self._strangers.close()
        if self._pairing is not None:
            await self._pairing.close()

    async def take(self, raw: dict[str, Any], update_id: int, handler: MessageHandler) -> None:
        try:
            await self._accept(self._parsed(raw), handler, raw)
        except PersonaBridgeError:
            raise  # the store or Telegram, not this update: polled again from its offset
        except Exception as exc:  # whatever the payload, never log its content
            log.warning(
                "bot %s: update %d skipped: it cannot be read (%s)",
                self.name,
                update_id,
                type(exc).__name__,
            )

    def _parsed(self, raw: dict[str, Any]) -> Update:
        """The update, with every field the bridge relies on checked to be usable."""
        update = Update.de_json(raw, self._bot)
        message = update.message
        if message is not None:
            if type(message.chat.id) is not int or not isinstance(message.chat.type, str):
                raise ValueError("chat")
            message.date.timestamp()
        return update

    async def _accept(self, update: Update, handler: MessageHandler, raw: dict[str, Any]) -> None:
        """``raw``: the update as Telegram sent it, stored as the inbox payload (it parses as
        the update did; PTB's ``to_dict`` would cost more than the parse itself)."""
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
        verdict = judge(message, self.spec, self._reception.me)
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
        inbound = self.inbound(update)
        if inbound is None:
            return  # nothing we answer: not stored, so never pending
        payload = json.dumps(raw, ensure_ascii=False)
        stored = await self._inbox.inbox_put(
            self.name, update.update_id, payload, chat_id=inbound.chat_id, topic_id=inbound.topic_id
        )
        if stored:  # else delivered before: stored then, answered then (or pending)
            await (self.albums.deliver if self.albums else handler)(inbound)

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
        return self.inbound(Update.de_json(json.loads(payload), self._bot))

    def inbound(self, update: Update) -> InboundMessage | None:
        message = update.message
        if message is None or message.from_user is None:
            return None
        me = self._reception.me
        replied = message.reply_to_message
        text = message.text if message.text is not None else message.caption
        attachments = attachments_of(message) if message.text is None else ()
        if text is None and not attachments:
            return None
        if_named = judge(message, self.spec, me) is Verdict.IF_NAMED
        grouped = message.chat.type != "private"  # what only bot.groups reads
        return InboundMessage(
            channel=self.name,
            chat_id=str(message.chat.id),
            sender_id=str(message.from_user.id),
            sender_username=message.from_user.username,
            text=strip_mention(text, me) if text else "",
            message_id=str(message.message_id),
            topic_id=str(message.message_thread_id) if message.is_topic_message else None,
            chat_type=message.chat.type,
            inbox_id=update.update_id,
            shared_id=shared_message_id(message) if grouped else "",
            mentions=mentioned_accounts(text or "") if grouped else (),
            reply_to_user=(
                str(replied.from_user.id) if replied and replied.from_user is not None else None
            ),
            attachments=attachments,
            voice_must_name=me.spoken_names() if if_named else (),
        )
