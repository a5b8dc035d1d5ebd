"""Translate python-telegram-bot exceptions into ``bot.errors`` — the one place."""

from __future__ import annotations

import warnings

from telegram import error as tg
from telegram.warnings import PTBDeprecationWarning

from bot.errors import (
    ChannelAuthError,
    ChannelError,
    ChannelRateLimited,
    ChannelUnavailable,
    ChatMoved,
    MessageRejected,
    RecipientGone,
)

# Bad Request texts that mean nobody will ever receive a message sent there.
_GONE = ("chat not found", "user is deactivated", "bot was kicked", "peer_id_invalid")


def translate(exc: tg.TelegramError) -> ChannelError:
    # Most specific first: RetryAfter and InvalidToken are subclasses of TelegramError only,
    # BadRequest is a NetworkError in PTB's tree.
    if isinstance(exc, tg.RetryAfter):
        delay = retry_after_seconds(exc)
        return ChannelRateLimited(f"Telegram rate limit: retry after {delay:g}s", delay)
    if isinstance(exc, tg.InvalidToken):
        return ChannelAuthError("Telegram rejected the bot token")
    if isinstance(exc, tg.ChatMigrated):
        return ChatMoved(f"the group moved to chat {exc.new_chat_id}", str(exc.new_chat_id))
    if isinstance(exc, tg.Forbidden):  # blocked by the user, kicked from the group
        return RecipientGone(f"Telegram refused: {exc.message}")
    if isinstance(exc, tg.BadRequest):
        if any(text in exc.message.lower() for text in _GONE):
            return RecipientGone(f"Telegram rejected the message: {exc.message}")
        return MessageRejected(f"Telegram rejected the message: {exc.message}")
    if isinstance(exc, tg.Conflict):
        return ChannelError(f"Telegram conflict: {exc.message}")
    if isinstance(exc, tg.TimedOut):
        return ChannelUnavailable("Telegram request timed out")
    if isinstance(exc, tg.NetworkError):  # 5xx answers and connection failures
        return ChannelUnavailable(f"Telegram unreachable: {exc.message}")
    return ChannelError(f"Telegram error: {type(exc).__name__}: {exc.message}")


def retry_after_seconds(exc: tg.RetryAfter) -> float:
    # PTB 22 returns int or timedelta depending on $PTB_TIMEDELTA and warns about the
    # int form; accept both without the warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return float(value) if isinstance(value, int | float) else value.total_seconds()
