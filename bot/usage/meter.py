"""The usage seam of every model call: budgets checked before, a ledger row written after.

``FallbackChain`` calls ``admit`` before each request and ``record`` after each answer, so
turns, tool rounds, sub-agents and compaction are all metered in one place; who is charged
comes from the call's ``CallCause`` (bot.usage.cause). A rule has room for a call when
neither the prompt alone nor anything already spent reaches its limit; the request's
``max_tokens`` is then clamped to what the rule leaves after the prompt. Calls made at the
same moment are checked against the same totals, so together they may overshoot a rule by
at most their own size. ``models check`` probes providers directly and is not metered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from bot.config.schema import BridgeConfig, BudgetRule, ModelPrice
from bot.errors import BudgetExhausted, StoreError
from bot.sessions.context import estimate_tokens, message_tokens
from bot.sessions.usage import UsageRow, UsageStore, UsageTotal
from bot.types import ChatMessage, ChatRequest, ChatResponse
from bot.usage.cause import COMPACTION, NOBODY, CallCause, current_cause
from bot.usage.periods import Period, exhausted_sentence, period_at

log = logging.getLogger(__name__)

# Purposes that no person waits for: postponed rather than clamped.
BACKGROUND = (COMPACTION,)
_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly"}
WARN_LEVELS = (1.0, 0.8)  # highest first: one call crossing both sends only the higher
# Warn the admins through ``channel`` (the bot the turn came through) with ``text``.
Warner = Callable[[str, str], Coroutine[Any, Any, None]]


class UsageCounters(Protocol):
    """The /metrics side (bot.ops.metrics.BridgeMetrics)."""

    def used(self, agent: str, model: str, purpose: str, row: UsageRow) -> None: ...


@dataclass(frozen=True)
class RuleState:
    index: int
    rule: BudgetRule
    period: Period
    total: UsageTotal


def cost_of(price: ModelPrice | None, prompt: int, completion: int) -> float | None:
    if price is None:
        return None
    return (prompt * price.input_per_mtok + completion * price.output_per_mtok) / 1_000_000


def request_tokens(request: ChatRequest) -> int:
    """The prompt's size by the same estimate the context builder uses."""
    return estimate_tokens(request.system) + sum(message_tokens(m) for m in request.messages)


def matches(rule: BudgetRule, cause: CallCause) -> bool:
    return rule.agent in ("*", cause.agent_id) and rule.user in ("*", cause.user_id)


