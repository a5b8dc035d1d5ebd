"""Pairing, the usage ledger and group turns on PostgreSQL: the same contract as
``SqlitePairing``, ``SqliteUsage`` and ``SqliteGroupTurns``, with PostgreSQL's placeholders,
and locks where several processes may write at once (codes issued, a message's answerers
recorded).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.sessions.doors import PgDoor
from bot.sessions.group_turns import GroupTurn, GroupTurnStore
from bot.sessions.pairing_store import (
    APPROVAL_COLUMNS,
    CODE_COLUMNS,
    PairingApproval,
    PairingCode,
    PairingStore,
)
from bot.sessions.postgres_inbox import pg_text
from bot.sessions.usage import GROUPS, TOTALS, UsageRow, UsageStore, UsageTotal


class PgExtras(PgDoor, UsageStore, PairingStore, GroupTurnStore):
    """Provided by ``PostgresSessionStore``: the connection door and the clock."""

    # --- pairing ----------------------------------------------------------------------

    async def pairing_issue(
        self,
        channel: str,
        user_id: str,
        username: str | None,
        chat_id: str,
        code: str,
        *,
        ttl_s: float,
        max_open: int,
    ) -> PairingCode | None:
        now = self._clock()
        async with self._conn("pairing_issue", transaction=True) as conn:
            # Two processes answering two strangers at once must count the same codes.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('pairing:' || $1))", channel)
            await conn.execute("DELETE FROM pairing_codes WHERE expires_at <= $1", now)
            mine = await conn.fetchrow(
                f"SELECT {CODE_COLUMNS} FROM pairing_codes WHERE channel = $1 AND user_id = $2",
                channel,
                user_id,
            )
            if mine is not None:
                return PairingCode(*mine)
            count = "SELECT COUNT(*) FROM pairing_codes WHERE channel = $1"
            if int(await conn.fetchval(count, channel)) >= max_open:
                return None
            issued = PairingCode(
                code,
                channel,
                user_id,
                None if username is None else pg_text(username),
                chat_id,
                now,
                now + ttl_s,
            )
            await conn.execute(
                f"INSERT INTO pairing_codes ({CODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                issued.code,
                issued.channel,
                issued.user_id,
                issued.username,
                issued.chat_id,
                issued.created_at,
                issued.expires_at,
            )
            return issued

    async def pairing_approve(self, code: str, approved_by: str) -> PairingApproval | None:
        now = self._clock()
        async with self._conn("pairing_approve", transaction=True) as conn:
            # Used up in the same statement that reads it: two admins, one approval.
            row = await conn.fetchrow(
                "DELETE FROM pairing_codes WHERE code = $1 AND expires_at > $2"
                " RETURNING channel, user_id, username",
                code,
                now,
            )
            if row is None:
                return None
            channel, user_id, username = row
            approval = PairingApproval(channel, user_id, username, pg_text(approved_by), now)
            await conn.execute(
                f"INSERT INTO pairing_approvals ({APPROVAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (channel, user_id) DO UPDATE SET username = excluded.username,"
                " approved_by = excluded.approved_by, approved_at = excluded.approved_at",
                channel,
                user_id,
                username,
                approval.approved_by,
                now,
            )
            return approval

    async def pairing_is_approved(self, channel: str, user_id: str) -> bool:
        sql = "SELECT 1 FROM pairing_approvals WHERE channel = $1 AND user_id = $2"
        return bool(await self._fetch("pairing_is_approved", sql, channel, user_id))

    async def pairing_revoke(self, user_id: str, channel: str | None = None) -> int:
        sql = "DELETE FROM pairing_approvals WHERE user_id = $1"
        if channel is None:
            return await self._status("pairing_revoke", sql, user_id)
        return await self._status("pairing_revoke", sql + " AND channel = $2", user_id, channel)

    async def pairing_codes(self) -> list[PairingCode]:
        sql = (
            f"SELECT {CODE_COLUMNS} FROM pairing_codes WHERE expires_at > $1"
            " ORDER BY created_at, code"
        )
        return [PairingCode(*r) for r in await self._fetch("pairing_codes", sql, self._clock())]

    async def pairing_approvals(self) -> list[PairingApproval]:
        sql = f"SELECT {APPROVAL_COLUMNS} FROM pairing_approvals ORDER BY approved_at, channel"
        return [PairingApproval(*r) for r in await self._fetch("pairing_approvals", sql)]

    # --- usage ------------------------------------------------------------------------

    async def usage_add(self, row: UsageRow) -> None:
        await self._status(
            "usage_add",
            "INSERT INTO usage (at, agent_id, user_id, channel, chat_id, model_name, purpose,"
            " prompt_tokens, completion_tokens, cost_usd, estimated)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            row.at,
            pg_text(row.agent_id),
            pg_text(row.user_id),
            pg_text(row.channel),
            pg_text(row.chat_id),
            pg_text(row.model_name),
            pg_text(row.purpose),
            row.prompt_tokens,
            row.completion_tokens,
            row.cost_usd,
            int(row.estimated),
        )

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
        params: list[Any] = [since]
        where = ["at >= $1"]
        for column, value in (("at <", until), ("agent_id =", agent_id), ("user_id =", user_id)):
            if value is not None:
                params.append(value)
                where.append(f"{column} ${len(params)}")
        sql = f"SELECT {', '.join([*columns, TOTALS])} FROM usage WHERE {' AND '.join(where)}"
        if columns:
            grouped = ", ".join(columns)
            sql += f" GROUP BY {grouped} ORDER BY sum(prompt_tokens + completion_tokens) DESC"
        result = []
        for row in await self._fetch("usage_summary", sql, *params):
            key = tuple(str(v) for v in row[: len(columns)])
            calls, prompt, completion, cost, priced, estimated = row[len(columns) :]
            total = UsageTotal(
                int(calls), int(prompt), int(completion), float(cost), int(priced), int(estimated)
            )
            result.append((key, total))
        return result

    async def usage_note_warning(self, key: str, at: float) -> bool:
        sql = "INSERT INTO usage_warnings (key, at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
        return await self._status("usage_note_warning", sql, pg_text(key), at) == 1

    # --- group turns ------------------------------------------------------------------

    async def group_decide(
        self, chat_id: str, topic_id: str | None, shared_id: str, answerers: Sequence[str]
    ) -> GroupTurn:
        key = (chat_id, topic_id or "", shared_id)
        async with self._conn("group_decide") as conn:
            # The first writer's decision stands; a second one reads it back.
            await conn.execute(
                "INSERT INTO group_turns (chat_id, topic_id, shared_id, answerers, decided_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                *key,
                json.dumps(list(answerers)),
                self._clock(),
            )
            row = await conn.fetchrow(_GROUP_SELECT, *key)
        return _group_turn(row)

    async def group_turn(
        self, chat_id: str, topic_id: str | None, shared_id: str
    ) -> GroupTurn | None:
        rows = await self._fetch("group_turn", _GROUP_SELECT, chat_id, topic_id or "", shared_id)
        return _group_turn(rows[0]) if rows else None

    async def group_answered(
        self, chat_id: str, topic_id: str | None, shared_id: str, channel: str
    ) -> None:
        key = (chat_id, topic_id or "", shared_id)
        async with self._conn("group_answered", transaction=True) as conn:
            row = await conn.fetchrow(_GROUP_SELECT + " FOR UPDATE", *key)
            if row is None:
                return
            done = sorted(_group_turn(row).answered | {channel})
            await conn.execute(
                "UPDATE group_turns SET answered = $1 WHERE chat_id = $2 AND topic_id = $3"
                " AND shared_id = $4",
                json.dumps(done),
                *key,
            )

    async def group_members(self, chat_id: str) -> set[str]:
        sql = "SELECT DISTINCT channel FROM sessions WHERE chat_id = $1 AND archived_at IS NULL"
        return {row[0] for row in await self._fetch("group_members", sql, chat_id)}


_GROUP_SELECT = (
    "SELECT answerers, answered FROM group_turns"
    " WHERE chat_id = $1 AND topic_id = $2 AND shared_id = $3"
)


def _group_turn(row: Any) -> GroupTurn:
    return GroupTurn(tuple(json.loads(row[0])), frozenset(json.loads(row[1])))
