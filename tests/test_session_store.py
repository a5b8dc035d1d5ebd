"""SqliteSessionStore against real database files: round trips, sessions, inbox, migrations."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import StoreError
from bot.sessions import export
from bot.sessions.export import export_jsonl
from bot.sessions.schema import LATEST_VERSION, MIGRATIONS
from bot.sessions.store import SessionKey, SqliteSessionStore
from bot.types import ChatMessage, ToolCall, Usage

KEY = SessionKey("telegram:alice", "42", None, "alice")


class Clock:
    """A hand-moved clock, so timestamps are predictable without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteSessionStore]:
    async with SqliteSessionStore(tmp_path / "sessions.db", clock=Clock()) as opened:
        yield opened


def tool_conversation() -> list[ChatMessage]:
    call = ToolCall(
        "call_1",
        "weather",
        {"city": "Zürich", "days": [1, 2]},
        extras={"thought_signature": "sig=="},
    )
    bad = ToolCall("call_2", "weather", {}, arguments_error="not a JSON object: '[1]'")
    return [
        ChatMessage("user", "Wetter in Zürich? 🌦"),
        ChatMessage("assistant", None, tool_calls=(call, bad), extras={"reasoning": "r1"}),
        ChatMessage("tool", '{"temp": 21}', tool_call_id="call_1"),
        ChatMessage("tool", "error: bad arguments", tool_call_id="call_2"),
        ChatMessage("assistant", "21 °C."),
    ]


async def test_round_trip_of_every_message_kind(store: SqliteSessionStore) -> None:
    sid = await store.active_session(KEY)
    sent = tool_conversation()
    ids = []
    for message in sent:
        usage = Usage(120, 30) if message.role == "assistant" else None
        model = "gpt-main" if message.role == "assistant" else None
        ids.append(await store.append(sid, message, model_name=model, usage=usage))

    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    got = await store.messages(sid)
    assert [m.id for m in got] == ids
    assert [m.message for m in got] == sent
    # extras compare=False on the dataclasses: check them explicitly.
    assert got[1].message.extras == {"reasoning": "r1"}
    assert got[1].message.tool_calls[0].extras == {"thought_signature": "sig=="}
    assert got[1].message.tool_calls[1].arguments_error == "not a JSON object: '[1]'"
    assert got[1].model_name == "gpt-main"
    assert got[1].usage == Usage(120, 30)
    assert got[0].model_name is None
    assert got[0].usage == Usage()
    assert all(m.session_id == sid for m in got)
    assert [m.created_at for m in got] == sorted(m.created_at for m in got)
    assert await store.message_count(sid) == 5


async def test_messages_after_id_and_limit(store: SqliteSessionStore) -> None:
    sid = await store.active_session(KEY)
    ids = [await store.append(sid, ChatMessage("user", str(i))) for i in range(6)]
    page = await store.messages(sid, after_id=ids[1], limit=3)
    assert [m.id for m in page] == ids[2:5]
    assert await store.messages(sid, after_id=ids[-1]) == []


async def test_active_session_is_stable_and_separate_per_agent_and_topic(
    store: SqliteSessionStore,
) -> None:
    sid = await store.active_session(KEY)
    assert await store.active_session(SessionKey("telegram:alice", "42", None, "alice")) == sid
    other_agent = await store.active_session(SessionKey("telegram:alice", "42", None, "bob"))
    topic = await store.active_session(SessionKey("telegram:alice", "42", "7", "alice"))
    other_chat = await store.active_session(SessionKey("telegram:alice", "43", None, "alice"))
    assert len({sid, other_agent, topic, other_chat}) == 4
    assert await store.active_session(SessionKey("telegram:alice", "42", "7", "alice")) == topic


