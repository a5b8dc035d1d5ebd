"""The SessionStore on PostgreSQL: the same contract as SQLite, for several processes.

Chosen by a ``postgresql://`` URL in ``session.database`` (see ``bot.sessions.select``).
asyncpg with a small connection pool: concurrent lanes get their own connections instead
of queueing behind one writer, and each statement is one round trip with no thread hop.
Every asyncpg (and socket) error becomes ``StoreError`` in one place, ``_pg_translated``,
with the URL's password masked. The coordination of several processes (claims, leases,
the poll election) lives in ``bot.sessions.postgres_claims``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from typing import Any

import asyncpg

from bot.errors import StoreError
from bot.sessions.dsn import redact_dsn, redact_text
from bot.sessions.postgres_claims import PgClaims
from bot.sessions.postgres_extras import PgExtras
from bot.sessions.postgres_inbox import PgInbox, pg_text
from bot.sessions.postgres_schema import pg_migrate
from bot.sessions.schema import encode_tool_calls, to_json
from bot.sessions.store import (
    SessionInfo,
    SessionKey,
    SessionStore,
    StoredMessage,
    Summary,
    _info,
    _stored,
)
from bot.types import ChatMessage, JSONObject, Usage

POOL_SIZE = 10


@contextmanager
def _pg_translated(what: str, dsn: str) -> Iterator[None]:
    """The one place where asyncpg and connection errors become ``StoreError``."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        text = redact_text(str(exc), dsn)
        raise StoreError(f"session store ({redact_dsn(dsn)}): {what} failed: {text}") from exc


_MESSAGE_COLUMNS = (
    "id, session_id, role, content, tool_calls, tool_call_id, extras, model_name, "
    "prompt_tokens, completion_tokens, created_at"
)
_SESSION_QUERY = """
    SELECT s.id, s.channel, s.chat_id, s.topic_id, s.agent_id, s.archived_at, s.created_at,
        (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id),
        (SELECT m.created_at FROM messages m WHERE m.session_id = s.id
            ORDER BY m.id DESC LIMIT 1)
    FROM sessions s"""
_SUMMARY_QUERY = (
    "SELECT session_id, covers_up_to, text, model_name, created_at FROM summaries"
    " WHERE session_id = $1 ORDER BY id"
)
_ACTIVE_QUERY = (
    "SELECT id FROM sessions WHERE channel = $1 AND chat_id = $2"
    " AND topic_id IS NOT DISTINCT FROM $3 AND agent_id = $4 AND archived_at IS NULL"
)


def _key(key: SessionKey) -> tuple[str, str, str | None, str]:
    return (
        pg_text(key.channel),
        pg_text(key.chat_id),
        None if key.topic_id is None else pg_text(key.topic_id),
        pg_text(key.agent_id),
    )


def _opt(value: str | None) -> str | None:
    return None if value is None else pg_text(value)


