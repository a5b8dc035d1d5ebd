"""The session store's schema as an ordered list of forward migrations.

``PRAGMA user_version`` records how many migrations a database has had. Opening runs
every missing step, each in its own ``BEGIN IMMEDIATE`` transaction together with the
version bump, so a crash mid-upgrade leaves the database at a whole earlier version, and
two processes opening the same file at once cannot both apply a step. Migrations are
never edited once released; a change to the schema is a new entry at the end.

The column encodings (JSON for tool calls and extras, UTF-8-safe text) live here too:
they are part of the on-disk format that every later version must still read.

A database whose version is newer than this code knows is refused: running old code on
it could silently misread or damage rows written by the newer schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bot.errors import StoreError
from bot.types import ToolCall


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    # Single statements, run one by one: ``executescript`` would commit on its own and
    # break the one-transaction-per-step guarantee.
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "sessions, messages and summaries",
        (
            """CREATE TABLE sessions (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                channel TEXT NOT NULL,
                chat_id TEXT NOT NULL,
                topic_id TEXT,
                agent_id TEXT NOT NULL,
                created_at REAL NOT NULL,
                archived_at REAL
            )""",
            # At most one active session per key; archived ones pile up beside it.
            """CREATE UNIQUE INDEX sessions_active_key
                ON sessions (channel, chat_id, ifnull(topic_id, ''), agent_id)
                WHERE archived_at IS NULL""",
            # AUTOINCREMENT: message ids are never reused, so "after id N" stays meaningful.
            """CREATE TABLE messages (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id INTEGER NOT NULL REFERENCES sessions (id),
                role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
                content TEXT,
                tool_calls TEXT NOT NULL DEFAULT '[]',
                tool_call_id TEXT,
                extras TEXT NOT NULL DEFAULT '{}',
                model_name TEXT,
                prompt_tokens INTEGER NOT NULL DEFAULT 0,
                completion_tokens INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL
            )""",
            "CREATE INDEX messages_session_id ON messages (session_id, id)",
            """CREATE TABLE summaries (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id INTEGER NOT NULL REFERENCES sessions (id),
                covers_up_to INTEGER NOT NULL REFERENCES messages (id),
                text TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
            "CREATE INDEX summaries_session_id ON summaries (session_id, id)",
        ),
    ),
    Migration(
        2,
        "durable inbox of channel updates",
        (
            # The primary key is the at-most-once guarantee: (channel, update_id) once.
            """CREATE TABLE inbox (
                channel TEXT NOT NULL,
                update_id INTEGER NOT NULL,
                payload TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
                received_at REAL NOT NULL,
                done_at REAL,
                PRIMARY KEY (channel, update_id)
            )""",
            "CREATE INDEX inbox_pending ON inbox (channel, update_id) WHERE status = 'pending'",
        ),
    ),
    Migration(
        3,
        "record which model wrote each summary",
        # Summaries written before v3 have no known model; '' says so.
        ("ALTER TABLE summaries ADD COLUMN model_name TEXT NOT NULL DEFAULT ''",),
    ),
    Migration(
        4,
        "outbox: the reply of an update and how much of it was delivered",
        (
            # The generated reply, so a restart re-sends it instead of asking a model again.
            "ALTER TABLE inbox ADD COLUMN reply TEXT",
            # Chunks confirmed delivered, and the chunk whose send had started: when the two
            # meet after a crash, that one chunk may or may not have reached the chat.
            "ALTER TABLE inbox ADD COLUMN chunks_sent INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE inbox ADD COLUMN sending INTEGER",
        ),
    ),
    Migration(
        5,
        "one lifecycle per update: address, kind, outcome, claims; keyed history; chat moves",
        (
            # Where the reply goes, so delivery (and a spawned task's result) needs no
            # re-parsing of the payload. NULL on rows written before v5.
            "ALTER TABLE inbox ADD COLUMN chat_id TEXT",
            "ALTER TABLE inbox ADD COLUMN topic_id TEXT",
            # 'update': a platform update answered by a turn; 'task': a spawned sub-task
            # whose result is the reply (ids below zero, so they never meet update ids).
            "ALTER TABLE inbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'update'",
            # How a done row ended: 'delivered', 'given_up' (with the reason in note),
            # 'skipped' (nothing to answer). NULL while pending and on pre-v5 rows.
            "ALTER TABLE inbox ADD COLUMN outcome TEXT",
            "ALTER TABLE inbox ADD COLUMN note TEXT",
            # The process whose lane holds the row; a row claimed by nobody (or by a
            # process that is gone) is picked up by the next start of its channel.
            "ALTER TABLE inbox ADD COLUMN claimed_by TEXT",
            # The inbound update (or task) a message came from: a replayed turn finds its
            # user message already stored instead of storing it twice.
            "ALTER TABLE messages ADD COLUMN source TEXT",
            """CREATE UNIQUE INDEX messages_source ON messages (session_id, source)
                WHERE source IS NOT NULL""",
            # Telegram moved a group to a supergroup: replies, sessions and chat-specific
            # bindings follow the new id.
            """CREATE TABLE chat_moves (
                channel TEXT NOT NULL,
                old_chat_id TEXT NOT NULL,
                new_chat_id TEXT NOT NULL,
                moved_at REAL NOT NULL,
                PRIMARY KEY (channel, old_chat_id)
            )""",
        ),
    ),
    Migration(
        6,
        "pairing: codes given to strangers, users approved by an admin",
        (
            # A code names one stranger on one bot; at most one open code per user and bot.
            """CREATE TABLE pairing_codes (
                code TEXT PRIMARY KEY,
                channel TEXT NOT NULL,
                user_id TEXT NOT NULL,
                username TEXT,
                chat_id TEXT NOT NULL,
                created_at REAL NOT NULL,
                expires_at REAL NOT NULL
            )""",
            "CREATE UNIQUE INDEX pairing_codes_user ON pairing_codes (channel, user_id)",
            # Admitted by that bot like an allow_from entry, until revoked.
            """CREATE TABLE pairing_approvals (
                channel TEXT NOT NULL,
                user_id TEXT NOT NULL,
                username TEXT,
                approved_by TEXT NOT NULL,
                approved_at REAL NOT NULL,
                PRIMARY KEY (channel, user_id)
            )""",
        ),
    ),
    Migration(
        7,
        "usage ledger: one row per model call, and the budget warnings already sent",
        (
            # cost_usd NULL: the model entry has no price. estimated 1: the provider gave
            # no token counts, so they were estimated from the text.
            """CREATE TABLE usage (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at REAL NOT NULL,
                agent_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                channel TEXT NOT NULL,
                chat_id TEXT NOT NULL,
                model_name TEXT NOT NULL,
                purpose TEXT NOT NULL,
                prompt_tokens INTEGER NOT NULL,
                completion_tokens INTEGER NOT NULL,
                cost_usd REAL,
                estimated INTEGER NOT NULL DEFAULT 0
            )""",
            # A budget rule filters on an agent, a user, or neither, then on the period:
            # each has an index ending in the time, so the check is a range scan.
            "CREATE INDEX usage_agent_at ON usage (agent_id, at)",
            "CREATE INDEX usage_user_at ON usage (user_id, at)",
            "CREATE INDEX usage_at ON usage (at)",
            """CREATE TABLE usage_warnings (
                key TEXT PRIMARY KEY,
                at REAL NOT NULL
            )""",
        ),
    ),
    Migration(
        8,
        "groups with several personas: who answers each message (bot.groups)",
        (
            # One row per human group message, whichever bot's copy came first; topic_id
            # '' is "no topic", so the key stays unique. answerers/answered: JSON lists of
            # channels, in answer order / done.
            """CREATE TABLE group_turns (
                chat_id TEXT NOT NULL,
                topic_id TEXT NOT NULL,
                shared_id TEXT NOT NULL,
                answerers TEXT NOT NULL,
                answered TEXT NOT NULL DEFAULT '[]',
                decided_at REAL NOT NULL,
                PRIMARY KEY (chat_id, topic_id, shared_id)
            )""",
            "CREATE INDEX group_turns_decided_at ON group_turns (decided_at)",
        ),
    ),
    Migration(
        9,
        "streaming: the preview message a reply grows in",
        (
            # The Telegram message id of the streamed preview. After a crash mid-stream the
            # answer is generated again and edited into this message instead of sent anew.
            "ALTER TABLE inbox ADD COLUMN preview_id TEXT",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

if [m.version for m in MIGRATIONS] != list(range(1, len(MIGRATIONS) + 1)):  # pragma: no cover
    raise RuntimeError("MIGRATIONS must be numbered 1, 2, 3, … without gaps")


async def schema_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def _check_not_newer(version: int) -> None:
    if version > LATEST_VERSION:
        raise StoreError(
            f"session database has schema version {version}, newer than the {LATEST_VERSION} "
            "this persona-bridge knows; upgrade persona-bridge or use a backup"
        )


async def migrate(conn: aiosqlite.Connection) -> int:
    """Bring ``conn`` (autocommit mode) up to ``LATEST_VERSION``; returns the final version.

    sqlite3 errors propagate untranslated; the store turns them into ``StoreError``.
    """
    _check_not_newer(await schema_version(conn))
    for migration in MIGRATIONS:
        if await schema_version(conn) >= migration.version:
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = await schema_version(conn)
            _check_not_newer(version)
            if version < migration.version:
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {migration.version}")
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
    return await schema_version(conn)


# Column encodings. ----------------------------------------------------------------------


def clean_text(value: str) -> str:
    """SQLite wants UTF-8, which cannot hold a lone surrogate such as "\\ud800" (half an
    emoji cut by a length limit, or a bad JSON escape). Re-pair surrogate pairs and
    replace lone ones with U+FFFD rather than fail the write."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def to_json(value: Any) -> str:
    return clean_text(json.dumps(value, ensure_ascii=False))


def encode_tool_calls(calls: tuple[ToolCall, ...]) -> str:
    fields = ("id", "name", "arguments", "arguments_error", "extras")
    return to_json([{f: getattr(call, f) for f in fields} for call in calls])


def decode_tool_calls(text: str) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(
            c["id"], c["name"], c["arguments"], c.get("arguments_error"), c.get("extras") or {}
        )
        for c in json.loads(text)
    )