class UsageMeter:
    def __init__(
        self,
        store: UsageStore,
        config: BridgeConfig,
        *,
        clock: Callable[[], float] = time.time,
        counters: UsageCounters | None = None,
        warn: Warner | None = None,
    ) -> None:
        self._store = store
        self._rules = config.budgets
        self._zone = ZoneInfo(config.budget_timezone)
        self._prices = {m.model_name: m.price for m in config.model_list}
        self._names = {a.id: a.display_name for a in config.agents.list}
        self._clock = clock
        self._counters = counters
        self._warn = warn
        self._warned: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()

    async def _states(self, cause: CallCause) -> list[RuleState]:
        now = self._clock()
        states = []
        for index, rule in enumerate(self._rules):
            if not matches(rule, cause):
                continue
            period = period_at(rule.period, now, self._zone)
            [(_, total)] = await self._store.usage_summary(
                period.start,
                period.end,
                agent_id=None if rule.agent == "*" else rule.agent,
                user_id=None if rule.user == "*" else rule.user,
            )
            states.append(RuleState(index, rule, period, total))
        return states

    async def admit(self, model_name: str, request: ChatRequest) -> ChatRequest:
        """``request`` with ``max_tokens`` clamped to what every matching rule leaves, or
        ``BudgetExhausted`` when one has no room for it."""
        if not self._rules:
            return request
        cause = current_cause() or NOBODY
        states = await self._states(cause)
        if not states:
            return request
        price = self._prices.get(model_name)
        prompt = request_tokens(request)
        room: list[int] = []
        full: list[RuleState] = []
        for state in states:
            left = _output_room(state, price, prompt)
            if left is None:
                continue
            # Background work asks for what it needs to finish: a summary cut short by a
            # clamp is thrown away and retried, so it waits for room instead.
            short = cause.purpose in BACKGROUND and left < (request.max_tokens or 1)
            if left <= 0 or short:
                full.append(state)
            else:
                room.append(left)
        if full:
            last = max(full, key=lambda s: s.period.end)
            wait = last.period.end - self._clock()
            persona = self._names.get(cause.agent_id, cause.agent_id or "this bot")
            log.warning(
                "budget: no room for a %s call of agent=%s user=%s (rule %d, %s)",
                cause.purpose,
                cause.agent_id,
                cause.user_id,
                last.index,
                last.rule.period,
            )
            raise BudgetExhausted(exhausted_sentence(last.rule.period, persona, wait), wait)
        if room:
            ceiling = min(room)
            if request.max_tokens is None or request.max_tokens > ceiling:
                return dataclasses.replace(request, max_tokens=ceiling)
        return request

    async def record(self, model_name: str, request: ChatRequest, response: ChatResponse) -> None:
        """Write the ledger row of one answered call; a store failure costs only the row."""
        cause = current_cause() or NOBODY
        prompt, completion = response.usage.prompt_tokens, response.usage.completion_tokens
        estimated = prompt == 0 and completion == 0
        if estimated:
            prompt = request_tokens(request)
            completion = message_tokens(
                ChatMessage("assistant", response.text, tool_calls=response.tool_calls)
            )
        row = UsageRow(
            at=self._clock(),
            agent_id=cause.agent_id,
            user_id=cause.user_id,
            channel=cause.channel,
            chat_id=cause.chat_id,
            model_name=model_name,
            purpose=cause.purpose,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost_of(self._prices.get(model_name), prompt, completion),
            estimated=estimated,
        )
        if self._counters is not None:
            self._counters.used(cause.agent_id, model_name, cause.purpose, row)
        try:
            await self._store.usage_add(row)
            if self._rules and self._warn is not None:
                await self._check_warnings(cause)
        except StoreError as exc:
            log.error("usage of a %s call on %s not recorded: %s", cause.purpose, model_name, exc)

    async def _check_warnings(self, cause: CallCause) -> None:
        for state in await self._states(cause):
            used = _fraction(state)
            for level in WARN_LEVELS:
                if used < level:
                    continue
                key = (
                    f"{state.index}:{state.rule.agent}:{state.rule.user}:{state.rule.period}:"
                    f"{state.period.start:.0f}:{level}"
                )
                if key in self._warned:
                    break
                self._warned.add(key)
                if await self._store.usage_note_warning(key, self._clock()):
                    self._send(cause.channel, _warning_text(state, used, self._names))
                break

    def _send(self, channel: str, text: str) -> None:
        assert self._warn is not None
        job = asyncio.create_task(self._warn(channel, text), name="budget warning")
        self._background.add(job)
        job.add_done_callback(self._background.discard)


def _output_room(state: RuleState, price: ModelPrice | None, prompt: int) -> int | None:
    """Output tokens the rule leaves after the prompt; None when it does not limit them."""
    rule, total = state.rule, state.total
    rooms: list[int] = []
    if rule.max_tokens is not None:
        rooms.append(rule.max_tokens - total.tokens - prompt)
    if rule.max_cost_usd is not None:
        money = rule.max_cost_usd - total.cost_usd
        if price is None or price.output_per_mtok == 0:
            if money <= 0:
                rooms.append(0)
        else:
            money -= prompt * price.input_per_mtok / 1_000_000
            rooms.append(math.floor(money * 1_000_000 / price.output_per_mtok))
    return min(rooms) if rooms else None


def _fraction(state: RuleState) -> float:
    rule, total = state.rule, state.total
    parts = []
    if rule.max_tokens is not None:
        parts.append(total.tokens / rule.max_tokens)
    if rule.max_cost_usd is not None:
        parts.append(total.cost_usd / rule.max_cost_usd)
    return max(parts)


def _warning_text(state: RuleState, used: float, names: dict[str, str]) -> str:
    rule, total = state.rule, state.total
    who = "everyone" if rule.user == "*" else f"user {rule.user}"
    persona = "all personas" if rule.agent == "*" else names.get(rule.agent, rule.agent)
    limits = []
    if rule.max_tokens is not None:
        limits.append(f"{total.tokens:,} of {rule.max_tokens:,} tokens")
    if rule.max_cost_usd is not None:
        limits.append(f"${total.cost_usd:.4f} of ${rule.max_cost_usd:.2f}")
    return (
        f"Budget warning: {who} with {persona} has used {used:.0%} of the "
        f"{_ADJECTIVE[rule.period]} allowance ({', '.join(limits)})."
    )
