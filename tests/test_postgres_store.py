"""What only the PostgreSQL store has: migrations under concurrent openers, secrets kept out
of errors, and the coordination several processes use (claims, leases, NOTIFY, the poll
election). The shared store contract runs on both backends in test_session_store.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bot.errors import StoreError
from bot.sessions import postgres_claims
from bot.sessions.postgres import PostgresSessionStore
from bot.sessions.postgres_schema import PG_LATEST_VERSION
from bot.testing.postgres import drop_database, fresh_database
from bot.testing.pytest_plugin import PgServer


@pytest.fixture
async def empty_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A database nobody migrated yet."""
    dsn = await fresh_database(pg_server.admin_dsn)
    yield dsn
    await drop_database(pg_server.admin_dsn, dsn)


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresSessionStore]:
    async with PostgresSessionStore(pg_dsn) as opened:
        yield opened


async def test_concurrent_openers_apply_each_migration_once(empty_dsn: str) -> None:
    stores = [PostgresSessionStore(empty_dsn, pool_size=2) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        conn = await asyncpg.connect(empty_dsn)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM persona_bridge_schema")]
        finally:
            await conn.close()
        assert versions == list(range(1, PG_LATEST_VERSION + 1))
        assert await stores[0].inbox_put("tg:a", 1, "{}") is True
        assert await stores[5].inbox_put("tg:a", 1, "{}") is False  # one database
    finally:
        await asyncio.gather(*(s.aclose() for s in stores))


async def test_a_database_from_newer_code_is_refused(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("INSERT INTO persona_bridge_schema (version) VALUES (99)")
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="newer"):
        await PostgresSessionStore(pg_dsn).open()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_password_never_shows_in_errors_or_repr() -> None:
    dsn = f"postgresql://bridge:Sup3r-s3cret-pw@127.0.0.1:{closed_port()}/sessions"
    store = PostgresSessionStore(dsn)
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert "Sup3r-s3cret-pw" not in str(caught.value)
    assert "bridge:***@127.0.0.1" in str(caught.value)
    assert "Sup3r-s3cret-pw" not in repr(store)
    with pytest.raises(StoreError, match="not open"):
        await store.inbox_backlog()


async def test_claims_hold_a_chat_for_one_live_process_until_its_lease_lapses(
    store: PostgresSessionStore,
) -> None:
    await store.lease_renew("A", 30)
    await store.lease_renew("B", 30)
    for update_id, chat in ((1, "x"), (2, "y"), (3, "x")):
        await store.inbox_put("tg:a", update_id, "{}", chat_id=chat)
    first = await store.claim_work("A", ["tg:a"])
    assert [(r.update_id, r.claimed_by) for r in first] == [(1, None), (2, None), (3, None)]
    await store.inbox_put("tg:a", 4, "{}", chat_id="x")
    await store.inbox_put("tg:a", 5, "{}", chat_id="z")
    await store.inbox_put("tg:b", 6, "{}", chat_id="x")  # another bot's chat x
    # Chat x is held by A: B may not run its next message before A's are done.
    assert [r.update_id for r in await store.claim_work("B", ["tg:a", "tg:b"])] == [5, 6]
    assert [r.update_id for r in await store.claim_work("A", ["tg:a"])] == [4]
    assert await store.claim_work("A", ["tg:a"]) == []
    await store.inbox_done("tg:a", 2)
    assert await store.claims_held("A") == 3

    await store.lease_renew("A", -1)  # A stopped renewing: its lease has lapsed
    await store.lease_renew("C", 30)
    taken = await store.claim_work("B", ["tg:a"])
    assert [(r.update_id, r.claimed_by) for r in taken] == [(1, "A"), (3, "A"), (4, "A")]
    assert await store.claims_held("B") == 5  # 1, 3, 4 taken over; 5 and 6 its own

    # A group's messages share one lane whichever of our bots got them (bot.groups).
    await store.inbox_put("tg:a", 20, "{}", chat_id="-100")
    assert [r.update_id for r in await store.claim_work("C", ["tg:a", "tg:b"])] == [20]
    await store.inbox_put("tg:b", 21, "{}", chat_id="-100")
    assert await store.claim_work("B", ["tg:a", "tg:b"]) == []
    assert [r.update_id for r in await store.claim_work("C", ["tg:a", "tg:b"])] == [21]
    await store.release_claims("C")

    await store.release_claims("B")  # a clean stop hands everything back at once
    assert await store.claims_held("B") == 0
    assert [r.update_id for r in await store.claim_work("C", ["tg:a"])] == [1, 3, 4, 5, 20]


async def test_new_work_notifies_listening_processes(store: PostgresSessionStore) -> None:
    woken = asyncio.Event()
    await store.listen(woken.set)
    await store.inbox_put("tg:a", 1, "{}", chat_id="x")
    async with asyncio.timeout(10):
        await woken.wait()
    woken.clear()
    await store.lease_renew("A", 30)
    await store.release_claims("A")  # handing rows back wakes the others too
    async with asyncio.timeout(10):
        await woken.wait()


async def test_one_poller_per_bot_and_a_standby_takes_over(pg_dsn: str) -> None:
    async with PostgresSessionStore(pg_dsn) as one, PostgresSessionStore(pg_dsn) as two:
        never = asyncio.Event()
        holder = one.poll_turn("tg:a", never)
        assert await holder.__aenter__() is True
        standby_elected = asyncio.Event()

        async def standby() -> None:
            async with two.poll_turn("tg:a", never) as elected:
                assert elected
                standby_elected.set()

        waiting = asyncio.create_task(standby())
        async with one.poll_turn("tg:b", never) as other_bot:
            assert other_bot is True  # another bot is elected on its own
        await asyncio.sleep(0.3)  # the standby retries meanwhile, and must not get it
        assert not standby_elected.is_set()
        await holder.__aexit__(None, None, None)  # the holder goes (its session ends)
        async with asyncio.timeout(10):
            await standby_elected.wait()
        await waiting

        stopping = asyncio.Event()
        stopping.set()
        async with one.poll_turn("tg:c", stopping) as elected:
            assert elected is False  # a stopping channel is not elected


async def test_a_poller_whose_lock_session_dies_stops_polling(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dropped the session holding the lock (restart, network): another process
    may be elected already, so this one must stop rather than poll alongside it."""
    monkeypatch.setattr(postgres_claims, "POLL_CHECK_S", 0.1)
    async with PostgresSessionStore(pg_dsn) as store:
        elected = asyncio.Event()

        async def poller() -> None:
            async with store.poll_turn("tg:a", asyncio.Event()) as turn:
                assert turn
                elected.set()
                await asyncio.Event().wait()  # polls for ever, unless its turn is lost

        task = asyncio.create_task(poller())
        async with asyncio.timeout(10):
            await elected.wait()
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(10):
                await task


async def test_a_chat_whose_album_is_still_arriving_waits_to_be_claimed(pg_dsn: str) -> None:
    now = 5000.0
    async with PostgresSessionStore(pg_dsn, clock=lambda: now) as store:
        await store.lease_renew("A", 30)
        part = '{"message": {"media_group_id": "album-1", "text": "%s"}}'
        await store.inbox_put("tg:a", 1, "{}", chat_id="x")
        await store.inbox_put("tg:a", 2, part % "one", chat_id="x")
        await store.inbox_put("tg:a", 3, part % "two", chat_id="x")
        await store.inbox_put("tg:a", 4, "{}", chat_id="y")
        # Parts stored after album_since: chat x waits, whole (its order holds); y goes.
        rows = await store.claim_work("A", ["tg:a"], album_since=now - 1)
        assert [r.update_id for r in rows] == [4]
        rows = await store.claim_work("A", ["tg:a"], album_since=now + 1)  # album complete
        assert [r.update_id for r in rows] == [1, 2, 3]
