"""Where the bridge's CPU goes during a burst: the top frames, without guessing.

Starts the real bridge (3 bots) on the fakes, sends a burst of --messages over 3 bots x 50
chats (bench/message_path.py's part (b)), and samples the bridge child while it runs:
- with py-spy (``pip install py-spy``; default when it is on PATH): every thread, the SQLite
  worker thread included; prints the top functions by own samples and by samples anywhere on
  the stack, and the share of each thread;
- otherwise (or with --cprofile) the child runs under cProfile: the event-loop thread only
  (SQLite's worker thread is invisible to it) over the child's whole life, start-up and
  warm-up included; prints the top functions by own and by total time.
Run: python bench/profile.py [--messages 1500 | --sequential 300] [--top 25] [--rate 1000]
                             [--cprofile] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import shutil
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

from harness import BenchError, stop_on_sigterm, unless_exited
from message_path import BOTS, Phase, add_rate_argument, bench_config, sequential, throughput

from bot.testing import BridgeProcess, Echo, FakeLLM, FakeTelegram


class ProfiledBridge(BridgeProcess):
    """The bridge as ``python -m cProfile -o FILE -m bot run …``: stats written on exit."""

    def __init__(self, config_path: Path, stats: Path, **kwargs: object) -> None:
        super().__init__(config_path, **kwargs)  # type: ignore[arg-type]
        self.stats = stats

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "cProfile", "-o", str(self.stats), "-m", "bot", "run"),
                *("--config", str(self.config_path), *self._args),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env,
                start_new_session=True,
            )


def frame_name(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (module.py:12)`` without the line number."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    if "site-packages" in parts:
        where = "/".join(parts[parts.index("site-packages") + 1 :])
    elif "bot" in parts:
        where = "/".join(parts[parts.index("bot") :])
    else:
        where = parts[-1]
    return f"{name} ({where})"


def print_py_spy(raw: Path, top: int) -> None:
    """Aggregate py-spy's collapsed stacks (``thread (tid): name;frame;… count``).

    SQLite's own work shows as ``_connection_worker_thread`` (aiosqlite's thread): the C
    calls it makes have no Python frame. py-spy cannot tell that thread waiting on its queue
    (``tx.get``) or the event loop handing it work (``Connection._execute``: ``put_nowait``,
    then the GIL handed back and forth) from running: those two lines are mostly the cost of
    each trip between the threads, not of SQL."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], [frame_name(f) for f in frames[1:]]
        total += count
        threads[thread.partition(": ")[2] or thread] += count  # "thread (tid): name"
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    if not total:
        raise BenchError("py-spy recorded no samples")
    print(f"# {total} samples (idle threads excluded)")
    print("# share by thread")
    for thread, count in threads.most_common():
        print(f"{100 * count / total:>7.1f} %  {thread}")
    for title, counter in (("own samples", own), ("samples anywhere on the stack", anywhere)):
        print(f"\n# top {top} by {title}")
        for frame, count in counter.most_common(top):
            print(f"{100 * count / total:>7.1f} %  {frame}")


def print_cprofile(stats_path: Path, top: int) -> None:
    stats = pstats.Stats(str(stats_path))
    stats.strip_dirs()
    for key, title in (("tottime", "own time"), ("cumulative", "total time")):
        print(f"\n# top {top} by {title} (event-loop thread only)")
        stats.sort_stats(key).print_stats(top)


