"""The usage ledger half of the store: one row per model call, sums over a time range.

Budget checks sum the current period for one agent, one user or everyone; each of those
has an index that starts with what it filters on and ends with the time, so the check is
a range scan over the period, however long the history. The SQL is kept portable (plain
aggregates, ``ON CONFLICT DO NOTHING``) so other stores can share it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.sessions.doors import SqliteDoor
from bot.sessions.schema import clean_text

# What ``usage_summary`` may group by: the columns a report names.
GROUPS = {
    "agent": "agent_id",
    "user": "user_id",
    "model": "model_name",
    "purpose": "purpose",
    "channel": "channel",
    "chat": "chat_id",
}


@dataclass(frozen=True)
class UsageRow:
    """One model call. ``cost_usd`` is None when the model entry has no price."""

    at: float
    agent_id: str
    user_id: str
    channel: str
    chat_id: str
    model_name: str
    purpose: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None = None
    estimated: bool = False  # the provider reported no usage; counted from the text


@dataclass(frozen=True)
class UsageTotal:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    priced_calls: int = 0  # calls that carried a cost
    estimated_calls: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageStore(ABC):
    """The ledger methods of a store. Raises only ``StoreError``."""

    @abstractmethod
    async def usage_add(self, row: UsageRow) -> None: ...

    @abstractmethod
    async def usage_summary(
        self,
        since: float,
        until: float | None = None,
        *,
        by: Sequence[str] = (),
        agent_id: str | None = None,
        user_id: str | None = None,
    ) -> list[tuple[tuple[str, ...], UsageTotal]]:
        """Totals of the rows in [since, until), one per distinct ``by`` (keys of ``GROUPS``);
        with ``by=()`` exactly one (zeros when nothing matched). Largest first."""

    @abstractmethod
    async def usage_note_warning(self, key: str, at: float) -> bool:
        """Remember that warning ``key`` went out; False when it had been sent already."""


_INSERT = """INSERT INTO usage (at, agent_id, user_id, channel, chat_id, model_name, purpose,
    prompt_tokens, completion_tokens, cost_usd, estimated)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
TOTALS = """count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
    coalesce(sum(cost_usd), 0), count(cost_usd), coalesce(sum(estimated), 0)"""


class SqliteUsage(SqliteDoor, UsageStore):
    """The ledger methods of ``SqliteSessionStore``; it provides the connection door."""

    async def usage_add(self, row: UsageRow) -> None:
        params = (
            row.at,
            clean_text(row.agent_id),
            clean_text(row.user_id),
            clean_text(row.channel),
            clean_text(row.chat_id),
            row.model_name,
            row.purpose,
            row.prompt_tokens,
            row.completion_tokens,
            row.cost_usd,
            int(row.estimated),
        )
        await self._write("usage_add", _INSERT, params)

    async def usage_summary(
        self,
        since: float,
        until: float | None = None,
        *,
        by: Sequence[str] = (),
        agent_id: str | None = None,
        user_id: str | None = None,
    ) -> list[tuple[tuple[str, ...], UsageTotal]]:
        unknown = [name for name in by if name not in GROUPS]
        if unknown:
            raise ValueError(f"cannot group usage by {', '.join(unknown)}")
        columns = [GROUPS[name] for name in by]
        where: list[str] = ["at >= ?"]
        params: list[Any] = [since]
        if until is not None:
            where.append("at < ?")
            params.append(until)
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        select = ", ".join([*columns, TOTALS])
        sql = f"SELECT {select} FROM usage WHERE {' AND '.join(where)}"
        if columns:
            grouped = ", ".join(columns)
            sql += f" GROUP BY {grouped} ORDER BY sum(prompt_tokens + completion_tokens) DESC"
        rows = await self._fetch("usage_summary", sql, tuple(params))
        result = []
        for row in rows:
            key = tuple(str(v) for v in row[: len(columns)])
            calls, prompt, completion, cost, priced, estimated = row[len(columns) :]
            total = UsageTotal(
                int(calls), int(prompt), int(completion), float(cost), int(priced), int(estimated)
            )
            result.append((key, total))
        return result

    async def usage_note_warning(self, key: str, at: float) -> bool:
        sql = "INSERT INTO usage_warnings (key, at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"
        return (await self._write("usage_note_warning", sql, (clean_text(key), at)))[1] == 1
