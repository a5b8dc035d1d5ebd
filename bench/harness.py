"""What the benches that drive the real bridge share: bounded waits that notice a dead bridge."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from typing import TypeVar

from bot.testing import BridgeProcess

T = TypeVar("T")


class BenchError(RuntimeError):
    """Something the bench waited for never came."""


def stop_on_sigterm() -> None:
    """SIGTERM cancels the run as Ctrl-C does, so the ``finally`` blocks still stop the bridge."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


async def unless_exited(
    bridge: BridgeProcess, awaitable: Awaitable[T], what: str, within_s: float
) -> T:
    """``awaitable``'s result; BenchError with the log tail if the bridge exits or time is up."""
    assert bridge.process is not None, "bridge not started"
    waiter = asyncio.ensure_future(awaitable)
    exited = asyncio.ensure_future(bridge.process.wait())
    try:
        done, _ = await asyncio.wait(
            {waiter, exited}, timeout=within_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (waiter, exited):
            task.cancel()
    if waiter in done:
        return waiter.result()
    if exited in done:
        problem = f"the bridge exited with {exited.result()} before {what}"
    else:
        problem = f"no {what} within {within_s:.0f} s"
    raise BenchError(f"{problem}; bridge log tail:\n{bridge.logs()[-2000:]}")
