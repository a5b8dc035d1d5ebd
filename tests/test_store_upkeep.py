"""Store hygiene (issue 11): the WAL is truncated, answered inbox rows are pruned after the
retention, and a database deleted or moved under the running bridge turns /readyz red."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.config.schema import SessionSettings
from bot.sessions.store import SessionKey, SqliteSessionStore
from bot.sessions.upkeep import StoreUpkeep
from bot.testing import BridgeProcess, FakeLLM, FakeTelegram
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan
from bot.types import ChatMessage

HOUR = 3600.0
KEY = SessionKey("telegram-alice", "42", None, "alice")
ALICE = BotPlan(
    "alice", "6100001:alice-upkeep-token-" + "U" * 24, "alice", "You are Alice.", "alice-model"
)


class Clock:
    """Stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[SqliteSessionStore]:
    async with SqliteSessionStore(tmp_path / "sessions.db", clock=clock) as opened:
        yield opened


def upkeep_of(store: SqliteSessionStore, **settings: float) -> StoreUpkeep:
    chosen = SessionSettings(**settings)  # type: ignore[arg-type]
    return StoreUpkeep(store, lambda: chosen)


def wal_size(tmp_path: Path) -> int:
    return (tmp_path / "sessions.db-wal").stat().st_size


async def write_messages(store: SqliteSessionStore, count: int) -> None:
    session = await store.active_session(KEY)
    for n in range(count):
        await store.append(session, ChatMessage("user", f"message {n} " + "x" * 2000))


async def test_upkeep_truncates_the_wal_under_writes(
    tmp_path: Path, store: SqliteSessionStore
) -> None:
    upkeep = upkeep_of(store)
    await write_messages(store, 300)
    assert wal_size(tmp_path) > 500_000
    await upkeep.run_once()
    assert wal_size(tmp_path) == 0
    await write_messages(store, 100)  # the store keeps working on the truncated WAL
    assert wal_size(tmp_path) > 100_000
    await upkeep.run_once()
    assert wal_size(tmp_path) == 0
    session = await store.active_session(KEY)
    assert await store.message_count(session) == 400
    with sqlite3.connect(tmp_path / "sessions.db") as other:  # everything is in the main file
        assert other.execute("SELECT COUNT(*) FROM messages").fetchone() == (400,)


async def test_a_reader_holding_the_wal_defers_truncation_without_stalling(
    tmp_path: Path, store: SqliteSessionStore
) -> None:
    await write_messages(store, 50)
    reader = sqlite3.connect(tmp_path / "sessions.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM messages").fetchone()  # holds a snapshot
        await write_messages(store, 50)
        started = time.monotonic()
        assert await store.truncate_journal() is False
        assert time.monotonic() - started < 2.0  # not the 5 s busy timeout
        reader.execute("COMMIT")
    finally:
        reader.close()
    assert await store.truncate_journal() is True
    assert wal_size(tmp_path) == 0


def inbox_keys(tmp_path: Path) -> set[int]:
    with sqlite3.connect(tmp_path / "sessions.db") as other:
        return {row[0] for row in other.execute("SELECT update_id FROM inbox")}


async def test_answered_rows_are_pruned_after_the_retention_and_others_kept(
    tmp_path: Path, store: SqliteSessionStore, clock: Clock
) -> None:
    for update_id in (1, 2, 3, 4):
        assert await store.inbox_put("telegram-alice", update_id, f'{{"text": "u{update_id}"}}')
    await store.inbox_done("telegram-alice", 1)  # answered at once
    clock.now += 30 * HOUR
    await store.inbox_done("telegram-alice", 2)  # answered 30 h later
    clock.now += 18 * HOUR + 1  # update 1 was answered 48 h + 1 s ago, update 2 only 18 h
    await store.inbox_put("telegram-alice", 5, '{"text": "u5"}')
    await store.inbox_done("telegram-alice", 5)
    upkeep = upkeep_of(store, inbox_retention_hours=48)
    await upkeep.run_once()
    assert inbox_keys(tmp_path) == {2, 3, 4, 5}  # 3 and 4 are still pending: never pruned
    assert [r.update_id for r in await store.inbox_pending()] == [3, 4]
    # A redelivery of a kept key is still recognised as seen.
    assert await store.inbox_put("telegram-alice", 2, '{"text": "u2"}') is False
    clock.now += 30 * HOUR  # now update 2 is past the retention too, 5 is not
    await upkeep.run_once()
    assert inbox_keys(tmp_path) == {3, 4, 5}


