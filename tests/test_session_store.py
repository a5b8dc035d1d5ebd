"""The store contract against real databases — every ``store`` test runs on SQLite and on
PostgreSQL (``make_store``): round trips, sessions, inbox, migrations."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import asyncpg
import pytest

from bot.errors import StoreError
from bot.sessions import export
from bot.sessions.export import export_jsonl
from bot.sessions.group_turns import GroupTurn
from bot.sessions.schema import LATEST_VERSION, MIGRATIONS
from bot.sessions.store import SessionKey, SessionStore, SqliteSessionStore
from bot.sessions.usage import UsageRow, UsageTotal
from bot.testing.pytest_plugin import StoreFactory
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
async def store(make_store: StoreFactory) -> AsyncIterator[SessionStore]:
    async with make_store(clock=Clock()) as opened:
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


async def test_round_trip_of_every_message_kind(store: SessionStore) -> None:
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


async def test_messages_after_id_and_limit(store: SessionStore) -> None:
    sid = await store.active_session(KEY)
    ids = [await store.append(sid, ChatMessage("user", str(i))) for i in range(6)]
    page = await store.messages(sid, after_id=ids[1], limit=3)
    assert [m.id for m in page] == ids[2:5]
    assert await store.messages(sid, after_id=ids[-1]) == []


async def test_active_session_is_stable_and_separate_per_agent_and_topic(
    store: SessionStore,
) -> None:
    sid = await store.active_session(KEY)
    assert await store.active_session(SessionKey("telegram:alice", "42", None, "alice")) == sid
    other_agent = await store.active_session(SessionKey("telegram:alice", "42", None, "bob"))
    topic = await store.active_session(SessionKey("telegram:alice", "42", "7", "alice"))
    other_chat = await store.active_session(SessionKey("telegram:alice", "43", None, "alice"))
    assert len({sid, other_agent, topic, other_chat}) == 4
    assert await store.active_session(SessionKey("telegram:alice", "42", "7", "alice")) == topic


async def test_archive_keeps_messages_and_starts_a_new_session(
    store: SessionStore,
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


async def test_unknown_session_raises_store_error(store: SessionStore) -> None:
    with pytest.raises(StoreError, match="no session"):
        await store.session_info(12345)
    with pytest.raises(StoreError) as caught:  # foreign key: the driver's error, translated
        await store.append(12345, ChatMessage("user", "hi"))
    assert isinstance(
        caught.value.__cause__, sqlite3.IntegrityError | asyncpg.ForeignKeyViolationError
    )


async def test_latest_summary_wins(store: SessionStore) -> None:
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
    store: SessionStore,
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


async def test_turn_context_is_the_latest_summary_and_what_follows_it(
    store: SessionStore,
) -> None:
    sid = await store.active_session(KEY)
    ids = [await store.append(sid, ChatMessage("user", f"m{n}")) for n in range(4)]
    for context in (store.turn_context, lambda s: SessionStore.turn_context(store, s)):
        summary, history = await context(sid)
        assert summary is None
        assert [m.id for m in history] == ids
    await store.add_summary(sid, ids[1], "m0 and m1", "cheap")
    # The SQLite store's one-step version and the seam's default built from two methods.
    for context in (store.turn_context, lambda s: SessionStore.turn_context(store, s)):
        summary, history = await context(sid)
        assert summary is not None
        assert summary.text == "m0 and m1"
        assert [m.message.content for m in history] == ["m2", "m3"]


async def test_begin_turn_appends_once_per_source_and_reads_the_context(
    store: SessionStore,
) -> None:
    other = SessionKey("telegram:alice", "43", None, "alice")
    # The store's own version, then the seam's default built from three methods.
    for key, begin in ((KEY, store.begin_turn), (other, partial(SessionStore.begin_turn, store))):
        sid, first, (summary, history) = await begin(key, ChatMessage("user", "hi"), source="t:1")
        assert sid == await store.active_session(key)
        assert summary is None
        assert [(m.id, m.message.content) for m in history] == [(first, "hi")]
        await store.append(sid, ChatMessage("assistant", "hello"))
        await store.add_summary(sid, first, "they greeted", "cheap")
        # A replayed update: the same source stores nothing new; the context follows the summary.
        again, same, (summary, history) = await begin(key, ChatMessage("user", "hi"), source="t:1")
        assert (again, same) == (sid, first)
        assert summary is not None
        assert summary.text == "they greeted"
        assert [m.message.content for m in history] == ["hello"]
        assert await store.message_count(sid) == 2


async def test_inbox_delivered_confirms_the_last_chunk_and_finishes_the_row(
    store: SessionStore,
) -> None:
    for update_id in (20, 21):
        await store.inbox_put("telegram:alice", update_id, "{}")
        await store.inbox_reply("telegram:alice", update_id, "answer")
        await store.inbox_progress("telegram:alice", update_id, sending=1, chunks_sent=1)
    await store.inbox_delivered("telegram:alice", 20, chunks_sent=2)
    await SessionStore.inbox_delivered(store, "telegram:alice", 21, chunks_sent=2)  # default
    for update_id in (20, 21):
        row = await store.inbox_row("telegram:alice", update_id)
        assert row is not None
        assert (row.status, row.outcome, row.chunks_sent, row.sending) == (
            "done",
            "delivered",
            2,
            None,
        )
    assert await store.inbox_backlog() == 0
    with pytest.raises(StoreError, match="no update"):
        await store.inbox_delivered("telegram:alice", 999, chunks_sent=1)


async def test_inbox_survives_reopen(make_store: StoreFactory) -> None:
    async with make_store() as first:
        await first.inbox_put("telegram:alice", 5, "{}")
    async with make_store() as second:
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


async def test_concurrent_appends_all_land_with_unique_ids(store: SessionStore) -> None:
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


async def test_concurrent_active_session_creates_one_session(store: SessionStore) -> None:
    ids = await asyncio.gather(*(store.active_session(KEY) for _ in range(20)))
    assert len(set(ids)) == 1
    assert len(await store.sessions()) == 1


async def test_lone_surrogates_do_not_crash(store: SessionStore) -> None:
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


async def test_export_writes_every_message_and_summary(store: SessionStore, tmp_path: Path) -> None:
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


async def test_export_pages_through_long_sessions(store: SessionStore) -> None:
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


async def test_inbox_row_lifecycle_claims_tasks_outbox_and_outcome(store: SessionStore) -> None:
    """One row's whole memory, on both backends: claim, reply, chunk progress, outcome;
    tasks count down below zero; a claim by one owner is not handed out to it again."""
    assert await store.inbox_put("tg:a", 7, '{"u": 7}', chat_id="42", owner="p1")
    assert await store.inbox_put("tg:a", 8, '{"u": 8}', chat_id="42", topic_id="3")
    assert await store.inbox_add_task("tg:a", "42", None, '{"task": 1}', "p1") == -1
    assert await store.inbox_add_task("tg:a", "42", None, '{"task": 2}', "p1") == -2
    assert await store.inbox_add_task("tg:b", "9", None, "{}", "p1") == -1

    claimed = await store.inbox_claim("tg:a", "p1")  # only what p1 did not hold
    assert [(r.update_id, r.claimed_by, r.topic_id) for r in claimed] == [(8, None, "3")]
    assert await store.inbox_claim("tg:a", "p1") == []
    taken = await store.inbox_claim("tg:a", "p2")  # another process: everything, in order
    assert [r.update_id for r in taken] == [7, 8, -1, -2]
    assert [r.kind for r in taken] == ["update", "update", "task", "task"]
    assert {r.claimed_by for r in taken} == {"p1"}
    await store.inbox_release("tg:a", 8)
    row = await store.inbox_row("tg:a", 8)
    assert row is not None
    assert row.claimed_by is None

    await store.inbox_reply("tg:a", 7, "the answer")
    await store.inbox_progress("tg:a", 7, sending=0, chunks_sent=0)
    row = await store.inbox_row("tg:a", 7)
    assert row is not None
    assert (row.reply, row.sending, row.chunks_sent) == ("the answer", 0, 0)
    await store.inbox_progress("tg:a", 7, sending=None, chunks_sent=1)
    await store.inbox_done("tg:a", 7, outcome="given_up", note="blocked")
    row = await store.inbox_row("tg:a", 7)
    assert row is not None
    assert (row.status, row.outcome, row.note, row.claimed_by) == (
        "done",
        "given_up",
        "blocked",
        None,
    )
    assert (row.chunks_sent, row.sending) == (1, None)
    for missing in (
        store.inbox_reply("tg:a", 99, "x"),
        store.inbox_progress("tg:a", 99, sending=None, chunks_sent=1),
    ):
        with pytest.raises(StoreError, match="no update"):
            await missing


async def test_chat_moved_takes_sessions_and_pending_rows_along(store: SessionStore) -> None:
    old = await store.active_session(SessionKey("tg:a", "-5", None, "alice"))
    await store.inbox_put("tg:a", 1, "{}", chat_id="-5")
    await store.chat_moved("tg:a", "-5", "-1005")
    assert await store.chat_moves() == {("tg:a", "-1005"): "-5"}
    assert await store.active_session(SessionKey("tg:a", "-1005", None, "alice")) == old
    row = await store.inbox_row("tg:a", 1)
    assert row is not None
    assert row.chat_id == "-1005"


async def test_answered_rows_are_pruned_after_the_retention(make_store: StoreFactory) -> None:
    clock = Clock()
    async with make_store(clock=clock) as store:
        for update_id in (1, 2, 3):
            await store.inbox_put("tg:a", update_id, "{}")
        await store.inbox_done("tg:a", 1)
        clock.now += 100.0
        await store.inbox_done("tg:a", 2)
        assert await store.inbox_prune(50.0) == 1
        assert await store.inbox_row("tg:a", 1) is None
        assert await store.inbox_row("tg:a", 2) is not None
        assert [r.update_id for r in await store.inbox_pending()] == [3]


async def test_usage_ledger_sums_by_range_and_group_and_warns_once(store: SessionStore) -> None:
    rows = [
        UsageRow(100.0, "alice", "7", "tg:a", "7", "m-a", "turn", 10, 5, 0.25),
        UsageRow(150.0, "alice", "8", "tg:a", "8", "m-a", "turn", 20, 5, None, estimated=True),
        UsageRow(200.0, "bob", "7", "tg:b", "7", "m-b", "compaction", 100, 1, 0.5),
    ]
    for row in rows:
        await store.usage_add(row)
    [((), everything)] = await store.usage_summary(0)
    assert everything == UsageTotal(3, 130, 11, 0.75, 2, 1)
    [((), early)] = await store.usage_summary(100.0, 200.0, agent_id="alice")
    assert (early.calls, early.tokens) == (2, 40)
    [((), of_seven)] = await store.usage_summary(0, user_id="7")
    assert of_seven.calls == 2
    grouped = await store.usage_summary(0, by=("agent", "model"))
    assert [key for key, _ in grouped] == [("bob", "m-b"), ("alice", "m-a")]  # largest first
    assert await store.usage_summary(500.0) == [((), UsageTotal())]
    assert await store.usage_note_warning("alice:day:80", 1.0) is True
    assert await store.usage_note_warning("alice:day:80", 2.0) is False


async def test_group_turns_are_decided_once_and_answered_per_bot(
    make_store: StoreFactory,
) -> None:
    clock = Clock()
    async with make_store(clock=clock) as store:
        first = await store.group_decide("-100", None, "m1", ["tg:a", "tg:b"])
        assert first == GroupTurn(("tg:a", "tg:b"))
        # Another bot's copy (or another process) decided differently: the first stands.
        assert await store.group_decide("-100", None, "m1", ["tg:b"]) == first
        assert await store.group_turn("-100", "7", "m1") is None  # a topic is its own key
        await store.group_answered("-100", None, "m1", "tg:b")
        await store.group_answered("-100", None, "m1", "tg:b")
        await store.group_answered("-100", None, "unknown", "tg:a")  # nothing to mark
        turn = await store.group_turn("-100", None, "m1")
        assert turn == GroupTurn(("tg:a", "tg:b"), frozenset({"tg:b"}))
        await store.active_session(SessionKey("tg:a", "-100", None, "alice"))
        await store.active_session(SessionKey("tg:b", "-100", "7", "bob"))
        assert await store.group_members("-100") == {"tg:a", "tg:b"}
        clock.now += 100.0
        await store.inbox_prune(50.0)  # old decisions go with old inbox rows
        assert await store.group_turn("-100", None, "m1") is None


async def test_set_extras_replaces_extras_and_never_the_content(store: SessionStore) -> None:
    sid = await store.active_session(KEY)
    mid = await store.append(sid, ChatMessage("user", "a photo", extras={"media": [{"id": 1}]}))
    await store.set_extras(mid, {"media": [{"id": 1, "description": "a cat"}]})
    [stored] = await store.messages(sid)
    assert stored.message.content == "a photo"
    assert stored.message.extras == {"media": [{"id": 1, "description": "a cat"}]}


async def test_the_preview_message_id_is_kept_with_its_row(store: SessionStore) -> None:
    """Streaming (SPEC §10): the preview a reply grows in survives a restart with its row,
    so the answer generated again is edited into it; on both backends."""
    assert await store.inbox_put("tg:a", 5, "{}", chat_id="42", owner="p1")
    assert (await store.inbox_row("tg:a", 5)).preview_id is None  # type: ignore[union-attr]
    await store.inbox_preview("tg:a", 5, "314")
    [row] = await store.inbox_claim("tg:a", "p2")
    assert row.preview_id == "314"
    [row] = await store.inbox_pending("tg:a")
    assert row.preview_id == "314"
    with pytest.raises(StoreError, match="no update"):
        await store.inbox_preview("tg:a", 99, "1")


async def test_each_turn_reads_the_whole_history_as_it_is_now(store: SessionStore) -> None:
    """What a turn is given after appends, a summary, extras changed in place and a newer
    summary — on SQLite through what its tails remember between turns."""
    sid, first, (_, history) = await store.begin_turn(KEY, ChatMessage("user", "m0"))
    assert [m.message.content for m in history] == ["m0"]
    await store.append(sid, ChatMessage("assistant", "a0"))
    _, second, (_, history) = await store.begin_turn(KEY, ChatMessage("user", "m1"))
    assert [m.message.content for m in history] == ["m0", "a0", "m1"]
    await store.set_extras(first, {"media": [{"id": 7, "description": "a dog"}]})
    _, history = await store.turn_context(sid)
    assert history[0].message.extras == {"media": [{"id": 7, "description": "a dog"}]}
    await store.add_summary(sid, first, "m0", "cheap")
    await store.append(sid, ChatMessage("assistant", "a1"))
    summary, history = await store.turn_context(sid)
    assert summary is not None
    assert summary.covers_up_to == first
    assert [m.message.content for m in history] == ["a0", "m1", "a1"]
    await store.add_summary(sid, second, "m0 to m1", "cheap")
    summary, history = await store.turn_context(sid)
    assert summary is not None
    assert summary.text == "m0 to m1"
    assert [m.message.content for m in history] == ["a1"]
    # Another key's session is its own.
    other = SessionKey("telegram:alice", "43", None, "alice")
    _, _, (_, history) = await store.begin_turn(other, ChatMessage("user", "x"))
    assert [m.message.content for m in history] == ["x"]


async def test_a_write_lock_held_by_another_process_waits_off_the_event_loop(
    tmp_path: Path,
) -> None:
    """The message path's steps run on the loop, but never wait there: with the write lock
    taken elsewhere (a CLI command, a backup) the step waits on aiosqlite's thread while the
    loop goes on, and lands once the lock is free."""
    path = tmp_path / "sessions.db"
    async with SqliteSessionStore(path, busy_ms=10_000) as store:
        sid = await store.active_session(KEY)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        append = asyncio.create_task(store.append(sid, ChatMessage("user", "waited")))
        ticks = 0
        while ticks < 20:  # the loop keeps running while the append waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
            assert not append.done()
        other.execute("COMMIT")
        other.close()
        mid = await asyncio.wait_for(append, 10)
        [stored] = await store.messages(sid)
        assert (stored.id, stored.message.content) == (mid, "waited")


async def test_the_journal_is_checkpointed_off_the_loop_once_past_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.sessions import store as store_module

    monkeypatch.setattr(store_module, "JOURNAL_SIZE_LIMIT", 64 * 1024)
    monkeypatch.setattr(store_module, "_CHECK_WAL_EVERY", 10)
    path = tmp_path / "sessions.db"
    wal = Path(f"{path}-wal")
    async with SqliteSessionStore(path) as store:
        sid = await store.active_session(KEY)
        peak = 0
        for n in range(400):
            await store.append(sid, ChatMessage("user", f"{n} " + "x" * 2000))
            await asyncio.sleep(0)  # a turn awaits the network between its store steps
            peak = max(peak, os.stat(wal).st_size)
        # Without checkpoints (autocheckpoint is off) the WAL would reach ~6 MB (several
        # pages a row); each checkpoint lets it start over, cut back to the limit.
        assert peak < 1024 * 1024
        # A checkpoint leaves no statement of its own open: a transaction still commits.
        await store.begin_turn(KEY, ChatMessage("user", "after the checkpoints"))
        assert await store.message_count(sid) == 401
