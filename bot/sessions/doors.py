"""What the store mixins need from the store they are mixed into: its clock and its one
door to the database. Declared once per backend, so every mixin (inbox, usage, pairing,
group turns) states the same contract and the store class provides it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiosqlite


class SqliteDoor:
    """Provided by ``SqliteSessionStore``: the serialised connection and the clock."""

    _clock: Callable[[], float]

    def _use(
        self, what: str, *, transaction: bool = False
    ) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        raise NotImplementedError

    async def _fetch(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        raise NotImplementedError

    async def _write(self, what: str, sql: str, params: tuple[Any, ...]) -> tuple[int, int]:
        raise NotImplementedError


class PgDoor:
    """Provided by ``PostgresSessionStore``: the pool's connection door and the clock."""

    _clock: Callable[[], float]

    def _conn(self, what: str, *, transaction: bool = False) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def _fetch(self, what: str, sql: str, *params: Any) -> list[Any]:
        raise NotImplementedError

    async def _status(self, what: str, sql: str, *params: Any) -> int:
        raise NotImplementedError