async def test_archive_keeps_messages_and_starts_a_new_session(
    store: SqliteSessionStore,
) -> None:
    old = await store.active_session(KEY)
    await store.append(old, ChatMessage("user", "remember me"))
    assert await store.archive(KEY) == old
    new = await store.active_session(KEY)
    assert new != old
    assert [m.message.content for m in await store.messages(old)] == ["remember me"]
    assert await store.messages(new) == []
    infos = {info.id: info for info in await store.sessions()}
    assert infos[old].archived
    assert not infos[new].archived
    assert infos[old].message_count == 1
    assert infos[old].last_activity is not None
    assert infos[new].message_count == 0
    assert infos[new].last_activity is None
    assert [i.id for i in await store.sessions(include_archived=False)] == [new]
    assert (await store.session_info(old)).key == KEY
    assert await store.archive(SessionKey("telegram:alice", "999", None, "alice")) is None


async def test_unknown_session_raises_store_error(store: SqliteSessionStore) -> None:
    with pytest.raises(StoreError, match="no session"):
        await store.session_info(12345)
    with pytest.raises(StoreError) as caught:  # foreign key: a sqlite3 error, translated
        await store.append(12345, ChatMessage("user", "hi"))
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)


async def test_latest_summary_wins(store: SqliteSessionStore) -> None:
    sid = await store.active_session(KEY)
    first = await store.append(sid, ChatMessage("user", "a"))
    second = await store.append(sid, ChatMessage("assistant", "b"))
    assert await store.latest_summary(sid) is None
    await store.add_summary(sid, first, "they said a", "cheap-model")
    await store.add_summary(sid, second, "they said a and b", "other-model")
    latest = await store.latest_summary(sid)
    assert latest is not None
    assert (latest.covers_up_to, latest.text, latest.model_name) == (
        second,
        "they said a and b",
        "other-model",
    )
    assert [s.text for s in await store.summaries(sid)] == ["they said a", "they said a and b"]
    other = await store.active_session(SessionKey("telegram:alice", "42", None, "bob"))
    assert await store.latest_summary(other) is None
    with pytest.raises(StoreError, match="not in session"):
        await store.add_summary(other, second, "wrong session", "m")


async def test_inbox_is_idempotent_with_pending_done_and_backlog(
    store: SqliteSessionStore,
) -> None:
    assert await store.inbox_put("telegram:alice", 10, '{"update_id": 10}') is True
    assert await store.inbox_put("telegram:alice", 10, '{"update_id": 10, "dup": 1}') is False
    assert await store.inbox_put("telegram:bob", 10, '{"update_id": 10}') is True
    assert await store.inbox_put("telegram:alice", 11, '{"update_id": 11}') is True
    assert await store.inbox_backlog() == 3

    pending = await store.inbox_pending()
    assert [(r.channel, r.update_id) for r in pending] == [
        ("telegram:alice", 10),
        ("telegram:bob", 10),
        ("telegram:alice", 11),
    ]
    assert pending[0].payload == '{"update_id": 10}'
    assert pending[0].status == "pending"
    assert [r.update_id for r in await store.inbox_pending("telegram:alice")] == [10, 11]

    await store.inbox_done("telegram:alice", 10)
    assert await store.inbox_backlog() == 2
    assert [r.update_id for r in await store.inbox_pending("telegram:alice")] == [11]
    # Answered stays answered: a redelivered update is still refused.
    assert await store.inbox_put("telegram:alice", 10, "{}") is False
    with pytest.raises(StoreError, match="no update"):
        await store.inbox_done("telegram:alice", 999)


async def test_inbox_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    async with SqliteSessionStore(path) as first:
        await first.inbox_put("telegram:alice", 5, "{}")
    async with SqliteSessionStore(path) as second:
        assert [r.update_id for r in await second.inbox_pending()] == [5]
        assert await second.inbox_put("telegram:alice", 5, "{}") is False


