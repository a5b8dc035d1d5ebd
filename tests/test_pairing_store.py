"""The pairing tables of the store, on SQLite and PostgreSQL (``make_store``): codes,
approvals, revocations; SQLite's migration 6."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import StoreError
from bot.sessions.pairing_store import CODE_ALPHABET, new_code, normalise_code
from bot.sessions.schema import LATEST_VERSION, MIGRATIONS
from bot.sessions.store import SessionStore, SqliteSessionStore
from bot.testing.pytest_plugin import StoreFactory

ALICE = "telegram-alice"
BOB = "telegram-bob"


class Clock:
    """Wall time moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(make_store: StoreFactory, clock: Clock) -> AsyncIterator[SessionStore]:
    async with make_store(clock=clock) as opened:
        yield opened


async def issue(store: SessionStore, user: str, code: str, channel: str = ALICE) -> str:
    issued = await store.pairing_issue(
        channel, user, f"user{user}", user, code, ttl_s=3600, max_open=3
    )
    assert issued is not None
    return issued.code


async def test_one_open_code_per_user_and_bot_until_it_expires(
    store: SessionStore, clock: Clock
) -> None:
    assert await issue(store, "7", "AAAAAA") == "AAAAAA"
    clock.now += 3599
    assert await issue(store, "7", "BBBBBB") == "AAAAAA"  # asked again: the same code
    assert await issue(store, "7", "CCCCCC", channel=BOB) == "CCCCCC"  # another bot, its own
    clock.now += 1
    assert await issue(store, "7", "DDDDDD") == "DDDDDD"  # the first one expired
    assert [c.code for c in await store.pairing_codes()] == ["CCCCCC", "DDDDDD"]


async def test_open_codes_per_bot_are_capped(store: SessionStore, clock: Clock) -> None:
    for user, code in (("1", "AAAAAA"), ("2", "BBBBBB"), ("3", "CCCCCC")):
        await issue(store, user, code)
    full = await store.pairing_issue(ALICE, "4", None, "4", "DDDDDD", ttl_s=3600, max_open=3)
    assert full is None
    assert await issue(store, "4", "EEEEEE", channel=BOB) == "EEEEEE"  # per bot
    clock.now += 3600  # all expired: room again
    assert await issue(store, "4", "FFFFFF") == "FFFFFF"


async def test_a_code_taken_by_another_user_is_a_store_error(store: SessionStore) -> None:
    await issue(store, "1", "AAAAAA")
    with pytest.raises(StoreError):
        await issue(store, "2", "AAAAAA", channel=BOB)


async def test_approve_admits_the_user_on_the_issuing_bot_only(
    store: SessionStore, clock: Clock
) -> None:
    await issue(store, "7", "AAAAAA")
    assert not await store.pairing_is_approved(ALICE, "7")
    approval = await store.pairing_approve("AAAAAA", f"{BOB}:42")
    assert approval is not None
    assert (approval.channel, approval.user_id, approval.username) == (ALICE, "7", "user7")
    assert approval.approved_by == f"{BOB}:42"
    assert approval.approved_at == clock.now
    assert await store.pairing_is_approved(ALICE, "7")
    assert not await store.pairing_is_approved(BOB, "7")
    assert await store.pairing_codes() == []  # used up
    assert await store.pairing_approve("AAAAAA", "cli") is None  # once
    assert await store.pairing_approvals() == [approval]


async def test_an_expired_or_unknown_code_is_refused(store: SessionStore, clock: Clock) -> None:
    await issue(store, "7", "AAAAAA")
    clock.now += 3600
    assert await store.pairing_approve("AAAAAA", "cli") is None
    assert await store.pairing_approve("ZZZZZZ", "cli") is None
    assert not await store.pairing_is_approved(ALICE, "7")
    assert await store.pairing_codes() == []


async def test_revoke_on_one_bot_or_all(store: SessionStore) -> None:
    for channel, code in ((ALICE, "AAAAAA"), (BOB, "BBBBBB")):
        await issue(store, "7", code, channel=channel)
        assert await store.pairing_approve(code, "cli") is not None
    assert await store.pairing_revoke("7", BOB) == 1
    assert await store.pairing_is_approved(ALICE, "7")
    assert not await store.pairing_is_approved(BOB, "7")
    assert await store.pairing_revoke("7") == 1
    assert await store.pairing_revoke("7") == 0
    assert await store.pairing_approvals() == []


async def test_approvals_survive_reopening(make_store: StoreFactory, clock: Clock) -> None:
    async with make_store(clock=clock) as first:
        await issue(first, "7", "AAAAAA")
        await first.pairing_approve("AAAAAA", "cli")
        await issue(first, "8", "BBBBBB")
    async with make_store(clock=clock) as second:
        assert await second.pairing_is_approved(ALICE, "7")
        assert [c.code for c in await second.pairing_codes()] == ["BBBBBB"]


def test_codes_are_short_unambiguous_and_typed_leniently() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) > 190
    assert all(len(c) == 6 and set(c) <= set(CODE_ALPHABET) for c in codes)
    assert not set("01OIL") & set(CODE_ALPHABET)
    assert normalise_code(" abc-234 ") == "ABC234"
    assert normalise_code("ABC 234") == "ABC234"
    assert normalise_code("ABC10O") is None  # letters that are never in a code
    assert normalise_code("ABC2345") is None


def build_v5_database(path: Path) -> None:
    """A database as migration 5 left it, with an inbox row and a message."""
    conn = sqlite3.connect(path)
    try:
        for migration in MIGRATIONS[:5]:
            for statement in migration.statements:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 5")
        conn.execute(
            "INSERT INTO sessions (channel, chat_id, topic_id, agent_id, created_at)"
            " VALUES ('telegram-alice', '42', NULL, 'alice', 1.0)"
        )
        conn.execute(
            "INSERT INTO messages (session_id, role, content, created_at, source)"
            " VALUES (1, 'user', 'old hello', 2.0, 'telegram-alice:5')"
        )
        conn.execute(
            "INSERT INTO inbox (channel, update_id, payload, received_at, chat_id)"
            " VALUES ('telegram-alice', 5, '{}', 3.0, '42')"
        )
        conn.commit()
    finally:
        conn.close()


async def test_v5_database_gains_the_pairing_tables(tmp_path: Path, clock: Clock) -> None:
    assert LATEST_VERSION >= 6
    path = tmp_path / "v5.db"
    build_v5_database(path)
    async with SqliteSessionStore(path, clock=clock) as store:
        [pending] = await store.inbox_pending()
        assert (pending.update_id, pending.chat_id) == (5, "42")
        [old] = await store.messages(1)
        assert old.message.content == "old hello"
        await issue(store, "7", "AAAAAA")
        assert await store.pairing_approve("AAAAAA", "cli") is not None
        assert await store.pairing_is_approved(ALICE, "7")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    finally:
        conn.close()
