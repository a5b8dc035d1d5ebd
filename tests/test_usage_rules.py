"""Budget periods and rules without a bridge: calendar arithmetic, clamping, config checks."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.config.loader import load_config
from bot.config.schema import BridgeConfig
from bot.errors import BudgetExhausted, ConfigError
from bot.sessions.usage import UsageRow
from bot.testing import bridge_config
from bot.testing.bridge import BotPlan
from bot.testing.pytest_plugin import StoreFactory
from bot.types import ChatMessage, ChatRequest, ChatResponse, Usage
from bot.usage.cause import CallCause, charged_to
from bot.usage.meter import UsageMeter, request_tokens
from bot.usage.periods import period_at

BERLIN = ZoneInfo("Europe/Berlin")
BOT = BotPlan("alice", "1000001:alice-token-AAAAAAAAAAAAAAAAAAAAAAAA", "alice", "Hi.", "m")


def _at(zone: ZoneInfo, *args: int) -> float:
    return datetime(*args, tzinfo=zone).timestamp()  # type: ignore[misc]


def test_a_day_starts_at_local_midnight_even_across_a_dst_change() -> None:
    # 2026-03-29: Berlin moves from +01:00 to +02:00, so that day has 23 hours.
    day = period_at("day", _at(BERLIN, 2026, 3, 29, 12), BERLIN)
    assert day.start == _at(BERLIN, 2026, 3, 29)
    assert day.end == _at(BERLIN, 2026, 3, 30)
    assert day.end - day.start == 23 * 3600


def test_a_week_starts_on_monday_and_a_month_on_the_first() -> None:
    utc = ZoneInfo("UTC")
    now = _at(utc, 2026, 12, 31, 23, 59)  # a Thursday
    week = period_at("week", now, utc)
    assert (week.start, week.end) == (_at(utc, 2026, 12, 28), _at(utc, 2027, 1, 4))
    month = period_at("month", now, utc)
    assert (month.start, month.end) == (_at(utc, 2026, 12, 1), _at(utc, 2027, 1, 1))


def _config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    config = bridge_config(
        telegram_base="http://127.0.0.1:9", llm_base="http://127.0.0.1:9/v1", bots=[BOT]
    )
    config.update(extra)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return config


@pytest.mark.parametrize(
    ("extra", "path", "words"),
    [
        ({"budgets": [{"agent": "nobody", "period": "day", "max_tokens": 5}]},
         "budgets[0].agent", "unknown agent"),
        ({"budgets": [{"agent": "*", "period": "day"}]}, "budgets[0]", "max_tokens"),
        ({"budgets": [{"period": "fortnight", "max_tokens": 5}]}, "budgets[0].period", "day"),
        ({"budgets": [{"user": "@friend", "period": "day", "max_tokens": 5}]},
         "budgets[0].user", "numeric Telegram user id"),
        ({"budget_timezone": "Mars/Olympus"}, "budget_timezone", "time zone"),
        ({"model_list": [{"model_name": "m", "model": "openai/x", "price": {"input": 1}}]},
         "model_list[0].price", ""),
    ],
)  # fmt: skip
def test_bad_budget_settings_are_named(
    tmp_path: Path, extra: dict[str, Any], path: str, words: str
) -> None:
    _config(tmp_path, **extra)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "config.json")
    text = str(caught.value)
    assert path in text
    assert words in text


async def test_cost_rules_clamp_output_by_price_and_refuse_when_spent(
    tmp_path: Path, make_store: StoreFactory
) -> None:
    rule = {"user": "7", "period": "month", "max_cost_usd": 1.0}
    config = _config(tmp_path, budgets=[rule])
    config["model_list"][0]["price"] = {"input_per_mtok": 10.0, "output_per_mtok": 100.0}
    loaded = BridgeConfig.model_validate(config)
    now = _at(ZoneInfo("UTC"), 2026, 5, 20)
    request = ChatRequest(system="s", messages=(ChatMessage("user", "hello"),), max_tokens=50_000)
    async with make_store() as store:
        meter = UsageMeter(store, loaded, clock=lambda: now)
        await store.usage_add(UsageRow(now, "alice", "7", "c", "7", "m-alice", "turn", 0, 0, 0.5))
        with charged_to(CallCause("alice", "7", "c", "7")):
            clamped = await meter.admit("m-alice", request)
            # $0.50 left, minus the prompt at $10/Mtok, buys this many output tokens at $100/Mtok.
            left = 0.5 - request_tokens(request) * 10 / 1e6
            assert clamped.max_tokens == int(left * 1e6 / 100)
            await store.usage_add(
                UsageRow(now, "alice", "7", "c", "7", "m-alice", "turn", 0, 0, 0.5)
            )
            with pytest.raises(BudgetExhausted) as caught:
                await meter.admit("m-alice", request)
        with charged_to(CallCause("alice", "8", "c", "8")):  # another user: not this rule
            assert await meter.admit("m-alice", request) is request
    assert caught.value.sentence == (
        "You have used this month's allowance with Alice; it renews in 12 days."
    )


async def test_a_call_without_reported_usage_is_estimated_and_marked(
    tmp_path: Path, make_store: StoreFactory
) -> None:
    loaded = BridgeConfig.model_validate(_config(tmp_path))
    request = ChatRequest(system="s" * 40, messages=(ChatMessage("user", "u" * 400),))
    answer = ChatResponse(text="a" * 200, usage=Usage(), model_name="m-alice")
    async with make_store() as store:
        meter = UsageMeter(store, loaded, clock=lambda: 1000.0)
        with charged_to(CallCause("alice", "7", "c", "7", purpose="vision")):
            await meter.record("m-alice", request, answer)
        [(_, total)] = await store.usage_summary(0)
        [(key, _)] = await store.usage_summary(0, by=("purpose",))
    assert total.estimated_calls == 1
    assert total.prompt_tokens == request_tokens(request)  # 10 + 4 + 100
    assert total.prompt_tokens == 114
    assert total.completion_tokens == 54  # 50 + the per-message overhead
    assert total.priced_calls == 0  # the entry has no price: no cost, not $0
    assert key == ("vision",)


async def test_a_summary_is_postponed_rather_than_clamped_short(
    tmp_path: Path, make_store: StoreFactory
) -> None:
    rule = {"user": "7", "period": "day", "max_tokens": 3000}
    loaded = BridgeConfig.model_validate(_config(tmp_path, budgets=[rule]))
    now = _at(ZoneInfo("UTC"), 2026, 5, 20, 18)
    request = ChatRequest(system="s", messages=(ChatMessage("user", "x" * 400),), max_tokens=1024)
    async with make_store() as store:
        meter = UsageMeter(store, loaded, clock=lambda: now)
        await store.usage_add(UsageRow(now, "alice", "7", "c", "7", "m-alice", "turn", 2000, 0))
        with charged_to(CallCause("alice", "7", "c", "7", purpose="turn")):
            turn = await meter.admit("m-alice", request)  # a person is waiting: clamped
        with (
            charged_to(CallCause("alice", "7", "c", "7", purpose="compaction")),
            pytest.raises(BudgetExhausted) as caught,
        ):
            await meter.admit("m-alice", request)
    assert turn.max_tokens == 1000 - request_tokens(request)
    assert caught.value.retry_in == 6 * 3600
