"""Per-call overhead of ProviderDispatcher + FallbackChain vs a bare httpx call.

Both hit the same FakeLLM (own thread, own event loop) with the same body; calls are
interleaved so drift affects both alike. Run: python bench/dispatcher.py [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time

import httpx

from bot.config.schema import ChainSpec, ModelEntry
from bot.providers.dispatcher import ProviderDispatcher
from bot.providers.fallback import FallbackChain
from bot.testing import FakeLLM, Reply
from bot.types import ChatMessage, ChatRequest


def start_fake_in_thread() -> tuple[FakeLLM, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    fake = FakeLLM()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(fake.start())
        fake.set_default(None, Reply("OK"))
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(10)
    return fake, loop


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))]


async def measure(base: str, calls: int) -> dict[str, list[float]]:
    entry = ModelEntry(model_name="bench", model="openai/bench-model", api_base=base)
    request = ChatRequest(system="You are a benchmark.", messages=(ChatMessage("user", "hi"),))
    async with httpx.AsyncClient() as bare_client:
        dispatcher = ProviderDispatcher([entry])
        chain = FallbackChain(dispatcher)
        spec = ChainSpec(primary="bench")
        body = {
            "model": "bench-model",
            "messages": [
                {"role": "system", "content": "You are a benchmark."},
                {"role": "user", "content": "hi"},
            ],
        }
        timings: dict[str, list[float]] = {"bare httpx": [], "dispatcher + chain": []}

        async def bare() -> None:
            response = await bare_client.post(f"{base}/chat/completions", json=body)
            response.json()["choices"][0]["message"]["content"]

        async def routed() -> None:
            await chain.chat(spec, request)

        for _ in range(50):  # warm both connection pools
            await bare()
            await routed()
        for _ in range(calls):
            for label, call in (("bare httpx", bare), ("dispatcher + chain", routed)):
                started = time.perf_counter()
                await call()
                timings[label].append((time.perf_counter() - started) * 1e6)
        await dispatcher.aclose()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    fake, loop = start_fake_in_thread()
    timings = asyncio.run(measure(fake.openai_base, args.calls))
    asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)

    print(f"# dispatcher overhead — {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"# command: python bench/dispatcher.py --calls {args.calls}")
    print(f"{'path':<22}{'calls':>7}{'median µs':>12}{'p99 µs':>10}")
    for label, values in timings.items():
        print(
            f"{label:<22}{len(values):>7}{statistics.median(values):>12.0f}"
            f"{percentile(values, 0.99):>10.0f}"
        )
    overhead = statistics.median(timings["dispatcher + chain"]) - statistics.median(
        timings["bare httpx"]
    )
    print(f"{'overhead (median)':<22}{'':>7}{overhead:>12.0f}")


if __name__ == "__main__":
    main()