async def test_pruning_goes_in_batches_and_takes_them_all(
    tmp_path: Path, store: SqliteSessionStore, clock: Clock
) -> None:
    for update_id in range(1, 1201):
        await store.inbox_put("telegram-alice", update_id, "{}")
        await store.inbox_done("telegram-alice", update_id)
    await store.inbox_put("telegram-alice", 5000, "{}")
    clock.now += 49 * HOUR
    assert await store.inbox_prune(48 * HOUR) == 1200
    assert inbox_keys(tmp_path) == {5000}


async def test_a_database_replaced_by_another_file_is_reported_once(
    tmp_path: Path, store: SqliteSessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    upkeep = upkeep_of(store)
    await upkeep.run_once()
    assert upkeep.status() == {"ok": True}
    database = tmp_path / "sessions.db"
    copy = tmp_path / "copy.db"
    copy.write_bytes(database.read_bytes())
    copy.replace(database)  # what a restore over the live file does
    await upkeep.run_once()
    await upkeep.run_once()
    assert upkeep.status() == {
        "ok": False,
        "problem": f"database path {database} now names another file than the one the "
        "bridge writes",
    }
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "restart the bridge" in errors[0].getMessage()


def test_retention_shorter_than_telegrams_24_hours_is_refused() -> None:
    assert SessionSettings().inbox_retention_hours == 48
    assert SessionSettings(inbox_retention_hours=24).inbox_retention_hours == 24
    with pytest.raises(ValueError, match="greater than or equal to 24"):
        SessionSettings(inbox_retention_hours=1)


# --- through the real bridge ----------------------------------------------------------


async def readyz(http: httpx.AsyncClient, *, ready: bool) -> dict[str, object]:
    """The /readyz body once its ``ready`` is as asked (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            response = await http.get("/readyz")
            body: dict[str, object] = response.json()
            if body["ready"] is ready:
                assert response.status_code == (200 if ready else 503)
                return body
            await asyncio.sleep(0.02)  # a probe has no change notification: ask again


async def store_file_ok(http: httpx.AsyncClient) -> str:
    lines = (await http.get("/metrics")).text.splitlines()
    [line] = [n for n in lines if n.startswith("persona_bridge_store_file_ok ")]
    return line.split()[1]


async def test_database_moved_or_deleted_under_the_bridge_turns_readyz_red(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    cfg = make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE]
    )
    cfg["session"]["upkeep_interval_s"] = 0.05
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start_polling(fake_telegram, ALICE.token)
    port = int(
        (await bridge.wait_for_log(r"gateway listening on http://127\.0\.0\.1:(\d+)")).group(1)
    )
    database = tmp_path / "sessions.db"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await readyz(http, ready=True))["store"] == {"ok": True}
        assert await store_file_ok(http) == "1.0"

        database.rename(tmp_path / "moved.db")  # gone from its path…
        red = await readyz(http, ready=False)
        await bridge.wait_for_log(r"ERROR .*database file .*sessions\.db was deleted")
        assert await store_file_ok(http) == "0.0"
        (tmp_path / "moved.db").rename(database)  # …and back: the same file again
        assert (await readyz(http, ready=True))["store"] == {"ok": True}
        await bridge.wait_for_log(r"the database path names the open file again")

        database.unlink()
        gone = await readyz(http, ready=False)
        # The bridge keeps serving from the open file meanwhile.
        fake_telegram.inject_message(ALICE.token, chat_id=7, text="still answering?")
        [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=7, timeout=30)
        assert (await readyz(http, ready=False))["store"] == gone["store"]
    assert await bridge.stop() == 0

    assert red["store"] == {
        "ok": False,
        "problem": f"database file {database} was deleted or moved away under the running bridge",
    }
    assert gone["store"] == red["store"]
    assert red["bots"] == {
        "telegram-alice": {"polling": True, "username": "alice_bot", "mode": "polling"}
    }
    assert reply.text.endswith("] still answering?")
    logs = bridge.logs()
    loud = [
        line
        for line in logs.splitlines()
        if "was deleted or moved away under the running bridge" in line
    ]
    assert len(loud) == 2  # once per change of state, not once per round
    assert all(" ERROR " in line for line in loud)
    assert "/proc/" in loud[0]  # where the operator can still read the open file
    assert not database.exists()  # never silently recreated