def build_v1_database(path: Path) -> None:
    """A database as the first released version left it: only migration 1, with rows."""
    conn = sqlite3.connect(path)
    try:
        for statement in MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO sessions (channel, chat_id, topic_id, agent_id, created_at)"
            " VALUES ('telegram:alice', '42', NULL, 'alice', 1.0)"
        )
        calls = json.dumps(
            [{"id": "c1", "name": "t", "arguments": {"x": 1}, "arguments_error": None}]
        )
        conn.executemany(
            "INSERT INTO messages (session_id, role, content, tool_calls, tool_call_id,"
            " model_name, prompt_tokens, completion_tokens, created_at)"
            " VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("user", "old hello", "[]", None, None, 0, 0, 2.0),
                ("assistant", None, calls, None, "gpt-old", 50, 5, 3.0),
                ("tool", "1", "[]", "c1", None, 0, 0, 4.0),
            ],
        )
        conn.execute(
            "INSERT INTO summaries (session_id, covers_up_to, text, created_at)"
            " VALUES (1, 1, 'old summary', 5.0)"
        )
        conn.commit()
    finally:
        conn.close()


async def test_v1_database_is_migrated_with_rows_intact(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    build_v1_database(path)
    async with SqliteSessionStore(path) as store:
        sid = await store.active_session(KEY)
        assert sid == 1
        messages = await store.messages(sid)
        assert [m.message.content for m in messages] == ["old hello", None, "1"]
        assert messages[1].message.tool_calls == (ToolCall("c1", "t", {"x": 1}),)
        assert messages[1].model_name == "gpt-old"
        assert messages[1].usage == Usage(50, 5)
        assert messages[2].message.tool_call_id == "c1"
        summary = await store.latest_summary(sid)
        assert summary is not None
        assert (summary.text, summary.model_name, summary.covers_up_to) == ("old summary", "", 1)
        # The tables and columns of later versions work.
        assert await store.inbox_put("telegram:alice", 1, "{}") is True
        new_id = await store.append(sid, ChatMessage("user", "new"))
        assert new_id > messages[-1].id
        await store.add_summary(sid, new_id, "new summary", "gpt-new")
        latest = await store.latest_summary(sid)
        assert latest is not None
        assert (latest.covers_up_to, latest.model_name) == (new_id, "gpt-new")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    finally:
        conn.close()


async def test_database_from_newer_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    store = SqliteSessionStore(path)
    with pytest.raises(StoreError, match="schema version 999") as caught:
        await store.open()
    assert "\n" not in str(caught.value)
    with pytest.raises(StoreError, match="not open"):
        await store.message_count(1)


async def test_file_database_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    async with SqliteSessionStore(path) as store:
        await store.active_session(KEY)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    finally:
        conn.close()


async def test_unopenable_path_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="opening"):
        await SqliteSessionStore(tmp_path / "missing-dir" / "x.db").open()


async def test_concurrent_appends_all_land_with_unique_ids(store: SqliteSessionStore) -> None:
    sid = await store.active_session(KEY)
    other = await store.active_session(SessionKey("telegram:bob", "1", None, "bob"))

    async def writer(n: int) -> int:
        target = sid if n % 2 else other
        return await store.append(target, ChatMessage("user", f"message {n}"))

    ids = await asyncio.gather(*(writer(n) for n in range(50)))
    assert len(set(ids)) == 50
    assert await store.message_count(sid) + await store.message_count(other) == 50
    stored = await store.messages(sid) + await store.messages(other)
    assert sorted(m.message.content or "" for m in stored) == sorted(
        f"message {n}" for n in range(50)
    )


async def test_concurrent_active_session_creates_one_session(store: SqliteSessionStore) -> None:
    ids = await asyncio.gather(*(store.active_session(KEY) for _ in range(20)))
    assert len(set(ids)) == 1
    assert len(await store.sessions()) == 1


async def test_lone_surrogates_do_not_crash(store: SqliteSessionStore) -> None:
    sid = await store.active_session(KEY)
    broken = ChatMessage(
        "assistant",
        "cut emoji \ud83d",
        tool_calls=(ToolCall("c\udc00", "t", {"q": "\ud800"}),),
        extras={"k": "\udfff"},
    )
    mid = await store.append(sid, broken, model_name="m\ud800")
    await store.append(sid, ChatMessage("user", "pair \ud83d\ude00 rejoined"))
    assert await store.inbox_put("telegram:alice", 1, '{"text": "\ud800"}')
    got = await store.messages(sid)
    assert got[0].id == mid
    assert got[0].message.content == "cut emoji \ufffd"
    assert got[0].message.tool_calls[0].arguments == {"q": "\ufffd"}
    assert got[0].message.extras == {"k": "\ufffd"}
    assert got[0].model_name == "m\ufffd"
    assert got[1].message.content == "pair 😀 rejoined"
    assert (await store.inbox_pending())[0].payload == '{"text": "\ufffd"}'


