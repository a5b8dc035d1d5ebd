"""What each persona hears in a group: the human messages and the others' answers.

Each persona keeps its own session for the group; what the others said there is appended
to it as a user message attributed by display name (``[Alice]: …``). Every entry has a
source, so it is stored once per session however often it is shared (after a restart,
say), and a persona's own turn finds the human message already there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from bot.channels.base import InboundMessage
from bot.groups.roster import GroupRoster
from bot.sessions.store import SessionKey, SessionStore
from bot.types import ChatMessage

Entries = Callable[[str], list[tuple[ChatMessage, str]]]  # channel → (message, source)s


def group_source(message: InboundMessage) -> str:
    """What a group message is stored as in every persona's session: one id for all the
    copies, so the persona's own turn finds it there instead of storing it again."""
    return f"group:{message.shared_id}"


def heard(message: InboundMessage) -> tuple[ChatMessage, str]:
    # Files go in as references (a marker for the others); the answering persona's turn
    # adds what they said (a transcript, a document's text) to its own copy.
    refs = [a.reference() for a in message.attachments]
    extras = {"media": refs} if refs else {}
    return ChatMessage("user", message.text, extras=extras), group_source(message)


def said(name: str, text: str) -> ChatMessage:
    return ChatMessage("user", f"[{name}]: {text}")


class GroupConversation:
    def __init__(self, store: SessionStore, roster: GroupRoster) -> None:
        self._store = store
        self._roster = roster

    async def share(
        self, chat_id: str, topic_id: str | None, entries: Entries, exclude: Iterable[str] = ()
    ) -> None:
        """Append ``entries(channel)`` to the session of every persona in the group but
        ``exclude``, in order."""
        skipped = set(exclude)
        for member in await self._roster.members(chat_id, topic_id):
            seat = member.seat
            if seat.channel in skipped:
                continue
            key = SessionKey(seat.channel, chat_id, topic_id, seat.agent_id)
            session_id = await self._store.active_session(key)
            for message, source in entries(seat.channel):
                await self._store.append(session_id, message, source=source)
