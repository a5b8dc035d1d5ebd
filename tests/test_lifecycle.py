"""Exactly once, in order (issue 11): one lifecycle for every update, through the real bridge."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from bot.testing import BridgeProcess, FakeLLM, FakeTelegram, Reply, Slow, ToolCall
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan

ALICE = BotPlan("alice", f"6100001:alice-life-{'L' * 30}", "alice", "You are Alice.", "alice-model")
BOB = BotPlan("bob", f"6100002:bob-life-{'M' * 32}", "bob", "You are Bob.", "bob-model")


def config_for(
    fake_telegram: FakeTelegram, fake_llm: FakeLLM, bots: list[BotPlan] | None = None
) -> dict[str, Any]:
    bots = bots or [ALICE]
    for plan in bots:
        fake_telegram.add_bot(plan.token, f"{plan.bot_id}_bot")
    return make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=bots
    )


def db_rows(tmp_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        return db.execute(sql, params).fetchall()


async def until_db(tmp_path: Path, sql: str, expected: list[Any], within_s: float = 30) -> None:
    """Wait for a query to return ``expected`` (the bridge commits in its own process)."""
    async with asyncio.timeout(within_s):
        while db_rows(tmp_path, sql) != expected:  # noqa: ASYNC110 - a file, no notification
            await asyncio.sleep(0.02)


def tail(text: str) -> str:
    return text.rsplit("] ", 1)[-1]


async def test_reload_that_restarts_a_bot_never_answers_a_queued_message_twice(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.set_default("alice-model", Slow(0.4))
    cfg = config_for(fake_telegram, fake_llm)
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start_polling(fake_telegram, ALICE.token)
    for n in range(4):
        fake_telegram.inject_message(ALICE.token, chat_id=7, text=f"queued {n}")
    await fake_llm.wait_for_requests(1, timeout=30)  # one running, three queued
    cfg["channels"]["telegram_bots"][0]["group_policy"] = "all"  # the bot restarts
    bridge.config_path.write_text(json.dumps(cfg))
    bridge.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    await bridge.wait_for_log(r"reloaded ")
    await fake_telegram.wait_for_sent(ALICE.token, 4, chat_id=7, timeout=30)
    # A later message is answered after every earlier one: had anything been queued twice,
    # its copy would come before this reply.
    fake_telegram.inject_message(ALICE.token, chat_id=7, text="last")
    replies = await fake_telegram.wait_for_sent(ALICE.token, 5, chat_id=7, timeout=30)
    assert await bridge.stop() == 0
    assert [tail(m.text) for m in fake_telegram.sent(ALICE.token, 7)] == [
        "queued 0",
        "queued 1",
        "queued 2",
        "queued 3",
        "last",
    ]
    assert len(replies) == 5
    assert len(fake_llm.requests_for("alice-model")) == 5


async def test_a_second_bridge_on_the_same_database_is_refused(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.set_default("alice-model", Slow(0.3))
    cfg = config_for(fake_telegram, fake_llm)
    first = BridgeProcess.write(tmp_path, cfg)
    await first.start_polling(fake_telegram, ALICE.token)
    for n in range(3):
        fake_telegram.inject_message(ALICE.token, chat_id=8, text=f"m{n}")
    await fake_llm.wait_for_requests(1, timeout=30)
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    cfg2 = dict(cfg, session={"database": str(tmp_path / "sessions.db")})
    second = BridgeProcess.write(second_dir, cfg2)
    await second.start()
    assert second.process is not None
    code = await asyncio.wait_for(second.process.wait(), 30)
    assert code == 75
    assert "is in use by persona-bridge" in second.logs()
    await fake_telegram.wait_for_sent(ALICE.token, 3, chat_id=8, timeout=30)
    assert await first.stop() == 0
    assert [tail(m.text) for m in fake_telegram.sent(ALICE.token, 8)] == ["m0", "m1", "m2"]


async def test_a_storm_of_429s_is_waited_out_and_the_reply_delivered(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm))
    await bridge.start_polling(fake_telegram, ALICE.token)
    fake_telegram.fail_next(ALICE.token, "sendMessage", status=429, retry_after=1, times=7)
    fake_telegram.inject_message(ALICE.token, chat_id=9, text="patience")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=9, timeout=60)
    assert await bridge.stop() == 0
    assert tail(reply.text) == "patience"
    assert db_rows(tmp_path, "SELECT status, outcome FROM inbox") == [("done", "delivered")]


async def test_a_reply_telegram_could_not_take_goes_out_before_the_chats_next_one(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm))
    await bridge.start_polling(fake_telegram, ALICE.token)
    # More 502s than the sender's own retries: the reply goes back to its lane.
    fake_telegram.fail_next(ALICE.token, "sendMessage", status=502, times=3)
    fake_telegram.inject_message(ALICE.token, chat_id=10, text="first")
    fake_telegram.inject_message(ALICE.token, chat_id=10, text="second")
    await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=10, timeout=60)
    assert await bridge.stop() == 0
    assert [tail(m.text) for m in fake_telegram.sent(ALICE.token, 10)] == ["first", "second"]
    assert "retrying in 1s before this chat's later messages" in bridge.logs()


async def test_a_blocked_user_is_given_up_with_a_logged_reason(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm))
    await bridge.start_polling(fake_telegram, ALICE.token)
    fake_telegram.block(ALICE.token, 12)
    fake_telegram.inject_message(ALICE.token, chat_id=12, text="bye")
    fake_telegram.inject_message(ALICE.token, chat_id=13, text="still here")
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=13, timeout=30)
    await bridge.wait_for_log(r"chat=12 update=\d+ given up: .*blocked by the user")
    assert await bridge.stop() == 0
    rows = dict(db_rows(tmp_path, "SELECT chat_id, outcome FROM inbox"))
    assert rows == {"12": "given_up", "13": "delivered"}
    assert fake_telegram.sent(ALICE.token, 12) == []


async def test_group_moved_to_a_supergroup_takes_reply_session_and_binding_along(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    cfg = config_for(fake_telegram, fake_llm, [ALICE, BOB])
    cfg["channels"]["telegram_bots"][0]["group_policy"] = "all"
    # In group -5, alice's bot is answered by Bob: a chat-specific binding.
    cfg["bindings"].append(
        {"agent_id": "bob", "match": {"channel": "telegram-alice", "chat_id": "-5"}}
    )
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start_polling(fake_telegram, ALICE.token, BOB.token)
    fake_telegram.inject_message(ALICE.token, chat_id=-5, text="remember me", chat_type="group")
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=-5, timeout=30)

    fake_llm.script("bob-model", Slow(0.5))
    fake_telegram.inject_message(ALICE.token, chat_id=-5, text="while moving", chat_type="group")
    await fake_llm.wait_for_requests(2, timeout=30)
    fake_telegram.migrate_chat(ALICE.token, -5, -1005, announce=False)
    [moved] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=-1005, timeout=30)
    assert tail(moved.text) == "while moving"

    fake_telegram.inject_message(
        ALICE.token, chat_id=-1005, text="after the move", chat_type="supergroup"
    )
    replies = await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=-1005, timeout=30)
    assert await bridge.stop() == 0
    assert replies[1].text.startswith("[model=bob-model]")  # the binding followed
    last = fake_llm.requests_for("bob-model")[-1]
    history = [m["content"] for m in last.body["messages"]]
    assert "remember me" in history  # the session followed
    assert "update a binding's match.chat_id" in bridge.logs()
    assert db_rows(tmp_path, "SELECT DISTINCT chat_id FROM sessions") == [("-1005",)]


async def test_a_turn_replayed_after_kill_9_stores_the_message_once(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.script("alice-model", Slow(600))
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm))
    await bridge.start_polling(fake_telegram, ALICE.token)
    fake_telegram.inject_message(ALICE.token, chat_id=14, text="only once please")
    await fake_llm.wait_for_requests(1, timeout=30)  # the user message is stored by now
    await bridge.kill()
    await bridge.start_polling(fake_telegram, ALICE.token)
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=14, timeout=30)
    assert await bridge.stop() == 0
    assert tail(reply.text) == "only once please"
    stored = db_rows(tmp_path, "SELECT content FROM messages WHERE role = 'user'")
    assert stored == [("only once please",)]
    retried = fake_llm.requests_for("alice-model")[-1]
    users = [m["content"] for m in retried.body["messages"] if m["role"] == "user"]
    assert users == ["only once please"]


async def test_a_spawned_task_cut_by_kill_9_still_posts_its_result(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    cfg = config_for(fake_telegram, fake_llm, [ALICE, BOB])
    cfg["agents"]["list"][0]["allow_agents"] = ["bob"]
    fake_llm.script("alice-model", ToolCall("spawn", {"task": "slow research", "agent_id": "bob"}))
    fake_llm.script("bob-model", Slow(600))
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start_polling(fake_telegram, ALICE.token, BOB.token)
    fake_telegram.inject_message(ALICE.token, chat_id=15, text="please research")
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=15, timeout=30)
    await fake_llm.wait_for_requests(3, timeout=30)  # alice twice, then bob's task
    # Alice's own reply is fully recorded, so only the task is left for after the crash.
    await until_db(tmp_path, "SELECT status FROM inbox WHERE update_id > 0", [("done",)])
    await bridge.kill()
    await bridge.start_polling(fake_telegram, ALICE.token, BOB.token)
    sent = await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=15, timeout=30)
    await bridge.wait_for_log(r"sub-task t1 by bob for alice: done")
    assert await bridge.stop() == 0
    assert sent[1].raw["text"].startswith("<b>Bob</b>: [model=bob-model]")
    assert sent[1].text.endswith("slow research")
    assert len(fake_telegram.sent(ALICE.token, 15)) == 2
    tasks = db_rows(tmp_path, "SELECT kind, status, outcome FROM inbox WHERE update_id < 0")
    assert tasks == [("task", "done", "delivered")]
    notes = db_rows(
        tmp_path, "SELECT count(*) FROM messages WHERE content LIKE '[sub-task t1 by Bob done]%'"
    )
    assert notes == [(1,)]


async def test_a_huge_answer_is_cut_to_the_bots_message_cap_and_says_so(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    cfg = config_for(fake_telegram, fake_llm)
    cfg["channels"]["telegram_bots"][0]["max_reply_messages"] = 4
    paragraph = "All work and no play makes a long answer. " * 40
    fake_llm.script("alice-model", Reply("\n\n".join([paragraph] * 180)))  # ~300 KB
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start_polling(fake_telegram, ALICE.token)
    fake_telegram.inject_message(ALICE.token, chat_id=16, text="tell me everything")
    await fake_telegram.wait_for_sent(ALICE.token, 4, chat_id=16, timeout=30)
    fake_telegram.inject_message(ALICE.token, chat_id=16, text="and then?")
    sent = await fake_telegram.wait_for_sent(ALICE.token, 5, chat_id=16, timeout=30)
    assert await bridge.stop() == 0
    assert "The answer was cut here" in sent[3].text
    assert "and this bot sends at most 4 per answer" in sent[3].text
    assert tail(sent[4].text) == "and then?"
    assert len(fake_telegram.sent(ALICE.token, 16)) == 5
    assert Counter(m.chat_id for m in fake_telegram.sent(ALICE.token)) == {16: 5}


async def test_after_a_restart_stored_messages_are_answered_before_new_ones(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.script("alice-model", Slow(600))
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm))
    await bridge.start_polling(fake_telegram, ALICE.token)
    fake_telegram.inject_message(ALICE.token, chat_id=17, text="old")
    await fake_llm.wait_for_requests(1, timeout=30)
    await bridge.kill()
    for n in range(3):  # waiting at Telegram while the bridge is down
        fake_telegram.inject_message(ALICE.token, chat_id=17, text=f"new {n}")
    await bridge.start_polling(fake_telegram, ALICE.token)
    sent = await fake_telegram.wait_for_sent(ALICE.token, 4, chat_id=17, timeout=30)
    assert await bridge.stop() == 0
    assert [tail(m.text) for m in sent] == ["old", "new 0", "new 1", "new 2"]
