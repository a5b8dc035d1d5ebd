"""PostgreSQL connection URLs as text: recognised, and shown with the password masked.

No driver import here, so a SQLite bridge never loads asyncpg.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from bot.config.filesystem import SERVER_DATABASE_PREFIXES


def is_postgres_url(value: str) -> bool:
    return value.startswith(SERVER_DATABASE_PREFIXES)


def dsn_password(dsn: str) -> str | None:
    try:
        return urlsplit(dsn).password
    except ValueError:
        return None


def redact_dsn(dsn: str) -> str:
    """The URL with its password masked: safe for logs and errors."""
    try:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "postgresql://***"


def redact_text(text: str, dsn: str) -> str:
    """``text`` (e.g. a driver's error) with the URL and its password masked."""
    text = text.replace(dsn, redact_dsn(dsn))
    password = dsn_password(dsn)
    return text.replace(password, "***") if password else text
