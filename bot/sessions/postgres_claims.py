"""How several bridge processes share one PostgreSQL inbox (SPEC §14).

- Leases: each process renews a row in ``bridge_processes`` (on the server's clock). A
  claim (``inbox.claimed_by``) counts only while its process's lease has not lapsed; a
  process killed with -9 stops renewing and its rows become claimable again.
- Per-chat order: a process claims the pending rows of a chat only when no other live
  process holds a row of that chat, oldest (``seq``) first, and runs them in its chat lane
  in that order. Claims are serialised by one transaction-level advisory lock, so two
  processes never split one chat between them; order never depends on lock-wait order.
- Wake-ups: a trigger NOTIFYs on every insert and releases notify too; idle processes
  LISTEN instead of polling the table (a slow timer remains, only for lapsed leases).
- Poll election: a session-level advisory lock per bot, on a connection of its own; the
  server drops it with that connection, so a dead holder's standby takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import replace
from typing import Any

import asyncpg

from bot.sessions.dsn import redact_text
from bot.sessions.inbox import InboxRow
from bot.sessions.postgres_inbox import ROW_COLUMNS, inbox_rows
from bot.sessions.postgres_schema import INBOX_CHANNEL

log = logging.getLogger(__name__)

CLAIM_LOCK = 0x5042_434C_4149  # "PBCLAI": one claim transaction at a time
POLL_RETRY_S = 1.0  # how often a standby tries to become a bot's poller
POLL_CHECK_S = 5.0  # how often the poller checks that it still holds its turn

_COLUMNS = ROW_COLUMNS.split(",")
_LIVE = "SELECT owner FROM bridge_processes WHERE lease_until > now()"
# The lane a row runs in (``Ticket.key``): a group's rows share one lane across our bots.
_CHAT = (
    "CASE WHEN chat_id LIKE '-%' THEN 'group' ELSE channel END,"
    " coalesce(chat_id, ''), coalesce(topic_id, '')"
)
_CLAIM = f"""
    WITH held AS (
        SELECT DISTINCT {_CHAT} FROM inbox
        WHERE status = 'pending' AND claimed_by <> $1 AND claimed_by IN ({_LIVE})
    ), settling AS (
        SELECT DISTINCT {_CHAT} FROM inbox
        WHERE status = 'pending' AND claimed_by IS NULL AND $3::float8 IS NOT NULL
            AND received_at > $3 AND payload LIKE '%"media_group_id"%'
    ), free AS (
        SELECT seq, claimed_by AS before FROM inbox
        WHERE status = 'pending' AND channel = ANY($2::text[])
            AND claimed_by IS DISTINCT FROM $1
            AND (claimed_by IS NULL OR claimed_by NOT IN ({_LIVE}))
            AND ({_CHAT}) NOT IN (SELECT * FROM held)
            AND ({_CHAT}) NOT IN (SELECT * FROM settling)
    )
    UPDATE inbox SET claimed_by = $1 FROM free WHERE inbox.seq = free.seq
    RETURNING inbox.seq, free.before, {", ".join(f"inbox.{c.strip()}" for c in _COLUMNS)}"""


class PgClaims:
    """Provided by ``PostgresSessionStore``: the door to its pool and its URL."""

    dsn: str
    _listener: Any = None

    def _conn(self, what: str, *, transaction: bool = False) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    def _translated(self, what: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    async def lease_renew(self, owner: str, lease_s: float) -> None:
        """Start or extend this process's lease; forget processes gone for an hour."""
        async with self._conn("lease_renew") as conn:
            await conn.execute(
                "INSERT INTO bridge_processes (owner, lease_until)"
                " VALUES ($1, now() + make_interval(secs => $2))"
                " ON CONFLICT (owner) DO UPDATE SET lease_until = EXCLUDED.lease_until",
                owner,
                lease_s,
            )
            await conn.execute(
                "DELETE FROM bridge_processes WHERE lease_until < now() - interval '1 hour'"
            )

    async def claim_work(
        self, owner: str, channels: Sequence[str], *, album_since: float | None = None
    ) -> list[InboxRow]:
        """Claim every claimable pending row of ``channels`` for ``owner``, in arrival
        order; each row's ``claimed_by`` says who held it before (a lapsed process, or None).

        ``album_since``: a chat with an album part stored after it waits (its album may
        still be arriving, and is answered as one message once complete)."""
        async with self._conn("claim_work", transaction=True) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
            records = await conn.fetch(_CLAIM, owner, list(channels), album_since)
        ordered = sorted(records, key=lambda r: r[0])
        return [
            replace(row, claimed_by=r[1])
            for r, row in zip(ordered, inbox_rows([r[2:] for r in ordered]), strict=True)
        ]

    async def claims_held(self, owner: str) -> int:
        async with self._conn("claims_held") as conn:
            sql = "SELECT count(*) FROM inbox WHERE status = 'pending' AND claimed_by = $1"
            return int(await conn.fetchval(sql, owner))

    async def release_claims(self, owner: str) -> None:
        """A clean stop: hand every unfinished row back and wake the others at once."""
        async with self._conn("release_claims", transaction=True) as conn:
            await conn.execute(
                "UPDATE inbox SET claimed_by = NULL WHERE claimed_by = $1 AND status = 'pending'",
                owner,
            )
            await conn.execute("DELETE FROM bridge_processes WHERE owner = $1", owner)
            await conn.execute(f"NOTIFY {INBOX_CHANNEL}")

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever work arrives or is handed back (on a connection of its own)."""
        if self._listener is not None:
            return
        with self._translated("listen"):
            conn = await asyncpg.connect(self.dsn)
            await conn.add_listener(INBOX_CHANNEL, lambda *_: wake())
        self._listener = conn

    @contextlib.asynccontextmanager
    async def poll_turn(self, channel: str, stopping: asyncio.Event) -> AsyncIterator[bool]:
        """Wait until this process is the one poller of ``channel`` (or ``stopping``).

        Yields True when elected; the lock is held until the block ends."""
        conn = None
        key = f"poll:{channel}"
        try:
            while not stopping.is_set():
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self.dsn)
                    if await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key):
                        break
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    why = redact_text(str(exc), self.dsn)
                    log.warning("bot %s: poll election failed (%s); retrying", channel, why)
                    conn = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), POLL_RETRY_S)
            if stopping.is_set() or conn is None:
                yield False
                return
            poller = asyncio.current_task()
            assert poller is not None
            watchdog = asyncio.create_task(self._keep_poll_lock(conn, channel, poller))
            try:
                yield True
            finally:
                watchdog.cancel()
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()  # closing the session releases the lock

    async def _keep_poll_lock(self, conn: Any, channel: str, poller: asyncio.Task[Any]) -> None:
        """The lock lives as long as its connection: once that is gone, another process
        may be polling already, so this one stops (its supervisor starts a new election)."""
        while True:
            await asyncio.sleep(POLL_CHECK_S)
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), POLL_CHECK_S)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                log.error("bot %s: lost the database session holding its poll turn", channel)
                poller.cancel()
                return

    async def _close_claims(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close()
