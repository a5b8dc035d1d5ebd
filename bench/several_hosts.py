"""PostgreSQL vs SQLite, one process vs several: throughput and CPU per message.

Runs the real bridge (``BridgeProcess``) against FakeTelegram + FakeLLM (instant Echo), 3 bots
x --chats chats, --messages messages with at most --window outstanding, in three setups in
one run: SQLite with one process, PostgreSQL with one process, PostgreSQL with --processes
processes (the same config, sharing the work). For each: replies per second, bridge CPU per
message (all bridge processes together), PostgreSQL server CPU per message, and a check that
every message was answered exactly once and in order per chat. PostgreSQL is a throwaway
server from the ``pgserver`` package, or ``$PERSONA_BRIDGE_TEST_PG`` (then its CPU is not
measured). On a machine with few cores, the processes, the server and the fakes share them:
scaling is bounded by the cores, not by the bridge.
Run: python bench/several_hosts.py [--processes 2] [--messages 3000] [--window 300] [--chats 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psutil
from harness import BenchError, stop_on_sigterm

from bot.testing import BridgeProcess, Echo, FakeLLM, FakeTelegram, bridge_config
from bot.testing.bridge import BotPlan
from bot.testing.postgres import fresh_database, postgres_server

BOTS = [
    BotPlan(
        f"bot{i}",
        f"{7300000 + i}:bench-hosts-token-{i:03d}-" + "H" * 30,
        f"agent{i}",
        f"You are persona number {i}.",
        f"model-{i}",
    )
    for i in range(3)
]
MSG_RE = re.compile(r"msg-(\d+)-end")


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def server_pids(dsn: str) -> list[int]:
    """The postmaster and its backends, when the server is ours (a socket directory)."""
    host = parse_qs(urlsplit(dsn).query).get("host", [""])[0]
    pid_file = Path(host) / "postmaster.pid"
    if not host or not pid_file.exists():
        return []
    master = psutil.Process(int(pid_file.read_text().split()[0]))
    return [master.pid, *(c.pid for c in master.children(recursive=True))]


async def one_setup(
    label: str, database: str, processes: int, args: argparse.Namespace, root: Path
) -> str:
    async with FakeTelegram() as telegram, FakeLLM() as llm:
        llm.set_default(None, Echo())
        for plan in BOTS:
            telegram.add_bot(plan.token, f"{plan.bot_id}_bot")
        config = bridge_config(
            telegram_base=telegram.base_url, llm_base=llm.openai_base, bots=BOTS, database=database
        )
        bridges = []
        for n in range(processes):
            directory = root / f"{label}-{processes}p-{n}"
            directory.mkdir()
            bridges.append(BridgeProcess.write(directory, config, args=("--log-level", "WARNING")))
        try:
            for bridge in bridges:
                await bridge.start()
            for plan in BOTS:
                await telegram.wait_for_poll(plan.token, timeout=60)
            chats = [(p.token, 5000 + c) for p in BOTS for c in range(args.chats)]
            pg = server_pids(database) if database.startswith("postgresql") else []
            cpu0, pg0 = cpu_of([b.pid for b in bridges]), cpu_of(pg)
            started = time.monotonic()
            sent_to: dict[int, tuple[str, int]] = {}
            injected = answered = seen = 0
            async with asyncio.timeout(args.budget):
                while True:
                    calls = telegram.calls  # counted incrementally: the bench shares the cores
                    answered += sum(1 for c in calls[seen:] if c.method == "sendMessage")
                    seen = len(calls)
                    while injected < args.messages and injected - answered < args.window:
                        token, chat = chats[injected % len(chats)]
                        telegram.inject_message(token, chat_id=chat, text=f"msg-{injected}-end")
                        sent_to[injected] = (token, chat)
                        injected += 1
                    if answered >= args.messages:
                        break
                    await asyncio.sleep(0.01)
            seconds = time.monotonic() - started
            cpu = cpu_of([b.pid for b in bridges]) - cpu0
            pg_cpu = cpu_of(server_pids(database)) - pg0 if pg else float("nan")
        finally:
            for bridge in bridges:
                await bridge.stop()
        replies: Counter[int] = Counter()
        out_of_order = 0
        for plan in BOTS:
            last: dict[int, int] = {}
            for sent in telegram.sent(plan.token):
                match = MSG_RE.search(sent.text)
                if match is None:
                    continue
                msg = int(match.group(1))
                replies[msg] += 1
                out_of_order += msg < last.get(sent.chat_id, -1)
                last[sent.chat_id] = msg
        lost = sum(1 for m in range(args.messages) if replies[m] == 0)
        duplicated = sum(n - 1 for n in replies.values() if n > 1)
        if lost or duplicated or out_of_order:
            raise BenchError(f"{label}: lost {lost}, duplicated {duplicated}, late {out_of_order}")
        n = args.messages
        pg_ms = f"{pg_cpu / n * 1000:.2f}" if pg else "-"
        return (
            f"{label:<22} {processes:>5} {n / seconds:>9.0f} {cpu / n * 1000:>12.2f}"
            f" {pg_ms:>12} {seconds:>8.1f}"
        )


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--window", type=int, default=300)
    parser.add_argument("--chats", type=int, default=20, help="chats per bot")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per setup")
    args = parser.parse_args()
    stop_on_sigterm()
    print(f"# several hosts — {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"# command: python bench/several_hosts.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# {args.messages} messages, 3 bots x {args.chats} chats, window {args.window}")
    print("setup                  procs   msg/s   bridge ms CPU/msg  pg ms CPU/msg   wall s")
    with tempfile.TemporaryDirectory(prefix="bench-hosts-") as tmp, postgres_server() as admin:
        root = Path(tmp)
        print(await one_setup("sqlite", str(root / "sessions.db"), 1, args, root), flush=True)
        for processes in sorted({1, args.processes}):
            dsn = await fresh_database(admin)
            print(await one_setup("postgresql", dsn, processes, args, root), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
