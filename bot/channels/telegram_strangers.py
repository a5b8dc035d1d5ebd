"""Answering strangers off the poll loop, with bounded memory and bounded work.

A stranger (a sender not on ``allow_from``) gets one short notice with their numeric id.
Sending it can take long (a 429 wait), so it never runs in the poll loop: each notice is a
background task, at most ``in_flight`` at once, and a notice that would exceed that is
dropped (the stranger is told next time they write). Who was told is remembered in an LRU
of ``remember`` ids, so a flood of distinct strangers cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from bot.errors import ChannelError

log = logging.getLogger(__name__)

REMEMBER = 4096
IN_FLIGHT = 8

Notify = Callable[[int, str], Awaitable[None]]


class StrangerNotices:
    def __init__(
        self, name: str, notify: Notify, *, remember: int = REMEMBER, in_flight: int = IN_FLIGHT
    ) -> None:
        self.name = name
        self._notify = notify
        self._remember = remember
        self._in_flight = in_flight
        self._told: OrderedDict[int, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def refused(self, chat_id: int, chat_type: str, sender: int) -> None:
        """A stranger wrote; returns at once (the notice, if any, goes in the background)."""
        if sender in self._told:
            self._told.move_to_end(sender)
            return
        # The id is what an operator needs to admit this person.
        log.info(
            "bot %s: refused a message from stranger %d (chat %d); add %d to allow_from "
            "to admit them",
            self.name,
            sender,
            chat_id,
            sender,
        )
        if chat_type != "private":
            self._remember_told(sender)  # never answered in groups: log them once
            return
        if len(self._tasks) >= self._in_flight:
            log.warning(
                "bot %s: %d stranger notices already in flight; not telling stranger %d now",
                self.name,
                len(self._tasks),
                sender,
            )
            return
        self._remember_told(sender)
        task = asyncio.create_task(self._tell(chat_id, sender), name=f"stranger {sender}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _remember_told(self, sender: int) -> None:
        self._told[sender] = None
        while len(self._told) > self._remember:
            self._told.popitem(last=False)

    async def _tell(self, chat_id: int, sender: int) -> None:
        text = f"Sorry, I only talk to people on my list. Your Telegram id is {sender}."
        try:
            await self._notify(chat_id, text)
        except ChannelError as exc:
            log.warning("bot %s: could not answer stranger %d: %s", self.name, sender, exc)

    async def close(self) -> None:
        """Cancel notices still in flight (on stop)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
