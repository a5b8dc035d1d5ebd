"""The whole message path: inject → bridge → fake LLM (instant Echo) → sendMessage.

The real bridge runs as a child process (``BridgeProcess``); FakeTelegram, FakeLLM and the load
generator share this process's event loop. Three parts, one bridge with 3 bots:

(a) overhead: --sequential messages in one chat, one at a time; time from ``inject_message``
    to the fake Bot API recording the matching sendMessage (p50/p99 ms); CPU per message over
    all of them and over the last 50 (with --sequential 300, a history of 500 to 600 messages).
(b) throughput: --messages messages over 3 bots x 50 chats, at most --window outstanding;
    replies per second and inject → reply latency (p50/p99 ms). Every message must be answered
    exactly once: replies are counted per message and per chat (lost / duplicated / out of order).
(c) leak check: the bridge's VmRSS before and after (b), and the growth.
--rounds N repeats (b) in the same bridge: steady growth round after round suggests a leak.

The floor (``bench/floor.py``) runs (a) and one round of (b) first, in the same run, on fresh
fakes: a child doing only what cannot be avoided (getUpdates, one model POST, sendMessage,
over httpx). The bridge's CPU per message is printed as a ratio to the floor's, which holds
still when the machine is loaded or slower; CPU = utime + stime of the child (/proc/PID/stat).
Run: python bench/message_path.py [--quick] [--sequential 300] [--messages 10000] [--window 300]
                                  [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import BenchError, stop_on_sigterm, unless_exited

from bot.testing import BridgeProcess, Echo, FakeLLM, FakeTelegram, SentMessage, bridge_config
from bot.testing.bridge import BotPlan

BOTS = [
    BotPlan(
        f"bot{i}",
        f"{7200000 + i}:bench-path-token-{i:03d}-" + "P" * 30,
        f"agent{i}",
        f"You are persona number {i}.",
        f"model-{i}",
    )
    for i in range(3)
]
CHATS_PER_BOT = 50
MSG_RE = re.compile(r"msg-(\d+)-end")
STALL_S = 30.0  # no reply at all for this long: give up and say what is missing


def bench_config(telegram: FakeTelegram, llm: FakeLLM, rate: int) -> dict[str, Any]:
    """The 3-bot bridge config on these fakes, each bot paced at ``rate`` message calls/s."""
    return bridge_config(
        telegram_base=telegram.base_url,
        llm_base=llm.openai_base,
        bots=BOTS,
        bot_extra={"messages_per_second": rate},
    )


def add_rate_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rate",
        type=int,
        default=1000,
        help="each bot's messages_per_second (1000: the fake has no limit; 25 paces as the"
        " product default does for real Telegram)",
    )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM of ``pid`` in MiB, from /proc/PID/status."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FloorProcess:
    """``bench/floor.py`` as a child, with what the bench reads of a ``BridgeProcess``."""

    def __init__(self, directory: Path, telegram_base: str, llm_base: str) -> None:
        self.config_path = directory / "floor.json"  # no database beside it: DB size 0
        self.log_path = directory / "floor.log"
        bots = [f"{p.token}={p.model}={p.persona}" for p in BOTS]
        self._argv = [str(Path(__file__).with_name("floor.py")), telegram_base, llm_base, *bots]
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            profile = os.environ.get("BENCH_FLOOR_CPROFILE")  # a .prof path: why is it slow
            wrap = ["-m", "cProfile", "-o", profile] if profile else []
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *wrap,
                *self._argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self, within_s: float) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), within_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def check_alive(bridge: Any) -> None:
    process = bridge.process
    if process is not None and process.returncode is not None:
        raise BenchError(f"bridge exited with {process.returncode}:\n{bridge.logs()[-2000:]}")


async def sequential(telegram: FakeTelegram, bridge: Any, count: int, phase: Phase) -> list[float]:
    """(a): one chat, one message at a time; ms from inject to the recorded sendMessage."""
    token, chat_id = BOTS[0].token, 1_000
    for i in range(10):  # warm-up in another chat: connections, first session, caches
        telegram.inject_message(token, chat_id=chat_id - 1, text=f"warm-up {i}")
        await wait_sent(telegram, bridge, token, chat_id - 1, i + 1)
    cpu_before = cpu_seconds(bridge.pid)
    times = []
    last_from = count - min(50, count)  # the CPU of the last 50: the longest history
    cpu_last = cpu_before
    for i in range(count):
        if i == last_from:
            cpu_last = cpu_seconds(bridge.pid)
        text = f"seq-{i}-end"
        started = time.perf_counter()
        telegram.inject_message(token, chat_id=chat_id, text=text)
        sent = await wait_sent(telegram, bridge, token, chat_id, i + 1)
        times.append((time.perf_counter() - started) * 1000)
        if not sent[-1].text.endswith(text):
            raise BenchError(
                f"reply {i} in chat {chat_id} answers something else: {sent[-1].text!r}"
            )
    cpu_after = cpu_seconds(bridge.pid)
    phase.seq_cpu = cpu_after - cpu_before
    phase.seq_cpu_last = cpu_after - cpu_last
    return times


async def wait_sent(
    telegram: FakeTelegram, bridge: Any, token: str, chat_id: int, count: int
) -> list[SentMessage]:
    try:
        return await telegram.wait_for_sent(token, count, chat_id=chat_id, timeout=STALL_S)
    except TimeoutError as exc:
        check_alive(bridge)
        raise BenchError(f"{exc}; bridge log tail:\n{bridge.logs()[-2000:]}") from None


@dataclass
class Sustained:
    seconds: float  # first inject → last first reply
    latencies: list[float]  # ms, inject → first sendMessage with the message's id
    lost: int  # messages with no reply
    duplicated: int  # replies beyond the first, summed over messages
    wrong_chat: int  # replies carrying a message id in a chat it was not sent in
    out_of_order: int  # replies in a chat that came after a later message's reply
    chats_off: int  # chats whose reply count differs from the messages sent there
    bridge_cpu: float  # seconds of CPU the bridge used during the run
    bench_cpu: float  # seconds of CPU this process (fakes + load) used during the run
    rss_after: float  # the bridge's VmRSS (MiB) 2 s after the run
    db_mib: float  # size of the SQLite file and its WAL then


async def throughput(
    telegram: FakeTelegram,
    bridge: Any,
    first: int,
    total: int,
    window: int,
    budget_s: float,
) -> Sustained:
    """(b): messages ``first``… round-robin over every chat, at most ``window`` outstanding."""
    chats = [
        (plan.token, 20_000 + b * 1_000 + c)
        for b, plan in enumerate(BOTS)
        for c in range(CHATS_PER_BOT)
    ]
    injected_at: dict[int, float] = {}
    chat_of: dict[int, tuple[str, int]] = {}
    first_reply_at: dict[int, float] = {}
    calls_seen = len(telegram.calls)
    ids = range(first, first + total)
    next_id = first
    last_progress = time.monotonic()
    cpu_before, bench_cpu_before = cpu_seconds(bridge.pid), time.process_time()
    started = time.monotonic()
    try:
        async with asyncio.timeout(budget_s):
            while len(first_reply_at) < total:
                while next_id < ids.stop and next_id - first - len(first_reply_at) < window:
                    token, chat_id = chats[next_id % len(chats)]
                    chat_of[next_id] = (token, chat_id)
                    injected_at[next_id] = time.monotonic()
                    telegram.inject_message(token, chat_id=chat_id, text=f"msg-{next_id}-end")
                    next_id += 1
                await asyncio.sleep(0.002)
                calls = telegram.calls
                for call in calls[calls_seen:]:
                    if call.method != "sendMessage":
                        continue
                    match = MSG_RE.search(str(call.params.get("text", "")))
                    if match is not None and int(match.group(1)) in ids:
                        first_reply_at.setdefault(int(match.group(1)), call.at)
                        last_progress = time.monotonic()
                calls_seen = len(calls)
                if time.monotonic() - last_progress > STALL_S:
                    check_alive(bridge)
                    raise BenchError(
                        f"no reply for {STALL_S:.0f}s: {len(first_reply_at)}/{next_id - first} "
                        f"injected messages answered; bridge log tail:\n{bridge.logs()[-2000:]}"
                    )
    except TimeoutError:
        raise BenchError(
            f"throughput run exceeded {budget_s:.0f}s: {len(first_reply_at)}/{total} answered"
        ) from None
    finished = max(first_reply_at.values())
    bridge_cpu = cpu_seconds(bridge.pid) - cpu_before
    bench_cpu = time.process_time() - bench_cpu_before
    await asyncio.sleep(2.0)  # a late duplicate would show up here; background work settles
    check_alive(bridge)
    rss_after = proc_status(bridge.pid)["VmRSS"]
    db = bridge.config_path.parent / "sessions.db"
    db_files = (db, db.with_name(db.name + "-wal"))
    db_mib = sum(f.stat().st_size for f in db_files if f.exists()) / 2**20

    # Count every recorded sendMessage per message id, in the chat it was injected to.
    replies: Counter[int] = Counter()
    wrong_chat = out_of_order = 0
    for plan in BOTS:
        last_in_chat: dict[int, int] = defaultdict(lambda: -1)
        for sent in telegram.sent(plan.token):
            match = MSG_RE.search(sent.text)
            if sent.method != "sendMessage" or match is None:
                continue
            msg_id = int(match.group(1))
            if msg_id not in ids:
                continue  # another round's
            if chat_of.get(msg_id) != (plan.token, sent.chat_id):
                wrong_chat += 1
                continue
            replies[msg_id] += 1
            if msg_id < last_in_chat[sent.chat_id]:
                out_of_order += 1
            last_in_chat[sent.chat_id] = max(last_in_chat[sent.chat_id], msg_id)
    per_chat: Counter[tuple[str, int]] = Counter()
    for msg_id, n in replies.items():
        per_chat[chat_of[msg_id]] += n
    expected_per_chat = Counter(chat_of.values())
    latencies = [(first_reply_at[i] - injected_at[i]) * 1000 for i in ids]
    return Sustained(
        seconds=finished - started,
        latencies=latencies,
        lost=sum(1 for i in ids if replies[i] == 0),
        duplicated=sum(n - 1 for n in replies.values() if n > 1),
        wrong_chat=wrong_chat,
        out_of_order=out_of_order,
        chats_off=sum(1 for chat, n in expected_per_chat.items() if per_chat[chat] != n),
        bridge_cpu=bridge_cpu,
        bench_cpu=bench_cpu,
        rss_after=rss_after,
        db_mib=db_mib,
    )


@dataclass
class Phase:
    """What one child (the floor or the bridge) did under the same load."""

    seq: list[float] = field(default_factory=list)
    seq_cpu: float = 0.0  # the child's CPU seconds over (a), warm-up excluded
    seq_cpu_last: float = 0.0  # … over its last 50 messages (the longest history)
    rounds: list[Sustained] = field(default_factory=list)
    rss_ready: float = 0.0
    rss_before: float = 0.0
    hwm: float = 0.0

    def seq_ms(self) -> float:
        return 1000 * self.seq_cpu / len(self.seq)

    def seq_last_ms(self) -> float:
        return 1000 * self.seq_cpu_last / min(50, len(self.seq))

    def burst_ms(self) -> float:
        return 1000 * statistics.median(r.bridge_cpu / len(r.latencies) for r in self.rounds)


async def run_phase(args: argparse.Namespace, tmp: Path, floor: bool) -> Phase:
    """(a) and (b) against fresh fakes, on the floor child or on the real bridge."""
    telegram, llm = FakeTelegram(), FakeLLM()
    child: Any = None
    phase = Phase()
    try:
        await telegram.start()
        await llm.start()
        llm.set_default(None, Echo())
        for plan in BOTS:
            telegram.add_bot(plan.token, f"{plan.bot_id}_bot")
        if floor:
            child = FloorProcess(tmp, telegram.base_url, llm.openai_base)
        else:
            config = bench_config(telegram, llm, args.rate)
            child = BridgeProcess.write(tmp, config, args=("--log-level", "WARNING"))
        await child.start()
        for plan in BOTS:
            poll = telegram.wait_for_poll(plan.token, timeout=120)
            await unless_exited(child, poll, f"getUpdates from {plan.bot_id}", 60)
        phase.rss_ready = proc_status(child.pid)["VmRSS"]
        phase.seq = await sequential(telegram, child, args.sequential, phase)
        phase.rss_before = proc_status(child.pid)["VmRSS"]
        for n in range(1 if floor else args.rounds):
            phase.rounds.append(
                await throughput(
                    telegram, child, n * args.messages, args.messages, args.window, args.budget
                )
            )
        phase.hwm = proc_status(child.pid)["VmHWM"]
    finally:
        if child is not None:
            await child.stop(within_s=15.0)
        await llm.stop()
        await telegram.stop()
    return phase


async def main_async(args: argparse.Namespace) -> None:
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="bench-path-") as tmp:
        for name in ("floor", "bridge"):
            (Path(tmp) / name).mkdir()
        floor = await run_phase(args, Path(tmp) / "floor", floor=True)
        phase = await run_phase(args, Path(tmp) / "bridge", floor=False)
    seq, rounds = phase.seq, phase.rounds
    rss_ready, rss_before, hwm = phase.rss_ready, phase.rss_before, phase.hwm

    quick = " --quick" if args.quick else ""
    print(f"# message path — {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(
        f"# command: python bench/message_path.py{quick} --sequential {args.sequential} "
        f"--messages {args.messages} --window {args.window} --rounds {args.rounds}"
        f" --rate {args.rate}"
    )
    print("# bridge = child process; FakeTelegram, FakeLLM (Echo, instant) and load = this process")
    load = os.getloadavg()
    print(f"# load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print()
    print("# CPU per message (utime+stime of the child), the bridge vs the floor (bench/floor.py:")
    print(
        "# getUpdates, one model POST, sendMessage over httpx; nothing else), same run, same fakes"
    )
    print(f"{'part':>14}{'floor ms':>10}{'bridge ms':>11}{'ratio':>8}")
    last = min(50, len(phase.seq))
    for part, low, high in (
        ("(a) sequential", floor.seq_ms(), phase.seq_ms()),
        (f"(a) last {last}", floor.seq_last_ms(), phase.seq_last_ms()),
        ("(b) burst", floor.burst_ms(), phase.burst_ms()),
    ):
        print(f"{part:>14}{low:>10.2f}{high:>11.2f}{high / low:>8.2f}")
    floor_rate = statistics.median(len(r.latencies) / r.seconds for r in floor.rounds)
    floor_seq = statistics.median(floor.seq)
    print(
        f"# floor: (a) p50 {floor_seq:.2f} ms inject → reply; (b) {floor_rate:.0f} replies/s; "
        f"RSS {floor.rss_ready:.1f} MiB"
    )
    print()
    print("# (a) per-message overhead: inject → sendMessage recorded, one chat, sequential")
    print("# (the chat's history grows by 2 messages a turn and is sent whole: no compaction yet)")
    edge = min(50, len(seq))
    print(
        f"{'messages':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{f'p50 first {edge}':>15}{f'p50 last {edge}':>14}"
    )
    print(
        f"{len(seq):>9}{statistics.median(seq):>9.2f}{pct(seq, 0.99):>9.2f}{max(seq):>9.2f}"
        f"{statistics.median(seq[:edge]):>15.2f}{statistics.median(seq[-edge:]):>14.2f}"
    )
    print()
    print(
        f"# (b) sustained: {len(BOTS)} bots x {CHATS_PER_BOT} chats, "
        f"≤{args.window} outstanding; latency = inject → sendMessage"
    )
    print("# bridge CPU % = the bridge's CPU time / the round's wall time")
    head = ("round", "messages", "seconds", "replies/s", "p50 ms", "p99 ms", "lost", "duplicated")
    print(
        f"{head[0]:>5}{head[1]:>9}{head[2]:>9}{head[3]:>11}{head[4]:>9}{head[5]:>9}"
        f"{head[6]:>6}{head[7]:>12}{'bridge CPU %':>14}"
    )
    for n, r in enumerate(rounds, 1):
        lat = r.latencies
        print(
            f"{n:>5}{len(lat):>9}{r.seconds:>9.1f}{len(lat) / r.seconds:>11.0f}"
            f"{statistics.median(lat):>9.0f}{pct(lat, 0.99):>9.0f}{r.lost:>6}{r.duplicated:>12}"
            f"{100 * r.bridge_cpu / r.seconds:>14.0f}"
        )
    print(
        f"# replies in the wrong chat: {sum(r.wrong_chat for r in rounds)}, "
        f"out of order within a chat: {sum(r.out_of_order for r in rounds)}, "
        f"chats whose reply count ≠ messages sent: {sum(r.chats_off for r in rounds)}"
    )
    print(f"# this process (fakes + load) used {sum(r.bench_cpu for r in rounds):.1f} s CPU")
    print()
    print(
        "# (c) bridge memory, VmRSS MiB (after = 2 s after the round's last reply);"
        " DB = SQLite file + WAL"
    )
    print(
        f"{'':>5}{'at READY':>10}{'before (b)':>12}{'after':>8}{'growth':>8}{'VmHWM':>8}"
        f"{'DB MiB':>8}"
    )
    previous = rss_before
    for n, r in enumerate(rounds, 1):
        ready = f"{rss_ready:.1f}" if n == 1 else ""
        peak = f"{hwm:.1f}" if n == len(rounds) else ""
        print(
            f"{n:>5}{ready:>10}{previous:>12.1f}{r.rss_after:>8.1f}"
            f"{r.rss_after - previous:>+8.1f}{peak:>8}{r.db_mib:>8.1f}"
        )
        previous = r.rss_after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="50 sequential, 1,000 sustained")
    parser.add_argument("--sequential", type=int, default=None, help="(a) messages (300)")
    parser.add_argument("--messages", type=int, default=None, help="(b) messages (10000)")
    parser.add_argument("--window", type=int, default=300, help="(b) most outstanding")
    parser.add_argument("--rounds", type=int, default=1, help="repeat (b) in the same bridge")
    add_rate_argument(parser)
    parser.add_argument("--budget", type=float, default=600.0, help="(b) time limit, seconds")
    args = parser.parse_args()
    if args.sequential is None:
        args.sequential = 50 if args.quick else 300
    if args.messages is None:
        args.messages = 1_000 if args.quick else 10_000
    try:
        asyncio.run(main_async(args))
    except BenchError as exc:
        sys.exit(f"bench/message_path.py: {exc}")
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("bench/message_path.py: interrupted (the bridge was stopped)")


if __name__ == "__main__":
    main()
