"""pytest fixtures for the fakes: ``pytest_plugins = ["bot.testing.pytest_plugin"]``."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from bot.sessions.postgres import PostgresSessionStore
from bot.sessions.store import SessionStore, SqliteSessionStore
from bot.testing.bridge import BridgeProcess
from bot.testing.fake_llm import FakeLLM
from bot.testing.fake_telegram import FakeTelegram
from bot.testing.postgres import (
    TEMPLATE,
    drop_database,
    fresh_database,
    postgres_server,
    with_database,
)


@pytest.fixture(autouse=True)
def _no_bridge_left_running() -> Iterator[None]:
    """A test that failed before stopping its bridge must not leave it running."""
    yield
    while BridgeProcess.started:
        pid = BridgeProcess.started.pop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # start_new_session: the group is the bridge's


@pytest_asyncio.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest_asyncio.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as fake:
        yield fake


class PgServer:
    """A PostgreSQL server for the session; ``database()`` gives each test its own."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self._template_ready = False

    async def database(self) -> str:
        if not self._template_ready:
            # Migrated once; every test database is a copy of it.
            template = with_database(self.admin_dsn, TEMPLATE)
            await drop_database(self.admin_dsn, template)
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                await conn.execute(f"CREATE DATABASE {TEMPLATE}")
            finally:
                await conn.close()
            async with PostgresSessionStore(template):
                pass
            self._template_ready = True
        return await fresh_database(self.admin_dsn, TEMPLATE)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with postgres_server() as admin_dsn:
        yield PgServer(admin_dsn)


@pytest_asyncio.fixture
async def pg_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    dsn = await pg_server.database()
    yield dsn
    await drop_database(pg_server.admin_dsn, dsn)


StoreFactory = Callable[..., SessionStore]


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Builds (unopened) stores on one database per test, once per backend: the store
    contract runs on SQLite and on PostgreSQL alike. Keyword arguments go to the store."""
    if request.param == "sqlite":
        path = tmp_path / "sessions.db"
        yield lambda **kw: SqliteSessionStore(path, **kw)
        return
    server: PgServer = request.getfixturevalue("pg_server")
    dsn = await server.database()
    yield lambda **kw: PostgresSessionStore(dsn, **kw)
    await drop_database(server.admin_dsn, dsn)
