"""Which of our bots are in a group, learnt from the copies they receive (bot.groups)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.channels.base import Account, Channel, InboundMessage
from bot.lifecycle import in_group
from bot.sessions.store import SessionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seat:
    """One of our bots as routed in a chat, in config order: who speaks there, and when."""

    channel: str
    policy: str  # the bot's group_policy
    agent_id: str
    name: str  # the persona's display name


@dataclass(frozen=True)
class Member:
    seat: Seat
    account: Account


Seats = Callable[[str, str | None], list[Seat]]


class GroupRoster:
    """Our bots seen in each group (a copy came, or a conversation kept from before a
    restart), minus those whose copy did not come when expected, until one comes again."""

    def __init__(self, store: SessionStore, channels: Mapping[str, Channel], seats: Seats):
        self._store = store
        self._channels = channels
        self.seats = seats
        self._present: dict[str, set[str]] = {}  # chat → channels seen there
        self._absent: dict[str, set[str]] = {}  # chat → channels whose copy did not come
        self._recalled: set[str] = set()  # chats whose members were read from the store

    def account(self, channel: str) -> Account | None:
        """The running channel's own account; None when it is not running."""
        running = self._channels.get(channel)
        return running.account() if running is not None else None

    def sibling(self, message: InboundMessage) -> str | None:
        """The channel of ours that wrote ``message``, if one of our bots did."""
        for name, channel in self._channels.items():
            account = channel.account()
            if name != message.channel and account and account.user_id == message.sender_id:
                return name
        return None

    def arrived(self, chat_id: str, channel: str) -> None:
        self._present.setdefault(chat_id, set()).add(channel)
        self._absent.get(chat_id, set()).discard(channel)

    def is_absent(self, chat_id: str, channel: str) -> bool:
        return channel in self._absent.get(chat_id, ())

    def missed(self, chat_id: str, channel: str) -> None:
        """``channel``'s copy of a message did not come: absent until one comes again."""
        log.info("group %s: no copy for %s; it counts as absent", chat_id, channel)
        self._absent.setdefault(chat_id, set()).add(channel)

    async def members(self, chat_id: str, topic_id: str | None) -> list[Member]:
        """Our running bots in the group, in config order."""
        present = self._present.setdefault(chat_id, set())
        if chat_id not in self._recalled:
            present |= await self._store.group_members(chat_id)
            self._recalled.add(chat_id)
        return [
            Member(seat, account)
            for seat in self.seats(chat_id, topic_id)
            if seat.channel in present
            and not self.is_absent(chat_id, seat.channel)
            and (account := self.account(seat.channel)) is not None
        ]

    async def own_bot(self, chat_id: str, topic_id: str | None, agent_id: str) -> str | None:
        """The channel through which ``agent_id`` speaks in this group, if its bot is there."""
        if not in_group(chat_id):
            return None
        for member in await self.members(chat_id, topic_id):
            if member.seat.agent_id == agent_id:
                return member.seat.channel
        return None

    async def describe(self, chat_id: str, topic_id: str | None) -> str:
        """/status lines for a group: the personas present and who answers by default."""
        if not in_group(chat_id):
            return ""
        members = await self.members(chat_id, topic_id)
        here = ", ".join(f"{m.seat.name} (@{m.account.username})" for m in members)
        default = next((m.seat.name for m in members if m.seat.policy == "all"), None)
        return (
            f"\nPersonas here: {here or 'none known yet'}"
            f"\nAnswers by default: {default or 'nobody; mention one of us'}"
        )
