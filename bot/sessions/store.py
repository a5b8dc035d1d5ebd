"""The SessionStore seam and its SQLite implementation.

Every message of every conversation is appended and never deleted; compaction adds a
summary, ``/new`` archives. The same database holds the durable inbox: a channel update is
written here before its offset is confirmed, and (channel, update_id) is stored once, so an
update is answered at most once across restarts.

One aiosqlite connection is the single writer. An asyncio lock lets one operation at a time
use it, because statements of concurrent tasks would otherwise interleave inside each other's
transactions. The message path's steps (``_on_worker``) run on the event loop itself: a WAL
commit with ``synchronous=NORMAL`` takes tens of microseconds, less than a trip to
aiosqlite's thread and back (~60 µs of CPU). They never wait there: with another process
holding the write lock they go to the thread and wait for it there, and WAL checkpoints (the
one slow thing a commit could do: an fsync) run on the thread too. Everything else (listings,
exports, upkeep) uses the thread as before. sqlite3 errors become ``StoreError`` in exactly one
place, ``_translated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import aiosqlite

from bot.errors import StoreError
from bot.sessions.group_turns import GroupTurnStore, SqliteGroupTurns
from bot.sessions.inbox import InboxRow as InboxRow
from bot.sessions.inbox import InboxStore, SqliteInbox
from bot.sessions.pairing_store import PairingStore, SqlitePairing
from bot.sessions.schema import clean_text, decode_tool_calls, encode_tool_calls, migrate, to_json
from bot.sessions.tails import SessionTails
from bot.sessions.upkeep import OpenedFile
from bot.sessions.usage import SqliteUsage, UsageStore
from bot.types import ChatMessage, JSONObject, Usage


@dataclass(frozen=True)
class SessionKey:
    """Who is talking to whom: channel + chat (+ forum topic) + agent."""

    channel: str
    chat_id: str
    topic_id: str | None
    agent_id: str

    def __post_init__(self) -> None:
        if self.topic_id == "":  # '' stands for "no topic" in the uniqueness index
            raise ValueError("SessionKey.topic_id must be None or a non-empty string")


@dataclass(frozen=True)
class StoredMessage:
    id: int
    session_id: int
    message: ChatMessage
    model_name: str | None
    usage: Usage
    created_at: float


@dataclass(frozen=True)
class Summary:
    """A compaction summary of a session's messages up to and including ``covers_up_to``."""

    session_id: int
    covers_up_to: int
    text: str
    model_name: str  # '' for summaries written before the store recorded it
    created_at: float


@dataclass(frozen=True)
class SessionInfo:
    id: int
    key: SessionKey
    archived: bool
    created_at: float
    message_count: int
    last_activity: float | None


# What a turn's context is built from: the latest summary and every message after it.
TurnContext = tuple[Summary | None, list[StoredMessage]]