async def test_memory_database_works(tmp_path: Path) -> None:
    async with SqliteSessionStore(":memory:") as store:
        sid = await store.active_session(KEY)
        await store.append(sid, ChatMessage("user", "hi"))
        assert await store.message_count(sid) == 1


async def test_export_writes_every_message_and_summary(
    store: SqliteSessionStore, tmp_path: Path
) -> None:
    sid = await store.active_session(KEY)
    ids = [
        await store.append(sid, m, model_name="gpt" if m.role == "assistant" else None)
        for m in tool_conversation()
    ]
    await store.add_summary(sid, ids[2], "weather asked", "cheap")
    other = await store.active_session(SessionKey("telegram:bob", "1", "9", "bob"))
    await store.append(other, ChatMessage("user", "hallo"), usage=Usage(3, 0))

    out = io.StringIO()
    written = await export_jsonl(store, [sid, other], out)
    lines = out.getvalue().splitlines()
    assert written == len(lines) == len(ids) + 1 + 1
    rows = [json.loads(line) for line in lines]
    messages = [r for r in rows if r["type"] == "message"]
    assert [r["id"] for r in messages if r["session_id"] == sid] == ids
    assert messages[0]["content"] == "Wetter in Zürich? 🌦"
    assert messages[1]["tool_calls"][0] == {
        "id": "call_1",
        "name": "weather",
        "arguments": {"city": "Zürich", "days": [1, 2]},
        "arguments_error": None,
        "extras": {"thought_signature": "sig=="},
    }
    assert messages[2]["tool_call_id"] == "call_1"
    assert messages[1]["model_name"] == "gpt"
    assert messages[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 0}
    assert (messages[-1]["channel"], messages[-1]["topic_id"], messages[-1]["agent_id"]) == (
        "telegram:bob",
        "9",
        "bob",
    )
    summaries = [r for r in rows if r["type"] == "summary"]
    assert summaries == [
        {
            "type": "summary",
            "session_id": sid,
            "channel": "telegram:alice",
            "chat_id": "42",
            "topic_id": None,
            "agent_id": "alice",
            "archived": False,
            "covers_up_to": ids[2],
            "text": "weather asked",
            "model_name": "cheap",
            "created_at": summaries[0]["created_at"],
        }
    ]
    assert "Zürich" in out.getvalue()  # ensure_ascii=False: readable UTF-8

    path = tmp_path / "export.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        assert await export_jsonl(store, [sid], fh) == len(ids) + 1
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(ids) + 1


async def test_export_pages_through_long_sessions(store: SqliteSessionStore) -> None:
    sid = await store.active_session(KEY)
    for i in range(export.PAGE_SIZE + 7):
        await store.append(sid, ChatMessage("user", str(i)))
    out = io.StringIO()
    assert await export_jsonl(store, [sid], out) == export.PAGE_SIZE + 7
    contents = [json.loads(line)["content"] for line in out.getvalue().splitlines()]
    assert contents == [str(i) for i in range(export.PAGE_SIZE + 7)]


def test_session_key_rejects_empty_topic() -> None:
    with pytest.raises(ValueError, match="topic_id"):
        SessionKey("telegram:alice", "42", "", "alice")


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    assert LATEST_VERSION >= 2


async def test_a_directory_as_database_raises_store_error(tmp_path: Path) -> None:
    # sqlite3 itself refuses this one: the failed-connect path, not the directory check.
    with pytest.raises(StoreError, match="opening"):
        await SqliteSessionStore(tmp_path).open()
