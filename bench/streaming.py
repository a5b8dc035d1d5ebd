"""What streaming costs: the bridge's CPU for a streamed reply against the same reply unstreamed.

The real bridge runs as a child process; FakeLLM streams each reply as --tokens word-sized
pieces spread over --seconds, FakeTelegram records every call. Two parts, each run once with
``streaming: "off"`` and once with ``"edit"`` (a fresh bridge per mode):

(a) one reply of --tokens tokens in a new chat, --repeat times: bridge CPU ms per reply
    (their mean: /proc counts in 10 ms ticks), Bot API message calls per reply (median),
    wall seconds (median); beside it the floor
    (bench/stream_floor.py, a child reading the same stream with httpx and decoding its
    events, nothing else) and each CPU figure as a ratio to the unstreamed reply's;
(b) --chats chats streaming such a reply at once on one bot: bridge CPU seconds in all, message
    calls, the busiest second of message calls at FakeTelegram (the pacer's limit applies), and
    seconds until the last reply was complete.
Bridge CPU is utime + stime from /proc/PID/stat around the measured part. ``--seconds 0``
streams as fast as the fake can write (every token still its own SSE event and HTTP chunk):
what the stream costs without the model's pace.
Run: python bench/streaming.py [--quick] [--tokens 1000] [--seconds 5] [--chats 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import BenchError, stop_on_sigterm

from bot.testing import (
    BridgeProcess,
    FakeLLM,
    FakeTelegram,
    RecordedRequest,
    Streamed,
    bridge_config,
)
from bot.testing.bridge import BotPlan

BOT = BotPlan("bench", "7300001:bench-stream-token-" + "S" * 30, "agent", "You stream.", "model")
MESSAGE_CALLS = ("sendmessage", "editmessagetext", "sendmessagedraft")


@dataclass
class Result:
    cpu_s: float
    calls: int
    busiest_second: int
    wall_s: float


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reply_text(tokens: int, seed: str) -> str:
    words = [f"tok{n}{seed}" for n in range(tokens)]
    for n in range(0, tokens, 17):
        words[n] = f"**{words[n]}**"
    return "\n\n".join(" ".join(words[i : i + 40]) for i in range(0, tokens, 40))


def done_rows(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT count(*) FROM inbox WHERE status = 'done'").fetchone()[0])


async def until_done(bridge: BridgeProcess, database: Path, count: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while done_rows(database) < count:
        process = bridge.process
        if process is not None and process.returncode is not None:
            raise BenchError(f"bridge exited:\n{bridge.logs()[-2000:]}")
        if time.monotonic() > deadline:
            raise BenchError(f"{count} replies not done within {within_s:.0f} s")
        await asyncio.sleep(0.05)


def message_calls(telegram: FakeTelegram, since: int) -> list[float]:
    return [c.at for c in telegram.calls[since:] if c.method.lower() in MESSAGE_CALLS]


def busiest(times: list[float]) -> int:
    return max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)


async def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> tuple[Result, Result]:
    async with FakeTelegram() as telegram, FakeLLM() as llm:
        telegram.add_bot(BOT.token, "bench_bot")
        texts: dict[str, str] = {}

        def answer(request: RecordedRequest) -> Streamed:
            return Streamed(texts[request.last_user_text], seconds=args.seconds)

        llm.set_default(None, answer)
        config = bridge_config(
            telegram_base=telegram.base_url,
            llm_base=llm.openai_base,
            bots=[BOT],
            database=str(workdir / f"{mode}.db"),
            streaming=mode,
        )
        directory = workdir / mode
        directory.mkdir()
        bridge = BridgeProcess.write(directory, config, args=("--log-level", "WARNING"))
        database = workdir / f"{mode}.db"
        await bridge.start_polling(telegram, BOT.token)
        done = 0
        try:
            texts["warm"] = reply_text(20, "w")
            telegram.inject_message(BOT.token, chat_id=1, text="warm")
            done += 1
            await until_done(bridge, database, done, 60)

            one: list[Result] = []
            cpu_before = cpu_seconds(bridge.pid)
            for n in range(args.repeat):
                key = f"one-{n}"
                texts[key] = reply_text(args.tokens, key)
                since, cpu, start = len(telegram.calls), cpu_seconds(bridge.pid), time.monotonic()
                telegram.inject_message(BOT.token, chat_id=2 + n, text=key)
                done += 1
                await until_done(bridge, database, done, 60 + args.seconds)
                calls = message_calls(telegram, since)
                one.append(
                    Result(
                        cpu_seconds(bridge.pid) - cpu,
                        len(calls),
                        busiest(calls),
                        time.monotonic() - start,
                    )
                )
            # CPU over all the replies, divided: /proc counts in 10 ms ticks, a reply's size.
            single = Result(
                (cpu_seconds(bridge.pid) - cpu_before) / args.repeat,
                round(statistics.median(r.calls for r in one)),
                max(r.busiest_second for r in one),
                statistics.median(r.wall_s for r in one),
            )

            since, cpu, start = len(telegram.calls), cpu_seconds(bridge.pid), time.monotonic()
            for chat in range(args.chats):
                key = f"many-{chat}"
                texts[key] = reply_text(args.tokens, key)
                telegram.inject_message(BOT.token, chat_id=100 + chat, text=key)
            done += args.chats
            await until_done(bridge, database, done, 120 + args.seconds)
            calls = message_calls(telegram, since)
            many = Result(
                cpu_seconds(bridge.pid) - cpu, len(calls), busiest(calls), time.monotonic() - start
            )
        finally:
            await bridge.stop()
        return single, many


async def floor_ms(args: argparse.Namespace) -> float:
    """Median CPU ms of one reply for bench/stream_floor.py on a fresh fake LLM."""
    async with FakeLLM() as llm:
        texts = {f"floor-{n}": reply_text(args.tokens, f"f{n}") for n in range(args.repeat + 1)}
        llm.set_default(None, lambda r: Streamed(texts[r.last_user_text], seconds=args.seconds))
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("stream_floor.py")),
            llm.openai_base,
            *texts,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await child.communicate()
    if child.returncode != 0:
        raise BenchError(f"stream_floor.py exited with {child.returncode}")
    return float(statistics.mean(json.loads(out)[1:]))  # the first warms up


async def main(args: argparse.Namespace) -> None:
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
        results = {mode: await run_mode(mode, args, Path(tmp)) for mode in ("off", "edit")}
    floor = await floor_ms(args)
    pace = f"over {args.seconds:g} s" if args.seconds else "as fast as possible"
    print(f"# {args.tokens} tokens {pace} per reply; bridge CPU from /proc")
    whole = results["off"][0].cpu_s * 1000
    print("(a) one reply       mode   CPU ms  ÷ off  message calls  wall s")
    for mode, (single, _) in results.items():
        print(
            f"                    {mode:>4}  {single.cpu_s * 1000:7.0f}"
            f"  {single.cpu_s * 1000 / whole:5.1f}  {single.calls:13d}  {single.wall_s:6.2f}"
        )
    print(
        f"                   floor  {floor:7.0f}  {floor / whole:5.1f}  (httpx + SSE decode only)"
    )
    print(f"(b) {args.chats} at once      mode  CPU s  message calls  busiest 1 s  wall s")
    for mode, (_, many) in results.items():
        print(
            f"                    {mode:>4}  {many.cpu_s:5.2f}  {many.calls:13d}"
            f"  {many.busiest_second:11d}  {many.wall_s:6.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200 tokens, 2 s, 10 chats, once")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.tokens, arguments.seconds, arguments.chats, arguments.repeat = 200, 2.0, 10, 1
    try:
        asyncio.run(main(arguments))
    except BenchError as exc:
        sys.exit(f"bench failed: {exc}")
