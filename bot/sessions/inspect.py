"""``sessions list / show / export``: read the store from the command line."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TextIO

from bot.sessions.export import export_jsonl
from bot.sessions.store import SessionInfo, SessionStore

NO_SESSIONS = "no sessions yet"


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _key(info: SessionInfo) -> str:
    key = info.key
    topic = f"/{key.topic_id}" if key.topic_id else ""
    return f"{key.channel}:{key.chat_id}{topic}:{key.agent_id}"


async def list_sessions(store: SessionStore, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # looked up now, not at import: tests and redirects replace it
    sessions = await store.sessions()
    if not sessions:
        out.write(NO_SESSIONS + "\n")
        return 0
    rows = [("id", "session", "state", "messages", "last activity (UTC)")]
    for info in sessions:
        rows.append(
            (
                str(info.id),
                _key(info),
                "archived" if info.archived else "active",
                str(info.message_count),
                _when(info.last_activity),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    return 0


async def show_session(store: SessionStore, session_id: int, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    info = await store.session_info(session_id)
    out.write(f"session {info.id} {_key(info)} ({'archived' if info.archived else 'active'})\n")
    summaries = {s.covers_up_to: s for s in await store.summaries(session_id)}
    for stored in await store.messages(session_id):
        message = stored.message
        model = f" [{stored.model_name}]" if stored.model_name else ""
        text = message.content or ""
        calls = "".join(f" →{c.name}({c.arguments})" for c in message.tool_calls)
        out.write(f"#{stored.id} {_when(stored.created_at)} {message.role}{model}: {text}{calls}\n")
        if stored.id in summaries:
            summary = summaries[stored.id]
            out.write(f"   ── summary up to #{stored.id} by {summary.model_name}: {summary.text}\n")
    return 0


async def export_sessions(
    store: SessionStore, session_id: int | None, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    ids = [session_id] if session_id is not None else [s.id for s in await store.sessions()]
    await export_jsonl(store, ids, out)
    return 0
