"""The inbox methods of ``PostgresSessionStore``: the same row lifecycle as SQLite's.

Arrival order is the ``seq`` column (SQLite's rowid); (channel, update_id) is the primary
key, so an update delivered twice — to two processes, or twice to one — is stored once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bot.sessions.doors import PgDoor
from bot.sessions.inbox import TASK, InboxRow, InboxStore, missing_row
from bot.sessions.schema import clean_text

ROW_COLUMNS = (
    "channel, update_id, payload, status, received_at, reply, chunks_sent, sending,"
    " chat_id, topic_id, kind, outcome, note, claimed_by, preview_id"
)


def pg_text(value: str) -> str:
    """PostgreSQL text holds neither lone surrogates nor NUL characters."""
    return clean_text(value).replace("\x00", "\ufffd")


def inbox_rows(records: list[Any]) -> list[InboxRow]:
    return [InboxRow(*record) for record in records]


class PgInbox(PgDoor, InboxStore):
    """Provided by ``PostgresSessionStore``: the connection door and the clock."""

    async def inbox_put(
        self,
        channel: str,
        update_id: int,
        payload: str,
        *,
        chat_id: str | None = None,
        topic_id: str | None = None,
        owner: str | None = None,
    ) -> bool:
        sql = (
            "INSERT INTO inbox (channel, update_id, payload, received_at, chat_id, topic_id,"
            " claimed_by) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
        )
        params = (pg_text(channel), update_id, pg_text(payload), self._clock())
        return await self._status("inbox_put", sql, *params, chat_id, topic_id, owner) == 1

    async def inbox_add_task(
        self, channel: str, chat_id: str, topic_id: str | None, payload: str, owner: str
    ) -> int:
        async with self._conn("inbox_add_task", transaction=True) as conn:
            # Task ids count down per channel; the lock keeps two processes from taking
            # the same one.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('task:' || $1))", channel)
            task_id = int(
                await conn.fetchval(
                    "SELECT least(coalesce(min(update_id), 0), 0) - 1 FROM inbox"
                    " WHERE channel = $1",
                    channel,
                )
            )
            await conn.execute(
                "INSERT INTO inbox (channel, update_id, payload, received_at, chat_id, topic_id,"
                " kind, claimed_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                channel,
                task_id,
                pg_text(payload),
                self._clock(),
                chat_id,
                topic_id,
                TASK,
                owner,
            )
            return task_id

    async def inbox_claim(self, channel: str, owner: str) -> list[InboxRow]:
        sql = (
            f"UPDATE inbox SET claimed_by = $2 FROM (SELECT seq AS s, claimed_by AS before"
            " FROM inbox WHERE channel = $1 AND status = 'pending' FOR UPDATE) AS old"
            f" WHERE inbox.seq = old.s RETURNING inbox.seq, old.before, {_qualified()}"
        )
        async with self._conn("inbox_claim") as conn:
            records = await conn.fetch(sql, channel, owner)
        fresh = sorted((r for r in records if r[1] != owner), key=lambda r: r[0])
        # The row as it was before this claim (claimed_by included), like SQLite's.
        return [replace(InboxRow(*r[2:]), claimed_by=r[1]) for r in fresh]

    async def inbox_release(self, channel: str, update_id: int) -> None:
        sql = "UPDATE inbox SET claimed_by = NULL WHERE channel = $1 AND update_id = $2"
        await self._status("inbox_release", sql, channel, update_id)

    async def inbox_pending(self, channel: str | None = None) -> list[InboxRow]:
        sql = f"SELECT {ROW_COLUMNS} FROM inbox WHERE status = 'pending'"
        if channel is None:
            return inbox_rows(await self._fetch("inbox_pending", sql + " ORDER BY seq"))
        sql += " AND channel = $1 ORDER BY seq"
        return inbox_rows(await self._fetch("inbox_pending", sql, channel))

    async def inbox_row(self, channel: str, update_id: int) -> InboxRow | None:
        sql = f"SELECT {ROW_COLUMNS} FROM inbox WHERE channel = $1 AND update_id = $2"
        rows = inbox_rows(await self._fetch("inbox_row", sql, channel, update_id))
        return rows[0] if rows else None

    async def inbox_done(
        self, channel: str, update_id: int, *, outcome: str = "delivered", note: str | None = None
    ) -> None:
        sql = (
            "UPDATE inbox SET status = 'done', done_at = coalesce(done_at, $1), outcome = $2,"
            " note = $3, claimed_by = NULL WHERE channel = $4 AND update_id = $5"
        )
        params = (self._clock(), outcome, None if note is None else pg_text(note))
        if await self._status("inbox_done", sql, *params, channel, update_id) != 1:
            raise missing_row(channel, update_id)

    async def inbox_reply(self, channel: str, update_id: int, reply: str) -> None:
        sql = "UPDATE inbox SET reply = $1 WHERE channel = $2 AND update_id = $3"
        if await self._status("inbox_reply", sql, pg_text(reply), channel, update_id) != 1:
            raise missing_row(channel, update_id)

    async def inbox_progress(
        self, channel: str, update_id: int, *, sending: int | None, chunks_sent: int
    ) -> None:
        sql = (
            "UPDATE inbox SET sending = $1, chunks_sent = $2 WHERE channel = $3 AND update_id = $4"
        )
        if await self._status("inbox_progress", sql, sending, chunks_sent, channel, update_id) != 1:
            raise missing_row(channel, update_id)

    async def inbox_preview(self, channel: str, update_id: int, message_id: str | None) -> None:
        sql = "UPDATE inbox SET preview_id = $1 WHERE channel = $2 AND update_id = $3"
        if await self._status("inbox_preview", sql, message_id, channel, update_id) != 1:
            raise missing_row(channel, update_id)

    async def inbox_backlog(self) -> int:
        sql = "SELECT COUNT(*) FROM inbox WHERE status = 'pending'"
        return int((await self._fetch("inbox_backlog", sql))[0][0])

    async def chat_moved(self, channel: str, old_chat_id: str, new_chat_id: str) -> None:
        async with self._conn("chat_moved", transaction=True) as conn:
            now = self._clock()
            await conn.execute(
                "INSERT INTO chat_moves (channel, old_chat_id, new_chat_id, moved_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (channel, old_chat_id) DO UPDATE"
                " SET new_chat_id = EXCLUDED.new_chat_id, moved_at = EXCLUDED.moved_at",
                channel,
                old_chat_id,
                new_chat_id,
                now,
            )
            # A session already active under the new id wins; the old one is archived.
            await conn.execute(
                "UPDATE sessions SET archived_at = $1 WHERE channel = $2 AND chat_id = $3"
                " AND archived_at IS NULL AND EXISTS (SELECT 1 FROM sessions n"
                " WHERE n.channel = sessions.channel AND n.chat_id = $4"
                " AND n.topic_id IS NOT DISTINCT FROM sessions.topic_id"
                " AND n.agent_id = sessions.agent_id AND n.archived_at IS NULL)",
                now,
                channel,
                old_chat_id,
                new_chat_id,
            )
            await conn.execute(
                "UPDATE sessions SET chat_id = $1 WHERE channel = $2 AND chat_id = $3",
                new_chat_id,
                channel,
                old_chat_id,
            )
            await conn.execute(
                "UPDATE inbox SET chat_id = $1 WHERE channel = $2 AND chat_id = $3"
                " AND status = 'pending'",
                new_chat_id,
                channel,
                old_chat_id,
            )

    async def chat_moves(self) -> dict[tuple[str, str], str]:
        sql = "SELECT channel, new_chat_id, old_chat_id FROM chat_moves"
        return {(c, new): old for c, new, old in await self._fetch("chat_moves", sql)}


def _qualified() -> str:
    return ", ".join(f"inbox.{c.strip()}" for c in ROW_COLUMNS.split(","))
