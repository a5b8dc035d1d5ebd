"""Time to a reply when the primary model fails, through the real bridge.

The bridge runs as a child process (``BridgeProcess``) against FakeTelegram and FakeLLM in this
process. Every chain is ``primary → backup``; time is inject → sendMessage recorded. Cases:
(d) baseline: the primary answers; (a) the primary returns 500 (fall to backup at once);
(b) the primary hangs and its model entry has ``timeout_s`` = --timeout (≈ that long);
(c) the primary is cooling down after a failure: skipped without a request.
Cooldowns are per model entry and shared, so each (a)/(b) sample has its own primary entry
(own agent, bound to its own chat); (c) shares one primary that one unmeasured 500 put on its
30 s cooldown. Every chat gets one warm-up turn (all primaries answering) before faults start;
the cases then run interleaved (d a c b, d a c b, …) so drift on a busy machine hits all alike.
Run: python bench/fallback.py [--quick] [--samples 5] [--timeout 2]
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
from typing import Any

from harness import BenchError, stop_on_sigterm, unless_exited

from bot.testing import (
    BridgeProcess,
    Echo,
    FakeLLM,
    FakeTelegram,
    Fault,
    Hang,
    bridge_config,
)
from bot.testing.bridge import BotPlan

BOT = BotPlan(
    "bench", "7300001:bench-fallback-token-" + "F" * 30, "base", "You are Base.", "base-model"
)
BACKUP_MODEL = "backup-model"
CASES = {
    "d": "(d) no fault (baseline)",
    "a": "(a) primary 500",
    "b": "(b) primary hangs",
    "c": "(c) primary cooling",
}
WAIT_S = 30.0  # for any one reply
COOLDOWN_S = 30.0  # the bridge's first cooldown after a 5xx (bot.providers.cooldown)


def build_config(
    telegram: FakeTelegram, llm: FakeLLM, samples: int, timeout_s: float
) -> tuple[dict[str, Any], dict[str, list[tuple[int, str]]]]:
    """The config, and per case the (chat id, primary model id) of each sample."""
    config = bridge_config(telegram_base=telegram.base_url, llm_base=llm.openai_base, bots=[BOT])
    models: list[dict[str, Any]] = config["model_list"]
    agents: list[dict[str, Any]] = config["agents"]["list"]
    bindings: list[dict[str, Any]] = []
    models.append(
        {"model_name": "backup", "model": f"openai/{BACKUP_MODEL}", "api_base": llm.openai_base}
    )
    plan: dict[str, list[tuple[int, str]]] = {case: [] for case in CASES}

    def agent(agent_id: str, primary: str, chats: list[int]) -> None:
        agents.append(
            {
                "id": agent_id,
                "name": agent_id,
                "persona": f"You are {agent_id}.",
                "model": {"primary": primary, "fallbacks": ["backup"]},
            }
        )
        channel = f"telegram-{BOT.bot_id}"
        bindings.extend(
            {"agent_id": agent_id, "match": {"channel": channel, "chat_id": str(chat)}}
            for chat in chats
        )

    def entry(name: str, model_id: str, **extra: Any) -> None:
        models.append(
            {"model_name": name, "model": f"openai/{model_id}", "api_base": llm.openai_base} | extra
        )

    entry("p-d", "d-primary")
    chats = [100 + i for i in range(samples)]
    agent("d", "p-d", chats)
    plan["d"] = [(chat, "d-primary") for chat in chats]
    for i in range(samples):
        entry(f"p-a{i}", f"a{i}-primary")
        agent(f"a{i}", f"p-a{i}", [200 + i])
        plan["a"].append((200 + i, f"a{i}-primary"))
        entry(f"p-b{i}", f"b{i}-primary", timeout_s=timeout_s)
        agent(f"b{i}", f"p-b{i}", [300 + i])
        plan["b"].append((300 + i, f"b{i}-primary"))
    entry("p-c", "c-primary")
    chats = [400 + i for i in range(samples)]
    agent("c", "p-c", [399, *chats])  # 399: the unmeasured turn that starts the cooldown
    plan["c"] = [(chat, "c-primary") for chat in chats]
    config["bindings"] = bindings + config["bindings"]  # chat-specific bindings first
    return config, plan


async def reply(
    telegram: FakeTelegram, bridge: BridgeProcess, chat_id: int, text: str, count: int
) -> tuple[float, str]:
    """Inject ``text``; (seconds until the ``count``-th sendMessage in the chat, its text)."""
    started = time.perf_counter()
    telegram.inject_message(BOT.token, chat_id=chat_id, text=text)
    try:
        sent = await telegram.wait_for_sent(BOT.token, count, chat_id=chat_id, timeout=WAIT_S)
    except TimeoutError as exc:
        process = bridge.process
        if process is not None and process.returncode is not None:
            raise BenchError(
                f"bridge exited with {process.returncode}:\n{bridge.logs()[-2000:]}"
            ) from None
        raise BenchError(f"{exc}\nbridge log tail:\n{bridge.logs()[-2000:]}") from None
    return time.perf_counter() - started, sent[-1].text


async def main_async(samples: int, timeout_s: float) -> dict[str, dict[str, Any]]:
    stop_on_sigterm()
    telegram, llm = FakeTelegram(), FakeLLM()
    bridge: BridgeProcess | None = None
    results: dict[str, dict[str, Any]]
    with tempfile.TemporaryDirectory(prefix="bench-fallback-") as tmp:
        try:
            await telegram.start()
            await llm.start()
            llm.set_default(None, Echo())
            telegram.add_bot(BOT.token, "bench_bot")
            config, plan = build_config(telegram, llm, samples, timeout_s)
            bridge = BridgeProcess.write(Path(tmp), config, args=("--log-level", "WARNING"))
            await bridge.start()
            poll = telegram.wait_for_poll(BOT.token, timeout=120)
            await unless_exited(bridge, poll, "getUpdates from the bot", 60)

            # Warm-up: one answered turn per chat (sessions exist, connections are open).
            for case_plan in plan.values():
                for chat, _ in case_plan:
                    await reply(telegram, bridge, chat, "warm-up", 1)
            await reply(telegram, bridge, 399, "warm-up", 1)

            for i in range(samples):
                llm.set_default(f"a{i}-primary", Fault(500, "primary exploded"))
                llm.set_default(f"b{i}-primary", Hang(timeout_s + 60))
            llm.set_default("c-primary", Fault(500, "primary exploded"))
            # c-primary fails once (unmeasured) and cools down for 30 s.
            cooling_since = time.monotonic()
            _, text = await reply(telegram, bridge, 399, "start the cooldown", 2)
            if f"[model={BACKUP_MODEL}]" not in text:
                raise BenchError(f"the cooldown-starting turn was not answered by backup: {text!r}")

            # Interleaved (d a c b, d a c b, …) so drift on a shared machine hits every case.
            results = {
                case: {"times": [], "models": set(), "primary_requests": 0} for case in CASES
            }
            for i in range(samples):
                for case in ("d", "a", "c", "b"):
                    chat, primary = plan[case][i]
                    before = len(llm.requests_for(primary))
                    seconds, text = await reply(telegram, bridge, chat, f"case {case}", 2)
                    if case == "c" and time.monotonic() - cooling_since >= COOLDOWN_S:
                        raise BenchError(
                            f"(c) ran {COOLDOWN_S:.0f} s after the cooldown started: it may "
                            "have run out; use fewer --samples or a shorter --timeout"
                        )
                    result = results[case]
                    result["times"].append(seconds)
                    result["primary_requests"] += len(llm.requests_for(primary)) - before
                    result["models"].add(text.split("]", 1)[0].removeprefix("[model="))
        finally:
            if bridge is not None:
                await bridge.stop(within_s=15.0)
            await llm.stop()
            await telegram.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="3 samples per case instead of 5")
    parser.add_argument("--samples", type=int, default=None, help="replies per case (5)")
    parser.add_argument("--timeout", type=float, default=2.0, help="timeout_s of hanging primaries")
    args = parser.parse_args()
    samples = args.samples if args.samples is not None else (3 if args.quick else 5)
    try:
        results = asyncio.run(main_async(samples, args.timeout))
    except BenchError as exc:
        sys.exit(f"bench/fallback.py: {exc}")
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("bench/fallback.py: interrupted (the bridge was stopped)")

    quick = " --quick" if args.quick else ""
    print(f"# fallback latency — {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(
        f"# command: python bench/fallback.py{quick} --samples {samples} --timeout {args.timeout:g}"
    )
    print("# chain primary → backup; time = inject → sendMessage recorded; one bridge, fresh")
    print("# primary entry per (a)/(b) sample; (c) after one unmeasured 500 on a shared primary;")
    print("# cases interleaved d a c b, d a c b, …")
    head = ("case", "replies", "median ms", "min ms", "max ms", "answered by", "primary reqs")
    print(
        f"{head[0]:<26}{head[1]:>8}{head[2]:>11}{head[3]:>9}{head[4]:>9}"
        f"  {head[5]:<14}{head[6]:>12}"
    )
    for case, label in CASES.items():
        r = results[case]
        ms = [t * 1000 for t in r["times"]]
        print(
            f"{label:<26}{len(ms):>8}{statistics.median(ms):>11.1f}{min(ms):>9.1f}{max(ms):>9.1f}"
            f"  {','.join(sorted(r['models'])):<14}{r['primary_requests']:>12}"
        )
    print(
        f"# primary requests during (c): {results['c']['primary_requests']} (expected 0); "
        f"(a), (b), (d): expected 1 per reply"
    )


if __name__ == "__main__":
    main()
