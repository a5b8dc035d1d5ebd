"""The PostgreSQL store's schema as its own ordered list of forward migrations.

The same idea as ``bot.sessions.schema`` for SQLite, with PostgreSQL's means: the version
lives in ``persona_bridge_schema``; each step runs in its own transaction together with
the version bump, after taking a transaction-level advisory lock, so several bridges
starting at once against one server apply each step exactly once (the others wait, then
see the new version). Migrations are never edited once released.

Version 1 holds everything SQLite's version 5 holds, plus what several processes need:
an arrival sequence on the inbox (per-chat order never depends on clocks or lock-wait
order), the processes' leases, and a NOTIFY when work arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from bot.errors import StoreError

# pg_advisory_xact_lock key for migrations: any fixed 64-bit number unique to this app.
MIGRATION_LOCK = 0x5042_4D49_4752  # "PBMIGR"
INBOX_CHANNEL = "persona_bridge_inbox"  # LISTEN/NOTIFY channel: new or released work


@dataclass(frozen=True)
class PgMigration:
    version: int
    description: str
    statements: tuple[str, ...]


PG_MIGRATIONS: tuple[PgMigration, ...] = (
    PgMigration(
        1,
        "sessions, messages, summaries, inbox/outbox, chat moves, process leases",
        (
            """CREATE TABLE sessions (
                id BIGSERIAL PRIMARY KEY,
                channel TEXT NOT NULL,
                chat_id TEXT NOT NULL,
                topic_id TEXT,
                agent_id TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                archived_at DOUBLE PRECISION
            )""",
            """CREATE UNIQUE INDEX sessions_active_key
                ON sessions (channel, chat_id, coalesce(topic_id, ''), agent_id)
                WHERE archived_at IS NULL""",
            """CREATE TABLE messages (
                id BIGSERIAL PRIMARY KEY,
                session_id BIGINT NOT NULL REFERENCES sessions (id),
                role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
                content TEXT,
                tool_calls TEXT NOT NULL DEFAULT '[]',
                tool_call_id TEXT,
                extras TEXT NOT NULL DEFAULT '{}',
                model_name TEXT,
                prompt_tokens BIGINT NOT NULL DEFAULT 0,
                completion_tokens BIGINT NOT NULL DEFAULT 0,
                created_at DOUBLE PRECISION NOT NULL,
                source TEXT
            )""",
            "CREATE INDEX messages_session_id ON messages (session_id, id)",
            """CREATE UNIQUE INDEX messages_source ON messages (session_id, source)
                WHERE source IS NOT NULL""",
            """CREATE TABLE summaries (
                id BIGSERIAL PRIMARY KEY,
                session_id BIGINT NOT NULL REFERENCES sessions (id),
                covers_up_to BIGINT NOT NULL REFERENCES messages (id),
                text TEXT NOT NULL,
                model_name TEXT NOT NULL DEFAULT '',
                created_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX summaries_session_id ON summaries (session_id, id)",
            # seq is arrival order (SQLite's rowid); (channel, update_id) is stored once.
            """CREATE TABLE inbox (
                seq BIGSERIAL NOT NULL UNIQUE,
                channel TEXT NOT NULL,
                update_id BIGINT NOT NULL,
                payload TEXT NOT NULL,
                status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
                received_at DOUBLE PRECISION NOT NULL,
                done_at DOUBLE PRECISION,
                reply TEXT,
                chunks_sent INTEGER NOT NULL DEFAULT 0,
                sending INTEGER,
                chat_id TEXT,
                topic_id TEXT,
                kind TEXT NOT NULL DEFAULT 'update',
                outcome TEXT,
                note TEXT,
                claimed_by TEXT,
                PRIMARY KEY (channel, update_id)
            )""",
            "CREATE INDEX inbox_pending ON inbox (seq) WHERE status = 'pending'",
            "CREATE INDEX inbox_done ON inbox (done_at) WHERE status = 'done'",
            """CREATE TABLE chat_moves (
                channel TEXT NOT NULL,
                old_chat_id TEXT NOT NULL,
                new_chat_id TEXT NOT NULL,
                moved_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (channel, old_chat_id)
            )""",
            # A claim is live while its process's lease (renewed by a heartbeat, on the
            # server's clock) has not lapsed; then another process takes the rows over.
            """CREATE TABLE bridge_processes (
                owner TEXT PRIMARY KEY,
                lease_until TIMESTAMPTZ NOT NULL,
                started_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )""",
            f"""CREATE FUNCTION persona_bridge_inbox_notify() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN PERFORM pg_notify('{INBOX_CHANNEL}', ''); RETURN NULL; END $$""",
            """CREATE TRIGGER inbox_arrived AFTER INSERT ON inbox
                FOR EACH STATEMENT EXECUTE FUNCTION persona_bridge_inbox_notify()""",
        ),
    ),
    PgMigration(
        2,
        "pairing: codes given to strangers, users approved by an admin",
        (
            """CREATE TABLE pairing_codes (
                code TEXT PRIMARY KEY,
                channel TEXT NOT NULL,
                user_id TEXT NOT NULL,
                username TEXT,
                chat_id TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE UNIQUE INDEX pairing_codes_user ON pairing_codes (channel, user_id)",
            """CREATE TABLE pairing_approvals (
                channel TEXT NOT NULL,
                user_id TEXT NOT NULL,
                username TEXT,
                approved_by TEXT NOT NULL,
                approved_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (channel, user_id)
            )""",
        ),
    ),
    PgMigration(
        3,
        "usage ledger: one row per model call, and the budget warnings already sent",
        (
            """CREATE TABLE usage (
                id BIGSERIAL PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL,
                agent_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                channel TEXT NOT NULL,
                chat_id TEXT NOT NULL,
                model_name TEXT NOT NULL,
                purpose TEXT NOT NULL,
                prompt_tokens BIGINT NOT NULL,
                completion_tokens BIGINT NOT NULL,
                cost_usd DOUBLE PRECISION,
                estimated INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX usage_agent_at ON usage (agent_id, at)",
            "CREATE INDEX usage_user_at ON usage (user_id, at)",
            "CREATE INDEX usage_at ON usage (at)",
            """CREATE TABLE usage_warnings (
                key TEXT PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
    PgMigration(
        4,
        "groups with several personas: who answers each message (bot.groups)",
        (
            """CREATE TABLE group_turns (
                chat_id TEXT NOT NULL,
                topic_id TEXT NOT NULL,
                shared_id TEXT NOT NULL,
                answerers TEXT NOT NULL,
                answered TEXT NOT NULL DEFAULT '[]',
                decided_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (chat_id, topic_id, shared_id)
            )""",
            "CREATE INDEX group_turns_decided_at ON group_turns (decided_at)",
        ),
    ),
    PgMigration(
        5,
        "streaming: the preview message a reply grows in (SQLite version 9)",
        ("ALTER TABLE inbox ADD COLUMN preview_id TEXT",),
    ),
)

PG_LATEST_VERSION = PG_MIGRATIONS[-1].version

if [m.version for m in PG_MIGRATIONS] != list(range(1, len(PG_MIGRATIONS) + 1)):  # pragma: no cover
    raise RuntimeError("PG_MIGRATIONS must be numbered 1, 2, 3, … without gaps")


async def pg_schema_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('persona_bridge_schema') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM persona_bridge_schema"))


def _check_not_newer(version: int) -> None:
    if version > PG_LATEST_VERSION:
        raise StoreError(
            f"session database has PostgreSQL schema version {version}, newer than the "
            f"{PG_LATEST_VERSION} this persona-bridge knows; upgrade persona-bridge"
        )


async def pg_migrate(conn: asyncpg.Connection) -> int:
    """Bring the database up to ``PG_LATEST_VERSION``; returns the final version.

    asyncpg errors propagate untranslated; the store turns them into ``StoreError``."""
    _check_not_newer(await pg_schema_version(conn))
    for migration in PG_MIGRATIONS:
        if await pg_schema_version(conn) >= migration.version:
            continue
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS persona_bridge_schema"
                " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            # Re-read under the lock: another process may have migrated meanwhile.
            version = await pg_schema_version(conn)
            _check_not_newer(version)
            if version < migration.version:
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO persona_bridge_schema (version) VALUES ($1)", migration.version
                )
    return await pg_schema_version(conn)
