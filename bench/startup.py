"""Bridge startup time to READY=1 and the memory of an idle bridge.

The real bridge runs as a child process (``BridgeProcess``) against FakeTelegram and FakeLLM,
which run in this process. Startup is measured from the spawn to READY=1 arriving on a unix
datagram socket passed as ``$NOTIFY_SOCKET`` (the bridge sends READY=1 once every bot polls),
for 1 and for 10 bots (median of --runs). Memory: VmRSS right after READY, then VmHWM (peak)
and VmRSS of an idle 3-bot bridge after --idle seconds.
Run: python bench/startup.py [--quick] [--runs 3] [--idle 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import BenchError, stop_on_sigterm, unless_exited

from bot.testing import BridgeProcess, FakeLLM, FakeTelegram, bridge_config
from bot.testing.bridge import BotPlan

READY_TIMEOUT_S = 60.0


def plans(count: int) -> list[BotPlan]:
    return [
        BotPlan(
            f"bot{i}",
            f"{7100000 + i}:bench-startup-token-{i:03d}-" + "S" * 30,
            f"agent{i}",
            f"You are persona number {i}.",
            f"model-{i}",
        )
        for i in range(count)
    ]


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM of ``pid`` in MiB, from /proc/PID/status."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB → MiB
    return values


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    async def ready(self) -> float:
        """time.perf_counter() when READY=1 arrives."""
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            if "READY=1" in data.decode(errors="replace").split("\n"):
                return time.perf_counter()

    def close(self) -> None:
        self.sock.close()


async def one_bridge(
    bots: int, idle_s: float | None = None
) -> tuple[float, dict[str, float], dict[str, float] | None]:
    """Spawn a bridge with ``bots`` bots: (spawn → READY s, RSS at READY, status after idle)."""
    telegram, llm = FakeTelegram(), FakeLLM()
    bridge: BridgeProcess | None = None
    notify: NotifySocket | None = None
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        try:
            await telegram.start()
            await llm.start()
            bot_plans = plans(bots)
            for plan in bot_plans:
                telegram.add_bot(plan.token, f"{plan.bot_id}_bot")
            config = bridge_config(
                telegram_base=telegram.base_url, llm_base=llm.openai_base, bots=bot_plans
            )
            notify = NotifySocket(Path(tmp) / "notify.sock")
            bridge = BridgeProcess.write(
                Path(tmp),
                config,
                env={"NOTIFY_SOCKET": str(notify.path)},
                args=("--log-level", "WARNING"),
            )
            started = time.perf_counter()
            await bridge.start()
            ready_at = await unless_exited(
                bridge, notify.ready(), "READY=1 on $NOTIFY_SOCKET", READY_TIMEOUT_S
            )
            at_ready = proc_status(bridge.pid)
            after_idle = None
            if idle_s is not None:
                await asyncio.sleep(idle_s)
                if bridge.process is not None and bridge.process.returncode is not None:
                    raise BenchError(
                        f"bridge exited with {bridge.process.returncode} while idle:\n"
                        f"{bridge.logs()[-2000:]}"
                    )
                after_idle = proc_status(bridge.pid)
            return ready_at - started, at_ready, after_idle
        finally:
            if bridge is not None:
                await bridge.stop(within_s=15.0)
            if notify is not None:
                notify.close()
            await llm.stop()
            await telegram.stop()


async def main_async(runs: int, idle_s: float, quick: bool) -> None:
    stop_on_sigterm()
    startup: dict[int, list[float]] = {}
    rss_at_ready: dict[int, list[float]] = {}
    for bots in (1, 10):
        for _ in range(runs):
            seconds, at_ready, _ = await one_bridge(bots)
            startup.setdefault(bots, []).append(seconds)
            rss_at_ready.setdefault(bots, []).append(at_ready["VmRSS"])
    _, idle_ready, idle = await one_bridge(3, idle_s)
    assert idle is not None

    flag = " --quick" if quick else ""
    python = sys.version.split()[0]
    print(f"# bridge startup and idle memory — {os.cpu_count()} cores, Python {python}")
    print(f"# command: python bench/startup.py{flag} --runs {runs} --idle {idle_s:g}")
    print("# startup = spawn of `python -m bot run` → READY=1 on $NOTIFY_SOCKET (every bot polls)")
    print(f"{'bots':>5}{'runs':>6}{'median s':>10}{'min s':>8}{'max s':>8}{'RSS@READY MiB':>15}")
    for bots, values in startup.items():
        print(
            f"{bots:>5}{len(values):>6}{statistics.median(values):>10.3f}{min(values):>8.3f}"
            f"{max(values):>8.3f}{statistics.median(rss_at_ready[bots]):>15.1f}"
        )
    print()
    print(f"# idle bridge, 3 bots, {idle_s:g} s after READY (long polls parked on the fake)")
    print(f"{'bots':>5}{'idle s':>8}{'RSS@READY MiB':>15}{'VmRSS MiB':>11}{'VmHWM MiB':>11}")
    print(
        f"{3:>5}{idle_s:>8g}{idle_ready['VmRSS']:>15.1f}{idle['VmRSS']:>11.1f}"
        f"{idle['VmHWM']:>11.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="idle 10 s instead of 60 s")
    parser.add_argument("--runs", type=int, default=3, help="startups per bot count (median)")
    parser.add_argument("--idle", type=float, default=None, help="idle seconds (default 60)")
    args = parser.parse_args()
    idle_s = args.idle if args.idle is not None else (10.0 if args.quick else 60.0)
    try:
        asyncio.run(main_async(args.runs, idle_s, args.quick))
    except BenchError as exc:
        sys.exit(f"bench/startup.py: {exc}")
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("bench/startup.py: interrupted (the bridge was stopped)")


if __name__ == "__main__":
    main()
