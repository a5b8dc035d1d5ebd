"""Log setup with secret redaction on every record, whoever logs it.

httpx logs request URLs at INFO and Bot API URLs contain the bot token, so redaction
sits on the handler (it sees every record) and httpx is quieted as well.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

BOT_TOKEN = re.compile(r"\d{5,}:[A-Za-z0-9_-]{20,}")
REDACTED = "[redacted]"


class RedactingFilter(logging.Filter):
    """Replaces known secrets and anything shaped like a bot token in the final message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def add(self, secrets: Iterable[str]) -> None:
        """After a reload: redact the new config's secrets too (old ones stay redacted)."""
        self.secrets = sorted(
            set(self.secrets) | {s for s in secrets if len(s) >= 4}, key=len, reverse=True
        )

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return BOT_TOKEN.sub(REDACTED, text)

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


def configure(level: str = "INFO", secrets: Iterable[str] = ()) -> RedactingFilter:
    """One line per event on stderr; returns the filter so a reload can add new secrets."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_chatty_libraries()
    return redactor


def quiet_chatty_libraries() -> None:
    """httpx and PTB log Bot API URLs (token inside) at INFO/DEBUG; keep them to warnings."""
    for noisy in ("httpx", "httpcore", "telegram", "aiosqlite", "markdown_it"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
