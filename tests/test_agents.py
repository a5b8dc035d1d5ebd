"""Agents (SPEC §8): tool loop, spawn/delegate on each agent's own chain, limits, chat CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pexpect

from bot.agents.turn import tool_limit_message
from bot.testing import BridgeProcess, FakeLLM, FakeTelegram, RecordedRequest, Slow, ToolCall
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan

ALICE = BotPlan(
    "alice", "5000001:alice-token-" + "E" * 30, "alice", "You are Alice.", "alice-model"
)
BOB = BotPlan("bob", "5000002:bob-token-" + "F" * 32, "bob", "You are Bob.", "bob-model")


def config(fake_telegram: FakeTelegram, fake_llm: FakeLLM, **agents: Any) -> dict[str, Any]:
    for plan in (ALICE, BOB):
        fake_telegram.add_bot(plan.token, f"{plan.bot_id}_bot")
    cfg = make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE, BOB]
    )
    for entry in cfg["agents"]["list"]:
        entry.update(agents.get(entry["id"], {}))
    return cfg


async def run_one(
    tmp_path: Path,
    fake_telegram: FakeTelegram,
    cfg: dict[str, Any],
    plan: BotPlan,
    text: str,
    replies: int = 1,
) -> list[str]:
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start()
    for p in (ALICE, BOB):
        await fake_telegram.wait_for_poll(p.token, timeout=30)
    fake_telegram.inject_message(plan.token, chat_id=77, text=text)
    sent = await fake_telegram.wait_for_sent(plan.token, replies, chat_id=77, timeout=60)
    assert await bridge.stop() == 0
    return [m.raw["text"] for m in sent]


def tool_results(request: RecordedRequest) -> list[str]:
    return [m["content"] for m in request.body["messages"] if m["role"] == "tool"]


async def test_spawn_runs_on_the_targets_own_model_and_posts_in_bold(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.script(
        "alice-model", ToolCall("spawn", {"task": "find a risotto recipe", "agent_id": "bob"})
    )
    cfg = config(fake_telegram, fake_llm, alice={"allow_agents": ["bob"]})
    texts = await run_one(tmp_path, fake_telegram, cfg, ALICE, "Dinner ideas?", replies=2)
    bold = [t for t in texts if t.startswith("<b>Bob</b>")]
    assert len(bold) == 1
    assert "[model=bob-model] [system=You are Bob.] find a risotto recipe" in bold[0]
    [sub] = [r for r in fake_llm.requests if r.last_user_text == "find a risotto recipe"]
    assert sub.model == "bob-model"  # bob's own chain, not alice's
    assert "started task t1 as Bob" in tool_results(fake_llm.requests_for("alice-model")[1])[0]
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        notes = [
            r[0]
            for r in db.execute(
                "SELECT m.content FROM messages m JOIN sessions s ON s.id = m.session_id "
                "WHERE s.agent_id = 'alice' AND s.topic_id IS NULL AND m.role = 'assistant'"
            )
        ]
        sub_sessions = db.execute(
            "SELECT agent_id, topic_id FROM sessions WHERE topic_id LIKE 'sub:%'"
        ).fetchall()
    assert any(n.startswith("[sub-task t1 by Bob done]") for n in notes)
    assert sub_sessions == [("bob", "sub:t1")]  # an isolated sub-session


async def test_self_spawn_needs_self_in_the_allowlist(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.script("bob-model", ToolCall("spawn", {"task": "clone me"}))
    cfg = config(fake_telegram, fake_llm, bob={"allow_agents": ["alice"]})
    await run_one(tmp_path, fake_telegram, cfg, BOB, "Do two things at once")
    requests = fake_llm.requests_for("bob-model")
    assert len(requests) == 2  # the turn and its continuation: no sub-request was made
    assert tool_results(requests[1]) == ["error: bob may not hand work to bob (allowed: alice)"]
    assert not any(r.last_user_text == "clone me" for r in fake_llm.requests)


async def test_absent_allowlist_means_only_itself(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.script("bob-model", ToolCall("delegate", {"task": "help", "agent_id": "alice"}))
    cfg = config(fake_telegram, fake_llm)
    await run_one(tmp_path, fake_telegram, cfg, BOB, "Ask Alice")
    assert tool_results(fake_llm.requests_for("bob-model")[1]) == [
        "error: bob may not hand work to alice (allowed: only itself)"
    ]
    assert fake_llm.requests_for("alice-model") == []


async def test_delegate_returns_the_answer_to_the_calling_model(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.script(
        "alice-model", ToolCall("delegate", {"task": "price of saffron?", "agent_id": "bob"})
    )
    cfg = config(fake_telegram, fake_llm, alice={"allow_agents": ["bob"]})
    [reply] = await run_one(tmp_path, fake_telegram, cfg, ALICE, "Budget the dinner")
    bob_answer = "[model=bob-model] [system=You are Bob.] price of saffron?"
    assert tool_results(fake_llm.requests_for("alice-model")[1]) == [bob_answer]
    assert reply == f"[model=alice-model] tool-result: {bob_answer}"


async def test_depth_is_limited_to_two(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    to_bob = ToolCall("delegate", {"task": "deeper", "agent_id": "bob"})
    fake_llm.script("alice-model", to_bob, to_bob)  # the turn, then alice again at depth 2
    fake_llm.script("bob-model", ToolCall("delegate", {"task": "deeper", "agent_id": "alice"}))
    cfg = config(
        fake_telegram, fake_llm, alice={"allow_agents": ["bob"]}, bob={"allow_agents": ["alice"]}
    )
    await run_one(tmp_path, fake_telegram, cfg, ALICE, "Go deep")
    results = [t for r in fake_llm.requests for t in tool_results(r)]
    assert "error: sub-agents may nest only 2 deep; do this task yourself" in results


async def test_at_most_three_running_per_chat(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    spawn = ToolCall("spawn", {"task": "slow job", "agent_id": "bob"})
    fake_llm.script("alice-model", spawn, spawn, spawn, spawn)
    fake_llm.set_default("bob-model", Slow(1.0))
    cfg = config(fake_telegram, fake_llm, alice={"allow_agents": ["bob"]})
    texts = await run_one(tmp_path, fake_telegram, cfg, ALICE, "Four jobs", replies=4)
    results = [tool_results(r)[-1] for r in fake_llm.requests_for("alice-model")[1:]]
    assert results[:3] == [
        f"started task t{n} as Bob; the result will be posted" for n in (1, 2, 3)
    ]
    assert results[3] == (
        "error: 3 sub-tasks are already running in this chat (limit 3); wait for one to finish"
    )
    assert sum(t.startswith("<b>Bob</b>") for t in texts) == 3


async def test_endless_tool_loop_is_cut_with_a_clear_message(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.set_default("alice-model", ToolCall("spawn_status", {}))
    cfg = config(fake_telegram, fake_llm, alice={"max_tool_iterations": 3})
    [reply] = await run_one(tmp_path, fake_telegram, cfg, ALICE, "Loop forever")
    assert reply == tool_limit_message(3)
    assert len(fake_llm.requests_for("alice-model")) == 4  # 1 + 3 tool rounds


async def test_chat_command_in_a_pseudo_terminal(tmp_path: Path, fake_llm: FakeLLM) -> None:
    cfg = make_config(
        telegram_base="http://127.0.0.1:9", llm_base=fake_llm.openai_base, bots=[ALICE]
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    child = pexpect.spawn(
        sys.executable,
        ["-m", "bot", "chat", "alice", "--config", str(path)],
        encoding="utf-8",
        timeout=30,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")},  # history, log
    )
    try:
        await child.expect("you> ", async_=True)
        child.sendline("Hello from a terminal")
        await child.expect(
            r"Alice> \[model=alice-model\] \[system=You are Alice.\] "
            r"Hello from a terminal",
            async_=True,
        )
        await child.expect("you> ", async_=True)
        child.sendline("/status")
        await child.expect("Last answer from: m-alice", async_=True)
        child.sendline("/quit")
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert [r.last_user_text for r in fake_llm.requests] == ["Hello from a terminal"]
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        keys = db.execute("SELECT channel, chat_id, agent_id FROM sessions").fetchall()
    assert keys == [("console", "local", "alice")]


async def test_chat_with_unknown_agent_says_which_exist(tmp_path: Path) -> None:
    cfg = make_config(
        telegram_base="http://127.0.0.1:9", llm_base="http://127.0.0.1:9/v1", bots=[ALICE]
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "chat",
        "zed",
        "--config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert "chat: unknown agent 'zed'; use one of: alice" in err.decode()
