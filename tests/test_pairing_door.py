"""One bot's pairing door on a real store: bounded answers to strangers who keep writing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.channels.telegram_pairing import MAX_OPEN_CODES, REPEAT_AFTER_S, PairingDoor
from bot.sessions.store import SqliteSessionStore


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Outbox:
    """What the door sent, with a way to wait for the n-th message."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._changed = asyncio.Condition()

    async def notify(self, chat_id: int, text: str) -> None:
        async with self._changed:
            self.texts.append(text)
            self._changed.notify_all()

    async def count(self, n: int) -> list[str]:
        async with asyncio.timeout(10), self._changed:
            await self._changed.wait_for(lambda: len(self.texts) >= n)
        return self.texts


async def test_a_stranger_who_keeps_writing_is_answered_rarely_with_the_same_code(
    tmp_path: Path,
) -> None:
    outbox = Outbox()
    clock = Monotonic()
    async with SqliteSessionStore(tmp_path / "s.db") as store:
        door = PairingDoor("telegram-alice", store, outbox.notify, ttl_s=3600, clock=clock)
        for _ in range(5):  # a burst: one answer
            door.offer(7, 7, "pest")
        [first] = await outbox.count(1)
        assert "valid for 1 hour" in first
        clock.now += REPEAT_AFTER_S  # a minute later: answered again, with the same code
        door.offer(7, 7, "pest")
        second = (await outbox.count(2))[1]
        assert first.split("me: ")[1][:6] == second.split("me: ")[1][:6]
        assert len(outbox.texts) == 2  # the burst's other four were never answered

        for user in range(100, 99 + MAX_OPEN_CODES):  # with user 7's, the bot's cap
            door.offer(user, user, None)
            await outbox.count(len(outbox.texts) + 1)
        door.offer(999, 999, None)
        assert "too many people are waiting" in (await outbox.count(2 + MAX_OPEN_CODES))[-1]
        assert len(await store.pairing_codes()) == MAX_OPEN_CODES
        await door.close()
