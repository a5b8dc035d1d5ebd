"""Who may talk to a bot, and when a group message is addressed to it (SPEC §5)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from telegram import Message

from bot.channels.access_lists import by_username, listed
from bot.channels.telegram_media import attachments_of
from bot.config.schema import TelegramBot

log = logging.getLogger(__name__)
# "@name" not inside a word, an e-mail address or a command; "/cmd@name" addresses a command.
_MENTION = re.compile(r"(?<![\w@/])@([A-Za-z0-9_]{3,32})\b")
_COMMAND_TARGET = re.compile(r"^/[A-Za-z0-9_]+@([A-Za-z0-9_]{3,32})\b")


class Verdict(Enum):
    ANSWER = "answer"  # goes on to the store and a model
    IGNORE = "ignore"  # not for us (group chatter, other bots, service messages)
    # A group voice note under ``mention`` that does not reply to us: answered only if its
    # transcript names the bot (decided at turn time, after transcription).
    IF_NAMED = "if_named"
    STRANGER = "stranger"  # not on allow_from: at most one short reply, nothing stored


@dataclass(frozen=True)
class BotIdentity:
    id: int
    username: str
    first_name: str = ""

    def spoken_names(self) -> tuple[str, ...]:
        """How a voice note can name the bot: its username or its display name."""
        return tuple(n.lower() for n in (self.username, self.first_name) if n)


def judge(message: Message, spec: TelegramBot, me: BotIdentity) -> Verdict:
    user = message.from_user
    if user is None or (message.text is None and not attachments_of(message)):
        return Verdict.IGNORE
    if user.id == me.id:
        return Verdict.IGNORE
    if user.is_bot and not spec.allow_bots:
        return Verdict.IGNORE
    if message.chat.type != "private" and not addressed(message, spec, me):
        # A voice note cannot @mention: when its sender may talk to us, its transcript
        # decides. Strangers' voice notes are never fetched nor transcribed.
        voice = message.voice is not None and spec.group_policy == "mention"
        if voice and admitted(user.id, user.username, spec.allow_from):
            return Verdict.IF_NAMED
        return Verdict.IGNORE
    if not admitted(user.id, user.username, spec.allow_from):
        return Verdict.STRANGER
    return Verdict.ANSWER


def admitted(user_id: int, username: str | None, allow_from: tuple[str, ...]) -> bool:
    """``"*"``, the numeric id, or ``@username`` (case-insensitive). Empty admits nobody."""
    return "*" in allow_from or listed(user_id, username, allow_from)


class NameOnlyAdmissions:
    """Says once per user that they got in only by ``@username``, with the id to pin.

    A username can be changed and then taken by someone else, who would inherit the
    access; the numeric id cannot. Memory is bounded: the oldest users are forgotten
    (and would be mentioned once more).
    """

    def __init__(self, bot: str, allow_from: tuple[str, ...], *, remember: int = 1024) -> None:
        self._bot = bot
        self._allow_from = allow_from
        self._remember = remember
        self._seen: OrderedDict[int, None] = OrderedDict()

    def admitted(self, user_id: int, username: str | None) -> None:
        if user_id in self._seen or "*" in self._allow_from:
            return
        if str(user_id) in self._allow_from or not by_username(username, self._allow_from):
            return
        self._seen[user_id] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        log.warning(
            "bot %s: user %d is admitted only as @%s, which whoever holds that username "
            'today could use; pin it: put "%d" in allow_from',
            self._bot,
            user_id,
            username,
            user_id,
        )


def addressed(message: Message, spec: TelegramBot, me: BotIdentity) -> bool:
    if spec.group_policy == "off":
        return False
    if spec.group_policy == "all":
        return True
    text = message.text or message.caption or ""
    mention = f"@{me.username}".lower()
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == me.id:
        return True
    if text.startswith("/"):
        # "/status@alice_bot" is for alice; a bare "/status" in a group is for every bot.
        command = text.split(maxsplit=1)[0].lower()
        return "@" not in command or command.endswith(mention)
    return mention in text.lower()


def strip_mention(text: str, me: BotIdentity) -> str:
    """Drop our own @mention so the model sees what the person said to it."""
    if not me.username:  # not connected yet (a replay): nothing known to strip
        return text
    mention = f"@{me.username}"
    if text.startswith("/"):
        head, _, rest = text.partition(" ")
        head = head.split("@", 1)[0]
        return f"{head} {rest}".strip()
    cleaned = text.replace(mention, "").strip()
    return cleaned or text


def mentioned_accounts(text: str) -> tuple[str, ...]:
    """The usernames ``text`` addresses, lower case, in order: a command's target first."""
    found = [m.group(1).lower() for m in _COMMAND_TARGET.finditer(text)]
    found += [m.group(1).lower() for m in _MENTION.finditer(text)]
    return tuple(dict.fromkeys(found))


def shared_message_id(message: Message) -> str:
    """The same for every bot's copy of one group message.

    Supergroups number messages per chat, so every member sees the same ``message_id``.
    Basic groups number them per account (each bot gets its own id for the same message),
    so there the sender, the time and the text identify it instead.
    """
    if message.chat.type == "supergroup":
        return f"m{message.message_id}"
    sender = message.from_user.id if message.from_user else 0
    # A file's file_unique_id is the same for every bot: two photos sent in one second
    # are two messages, whatever their (empty) captions.
    attached = message.effective_attachment
    files = attached if isinstance(attached, tuple | list) else (attached,)
    unique = ",".join(str(getattr(f, "file_unique_id", "")) for f in files if f is not None)
    content = message.text or message.caption or ""
    content += f"\0{unique}" if unique else ""
    # surrogatepass: a lone surrogate (half an emoji) must not make the message unreadable.
    digest = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"u{sender}:{int(message.date.timestamp())}:{digest}"
