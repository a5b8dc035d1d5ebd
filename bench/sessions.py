"""Session store: append latency and context-build time as one session grows.

For 100, 10k and 100k stored messages in one session (all through the store API):
append latency (median/p99 of the last appends), and the time to build a turn's context
— latest summary + messages after it + build_context — once compacted (a summary covers
all but the last 20 messages) and, for contrast, with no summary at all.
Run: python bench/sessions.py [--sizes 100 10000 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bot.sessions.context import build_context
from bot.sessions.store import SessionKey, SqliteSessionStore
from bot.types import ChatMessage, Usage

PERSONA = "You are Alice, a travel planner."
BUDGET = 32000
SAMPLE = 300


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def build(store: SqliteSessionStore, session_id: int) -> None:
    summary = await store.latest_summary(session_id)
    history = await store.messages(session_id, after_id=summary.covers_up_to if summary else 0)
    build_context(PERSONA, summary, history, BUDGET)


async def timed(store: SqliteSessionStore, session_id: int, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        await build(store, session_id)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def measure(size: int, directory: Path) -> dict[str, float]:
    async with SqliteSessionStore(directory / f"bench-{size}.db") as store:
        session_id = await store.active_session(SessionKey("telegram-alice", "1", None, "alice"))
        appends: list[float] = []
        last_id = 0
        for n in range(size):
            role = "user" if n % 2 == 0 else "assistant"
            message = ChatMessage(
                role,
                f"Message {n}: a typical sentence or two of chat text, "
                "about as long as people write to a bot.",
            )
            started = time.perf_counter()
            last_id = await store.append(
                session_id, message, model_name="gpt", usage=Usage(100, 20)
            )
            if n >= size - SAMPLE:
                appends.append((time.perf_counter() - started) * 1000)
        raw = await timed(store, session_id, 5 if size > 10_000 else 20)
        covered = last_id - 20
        await store.add_summary(session_id, covered, "The user planned a trip to Rome.", "haiku")
        compacted = await timed(store, session_id, 200)
    return {
        "append p50": statistics.median(appends),
        "append p99": pct(appends, 0.99),
        "ctx p50": statistics.median(compacted),
        "ctx p99": pct(compacted, 0.99),
        "raw p50": statistics.median(raw),
    }


async def main_async(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {size: await measure(size, Path(tmp)) for size in sizes}
    print(
        f"# session store — {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        "SQLite WAL, one session"
    )
    print(f"# command: python bench/sessions.py --sizes {' '.join(map(str, sizes))}")
    print(
        "# ctx = context build after compaction (summary + last 20 messages);"
        " raw = no summary (whole history considered)"
    )
    head = (
        "messages",
        "append p50 ms",
        "append p99 ms",
        "ctx p50 ms",
        "ctx p99 ms",
        "raw ctx p50 ms",
    )
    print("  ".join(f"{h:>14}" for h in head))
    for size, r in results.items():
        cells = [f"{size:>14}"] + [
            f"{r[k]:>14.3f}" for k in ("append p50", "append p99", "ctx p50", "ctx p99", "raw p50")
        ]
        print("  ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 100_000])
    asyncio.run(main_async(parser.parse_args().sizes))


if __name__ == "__main__":
    main()
