"""Which store a config asks for: SQLite by default, PostgreSQL for a postgresql:// URL."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.config.loader import LoadedConfig
from bot.sessions.dsn import is_postgres_url, redact_dsn
from bot.sessions.store import SessionStore, SqliteSessionStore


def database_url(loaded: LoadedConfig) -> str | None:
    """The PostgreSQL URL of the config, or None for a SQLite file."""
    value = loaded.config.session.database
    return value if is_postgres_url(value) else None


def store_for(loaded: LoadedConfig, *, clock: Callable[[], float] = time.time) -> SessionStore:
    url = database_url(loaded)
    if url is None:
        return SqliteSessionStore(loaded.database, clock=clock)
    from bot.sessions.postgres import PostgresSessionStore

    return PostgresSessionStore(url, clock=clock)


def describe(loaded: LoadedConfig) -> str:
    """The database as logs and errors may show it: a URL's password masked."""
    url = database_url(loaded)
    if url is None:
        return str(loaded.database)
    return redact_dsn(url)
