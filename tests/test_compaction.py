"""Compaction end to end (SPEC §7) through the real bridge, plus the cut rule."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

from bot.agents.turn import TRUNCATED_NOTE
from bot.sessions.compaction import INSTRUCTIONS, summary_cut
from bot.sessions.store import StoredMessage
from bot.testing import (
    BridgeProcess,
    FakeLLM,
    FakeTelegram,
    Fault,
    RecordedRequest,
    Reply,
    Slow,
    Truncated,
)
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan
from bot.types import ChatMessage, ToolCall, Usage

ALICE = BotPlan(
    "alice", "3000001:alice-token-" + "Q" * 30, "alice", "You are Alice.", "alice-model"
)
SUMMARY_MODEL = "cheap-summary"
SESSION = {"context_window_tokens": 4000, "compact_at_tokens": 300, "keep_recent_messages": 4}


def faithful_summary(request: RecordedRequest) -> Reply:
    """A stand-in summariser that keeps every codeword it is shown."""
    words = sorted(set(re.findall(r"codeword=\w+", request.last_user_text)))
    return Reply(f"Earlier: the user chatted; {' '.join(words) or 'no codewords'}.")


def is_compaction(request: RecordedRequest) -> bool:
    return request.system == INSTRUCTIONS


def prompt_chars(request: RecordedRequest) -> int:
    return sum(len(m.get("content") or "") for m in request.body["messages"])


async def start_bridge(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> BridgeProcess:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    config: dict[str, Any] = make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE]
    )
    config["session"].update(SESSION)
    bridge = BridgeProcess.write(tmp_path, config)
    await bridge.start()
    await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
    return bridge


async def summary_stored(tmp_path: Path, within_s: float = 30) -> None:
    """Until the bridge (another process) has committed a summary."""
    async with asyncio.timeout(within_s):
        while True:
            with sqlite3.connect(tmp_path / "sessions.db") as db:
                if db.execute("SELECT count(*) FROM summaries").fetchone()[0]:
                    return
            await asyncio.sleep(0.02)  # a file gives no change notification


async def turn(fake_telegram: FakeTelegram, n: int, text: str) -> str:
    fake_telegram.inject_message(ALICE.token, chat_id=1, text=text)
    return (await fake_telegram.wait_for_sent(ALICE.token, n, chat_id=1, timeout=30))[-1].text


async def test_two_hundred_turns_keep_facts_and_flat_prompts(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.set_default(SUMMARY_MODEL, faithful_summary)
    bridge = await start_bridge(tmp_path, fake_telegram, fake_llm)
    await turn(fake_telegram, 1, "Please remember codeword=PELICAN42 for later.")
    for n in range(2, 201):
        await turn(fake_telegram, n, f"Message {n}: some chatter to grow the conversation.")
    assert await bridge.stop() == 0

    main = [r for r in fake_llm.requests if not is_compaction(r)]
    compactions = [r for r in fake_llm.requests if is_compaction(r)]
    assert len(main) == 200
    assert len(compactions) >= 5
    assert {r.model for r in compactions} == {SUMMARY_MODEL}  # only the compaction role
    assert {r.model for r in main} == {"alice-model"}
    assert "codeword=PELICAN42" in main[-1].system  # turn 1's fact, via the summary
    conversation = [m for m in main[-1].body["messages"] if m["role"] != "system"]
    assert "PELICAN42" not in str(conversation)  # ...not via old messages
    first = next(i for i, r in enumerate(main) if "Summary of the earlier" in r.system)
    assert first < 20
    later = [prompt_chars(r) for r in main[first:]]
    # Without compaction turn 200 would carry ~200 turns of chatter; with it, a bounded tail.
    assert max(later) < 2600
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        [(count,)] = db.execute("SELECT count(*) FROM messages")
        texts = {row[0] for row in db.execute("SELECT content FROM messages WHERE role='user'")}
    assert count == 400  # every message kept: compaction only changes what the model sees
    assert "Please remember codeword=PELICAN42 for later." in texts


async def test_failing_compaction_model_loses_nothing_and_recovers(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    healthy = False

    def summariser(request: RecordedRequest) -> Reply | Fault:
        return faithful_summary(request) if healthy else Fault(500, "summary model down")

    fake_llm.set_default(SUMMARY_MODEL, summariser)
    bridge = await start_bridge(tmp_path, fake_telegram, fake_llm)
    await turn(fake_telegram, 1, "codeword=OTTER7 is the one.")
    for n in range(2, 31):
        reply = await turn(fake_telegram, n, f"Turn {n} while the summary model is down.")
        assert reply.endswith(f"Turn {n} while the summary model is down.")
    failed = [r for r in fake_llm.requests if is_compaction(r)]
    assert failed  # compaction was tried, and failed
    assert all(
        "Summary of the earlier" not in r.system for r in fake_llm.requests if not is_compaction(r)
    )

    healthy = True
    await fake_llm.wait_for_requests(len(failed) + 1, model=SUMMARY_MODEL, timeout=30)
    await summary_stored(tmp_path)  # the request came; its commit follows a moment later
    reply = await turn(fake_telegram, 31, "And now?")
    assert reply.endswith("And now?")
    assert await bridge.stop() == 0
    last = [r for r in fake_llm.requests if not is_compaction(r)][-1]
    assert "codeword=OTTER7" in last.system
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        [(count,)] = db.execute("SELECT count(*) FROM messages")
        [(summaries,)] = db.execute("SELECT count(*) FROM summaries")
    assert count == 62
    assert summaries >= 1


async def test_slow_compaction_never_delays_a_reply(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.set_default(SUMMARY_MODEL, Slow(600))
    bridge = await start_bridge(tmp_path, fake_telegram, fake_llm)
    for n in range(1, 16):
        await turn(fake_telegram, n, f"Turn {n} with a long tail of words to grow the context.")
    in_flight = [r for r in fake_llm.requests if is_compaction(r)]
    assert await bridge.stop() == 0
    assert len(in_flight) == 1  # one job per session, still running, and replies kept coming


def stored(id_: int, message: ChatMessage) -> StoredMessage:
    return StoredMessage(id_, 1, message, None, Usage(), 0.0)


def test_cut_never_separates_a_tool_call_from_its_result() -> None:
    call = ToolCall("c1", "weather", {"city": "Rome"})
    messages = [
        stored(1, ChatMessage("user", "a")),
        stored(2, ChatMessage("assistant", "b")),
        stored(3, ChatMessage("user", "weather?")),
        stored(4, ChatMessage("assistant", None, tool_calls=(call,))),
        stored(5, ChatMessage("tool", "sunny", tool_call_id="c1")),
        stored(6, ChatMessage("assistant", "It is sunny.")),
    ]
    assert summary_cut(messages, keep_recent=2) == 3  # not 4: that would orphan #5
    assert summary_cut(messages, keep_recent=3) == 3
    assert summary_cut(messages, keep_recent=10) == 0


async def test_context_window_error_compacts_and_retries_the_turn(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.set_default(SUMMARY_MODEL, faithful_summary)
    bridge = await start_bridge(tmp_path, fake_telegram, fake_llm)
    for n in range(1, 6):
        await turn(fake_telegram, n, f"Short turn {n}.")
    fake_llm.script(
        "alice-model",
        Fault(
            400, "This model's maximum context length is 128 tokens", code="context_length_exceeded"
        ),
    )
    reply = await turn(fake_telegram, 6, "This one overflows.")
    await fake_llm.wait_for_requests(1, model=SUMMARY_MODEL, timeout=30)
    assert await bridge.stop() == 0
    assert reply.endswith("This one overflows.")  # the retry answered
    overflowed = [
        r for r in fake_llm.requests_for("alice-model") if r.last_user_text == "This one overflows."
    ]
    assert len(overflowed) == 2
    # The history fit the configured window many times over: the retry must still be smaller,
    # not the same request again.
    assert prompt_chars(overflowed[1]) < prompt_chars(overflowed[0])
    assert len(overflowed[1].body["messages"]) < len(overflowed[0].body["messages"])
    assert overflowed[1].last_user_text == "This one overflows."


CONTEXT_FAULT = Fault(
    400, "This model's maximum context length is 128 tokens", code="context_length_exceeded"
)


async def test_context_window_error_with_nothing_to_drop_gives_up_at_once(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.script("alice-model", CONTEXT_FAULT)
    bridge = await start_bridge(tmp_path, fake_telegram, fake_llm)
    reply = await turn(fake_telegram, 1, "The very first message is already too long.")
    assert await bridge.stop() == 0
    assert reply == "The model could not answer this message; try rephrasing it."
    assert len(fake_llm.requests_for("alice-model")) == 1  # no byte-identical retry
    assert "exceeded by the current message alone" in bridge.logs()


async def test_a_summary_cut_at_the_length_limit_is_never_saved(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    healthy = False

    def summariser(request: RecordedRequest) -> Reply | Truncated:
        if healthy:
            return faithful_summary(request)
        return Truncated("Earlier: the user chatted; codeword=OTTER7 and then")

    fake_llm.set_default(SUMMARY_MODEL, summariser)
    bridge = await start_bridge(tmp_path, fake_telegram, fake_llm)
    await turn(fake_telegram, 1, "codeword=OTTER7 is the one.")
    for n in range(2, 13):
        await turn(fake_telegram, n, f"Turn {n} with a long tail of words to grow the context.")
    cut = await fake_llm.wait_for_requests(1, model=SUMMARY_MODEL, timeout=30)
    await bridge.wait_for_log("the summary was cut at the length limit")
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        [(summaries,)] = db.execute("SELECT count(*) FROM summaries")
    assert summaries == 0
    assert all(
        "Summary of the earlier" not in r.system for r in fake_llm.requests if not is_compaction(r)
    )

    healthy = True  # retried later, and then committed
    await fake_llm.wait_for_requests(len(cut) + 1, model=SUMMARY_MODEL, timeout=30)
    await bridge.wait_for_log(r"compaction session=\d+ summarised")
    assert await bridge.stop() == 0
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        texts = [row[0] for row in db.execute("SELECT text FROM summaries")]
    assert texts
    assert all(not t.endswith("and then") and TRUNCATED_NOTE not in t for t in texts)
