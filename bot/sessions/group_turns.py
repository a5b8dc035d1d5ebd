"""Who answers each group message, kept in the store (SPEC §15; used by ``bot.groups``).

Every bot in a group receives its own copy of a human message. The first copy to be
handled decides which personas answer; the decision is written here once (a second
writer reads the first one back), so a copy handled later, after a restart or by another
process sharing the database, follows the same decision: a message is never answered by
all the bots that received it. ``answered`` records whose answers are done, so the ones
still due are known after a crash.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.sessions.doors import SqliteDoor


@dataclass(frozen=True)
class GroupTurn:
    """The decision for one group message: channels in answer order, and those done."""

    answerers: tuple[str, ...]
    answered: frozenset[str] = frozenset()


class GroupTurnStore(ABC):
    """The group half of the store seam. Raises only ``StoreError``."""

    @abstractmethod
    async def group_decide(
        self, chat_id: str, topic_id: str | None, shared_id: str, answerers: Sequence[str]
    ) -> GroupTurn:
        """Record who answers the message, unless decided before; the decision that stands."""

    @abstractmethod
    async def group_turn(
        self, chat_id: str, topic_id: str | None, shared_id: str
    ) -> GroupTurn | None:
        """The decision for the message, or None while there is none."""

    @abstractmethod
    async def group_answered(
        self, chat_id: str, topic_id: str | None, shared_id: str, channel: str
    ) -> None:
        """``channel``'s answer to the message is done (delivered or given up)."""

    @abstractmethod
    async def group_members(self, chat_id: str) -> set[str]:
        """Channels that hold an active conversation in the chat."""


def _turn(row: Any) -> GroupTurn:
    return GroupTurn(tuple(json.loads(row[0])), frozenset(json.loads(row[1])))


_SELECT = (
    "SELECT answerers, answered FROM group_turns"
    " WHERE chat_id = ? AND topic_id = ? AND shared_id = ?"
)


class SqliteGroupTurns(SqliteDoor, GroupTurnStore):
    """The group methods of ``SqliteSessionStore``; it provides the connection door."""

    async def group_decide(
        self, chat_id: str, topic_id: str | None, shared_id: str, answerers: Sequence[str]
    ) -> GroupTurn:
        key = (chat_id, topic_id or "", shared_id)
        async with self._use("group_decide", transaction=True) as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO group_turns (chat_id, topic_id, shared_id, answerers,"
                " decided_at) VALUES (?, ?, ?, ?, ?)",
                (*key, json.dumps(list(answerers)), self._clock()),
            )
            rows = list(await conn.execute_fetchall(_SELECT, key))
        return _turn(rows[0])

    async def group_turn(
        self, chat_id: str, topic_id: str | None, shared_id: str
    ) -> GroupTurn | None:
        rows = await self._fetch("group_turn", _SELECT, (chat_id, topic_id or "", shared_id))
        return _turn(rows[0]) if rows else None

    async def group_answered(
        self, chat_id: str, topic_id: str | None, shared_id: str, channel: str
    ) -> None:
        key = (chat_id, topic_id or "", shared_id)
        async with self._use("group_answered", transaction=True) as conn:
            rows = list(await conn.execute_fetchall(_SELECT, key))
            if not rows:
                return
            done = sorted(_turn(rows[0]).answered | {channel})
            await conn.execute(
                "UPDATE group_turns SET answered = ? WHERE chat_id = ? AND topic_id = ?"
                " AND shared_id = ?",
                (json.dumps(done), *key),
            )

    async def group_members(self, chat_id: str) -> set[str]:
        sql = "SELECT DISTINCT channel FROM sessions WHERE chat_id = ? AND archived_at IS NULL"
        return {row[0] for row in await self._fetch("group_members", sql, (chat_id,))}
