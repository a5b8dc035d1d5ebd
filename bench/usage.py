"""The budget check's cost per model call as the usage ledger grows.

Fills the ledger with N rows spread evenly over the past year (20 agents, 2,000 users), then
times ``UsageMeter.admit`` — the check made before every model call — for one user talking
to one agent, under each kind of rule (one user, one agent, everyone) and all three at once.
A rule sums its current period only, through an index that ends in the time, so the cost
follows the rows in the period, not the history. Prints the query plans as a check.
Run: python bench/usage.py [--sizes 10000 1000000] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.config.schema import BridgeConfig
from bot.sessions.store import SqliteSessionStore
from bot.testing import bridge_config
from bot.testing.bridge import BotPlan
from bot.types import ChatMessage, ChatRequest
from bot.usage.cause import CallCause, charged_to
from bot.usage.meter import UsageMeter

AGENTS = [f"agent{i}" for i in range(20)]
USERS = [str(100_000 + i) for i in range(2000)]
YEAR_S = 365 * 86400
REQUEST = ChatRequest(
    system="You are Alice, a travel planner.",
    messages=(ChatMessage("user", "Plan me a weekend in Rome, please."),),
)
RULES: dict[str, list[dict[str, Any]]] = {
    "user/month": [{"agent": "*", "user": USERS[7], "period": "month", "max_tokens": 10**12}],
    "agent/day": [{"agent": AGENTS[3], "user": "*", "period": "day", "max_tokens": 10**12}],
    "everyone/day": [{"agent": "*", "user": "*", "period": "day", "max_cost_usd": 10**9}],
}
RULES["all three"] = [r for rules in list(RULES.values()) for r in rules]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def config(rules: list[dict[str, Any]]) -> BridgeConfig:
    bots = [BotPlan(a, f"{i + 1}:tok-{a}-AAAAAAAAAAAAAAAAAAAA", a, "Hi.", "m")
            for i, a in enumerate(AGENTS)]  # fmt: skip
    raw = bridge_config(telegram_base="http://127.0.0.1:9", llm_base="http://127.0.0.1:9/v1",
                        bots=bots)  # fmt: skip
    raw["budgets"] = rules
    for entry in raw["model_list"]:
        entry["price"] = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
    return BridgeConfig.model_validate(raw)


def fill(path: Path, rows: int, now: float) -> None:
    """Bulk insert straight into the migrated file: the store API would take an hour at 1M."""
    rng = random.Random(rows)
    with sqlite3.connect(path) as conn:
        batch = []
        for n in range(rows):
            at = now - YEAR_S + YEAR_S * n / rows  # evenly spread, the newest now
            agent, user = rng.choice(AGENTS), rng.choice(USERS)
            prompt, completion = rng.randint(200, 4000), rng.randint(10, 800)
            cost = (prompt * 3 + completion * 15) / 1e6
            batch.append((at, agent, user, "telegram", user, "m", "turn", prompt, completion,
                          cost, 0))  # fmt: skip
            if len(batch) == 50_000:
                conn.executemany(INSERT, batch)
                batch.clear()
        conn.executemany(INSERT, batch)
    with sqlite3.connect(path) as conn:
        conn.execute("ANALYZE")


INSERT = """INSERT INTO usage (at, agent_id, user_id, channel, chat_id, model_name, purpose,
    prompt_tokens, completion_tokens, cost_usd, estimated) VALUES (?,?,?,?,?,?,?,?,?,?,?)"""


def plans(path: Path, now: float) -> list[str]:
    queries = {
        "user": ("user_id = ? AND at >= ? AND at < ?", (USERS[7], now - 86400, now)),
        "agent": ("agent_id = ? AND at >= ? AND at < ?", (AGENTS[3], now - 86400, now)),
        "everyone": ("at >= ? AND at < ?", (now - 86400, now)),
    }
    lines = []
    with sqlite3.connect(path) as conn:
        for name, (where, params) in queries.items():
            sql = f"EXPLAIN QUERY PLAN SELECT sum(prompt_tokens) FROM usage WHERE {where}"
            detail = " / ".join(row[3] for row in conn.execute(sql, params))
            lines.append(f"# plan {name:>8}: {detail}")
    return lines


async def measure(size: int, directory: Path, calls: int) -> dict[str, tuple[float, float]]:
    path = directory / f"usage-{size}.db"
    now = time.time()
    async with SqliteSessionStore(path):
        pass  # migrate
    fill(path, size, now)
    results = {}
    async with SqliteSessionStore(path, clock=lambda: now) as store:
        for name, rules in RULES.items():
            meter = UsageMeter(store, config(rules), clock=lambda: now)
            times = []
            with charged_to(CallCause(AGENTS[3], USERS[7], "telegram", USERS[7])):
                for _ in range(calls):
                    started = time.perf_counter()
                    await meter.admit("m-agent3", REQUEST)
                    times.append((time.perf_counter() - started) * 1000)
            results[name] = (pct(times, 0.5), pct(times, 0.99))
    for line in plans(path, now):
        print(line)
    # For contrast: the same check with the indexes gone, i.e. a scan of the whole history.
    with sqlite3.connect(path) as conn:
        for index in ("usage_user_at", "usage_agent_at", "usage_at"):
            conn.execute(f"DROP INDEX {index}")
    async with SqliteSessionStore(path, clock=lambda: now) as store:
        meter = UsageMeter(store, config(RULES["all three"]), clock=lambda: now)
        times = []
        with charged_to(CallCause(AGENTS[3], USERS[7], "telegram", USERS[7])):
            for _ in range(max(5, calls // 100)):
                started = time.perf_counter()
                await meter.admit("m-agent3", REQUEST)
                times.append((time.perf_counter() - started) * 1000)
        results["no index, all three"] = (pct(times, 0.5), pct(times, 0.99))
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print(f"# budget check per model call — {os.cpu_count()} cores, Python "
          f"{sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, WAL")  # fmt: skip
    print(f"# command: python bench/usage.py --sizes {' '.join(map(str, args.sizes))} "
          f"--calls {args.calls}")  # fmt: skip
    print("# ledger rows spread evenly over a year; 20 agents, 2,000 users; ms per admit()")
    with tempfile.TemporaryDirectory() as tmp:
        rows = {size: await measure(size, Path(tmp), args.calls) for size in args.sizes}
    header = f"{'rows':>10}" + "".join(
        f"  {name + ' p50/p99':>24}" for name in [*RULES, "no index, all three"]
    )
    print(header)
    for size, results in rows.items():
        cells = "".join(f"  {p50:>11.3f} / {p99:>8.3f}" for p50, p99 in results.values())
        print(f"{size:>10,}{cells}")


if __name__ == "__main__":
    asyncio.run(main())
