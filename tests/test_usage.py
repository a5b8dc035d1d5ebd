"""The usage ledger and budgets (SPEC §12), over the fakes: every model call leaves a row,
budgets stop a call before it is made, and people can see what they used."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.cli import main
from bot.config.loader import load_config
from bot.sessions.store import SqliteSessionStore
from bot.sessions.usage import UsageRow
from bot.testing import (
    BridgeProcess,
    FakeLLM,
    FakeTelegram,
    Reply,
    Slow,
    ToolCall,
    bridge_config,
)
from bot.testing.bridge import BotPlan

ALICE = BotPlan(
    "alice", "1000001:alice-token-AAAAAAAAAAAAAAAAAAAAAAAA", "alice", "You are Alice.", "alice-llm"
)
BOB = BotPlan(
    "bob", "1000002:bob-token-BBBBBBBBBBBBBBBBBBBBBBBBBB", "bob", "You are Bob.", "bob-llm"
)
PRICE = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
CHEAP_PRICE = {"input_per_mtok": 0.5, "output_per_mtok": 1.0}
USAGE_COLUMNS = "agent_id, user_id, chat_id, model_name, purpose, prompt_tokens, completion_tokens"


def _config(
    fake_telegram: FakeTelegram, fake_llm: FakeLLM, bots: list[BotPlan], **extra: Any
) -> dict[str, Any]:
    for bot in bots:
        fake_telegram.add_bot(bot.token, f"{bot.bot_id}_bot")
    config = bridge_config(
        telegram_base=fake_telegram.base_url,
        llm_base=fake_llm.openai_base,
        bots=bots,
        extra=extra,
    )
    for entry in config["model_list"]:
        entry["price"] = CHEAP_PRICE if entry["model_name"] == "cheap" else PRICE
    return config


def _rows(database: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as conn:
        return conn.execute(
            f"SELECT {USAGE_COLUMNS}, cost_usd, estimated FROM usage ORDER BY id"
        ).fetchall()


def _cost(price: dict[str, float], prompt: int, completion: int) -> float:
    return (prompt * price["input_per_mtok"] + completion * price["output_per_mtok"]) / 1e6


async def test_a_turn_with_a_tool_round_and_a_compaction_is_recorded_call_by_call(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = _config(
        fake_telegram,
        fake_llm,
        [ALICE],
        session={"database": "sessions.db", "compact_at_tokens": 64, "keep_recent_messages": 1},
    )
    fake_llm.script("alice-llm", ToolCall("spawn_status", {}), Reply("Nothing is running."))
    bridge = BridgeProcess.write(tmp_path, config)
    async with bridge:
        await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
        fake_telegram.inject_message(ALICE.token, chat_id=501, text="What runs? " + "x" * 400)
        await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=501, timeout=30)
        await bridge.wait_for_log(r"compaction session=\d+ summarised")
        assert await bridge.stop() == 0

    rows = _rows(tmp_path / "sessions.db")
    reported = fake_llm.usage_reported
    assert [r.model for r in reported] == ["alice-llm", "alice-llm", "cheap-summary"]
    expected = [
        ("alice", "501", "501", "m-alice", "turn", reported[0].prompt_tokens,
         reported[0].completion_tokens),
        ("alice", "501", "501", "m-alice", "tool", reported[1].prompt_tokens,
         reported[1].completion_tokens),
        ("alice", "501", "501", "cheap", "compaction", reported[2].prompt_tokens,
         reported[2].completion_tokens),
    ]  # fmt: skip
    assert [row[:7] for row in rows] == expected
    assert sum(r[5] + r[6] for r in rows) == sum(
        u.prompt_tokens + u.completion_tokens for u in reported
    )
    prices = [PRICE, PRICE, CHEAP_PRICE]
    for row, price in zip(rows, prices, strict=True):
        assert row[7] == pytest.approx(_cost(price, row[5], row[6]))
        assert row[8] == 0  # reported by the provider, not estimated


async def test_a_spawn_is_charged_to_the_callers_persona_and_the_original_user(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = _config(fake_telegram, fake_llm, [ALICE, BOB])
    config["agents"]["list"][0]["allow_agents"] = ["bob"]
    config["channels"]["telegram_bots"][0]["group_policy"] = "all"
    fake_llm.script(
        "alice-llm",
        ToolCall("spawn", {"task": "find the recipe", "agent_id": "bob"}),
        Reply("Bob is on it."),
    )
    fake_llm.script("bob-llm", Reply("Here is the recipe."))
    bridge = BridgeProcess.write(tmp_path, config)
    async with bridge:
        await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
        fake_telegram.inject_message(ALICE.token, chat_id=-100777, text="ask bob", user_id=42,
                                     chat_type="group")  # fmt: skip
        sent = await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=-100777, timeout=30)
        assert await bridge.stop() == 0

    assert "Here is the recipe." in sent[-1].text
    rows = _rows(tmp_path / "sessions.db")
    [by_bob] = [row for row in rows if row[3] == "m-bob"]
    assert by_bob[:5] == ("alice", "42", "-100777", "m-bob", "subagent")
    assert {row[:3] for row in rows} == {("alice", "42", "-100777")}


async def test_usage_command_shows_a_user_their_own_figures_and_an_admin_the_totals(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = _config(fake_telegram, fake_llm, [ALICE], admins=["777"])
    bridge = BridgeProcess.write(tmp_path, config)
    async with bridge:
        await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
        fake_telegram.inject_message(ALICE.token, chat_id=501, text="hello from a user")
        fake_telegram.inject_message(ALICE.token, chat_id=777, text="hello from the admin " * 9)
        await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=501, timeout=30)
        await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=777, timeout=30)
        fake_telegram.inject_message(ALICE.token, chat_id=501, text="/usage")
        fake_telegram.inject_message(ALICE.token, chat_id=777, text="/usage")
        user_reply = (await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=501))[-1].text
        admin_reply = (await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=777))[-1].text
        assert await bridge.stop() == 0

    rows = _rows(tmp_path / "sessions.db")
    mine = sum(r[5] + r[6] for r in rows if r[1] == "501")
    everyone = sum(r[5] + r[6] for r in rows)
    assert mine < everyone
    assert f"Today: {mine:,} tokens" in user_reply
    assert f"This month: {mine:,} tokens" in user_reply
    assert "$" in user_reply  # the entry is priced
    assert "everyone" not in user_reply
    assert f"{everyone:,} tokens" not in user_reply
    assert "per persona" in admin_reply
    assert "per model entry" in admin_reply
    assert f"alice: {everyone:,} tokens" in admin_reply
    assert f"m-alice: {everyone:,} tokens" in admin_reply


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


async def test_a_daily_budget_clamps_then_refuses_then_renews_the_next_day(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    limit = 5000
    rule = {"agent": "alice", "user": "501", "period": "day", "max_tokens": limit}
    config = _config(fake_telegram, fake_llm, [ALICE], budgets=[rule], admins=["900"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    clock = Clock(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    app = App(load_config(path), clock=clock)
    spent = UsageRow(clock.now, "alice", "501", "telegram-alice", "501", "m-alice", "turn",
                     limit - 1000, 0)  # fmt: skip
    await app.start()
    try:
        await app.store.usage_add(spent)
        # Near the limit: the request's max_tokens is clamped to what is left.
        fake_telegram.inject_message(ALICE.token, chat_id=501, text="first")
        await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=501, timeout=30)
        [clamped] = fake_llm.requests
        assert 0 < clamped.body["max_tokens"] <= 1000
        # Past 80 %: the admin hears about it once, from Alice's own bot.
        [warning] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=900, timeout=10)
        assert "80%" in warning.text
        assert "Alice" in warning.text

        await app.store.usage_add(spent)  # now over the limit
        fake_telegram.inject_message(ALICE.token, chat_id=501, text="second")
        sent = await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=501, timeout=30)
        assert sent[-1].text == ("You have used today's allowance with Alice; it renews in 12 h.")
        assert len(fake_llm.requests) == 1  # no request for the refused turn

        clock.now += 86400  # the next day
        fake_telegram.inject_message(ALICE.token, chat_id=501, text="third")
        sent = await fake_telegram.wait_for_sent(ALICE.token, 3, chat_id=501, timeout=30)
        assert sent[-1].text.endswith("third")
        assert len(fake_llm.requests) == 2
        assert fake_llm.requests[-1].body["max_tokens"] > 1000
        assert len(fake_telegram.sent(ALICE.token, chat_id=900)) == 1  # once per period
    finally:
        await app.stop()


async def test_without_budgets_requests_carry_no_max_tokens(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = _config(fake_telegram, fake_llm, [ALICE])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    app = App(load_config(path))
    await app.start()
    try:
        fake_telegram.inject_message(ALICE.token, chat_id=501, text="hi")
        await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=501, timeout=30)
    finally:
        await app.stop()
    assert "max_tokens" not in fake_llm.requests[0].body


def _seeded(tmp_path: Path) -> Path:
    """A config and a ledger with known rows, for the CLI (which runs its own event loop)."""
    config = bridge_config(
        telegram_base="http://127.0.0.1:9", llm_base="http://127.0.0.1:9/v1", bots=[ALICE, BOB]
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    now = datetime.now(UTC).timestamp()

    async def seed() -> None:
        async with SqliteSessionStore(tmp_path / "sessions.db") as store:
            for agent, model, tokens, cost in (
                ("alice", "m-alice", 100, 0.5),
                ("alice", "m-alice", 50, 0.25),
                ("bob", "m-bob", 30, None),
                ("bob", "cheap", 7, 0.01),
            ):
                await store.usage_add(
                    UsageRow(
                        now - 60, agent, "501", "telegram-x", "501", model, "turn", tokens, 1, cost
                    )
                )
            old = UsageRow(now - 10 * 86400, "alice", "501", "t", "501", "m-alice", "turn", 999, 1)
            await store.usage_add(old)

    asyncio.run(seed())
    return path


def test_usage_cli_prints_a_table_by_agent_and_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _seeded(tmp_path)
    code = main(["usage", "--config", str(path), "--since", "7d", "--by", "agent,model"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].split() == [
        "agent", "model", "calls", "prompt", "completion", "tokens", "cost_usd", "estimated"
    ]  # fmt: skip
    assert out[1].split() == ["alice", "m-alice", "2", "150", "2", "152", "0.7500", "0"]
    assert out[2].split() == ["bob", "m-bob", "1", "30", "1", "31", "-", "0"]
    assert out[3].split() == ["bob", "cheap", "1", "7", "1", "8", "0.0100", "0"]
    assert len(out) == 4  # the row from ten days ago is outside --since 7d


def test_usage_cli_json_parses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _seeded(tmp_path)
    code = main(["usage", "--config", str(path), "--by", "agent,user,purpose", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0] == {
        "agent": "alice", "user": "501", "purpose": "turn", "calls": 3, "prompt_tokens": 1149,
        "completion_tokens": 3, "tokens": 1152, "cost_usd": 0.75, "estimated_calls": 0,
    }  # fmt: skip
    assert data[1]["agent"] == "bob"
    assert data[1]["cost_usd"] == 0.01


def test_usage_cli_refuses_an_unknown_grouping_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _seeded(tmp_path)
    code = main(["usage", "--config", str(path), "--by", "agnet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err
    assert "agnet" in err
    assert "agent" in err


class LogSeen(logging.Handler):
    """Sets an event when a log line containing ``words`` is emitted in this process."""

    def __init__(self, words: str) -> None:
        super().__init__(logging.DEBUG)
        self.words = words
        self.seen = asyncio.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        self.lines.append(line)
        if self.words in line:
            self.seen.set()


async def test_compaction_over_budget_is_postponed_and_logged_not_run(
    tmp_path: Path,
    fake_telegram: FakeTelegram,
    fake_llm: FakeLLM,
) -> None:
    limit = 5000
    rule = {"agent": "*", "user": "501", "period": "day", "max_tokens": limit}
    session = {"database": "sessions.db", "compact_at_tokens": 64, "keep_recent_messages": 1}
    config = _config(fake_telegram, fake_llm, [ALICE], budgets=[rule], session=session)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    clock = Clock(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    app = App(load_config(path), clock=clock)
    postponed = LogSeen("postponed")
    logging.getLogger("bot.sessions.compaction").addHandler(postponed)
    await app.start()
    try:
        await app.store.usage_add(
            UsageRow(clock.now, "alice", "501", "t", "501", "m-alice", "turn", limit - 400, 0)
        )
        fake_telegram.inject_message(ALICE.token, chat_id=501, text="y" * 400)
        await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=501, timeout=30)
        await asyncio.wait_for(postponed.seen.wait(), 10)
    finally:
        await app.stop()
        logging.getLogger("bot.sessions.compaction").removeHandler(postponed)
    assert fake_llm.requests_for("cheap-summary") == []
    [line] = [line for line in postponed.lines if "postponed" in line]
    assert line.startswith("compaction of session 1 postponed")
    assert line.endswith("agent alice / user 501 is over budget")


async def test_a_spawn_resumed_after_kill_9_is_still_charged_to_its_turn(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = _config(fake_telegram, fake_llm, [ALICE, BOB])
    config["agents"]["list"][0]["allow_agents"] = ["bob"]
    config["channels"]["telegram_bots"][0]["group_policy"] = "all"
    fake_llm.script("alice-llm", ToolCall("spawn", {"task": "slow research", "agent_id": "bob"}))
    fake_llm.script("bob-llm", Slow(600))
    bridge = BridgeProcess.write(tmp_path, config)
    await bridge.start_polling(fake_telegram, ALICE.token, BOB.token)
    fake_telegram.inject_message(ALICE.token, chat_id=-100555, text="research", user_id=42,
                                 chat_type="group")  # fmt: skip
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=-100555, timeout=30)
    await fake_llm.wait_for_requests(1, model="bob-llm", timeout=30)
    await bridge.kill()
    await bridge.start_polling(fake_telegram, ALICE.token, BOB.token)
    await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=-100555, timeout=30)
    await bridge.wait_for_log(r"sub-task t1 by bob for alice: done")
    assert await bridge.stop() == 0
    [by_bob] = [row for row in _rows(tmp_path / "sessions.db") if row[3] == "m-bob"]
    assert by_bob[:5] == ("alice", "42", "-100555", "m-bob", "subagent")