class SessionStore(InboxStore, UsageStore, PairingStore, GroupTurnStore):
    """Memory, durable inbox, usage, pairing, group turns. Raises only ``StoreError``."""

    # True where several bridge processes may share the store (PostgreSQL, SPEC §14).
    shared = False

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date; ``async with`` calls it."""

    @abstractmethod
    async def aclose(self) -> None:
        """Wait for the operation in progress, then release the database."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def active_session(self, key: SessionKey) -> int:
        """The id of the key's non-archived session, created on first use."""

    @abstractmethod
    async def append(
        self,
        session_id: int,
        message: ChatMessage,
        *,
        model_name: str | None = None,
        usage: Usage | None = None,
        source: str | None = None,
    ) -> int:
        """Store one message; returns its id, larger than every id before it.

        ``source`` names the inbound update (or task) a user message came from: a second
        append with the same source in the session stores nothing and returns the first id,
        so a turn replayed after a crash never puts the person's message in twice."""

    @abstractmethod
    async def set_extras(self, message_id: int, extras: JSONObject) -> None:
        """Replace a stored message's ``extras``: a media reference gains the description a
        vision model wrote during the turn (SPEC §11). Content is never rewritten."""

    @abstractmethod
    async def messages(
        self, session_id: int, *, after_id: int = 0, limit: int | None = None
    ) -> list[StoredMessage]:
        """Messages with id > ``after_id``, oldest first, at most ``limit`` of them."""

    @abstractmethod
    async def message_count(self, session_id: int) -> int: ...

    @abstractmethod
    async def latest_summary(self, session_id: int) -> Summary | None:
        """The most recently added summary, or None before the first compaction."""

    async def turn_context(self, session_id: int) -> TurnContext:
        """What a turn's context is built from: the latest summary and every message after
        it. One step where the store can; this default is built from the methods above."""
        summary = await self.latest_summary(session_id)
        after = summary.covers_up_to if summary else 0
        return summary, await self.messages(session_id, after_id=after)

    async def begin_turn(
        self, key: SessionKey, message: ChatMessage, *, source: str | None = None
    ) -> tuple[int, int, TurnContext]:
        """A turn's first step: the key's active session, ``message`` appended to it (once
        per ``source``, as ``append``: its id), and the turn context. One step where the
        store can; this default is built from the methods above."""
        session_id = await self.active_session(key)
        message_id = await self.append(session_id, message, source=source)
        return session_id, message_id, await self.turn_context(session_id)

    @abstractmethod
    async def summaries(self, session_id: int) -> list[Summary]:
        """Every summary of the session, oldest first (for export)."""

    @abstractmethod
    async def add_summary(
        self, session_id: int, covers_up_to: int, text: str, model_name: str
    ) -> None:
        """Record a summary; ``covers_up_to`` must be a message of this session."""

    @abstractmethod
    async def archive(self, key: SessionKey) -> int | None:
        """``/new``: mark the key's active session archived (kept); returns its id or None."""

    @abstractmethod
    async def sessions(self, *, include_archived: bool = True) -> list[SessionInfo]:
        """Every session, oldest first."""

    @abstractmethod
    async def session_info(self, session_id: int) -> SessionInfo:
        """One session; StoreError when there is no such id."""

    # --- upkeep (bot.sessions.upkeep runs these in the background) -------------------

    @abstractmethod
    async def inbox_prune(self, done_for_s: float) -> int:
        """Delete updates answered more than ``done_for_s`` seconds ago; how many went."""

    async def truncate_journal(self) -> bool:
        """Shrink the write-ahead journal to nothing; False if a reader held it (retry).

        A store without a local journal has nothing to do."""
        return True

    def opened_file(self) -> OpenedFile | None:
        """The local database file this store writes to, if it has one."""
        return None


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """The one place where sqlite3/aiosqlite errors become ``StoreError``."""
    try:
        yield
    except sqlite3.Error as exc:  # aiosqlite.Error is sqlite3.Error
        raise StoreError(f"session store: {what} failed: {exc}") from exc


def _opt_text(value: str | None) -> str | None:
    return None if value is None else clean_text(value)


JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
_CHECK_WAL_EVERY = 200  # steps on the loop between looks at the WAL's size
_PRUNE_BATCH = 500
_MESSAGE_COLUMNS = (
    "id, session_id, role, content, tool_calls, tool_call_id, extras, model_name, "
    "prompt_tokens, completion_tokens, created_at"
)
_APPEND = (
    f"INSERT OR IGNORE INTO messages ({_MESSAGE_COLUMNS.removeprefix('id, ')}, source)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SESSION_QUERY = """
    SELECT s.id, s.channel, s.chat_id, s.topic_id, s.agent_id, s.archived_at, s.created_at,
        (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id),
        (SELECT m.created_at FROM messages m WHERE m.session_id = s.id
            ORDER BY m.id DESC LIMIT 1)
    FROM sessions s"""
_SUMMARY_QUERY = (
    "SELECT session_id, covers_up_to, text, model_name, created_at FROM summaries"
    " WHERE session_id = ? ORDER BY id"
)
_ACTIVE_QUERY = (
    "SELECT id FROM sessions WHERE channel = ? AND chat_id = ? AND topic_id IS ?"
    " AND agent_id = ? AND archived_at IS NULL"
)


def _stored(row: Any) -> StoredMessage:
    # Most rows have neither tool calls nor extras: a turn reads the whole unsummarised
    # history, so skipping two JSON decodes per row is worth the two comparisons.
    calls = () if row[4] == "[]" else decode_tool_calls(row[4])
    extras = {} if row[6] == "{}" else json.loads(row[6])
    content, call_id = row[3], row[5]
    message = ChatMessage(row[2], content, calls, call_id, extras)
    return StoredMessage(row[0], row[1], message, row[7], Usage(row[8], row[9]), row[10])


def _info(row: Any) -> SessionInfo:
    key = SessionKey(row[1], row[2], row[3], row[4])
    return SessionInfo(row[0], key, row[5] is not None, row[6], row[7], row[8])


def _key_params(key: SessionKey) -> tuple[str, str, str | None, str]:
    return (key.channel, key.chat_id, key.topic_id, key.agent_id)


T = TypeVar("T")


async def _worker_call(conn: aiosqlite.Connection, *call: Any) -> Any:
    """``call`` run on ``conn``'s own thread, with its sqlite3 connection first (one hop).

    aiosqlite has no public door for this; ``_execute`` is the one its own methods use."""
    return await conn._execute(call[0], conn._conn, *call[1:])  # type: ignore[no-untyped-call]


def _plain(db: sqlite3.Connection, work: Callable[..., T], *args: Any) -> T:
    return work(db, *args)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock this statement needs."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


def _waiting(db: sqlite3.Connection, busy_ms: int, job: Callable[..., T], *args: Any) -> T:
    """``job(db, *args)`` waiting up to ``busy_ms`` for a lock held elsewhere; for the thread
    only (the connection's own setting is not to wait, for the steps run on the loop)."""
    # Each PRAGMA answers with a row: read it, or its statement stays "in progress" and a
    # later COMMIT fails.
    db.execute(f"PRAGMA busy_timeout = {busy_ms}").fetchall()
    try:
        return job(db, *args)
    finally:
        db.execute("PRAGMA busy_timeout = 0").fetchall()


def _begin(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")


def _in_transaction(db: sqlite3.Connection, work: Callable[..., T], *args: Any) -> T:
    _begin(db)
    try:
        result = work(db, *args)
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _write_one(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> tuple[int, int]:
    cursor = db.execute(sql, params)
    try:
        return cursor.lastrowid or 0, cursor.rowcount
    finally:
        cursor.close()


def _active_session(db: sqlite3.Connection, key: tuple[Any, ...], params: tuple[Any, ...]) -> int:
    rows = db.execute(_ACTIVE_QUERY, key).fetchall()
    if rows:
        return int(rows[0][0])
    sql = (
        "INSERT INTO sessions (channel, chat_id, topic_id, agent_id, created_at)"
        " VALUES (?, ?, ?, ?, ?)"
    )
    return db.execute(sql, params).lastrowid or 0


def _append(db: sqlite3.Connection, params: tuple[Any, ...]) -> int | None:
    cursor = db.execute(_APPEND, params)
    if cursor.rowcount == 1:
        return cursor.lastrowid or 0
    # Stored before (a replayed turn): the first copy stands.
    sql = "SELECT id FROM messages WHERE session_id = ? AND source = ?"
    rows = db.execute(sql, (params[0], params[-1])).fetchall()
    return int(rows[0][0]) if rows else None


_LATEST_SUMMARY = _SUMMARY_QUERY.replace("ORDER BY id", "ORDER BY id DESC LIMIT 1")


_Read = tuple[int, Summary | None, list[Any]]  # read after which id, the latest summary, rows


def _turn_context(db: sqlite3.Connection, session_id: int, after: int) -> _Read:
    """The latest summary and the rows past it, or only those past ``after`` (what the
    store's tails already hold; 0 for all)."""
    found = db.execute(_LATEST_SUMMARY, (session_id,)).fetchall()
    summary = Summary(*found[0]) if found else None
    start = max(after, summary.covers_up_to if summary else 0)
    sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND id > ? ORDER BY id"
    return after, summary, db.execute(sql, (session_id, start)).fetchall()


def _begin_turn(
    db: sqlite3.Connection,
    key: tuple[Any, ...],
    stored_key: tuple[Any, ...],
    params: tuple[Any, ...],
    read_after: Callable[[int], int],
) -> tuple[int, int | None, _Read]:
    session_id = _active_session(db, key, stored_key)
    appended = _append(db, (session_id, *params[1:]))
    return session_id, appended, _turn_context(db, session_id, read_after(session_id))


def _set_extras(db: sqlite3.Connection, message_id: int, extras: str) -> int | None:
    sql = "UPDATE messages SET extras = ? WHERE id = ? RETURNING session_id"
    rows = db.execute(sql, (extras, message_id)).fetchall()
    return int(rows[0][0]) if rows else None


class SqliteSessionStore(SqliteInbox, SqliteUsage, SqlitePairing, SqliteGroupTurns, SessionStore):
    """The default store: one SQLite file in WAL mode; ``":memory:"`` works for tests."""

    def __init__(
        self, path: Path | str, *, clock: Callable[[], float] = time.time, busy_ms: int = 5000
    ) -> None:
        self._path = str(path)
        self._clock = clock
        self._busy_ms = int(busy_ms)
        self._conn: aiosqlite.Connection | None = None
        self._db: sqlite3.Connection | None = None  # the same connection, used on the loop
        self._lock = asyncio.Lock()
        self._opened: OpenedFile | None = None
        self._tails = SessionTails()
        self._writes = 0  # steps run on the loop since the WAL's size was last looked at
        self._checkpoint: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._conn is not None:
            return
        directory = Path(self._path).parent
        if str(self._path) != ":memory:" and not directory.is_dir():
            raise StoreError(
                f"session store: opening {self._path}: directory {directory} does not exist"
            )
        with _translated(f"opening {self._path}"):
            # check_same_thread=False: the message path uses the connection on the loop's
            # thread too, one user at a time under ``_lock``.
            pending = aiosqlite.connect(self._path, isolation_level=None, check_same_thread=False)
            try:
                conn = await pending
            except BaseException:
                # aiosqlite stops its worker thread on a failed connect without waiting; the
                # thread then reports to our loop. Wait for it while the loop still runs.
                worker = getattr(pending, "_thread", None)
                if worker is not None:
                    await asyncio.to_thread(worker.join, 5.0)
                raise
            try:
                # WAL: readers (sessions export, ops) never block the bot's writes.
                # synchronous=NORMAL survives a process crash; only power loss can undo
                # the last commits, and it keeps commits cheap.
                await conn.execute_fetchall(f"PRAGMA busy_timeout = {self._busy_ms}")
                await conn.execute_fetchall("PRAGMA journal_mode = WAL")
                await conn.execute_fetchall("PRAGMA synchronous = NORMAL")
                await conn.execute_fetchall("PRAGMA foreign_keys = ON")
                # 16 MiB of page cache keeps the hot index pages of long sessions in memory.
                await conn.execute_fetchall("PRAGMA cache_size = -16384")
                # A reset WAL is cut back to this size (the upkeep task truncates it fully).
                await conn.execute_fetchall(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
                # No checkpoint inside a commit on the loop: _wrote starts one on the
                # thread once the WAL is past JOURNAL_SIZE_LIMIT.
                await conn.execute_fetchall("PRAGMA wal_autocheckpoint = 0")
                await migrate(conn)
                # Steps on the loop never wait for a lock: see _waiting, and _on_worker.
                await conn.execute_fetchall("PRAGMA busy_timeout = 0")
            except BaseException:
                await conn.close()
                raise
        self._conn = conn
        self._db = conn._conn  # aiosqlite's own sqlite3 connection (no public door)
        if self._path != ":memory:" and self._path:
            # Remembered so the upkeep task notices the file being deleted or replaced.
            with contextlib.suppress(OSError):
                self._opened = OpenedFile.at(self._path)

    async def aclose(self) -> None:
        if self._checkpoint is not None:
            self._checkpoint.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreError):
                await self._checkpoint
        async with self._lock:
            conn, self._conn, self._db = self._conn, None, None
            self._tails.clear()
            if conn is not None:
                with _translated("closing"):
                    await conn.close()

    @asynccontextmanager
    async def _use(
        self, what: str, *, transaction: bool = False
    ) -> AsyncIterator[aiosqlite.Connection]:
        """The one door to the connection: serialises callers, translates errors, and
        wraps multi-statement work in a short ``BEGIN IMMEDIATE`` transaction (a single
        statement is atomic on its own in autocommit mode)."""
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"session store: {what}: the store is not open")
            with _translated(what):
                if not transaction:
                    yield conn
                    return
                # Where a lock held elsewhere is waited for: once begun, the write lock is ours.
                await _worker_call(conn, _waiting, self._busy_ms, _begin)
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")

    async def _fetch(self, what: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        async with self._use(what) as conn:
            return list(await conn.execute_fetchall(sql, params))

    async def _write(self, what: str, sql: str, params: tuple[Any, ...]) -> tuple[int, int]:
        """Run one statement; returns (lastrowid, rowcount)."""
        return await self._on_worker(what, _write_one, sql, params)

    async def _on_worker(
        self,
        what: str,
        work: Callable[..., T],
        *args: Any,
        transaction: bool = False,
    ) -> T:
        """``work(sqlite3_connection, *args)``, one step of the message path, run here on
        the event loop (see the module docstring); ``transaction``: inside
        ``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error.

        When another process holds the write lock, the step goes to aiosqlite's thread and
        waits there up to ``busy_ms`` — unless it already wrote something before finding
        the lock taken (only a step of several single writes can), which is an error rather
        than a second copy."""
        async with self._lock:
            conn, db = self._conn, self._db
            if conn is None or db is None:
                raise StoreError(f"session store: {what}: the store is not open")
            job = _in_transaction if transaction else _plain
            with _translated(what):
                changes = db.total_changes
                result: T
                try:
                    result = job(db, work, *args)
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or db.total_changes != changes:
                        raise
                    waited = await _worker_call(conn, _waiting, self._busy_ms, job, work, *args)
                    result = cast(T, waited)
        self._wrote()
        return result

    def _wrote(self) -> None:
        """Every so many steps, a look at the WAL's size; past JOURNAL_SIZE_LIMIT a
        checkpoint runs on aiosqlite's thread (its fsync never stalls the loop)."""
        self._writes += 1
        if self._writes < _CHECK_WAL_EVERY or self._path in ("", ":memory:"):
            return
        self._writes = 0
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        try:
            size = os.stat(f"{self._path}-wal").st_size
        except OSError:
            return
        if size > JOURNAL_SIZE_LIMIT:
            self._checkpoint = asyncio.create_task(self._checkpoint_now())

    async def _checkpoint_now(self) -> None:
        with contextlib.suppress(StoreError):  # the upkeep task's truncation comes anyway
            async with self._use("checkpoint") as conn:
                await conn.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")

    async def active_session(self, key: SessionKey) -> int:
        stored = (*(_opt_text(p) for p in _key_params(key)), self._clock())
        return await self._on_worker(
            "active_session", _active_session, _key_params(key), stored, transaction=True
        )

    async def append(
        self,
        session_id: int,
        message: ChatMessage,
        *,
        model_name: str | None = None,
        usage: Usage | None = None,
        source: str | None = None,
    ) -> int:
        params = self._append_params(session_id, message, model_name, usage, source)
        found = await self._on_worker("append", _append, params)
        if found is None:
            raise StoreError(f"session store: append to session {session_id} was refused")
        return found

    def _append_params(
        self,
        session_id: int,
        message: ChatMessage,
        model_name: str | None,
        usage: Usage | None,
        source: str | None,
    ) -> tuple[Any, ...]:
        usage = usage or Usage()
        return (
            session_id,
            message.role,
            _opt_text(message.content),
            encode_tool_calls(message.tool_calls),
            _opt_text(message.tool_call_id),
            to_json(message.extras),
            _opt_text(model_name),
            usage.prompt_tokens,
            usage.completion_tokens,
            self._clock(),
            _opt_text(source),
        )

    async def set_extras(self, message_id: int, extras: JSONObject) -> None:
        session_id = await self._on_worker("set_extras", _set_extras, message_id, to_json(extras))
        if session_id is not None:
            self._tails.forget(session_id)  # the one in-place change to a stored message

    async def messages(
        self, session_id: int, *, after_id: int = 0, limit: int | None = None
    ) -> list[StoredMessage]:
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND id > ?"
        params = (session_id, after_id, -1 if limit is None else limit)
        rows = await self._fetch("messages", sql + " ORDER BY id LIMIT ?", params)
        return [_stored(row) for row in rows]

    async def message_count(self, session_id: int) -> int:
        sql = "SELECT COUNT(*) FROM messages WHERE session_id = ?"
        return int((await self._fetch("message_count", sql, (session_id,)))[0][0])

    async def summaries(self, session_id: int) -> list[Summary]:
        return [Summary(*r) for r in await self._fetch("summaries", _SUMMARY_QUERY, (session_id,))]

    async def latest_summary(self, session_id: int) -> Summary | None:
        sql = _SUMMARY_QUERY.replace("ORDER BY id", "ORDER BY id DESC LIMIT 1")
        rows = await self._fetch("latest_summary", sql, (session_id,))
        return Summary(*rows[0]) if rows else None

    async def turn_context(self, session_id: int) -> TurnContext:
        after = self._tails.read_after(session_id)
        read = await self._on_worker("turn_context", _turn_context, session_id, after)
        return await self._remembered(session_id, read)

    async def _remembered(self, session_id: int, read: _Read) -> TurnContext:
        """The whole unsummarised history from a read of only what the tails lack."""
        after, summary, rows = read
        history = self._tails.merge(session_id, after, summary, [_stored(r) for r in rows])
        if history is None:  # what was remembered moved meanwhile: read it all
            read = await self._on_worker("turn_context", _turn_context, session_id, 0)
            return await self._remembered(session_id, read)
        return summary, history

    async def begin_turn(
        self, key: SessionKey, message: ChatMessage, *, source: str | None = None
    ) -> tuple[int, int, TurnContext]:
        stored_key = (*(_opt_text(p) for p in _key_params(key)), self._clock())
        params = self._append_params(-1, message, None, None, source)
        session_id, appended, read = await self._on_worker(
            "begin_turn",
            _begin_turn,
            _key_params(key),
            stored_key,
            params,
            self._tails.read_after,
            transaction=True,
        )
        if appended is None:
            raise StoreError(f"session store: append to session {session_id} was refused")
        return session_id, appended, await self._remembered(session_id, read)

    async def add_summary(
        self, session_id: int, covers_up_to: int, text: str, model_name: str
    ) -> None:
        async with self._use("add_summary", transaction=True) as conn:
            check = "SELECT 1 FROM messages WHERE id = ? AND session_id = ?"
            if not list(await conn.execute_fetchall(check, (covers_up_to, session_id))):
                raise StoreError(
                    f"session store: message {covers_up_to} is not in session {session_id}"
                )
            await conn.execute(
                "INSERT INTO summaries (session_id, covers_up_to, text, model_name, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (session_id, covers_up_to, clean_text(text), clean_text(model_name), self._clock()),
            )

    async def archive(self, key: SessionKey) -> int | None:
        async with self._use("archive", transaction=True) as conn:
            rows = list(await conn.execute_fetchall(_ACTIVE_QUERY, _key_params(key)))
            if not rows:
                return None
            sql = "UPDATE sessions SET archived_at = ? WHERE id = ?"
            await conn.execute(sql, (self._clock(), rows[0][0]))
            return int(rows[0][0])

    async def sessions(self, *, include_archived: bool = True) -> list[SessionInfo]:
        where = "" if include_archived else " WHERE s.archived_at IS NULL"
        rows = await self._fetch("sessions", f"{_SESSION_QUERY}{where} ORDER BY s.id")
        return [_info(row) for row in rows]

    async def session_info(self, session_id: int) -> SessionInfo:
        rows = await self._fetch("session_info", f"{_SESSION_QUERY} WHERE s.id = ?", (session_id,))
        if not rows:
            raise StoreError(f"session store: no session with id {session_id}")
        return _info(rows[0])

    async def inbox_prune(self, done_for_s: float) -> int:
        # In batches, so the message path waits for one short statement at most.
        sql = (
            "DELETE FROM inbox WHERE rowid IN (SELECT rowid FROM inbox WHERE status = 'done'"
            " AND ifnull(done_at, received_at) < ? LIMIT ?)"
        )
        cutoff = self._clock() - done_for_s
        # Group decisions matter only while a copy of their message may still come.
        await self._write("group_prune", "DELETE FROM group_turns WHERE decided_at < ?", (cutoff,))
        total = 0
        while True:
            deleted = (await self._write("inbox_prune", sql, (cutoff, _PRUNE_BATCH)))[1]
            total += deleted
            if deleted < _PRUNE_BATCH:
                return total
            await asyncio.sleep(0)  # the batches run on the loop: let the others run between

    async def truncate_journal(self) -> bool:
        async with self._use("truncate_journal") as conn:
            # Without waiting (the connection's setting): a reader (sessions export) holding
            # the WAL must not stall the message path behind the lock; the next round retries.
            rows = list(await conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)"))
        return not rows or rows[0][0] == 0

    def opened_file(self) -> OpenedFile | None:
        return self._opened
