"""Markdown → Telegram HTML: render + split time by input size and kind.

Guards against quadratic behaviour: time should grow about linearly with size. Then the
event-loop stall while a reply is rendered the way the sender does it (``render_reply``:
inline up to 1 KB, on a worker thread above): the longest a 1 ms ticker on the same loop
was late (goal: ≤ 20 ms for a 100 KB reply).
Run: python bench/render.py
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import time

from bot.channels.telegram_render import render_markdown
from bot.channels.telegram_send import render_reply

SENTENCE = (
    "The quick brown fox jumps over the **lazy dog** and `x < y && z > w`; "
    "see [docs](https://example.com/a?b=1&c=2) for *details*. "
)
BLOCK = (
    "## Section\n\n"
    + SENTENCE * 3
    + "\n\n```python\nfor i in range(10):\n    print(i < 5 & True)\n```\n\n"
    + "- item one\n- item *two*\n  - nested\n\n> a quote\n\n"
)
HOSTILE = "Hostile <b>&amp; \x00\x07\ud800 text **b** `c` [l](javascript:x) 😀 ~~s\n\n"
KINDS = {"llm-style markdown": BLOCK, "hostile text": HOSTILE, "dense emphasis": "a*"}


def timed(source: str, repeats: int) -> tuple[float, int]:
    times = []
    chunks = 0
    for _ in range(repeats):
        started = time.perf_counter()
        chunks = len(render_markdown(source))
        times.append(time.perf_counter() - started)
    return statistics.median(times), chunks


async def stall_ms(source: str) -> float:
    """The longest a 1 ms ticker was late while ``render_reply(source)`` ran."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            before = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - before - 0.001)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    if source:
        await render_reply(source)
    else:
        await asyncio.sleep(0.2)
    done = True
    await ticking
    return worst * 1000


def main() -> None:
    print(f"# render_markdown — {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print("# command: python bench/render.py")
    print(f"{'input':<20}{'size':>10}{'chunks':>8}{'median s':>10}{'µs/KB':>8}")
    for kind, unit in KINDS.items():
        for size in (10_000, 100_000, 1_000_000):
            source = unit * (size // len(unit) + 1)
            seconds, chunks = timed(source, 5 if size < 1_000_000 else 3)
            print(
                f"{kind:<20}{size:>10}{chunks:>8}{seconds:>10.3f}"
                f"{seconds * 1e6 / (size / 1000):>8.0f}"
            )

    print()
    gc.freeze()  # as the bridge does once ready (bot/ops/service.py)
    print("# event-loop stall while the sender renders a reply (render_reply), median of 3;")
    print("# 'nothing' = the ticker's lateness with no render at all (machine load)")
    print(f"{'input':<20}{'size':>10}{'stall ms':>10}")
    quiet = [asyncio.run(stall_ms("")) for _ in range(3)]
    print(f"{'nothing':<20}{0:>10}{statistics.median(quiet):>10.1f}")
    for kind, unit in KINDS.items():
        for size in (1_000, 10_000, 100_000):
            source = unit * (size // len(unit) + 1)
            stalls = [asyncio.run(stall_ms(source)) for _ in range(3)]
            print(f"{kind:<20}{size:>10}{statistics.median(stalls):>10.1f}")


if __name__ == "__main__":
    main()