async def main_async(args: argparse.Namespace) -> None:
    stop_on_sigterm()
    beside_python = str(Path(sys.executable).parent)
    py_spy = (
        None
        if args.cprofile
        else shutil.which("py-spy", path=f"{beside_python}:{os.environ.get('PATH', '')}")
    )
    telegram, llm = FakeTelegram(), FakeLLM()
    bridge: BridgeProcess | None = None
    sampler: asyncio.subprocess.Process | None = None
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        stats = Path(tmp) / "bridge.prof"
        raw = Path(tmp) / "py-spy.txt"
        try:
            await telegram.start()
            await llm.start()
            llm.set_default(None, Echo())
            for plan in BOTS:
                telegram.add_bot(plan.token, f"{plan.bot_id}_bot")
            config = bench_config(telegram, llm, args.rate)
            path = Path(tmp) / "config.json"
            path.write_text(json.dumps(config))
            log_args = ("--log-level", "WARNING")
            if py_spy is None:
                bridge = ProfiledBridge(path, stats, args=log_args)
            else:
                bridge = BridgeProcess(path, args=log_args)
            await bridge.start()
            for plan in BOTS:
                poll = telegram.wait_for_poll(plan.token, timeout=120)
                await unless_exited(bridge, poll, f"getUpdates from {plan.bot_id}", 60)
            # Warm-up: connections and sessions exist before sampling starts.
            await throughput(telegram, bridge, 0, 150, 150, 120.0)
            if py_spy is not None:
                sampler = await asyncio.create_subprocess_exec(
                    py_spy,
                    *("record", "--pid", str(bridge.pid), "--format", "raw", "--rate", "250"),
                    *("--nonblocking", "--threads", "--output", str(raw)),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)  # py-spy attaches
            if args.sequential:
                phase = Phase()
                times = await sequential(telegram, bridge, args.sequential, phase)
                what = (
                    f"sequential: {args.sequential} messages one at a time in one chat; "
                    f"p50 {sorted(times)[len(times) // 2]:.1f} ms, bridge CPU "
                    f"{1000 * phase.seq_cpu / args.sequential:.2f} ms/message"
                )
            else:
                result = await throughput(
                    telegram, bridge, 1_000_000, args.messages, args.window, args.budget
                )
                what = (
                    f"burst: {args.messages} messages, 3 bots x 50 chats, ≤{args.window} "
                    f"outstanding; {len(result.latencies) / result.seconds:.0f} replies/s, "
                    f"bridge CPU {1000 * result.bridge_cpu / args.messages:.2f} ms/message"
                )
            if sampler is not None:
                sampler.send_signal(signal.SIGINT)
                await asyncio.wait_for(sampler.wait(), 30)
        finally:
            if sampler is not None and sampler.returncode is None:
                sampler.kill()
            if bridge is not None:
                await bridge.stop(within_s=30.0)
            await llm.stop()
            await telegram.stop()
        how = "py-spy, all threads" if py_spy else "cProfile, event-loop thread"
        print(f"# bridge profile ({how}) — {os.cpu_count()} cores, Python {sys.version.split()[0]}")
        print(
            f"# command: python bench/profile.py --messages {args.messages} --top {args.top}"
            f" --rate {args.rate}"
            + (f" --sequential {args.sequential}" if args.sequential else "")
            + (" --cprofile" if args.cprofile else "")
        )
        print(f"# {what}")
        if py_spy is not None:
            print_py_spy(raw, args.top)
            if args.out:
                shutil.copy(raw, args.out)
        else:
            print_cprofile(stats, args.top)
            if args.out:
                shutil.copy(stats, args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=1500, help="burst size (1500)")
    parser.add_argument(
        "--sequential", type=int, default=0, help="profile N messages one at a time instead"
    )
    parser.add_argument("--window", type=int, default=300, help="most outstanding")
    parser.add_argument("--top", type=int, default=25, help="frames to print")
    parser.add_argument("--cprofile", action="store_true", help="cProfile even with py-spy")
    parser.add_argument("--out", help="keep the raw profile here (py-spy text or .prof)")
    add_rate_argument(parser)
    parser.add_argument("--budget", type=float, default=600.0, help="time limit, seconds")
    args = parser.parse_args()
    try:
        asyncio.run(main_async(args))
    except BenchError as exc:
        sys.exit(f"bench/profile.py: {exc}")
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("bench/profile.py: interrupted (the bridge was stopped)")


if __name__ == "__main__":
    main()
