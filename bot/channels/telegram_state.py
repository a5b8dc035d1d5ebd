"""How one Telegram bot's receiving stands: the state its parts share.

Connecting (telegram_connect), the long poll (telegram_poll), the intake of each update
(telegram_intake) and ``TelegramChannel.status()`` all read or write the same few facts —
who the bot is, whether it receives, why not, whether it is stopping. They live here, in
one object each part is handed, so no part reaches into another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from bot.channels.telegram_access import BotIdentity


@dataclass
class Reception:
    me: BotIdentity = field(default_factory=lambda: BotIdentity(0, ""))
    polling: bool = False
    standby: bool = False  # another process polls this bot; this one stands by
    trouble: str | None = None  # why the bot is not polling, for /readyz
    rejected: bool = False  # the token was refused: nothing to retry or restart
    last_poll_at: float = field(default_factory=time.monotonic)  # latest getUpdates attempt
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def pause(self, seconds: float) -> None:
        """Sleeps, but wakes at once when the bot stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
