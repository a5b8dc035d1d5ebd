"""Stranger notices are bounded in memory and in work (the flood itself is in test_start_stop)."""

from __future__ import annotations

import asyncio

from bot.channels.telegram_strangers import StrangerNotices


async def test_notices_in_flight_are_capped_and_extra_ones_dropped_not_queued() -> None:
    release = asyncio.Event()
    told: list[int] = []

    async def notify(chat_id: int, text: str) -> None:
        told.append(chat_id)
        await release.wait()

    notices = StrangerNotices("telegram-x", notify, in_flight=3)
    for stranger in range(100, 110):
        notices.refused(stranger, "private", stranger)
    await asyncio.sleep(0)  # let the started notices run up to their wait
    assert told == [100, 101, 102]
    release.set()
    await notices.close()
    # A dropped stranger was not marked as told: they are told when they write again.
    notices.refused(105, "private", 105)
    await asyncio.sleep(0)
    assert told[-1] == 105
    await notices.close()


async def test_the_strangers_told_are_remembered_in_a_bounded_lru() -> None:
    told: list[int] = []

    async def notify(chat_id: int, text: str) -> None:
        told.append(chat_id)

    notices = StrangerNotices("telegram-x", notify, remember=3)
    for stranger in (1, 2, 3, 1, 4):  # 1 is used again, so 2 is the oldest when 4 comes
        notices.refused(stranger, "private", stranger)
        await asyncio.sleep(0)
    notices.refused(1, "private", 1)  # still remembered: not told twice
    notices.refused(2, "private", 2)  # forgotten: told again
    await asyncio.sleep(0)
    await notices.close()
    assert told == [1, 2, 3, 4, 2]
