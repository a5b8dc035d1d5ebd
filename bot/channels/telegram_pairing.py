"""Pairing at one bot's door (SPEC §13): strangers get a code, approved users get in.

Whether a sender not on ``allow_from`` was approved is read from the store for each of
their messages: one keyed lookup, and it is what lets ``persona-bridge pairing approve``
and ``revoke``, run in another process, take effect at once. Senders on ``allow_from``
never reach it.

A stranger in a private chat is answered in the background (never in the poll loop),
with at most ``IN_FLIGHT`` answers under way. One who keeps writing is answered at most
once per ``REPEAT_AFTER_S`` (or the codes' lifetime, if shorter) and gets the same code
while it is open. A bot has at most ``MAX_OPEN_CODES`` open codes, so a crowd of
strangers cannot fill the store; memory of who was answered is bounded too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

from bot.errors import ChannelError, StoreError
from bot.sessions.pairing_store import PairingCode, new_code

log = logging.getLogger(__name__)

# No 0/O, 1/I/L: a code read out or typed from a screenshot stays unambiguous.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
MAX_OPEN_CODES = 20  # per bot
REPEAT_AFTER_S = 60.0
IN_FLIGHT = 8
REMEMBER = 4096

Notify = Callable[[int, str], Awaitable[None]]


class PairingBook(Protocol):
    """The part of the store a bot's door uses."""

    async def pairing_issue(
        self,
        channel: str,
        user_id: str,
        username: str | None,
        chat_id: str,
        code: str,
        *,
        ttl_s: float,
        max_open: int,
    ) -> PairingCode | None: ...

    async def pairing_is_approved(self, channel: str, user_id: str) -> bool: ...


def duration_text(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes >= 60 and minutes % 60 == 0:
        return "1 hour" if minutes == 60 else f"{minutes // 60} hours"
    if minutes >= 1:
        return "1 minute" if minutes == 1 else f"{minutes} minutes"
    return f"{max(1, round(seconds))} seconds"


class PairingDoor:
    def __init__(
        self,
        channel: str,
        book: PairingBook,
        notify: Notify,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self._book = book
        self._notify = notify
        self._ttl_s = ttl_s
        # A code that expired sooner than that is replaced at the next message, not later.
        self._repeat_after_s = min(REPEAT_AFTER_S, ttl_s)
        self._clock = clock
        self._answered: OrderedDict[int, float] = OrderedDict()  # user → when, LRU
        self._tasks: set[asyncio.Task[None]] = set()

    async def approved(self, user_id: int) -> bool:
        """Whether an admin approved this user for this bot (a StoreError propagates)."""
        return await self._book.pairing_is_approved(self.channel, str(user_id))

    def offer(self, chat_id: int, user_id: int, username: str | None) -> None:
        """A stranger wrote in private: give them their code, in the background."""
        now = self._clock()
        last = self._answered.get(user_id)
        if last is not None and now - last < self._repeat_after_s:
            log.debug("bot %s: stranger %d answered recently; not again", self.channel, user_id)
            return
        if len(self._tasks) >= IN_FLIGHT:
            log.warning(
                "bot %s: %d pairing answers already under way; stranger %d not answered now",
                self.channel,
                len(self._tasks),
                user_id,
            )
            return
        self._answered[user_id] = now
        self._answered.move_to_end(user_id)
        while len(self._answered) > REMEMBER:
            self._answered.popitem(last=False)
        task = asyncio.create_task(
            self._answer(chat_id, user_id, username), name=f"pairing {user_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, chat_id: int, user_id: int, username: str | None) -> None:
        try:
            issued = await self._book.pairing_issue(
                self.channel,
                str(user_id),
                username,
                str(chat_id),
                new_code(),
                ttl_s=self._ttl_s,
                max_open=MAX_OPEN_CODES,
            )
        except StoreError as exc:
            log.warning("bot %s: no pairing code for stranger %d: %s", self.channel, user_id, exc)
            return
        if issued is None:
            log.warning(
                "bot %s: stranger %d asked to pair, but %d codes are already open; "
                "approve or let them expire",
                self.channel,
                user_id,
                MAX_OPEN_CODES,
            )
            text = (
                "Sorry, I only talk to people I know, and too many people are waiting to be "
                f"let in right now. Please try again later. Your Telegram id is {user_id}."
            )
        else:
            left = max(0.0, issued.expires_at - time.time())  # the store's clock is the wall
            log.info(
                "bot %s: stranger %d%s asked to pair; code %s — approve it with /approve %s "
                "or persona-bridge pairing approve %s",
                self.channel,
                user_id,
                f" (@{username})" if username else "",
                issued.code,
                issued.code,
                issued.code,
            )
            text = (
                "Sorry, I only talk to people I know. To be let in, send this code to the "
                f"person who runs me: {issued.code} (valid for {duration_text(left)}). "
                f"Once they approve it, just write again. Your Telegram id is {user_id}."
            )
        try:
            await self._notify(chat_id, text)
        except ChannelError as exc:
            log.warning("bot %s: could not answer stranger %d: %s", self.channel, user_id, exc)

    async def close(self) -> None:
        """Cancel answers still under way (on stop)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
