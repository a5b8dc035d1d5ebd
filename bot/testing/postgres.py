"""A real PostgreSQL server for tests: the one named by ``$PERSONA_BRIDGE_TEST_PG``, or a
throwaway one started from the ``pgserver`` package (it ships the binaries and runs as
root too). Each test gets a fresh database, copied from a template the store has already
migrated, which takes milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

TEST_PG_ENV = "PERSONA_BRIDGE_TEST_PG"
TEMPLATE = "persona_bridge_template"


def with_database(dsn: str, name: str) -> str:
    """The same server, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The DSN of a server to create test databases on (an admin database of it)."""
    given = os.environ.get(TEST_PG_ENV)
    if given:
        yield given
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset (as root)
        from pgserver.postgres_server import get_server

    # A short path: the server's Unix socket lives in it (108-byte limit).
    data = tempfile.mkdtemp(prefix="pb-pg-")
    server: Any = get_server(data, cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


async def fresh_database(admin_dsn: str, template: str | None = None) -> str:
    """Create an empty (or template-copied) database; returns its DSN."""
    name = f"pb_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        source = f" TEMPLATE {template}" if template else ""
        await conn.execute(f"CREATE DATABASE {name}{source}")
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()