class PostgresSessionStore(PgInbox, PgExtras, PgClaims, SessionStore):
    """Sessions, history, summaries and the durable inbox in one PostgreSQL database."""

    shared = True

    def __init__(
        self, dsn: str, *, clock: Callable[[], float] = time.time, pool_size: int = POOL_SIZE
    ) -> None:
        self.dsn = dsn
        self._clock = clock
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresSessionStore({redact_dsn(self.dsn)!r})"

    async def open(self) -> None:
        if self._pool is not None:
            return
        with _pg_translated("connecting", self.dsn):
            pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self._pool_size, command_timeout=60
            )
            try:
                async with pool.acquire() as conn:
                    await pg_migrate(conn)
            except BaseException:
                await pool.close()
                raise
        self._pool = pool

    async def aclose(self) -> None:
        await self._close_claims()
        pool, self._pool = self._pool, None
        if pool is not None:
            with _pg_translated("closing", self.dsn):
                await pool.close()

    def _translated(self, what: str) -> AbstractContextManager[None]:
        return _pg_translated(what, self.dsn)

    @asynccontextmanager
    async def _conn(self, what: str, *, transaction: bool = False) -> AsyncIterator[Any]:
        """The one door to the pool: a connection, errors translated, optionally a
        transaction around the block."""
        pool = self._pool
        if pool is None:
            raise StoreError(f"session store: {what}: the store is not open")
        with _pg_translated(what, self.dsn):
            async with pool.acquire() as conn:
                if not transaction:
                    yield conn
                    return
                async with conn.transaction():
                    yield conn

    async def _fetch(self, what: str, sql: str, *params: Any) -> list[Any]:
        async with self._conn(what) as conn:
            return list(await conn.fetch(sql, *params))

    async def _status(self, what: str, sql: str, *params: Any) -> int:
        """Run one statement; how many rows it touched."""
        async with self._conn(what) as conn:
            status = await conn.execute(sql, *params)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def active_session(self, key: SessionKey) -> int:
        async with self._conn("active_session") as conn:
            found = await conn.fetchval(_ACTIVE_QUERY, *_key(key))
            if found is not None:
                return int(found)
            # Concurrent creators: the unique index lets one insert win, the rest re-read.
            created = await conn.fetchval(
                "INSERT INTO sessions (channel, chat_id, topic_id, agent_id, created_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id",
                *_key(key),
                self._clock(),
            )
            if created is not None:
                return int(created)
            return int(await conn.fetchval(_ACTIVE_QUERY, *_key(key)))

    async def append(
        self,
        session_id: int,
        message: ChatMessage,
        *,
        model_name: str | None = None,
        usage: Usage | None = None,
        source: str | None = None,
    ) -> int:
        usage = usage or Usage()
        params = (
            session_id,
            message.role,
            _opt(message.content),
            pg_text(encode_tool_calls(message.tool_calls)),
            _opt(message.tool_call_id),
            pg_text(to_json(message.extras)),
            _opt(model_name),
            usage.prompt_tokens,
            usage.completion_tokens,
            self._clock(),
            _opt(source),
        )
        async with self._conn("append") as conn:
            new_id = await conn.fetchval(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS.removeprefix('id, ')}, source)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                " ON CONFLICT DO NOTHING RETURNING id",
                *params,
            )
            if new_id is not None:
                return int(new_id)
            # Stored before (a replayed turn): the first copy stands.
            first = await conn.fetchval(
                "SELECT id FROM messages WHERE session_id = $1 AND source = $2",
                session_id,
                params[-1],
            )
        if first is None:
            raise StoreError(f"session store: append to session {session_id} was refused")
        return int(first)

    async def set_extras(self, message_id: int, extras: JSONObject) -> None:
        sql = "UPDATE messages SET extras = $1 WHERE id = $2"
        await self._status("set_extras", sql, pg_text(to_json(extras)), message_id)

    async def messages(
        self, session_id: int, *, after_id: int = 0, limit: int | None = None
    ) -> list[StoredMessage]:
        sql = (
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND id > $2"
            " ORDER BY id LIMIT $3"
        )
        rows = await self._fetch("messages", sql, session_id, after_id, limit)
        return [_stored(row) for row in rows]

    async def message_count(self, session_id: int) -> int:
        sql = "SELECT COUNT(*) FROM messages WHERE session_id = $1"
        return int((await self._fetch("message_count", sql, session_id))[0][0])

    async def summaries(self, session_id: int) -> list[Summary]:
        return [Summary(*r) for r in await self._fetch("summaries", _SUMMARY_QUERY, session_id)]

    async def latest_summary(self, session_id: int) -> Summary | None:
        sql = _SUMMARY_QUERY.replace("ORDER BY id", "ORDER BY id DESC LIMIT 1")
        rows = await self._fetch("latest_summary", sql, session_id)
        return Summary(*rows[0]) if rows else None

    async def add_summary(
        self, session_id: int, covers_up_to: int, text: str, model_name: str
    ) -> None:
        async with self._conn("add_summary", transaction=True) as conn:
            check = "SELECT 1 FROM messages WHERE id = $1 AND session_id = $2"
            if await conn.fetchval(check, covers_up_to, session_id) is None:
                raise StoreError(
                    f"session store: message {covers_up_to} is not in session {session_id}"
                )
            await conn.execute(
                "INSERT INTO summaries (session_id, covers_up_to, text, model_name, created_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                session_id,
                covers_up_to,
                pg_text(text),
                pg_text(model_name),
                self._clock(),
            )

    async def archive(self, key: SessionKey) -> int | None:
        sql = (
            f"UPDATE sessions SET archived_at = $5 WHERE id = ({_ACTIVE_QUERY} FOR UPDATE)"
            " RETURNING id"
        )
        async with self._conn("archive") as conn:
            found = await conn.fetchval(sql, *_key(key), self._clock())
        return None if found is None else int(found)

    async def sessions(self, *, include_archived: bool = True) -> list[SessionInfo]:
        where = "" if include_archived else " WHERE s.archived_at IS NULL"
        rows = await self._fetch("sessions", f"{_SESSION_QUERY}{where} ORDER BY s.id")
        return [_info(row) for row in rows]

    async def session_info(self, session_id: int) -> SessionInfo:
        rows = await self._fetch("session_info", f"{_SESSION_QUERY} WHERE s.id = $1", session_id)
        if not rows:
            raise StoreError(f"session store: no session with id {session_id}")
        return _info(rows[0])

    async def inbox_prune(self, done_for_s: float) -> int:
        sql = (
            "DELETE FROM inbox WHERE seq IN (SELECT seq FROM inbox WHERE status = 'done'"
            " AND coalesce(done_at, received_at) < $1 LIMIT 500)"
        )
        cutoff = self._clock() - done_for_s
        # Group decisions matter only while a copy of their message may still come.
        await self._status("group_prune", "DELETE FROM group_turns WHERE decided_at < $1", cutoff)
        total = 0
        while True:
            deleted = await self._status("inbox_prune", sql, cutoff)
            total += deleted
            if deleted < 500:
                return total
