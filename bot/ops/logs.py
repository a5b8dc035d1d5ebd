"""Log setup with secret redaction on every record, whoever logs it.

httpx logs request URLs at INFO and Bot API URLs contain the bot token, so redaction
sits on the handler (it sees every record) and httpx is quieted as well. The masking
itself is ``bot.redaction.Redactor``, the same one every other surface uses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from bot.redaction import BOT_TOKEN, REDACTED, Redactor

__all__ = ["BOT_TOKEN", "REDACTED", "RedactingFilter", "configure", "quiet_chatty_libraries"]


class RedactingFilter(logging.Filter):
    """Runs the final message and any traceback of every record through a ``Redactor``."""

    def __init__(self, secrets: Iterable[str] = (), *, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor if redactor is not None else Redactor()
        self.redactor.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """After a reload: redact the new config's secrets too (old ones stay redacted)."""
        self.redactor.add(secrets)

    def redact(self, text: str) -> str:
        return self.redactor.redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def configure(
    level: str = "INFO",
    secrets: Iterable[str] = (),
    *,
    redactor: Redactor | None = None,
    path: Path | None = None,
) -> RedactingFilter:
    """One line per event on stderr, or appended to ``path``; returns the filter so a
    reload can add new secrets.

    Pass the App's ``redactor`` so the logs and what the App serves mask the same secrets.
    """
    handler: logging.Handler = (
        logging.StreamHandler() if path is None else logging.FileHandler(path, encoding="utf-8")
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log_filter = RedactingFilter(secrets, redactor=redactor)
    handler.addFilter(log_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_chatty_libraries()
    return log_filter


def quiet_chatty_libraries() -> None:
    """httpx and PTB log Bot API URLs (token inside) at INFO/DEBUG; keep them to warnings."""
    for noisy in ("httpx", "httpcore", "telegram", "aiosqlite", "markdown_it"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
