"""Reliability (issue 8): random kill -9, a fault matrix, hostile input, secrets at rest."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from bot.testing import (
    BridgeProcess,
    EmptyChoices,
    FakeLLM,
    FakeTelegram,
    Fault,
    GarbageUsage,
    Hang,
    Malformed,
    RecordedRequest,
    Reply,
    Slow,
    Truncated,
)
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan

BOTS = [
    BotPlan(
        name,
        f"{7000001 + i}:{name}-secret-token-{'Z' * 26}",
        name,
        f"You are {name.title()}.",
        f"{name}-model",
    )
    for i, name in enumerate(["alice", "bob", "carol"])
]
API_KEY = "sk-reliability-key-0123456789abcdef"


def config_for(
    fake_telegram: FakeTelegram, fake_llm: FakeLLM, bots: list[BotPlan]
) -> dict[str, Any]:
    for plan in bots:
        fake_telegram.add_bot(plan.token, f"{plan.bot_id}_bot")
    config = make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=bots
    )
    for entry in config["model_list"]:
        entry["api_key"] = API_KEY
    return config


async def started(bridge: BridgeProcess, fake: FakeTelegram, bots: list[BotPlan]) -> None:
    await bridge.start_polling(fake, *(b.token for b in bots))


async def test_chaos_random_kill_9_during_500_messages(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    rng = random.Random(20261121)
    fake_llm.set_default(None, lambda r: Slow(rng.uniform(0, 0.03)))
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, BOTS))
    texts: dict[tuple[str, int], str] = {}  # (channel, update_id) → text
    chats = [(plan, 100 + c) for plan in BOTS for c in range(10)]
    kills = 0
    for batch in range(10):
        await started(bridge, fake_telegram, BOTS)
        for n in range(50):
            plan, chat = chats[(batch * 50 + n) % len(chats)]
            text = f"{plan.bot_id}-{chat}-m{batch * 50 + n}"
            update_id = fake_telegram.inject_message(plan.token, chat_id=chat, text=text)
            texts[(f"telegram-{plan.bot_id}", update_id)] = text
        # Let some of the batch be answered, then pull the plug at a random moment.
        await asyncio.sleep(rng.uniform(0.05, 0.6))  # the chaos itself, not synchronisation
        await bridge.kill()
        kills += 1
    await started(bridge, fake_telegram, BOTS)
    for plan in BOTS:
        expected = sum(1 for (channel, _) in texts if channel == f"telegram-{plan.bot_id}")
        await fake_telegram.wait_for_sent(plan.token, expected, timeout=120)
    assert await bridge.stop() == 0

    answered = Counter(
        m.text.rsplit("] ", 1)[-1] for plan in BOTS for m in fake_telegram.sent(plan.token)
    )
    assert len(texts) == 500
    assert kills == 10
    missing = [t for t in texts.values() if answered[t] == 0]
    assert missing == []  # no loss
    # A duplicate is only possible for a chunk whose send was in flight at a kill; the
    # bridge says so when it resends one. Nothing else may arrive twice.
    flagged = {
        texts[(channel, int(update))]
        for channel, update in re.findall(
            r"channel=(\S+) update=(\d+): chunk \d+ was being sent", bridge.logs()
        )
    }
    duplicated = {t for t, n in answered.items() if n > 1}
    assert duplicated <= flagged
    assert set(answered) == set(texts.values())
    # A turn replayed after a kill finds its user message stored: never stored twice.
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        stored = Counter(
            text for (text,) in db.execute("SELECT content FROM messages WHERE role = 'user'")
        )
    assert [t for t, n in stored.items() if n > 1] == []
    assert set(stored) == set(texts.values())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


FAULTS: dict[str, Any] = {
    "500": Fault(500),
    "429": Fault(429, retry_after=30),
    "401": Fault(401),
    "404": Fault(404, "model not found"),
    "hang": Hang(),
    "malformed": Malformed(),
    "empty": EmptyChoices(),
    # A reply with an answer and tool_calls that is not a list: garbage, not "hi".
    "wrong-types": Malformed(
        json.dumps({"choices": [{"message": {"content": "hi", "tool_calls": "oops"}}]})
    ),
    "deep-nesting": Malformed("[" * 100_000 + "]" * 100_000),
    "refused": None,  # connection refused: the entry points at a closed port
}


async def test_fault_matrix_every_llm_fault_on_primary_and_on_fallback(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    plan = BOTS[0]
    config = config_for(fake_telegram, fake_llm, [plan])
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    agents, bindings = [], []
    chat = 0
    cases: dict[int, tuple[str, str]] = {}
    for fault, behaviour in FAULTS.items():
        for position in ("primary", "fallback"):
            chat += 1
            primary, fallback = f"p-{fault}-{position}", f"f-{fault}-{position}"
            for name in (primary, fallback):
                faulty = (name == primary) == (position == "primary")
                entry = {
                    "model_name": name,
                    "model": f"openai/{name}",
                    "timeout_s": 1,
                    "api_base": dead if faulty and behaviour is None else fake_llm.openai_base,
                }
                config["model_list"].append(entry)
                if faulty and behaviour is not None:
                    fake_llm.set_default(name, behaviour)
            agent = f"a{chat}"
            agents.append(
                {
                    "id": agent,
                    "persona": f"Case {fault}/{position}.",
                    "model": {"primary": primary, "fallbacks": [fallback]},
                }
            )
            bindings.append(
                {"agent_id": agent, "match": {"channel": "telegram-alice", "chat_id": str(chat)}}
            )
            cases[chat] = (fault, position)
    config["agents"]["list"] += agents
    config["bindings"] = bindings + config["bindings"]
    bridge = BridgeProcess.write(tmp_path, config)
    await started(bridge, fake_telegram, [plan])
    for chat_id in cases:
        fake_telegram.inject_message(plan.token, chat_id=chat_id, text="hello")
    replies = {}
    for chat_id in cases:
        [reply] = await fake_telegram.wait_for_sent(plan.token, 1, chat_id=chat_id, timeout=60)
        replies[chat_id] = reply.text
    fake_telegram.inject_message(plan.token, chat_id=500, text="still serving?")
    await fake_telegram.wait_for_sent(plan.token, 1, chat_id=500, timeout=30)
    assert await bridge.stop() == 0
    for chat_id, (fault, position) in cases.items():
        # A fault on the primary moves the turn to the fallback; on the fallback, the
        # primary answers and the fallback is never asked.
        answering = f"f-{fault}-{position}" if position == "primary" else f"p-{fault}-{position}"
        assert replies[chat_id].startswith(f"[model={answering}]"), (fault, position)
        if position == "fallback":
            assert fake_llm.requests_for(f"f-{fault}-{position}") == []


def add_agent(config: dict[str, Any], chat: int, chain: list[str], api_base: str) -> None:
    """An agent on its own ``chain`` of new entries, bound to ``chat`` of telegram-alice."""
    for name in chain:
        entry = {"model_name": name, "model": f"openai/{name}", "api_base": api_base}
        config["model_list"].append(entry)
    config["agents"]["list"].append(
        {
            "id": f"a{chat}",
            "persona": f"Agent {chat}.",
            "model": {"primary": chain[0], "fallbacks": chain[1:]},
        }
    )
    binding = {"agent_id": f"a{chat}", "match": {"channel": "telegram-alice", "chat_id": str(chat)}}
    config["bindings"].insert(0, binding)


GARBAGE_USAGE = [
    '"lots"',
    '{"n": 1}',
    "1e999",
    "NaN",
    "-5",
    "true",
    "123456789012345678901234567890",
]


async def test_garbage_usage_never_crashes_a_turn_and_the_answer_is_kept(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    plan = BOTS[0]
    config = config_for(fake_telegram, fake_llm, [plan])
    for chat, value in enumerate(GARBAGE_USAGE, start=1):
        add_agent(config, chat, [f"usage-{chat}", f"backup-{chat}"], fake_llm.openai_base)
        fake_llm.set_default(f"usage-{chat}", GarbageUsage(value, f"answer {chat}"))
    bridge = BridgeProcess.write(tmp_path, config)
    await started(bridge, fake_telegram, [plan])
    for chat in range(1, len(GARBAGE_USAGE) + 1):
        fake_telegram.inject_message(plan.token, chat_id=chat, text="hello")
    for chat in range(1, len(GARBAGE_USAGE) + 1):
        [reply] = await fake_telegram.wait_for_sent(plan.token, 1, chat_id=chat, timeout=30)
        assert reply.text == f"answer {chat}"  # the model's own answer: no failover
    assert await bridge.stop() == 0
    # A restart replays nothing and the same chats still work.
    await started(bridge, fake_telegram, [plan])
    fake_telegram.inject_message(plan.token, chat_id=3, text="again")
    await fake_telegram.wait_for_sent(plan.token, 2, chat_id=3, timeout=30)
    assert await bridge.stop() == 0
    assert "Traceback" not in bridge.logs()
    assert "unusable token usage" in bridge.logs()
    assert all(fake_llm.requests_for(f"backup-{c}") == [] for c in range(1, 8))
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        usage = db.execute(
            "SELECT prompt_tokens, completion_tokens FROM messages WHERE role = 'assistant'"
        ).fetchall()
    assert len(usage) == len(GARBAGE_USAGE) + 1
    assert set(usage) == {(0, 0)}


async def test_a_chain_longer_than_four_is_tried_to_its_end(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    plan = BOTS[0]
    config = config_for(fake_telegram, fake_llm, [plan])
    chain = [f"link-{i}" for i in range(6)]
    add_agent(config, 1, chain, fake_llm.openai_base)
    for name in chain[:-1]:
        fake_llm.set_default(name, Fault(500))
    bridge = BridgeProcess.write(tmp_path, config)
    await started(bridge, fake_telegram, [plan])
    fake_telegram.inject_message(plan.token, chat_id=1, text="anyone there?")
    [reply] = await fake_telegram.wait_for_sent(plan.token, 1, chat_id=1, timeout=30)
    assert await bridge.stop() == 0
    assert reply.text == "[model=link-5] [system=Agent 1.] anyone there?"
    assert [r.model for r in fake_llm.requests] == chain


async def test_an_answer_cut_at_the_length_limit_says_so(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    plan = BOTS[0]
    fake_llm.set_default(None, Truncated("The three steps are: first, open the"))
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [plan]))
    await started(bridge, fake_telegram, [plan])
    fake_telegram.inject_message(plan.token, chat_id=1, text="how?")
    [reply] = await fake_telegram.wait_for_sent(plan.token, 1, chat_id=1, timeout=30)
    assert await bridge.stop() == 0
    assert reply.text == (
        "The three steps are: first, open the\n\n(cut short: the model reached its length limit)"
    )
    assert "<i>(cut short" in reply.raw["text"]  # shown in italics


async def test_telegram_says_too_long_and_the_reply_still_arrives(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    plan = BOTS[0]
    fake_llm.set_default(None, Reply("word " * 700))
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [plan]))
    await started(bridge, fake_telegram, [plan])
    fake_telegram.fail_next(
        plan.token, "sendMessage", status=400, description="Bad Request: message is too long"
    )
    fake_telegram.inject_message(plan.token, chat_id=8, text="go")
    sent = await fake_telegram.wait_for_sent(plan.token, 2, chat_id=8, timeout=30)
    assert await bridge.stop() == 0
    assert " ".join(m.text for m in sent).split() == ["word"] * 700


def echo_some(request: RecordedRequest) -> Reply:
    return Reply(request.last_user_text[:3000] or "(empty)")


HOSTILE = {
    "ten megabytes": "x" * 10_000_000,
    "control characters": "bell\x07 nul\x00 esc\x1b[31m del\x7f form\x0c",
    "lone surrogates": "half \ud800 of \udfff a pair",
    "html injection": '<script>alert(1)</script><b>unclosed <a href="javascript:x">y',
    "markdown injection": "**bold *mixed _all_ ~~over~~ `the` [place](javascript:x)",
    "nested markdown": "> " * 100 + "*" * 100 + "deep" + "*" * 100,
    "entity soup": "&amp; &lt; &#0; &#x110000; &#99999999999; &bogus; & <",
}


async def test_hostile_messages_never_crash_a_turn(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    plan = BOTS[0]
    fake_llm.set_default(None, echo_some)
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [plan]))
    await started(bridge, fake_telegram, [plan])
    for chat_id, text in enumerate(HOSTILE.values(), start=1):
        fake_telegram.inject_message(plan.token, chat_id=chat_id, text=text)
    replies = {}
    for chat_id, name in enumerate(HOSTILE, start=1):
        sent = await fake_telegram.wait_for_sent(plan.token, 1, chat_id=chat_id, timeout=60)
        replies[name] = sent[0].text
    fake_telegram.inject_message(plan.token, chat_id=99, text="are you fine?")
    [after] = await fake_telegram.wait_for_sent(plan.token, 1, chat_id=99, timeout=30)
    assert await bridge.stop() == 0
    assert after.text == "are you fine?"
    assert "Traceback" not in bridge.logs()
    assert replies["ten megabytes"] == (
        "That message is too long for me (10,000,000 characters; the limit is 32,000). "
        "Please send it in parts."
    )
    assert replies["lone surrogates"] == "half \ufffd of \ufffd a pair"
    assert replies["html injection"] == HOSTILE["html injection"]  # shown, not interpreted
    # Everything else reached the model; the oversized one was refused before it.
    assert len(fake_llm.requests) == len(HOSTILE)


async def test_no_secret_in_logs_argv_or_database_after_a_full_run(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm, BOTS)
    bridge = BridgeProcess.write(tmp_path, config)
    await started(bridge, fake_telegram, BOTS)
    cmdline = await asyncio.to_thread(Path(f"/proc/{bridge.pid}/cmdline").read_bytes)
    argv = cmdline.decode().split("\0")
    for n, plan in enumerate(BOTS):
        fake_telegram.inject_message(plan.token, chat_id=n + 1, text=f"hello {plan.bot_id}")
        fake_telegram.inject_message(plan.token, chat_id=n + 1, text="/status")
    for n, plan in enumerate(BOTS):
        await fake_telegram.wait_for_sent(plan.token, 2, chat_id=n + 1, timeout=30)
    assert await bridge.stop() == 0
    secrets = [plan.token for plan in BOTS] + [API_KEY]
    files = await asyncio.to_thread(lambda: list(tmp_path.glob("sessions.db*")))
    database = b"".join([await asyncio.to_thread(p.read_bytes) for p in files])
    logs = bridge.logs()
    assert all(
        fake_llm.requests[0].headers["authorization"] == f"Bearer {API_KEY}" for _ in [0]
    )  # the key was really in use
    for secret in secrets:
        assert secret not in logs
        assert secret.encode() not in database
        assert all(secret not in arg for arg in argv)
    assert json.dumps(config).count(API_KEY) > 0  # the config did hold it
