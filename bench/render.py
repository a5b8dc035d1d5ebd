"""Markdown → Telegram HTML: render + split time by input size and kind.

Guards against quadratic behaviour: time should grow about linearly with size.
Run: python bench/render.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from bot.channels.telegram_render import render_markdown

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


if __name__ == "__main__":
    main()
