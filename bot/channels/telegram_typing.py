"""The "typing…" indicator while a turn runs.

Telegram shows a chat action for about five seconds, so it is repeated every few seconds
for as long as the turn lasts. It starts only after a short delay: most instant answers
then never send one, which saves a request per reply. A failed chat action is ignored: it
is decoration, never worth failing or delaying a turn for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from telegram import Bot
from telegram import error as tg
from telegram.constants import ChatAction

TYPING_EVERY_S = 4.0
# An answer within this long needs no typing indicator: most instant replies skip a request.
TYPING_AFTER_S = 0.3


@contextlib.asynccontextmanager
async def typing_in(bot: Bot, chat_id: str, topic_id: str | None) -> AsyncIterator[None]:
    async def keep_typing() -> None:
        await asyncio.sleep(TYPING_AFTER_S)
        while True:
            with contextlib.suppress(tg.TelegramError):
                await bot.send_chat_action(
                    int(chat_id),
                    ChatAction.TYPING,
                    message_thread_id=int(topic_id) if topic_id else None,
                )
            await asyncio.sleep(TYPING_EVERY_S)  # Telegram shows it for ~5 s

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
