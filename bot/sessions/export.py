"""``sessions export``: sessions as JSON Lines, for backups, audits and moving to other tools.

One object per line so the output streams, greps and appends well. Every message is written
(the store never deletes any), then one ``"type": "summary"`` line per compaction summary.
Each line repeats the session key so a line makes sense on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, TextIO

from bot.sessions.store import SessionInfo, SessionStore, StoredMessage, Summary

PAGE_SIZE = 500  # messages read per query, so a long session is not loaded all at once


def _session_fields(info: SessionInfo) -> dict[str, Any]:
    return {
        "session_id": info.id,
        "channel": info.key.channel,
        "chat_id": info.key.chat_id,
        "topic_id": info.key.topic_id,
        "agent_id": info.key.agent_id,
        "archived": info.archived,
    }


def _message_line(info: SessionInfo, stored: StoredMessage) -> dict[str, Any]:
    message = stored.message
    return {
        "type": "message",
        **_session_fields(info),
        "id": stored.id,
        "role": message.role,
        "content": message.content,
        "tool_calls": [asdict(call) for call in message.tool_calls],
        "tool_call_id": message.tool_call_id,
        "extras": message.extras,
        "model_name": stored.model_name,
        "usage": asdict(stored.usage),
        "created_at": stored.created_at,
    }


def _summary_line(info: SessionInfo, summary: Summary) -> dict[str, Any]:
    return {
        "type": "summary",
        **_session_fields(info),
        "covers_up_to": summary.covers_up_to,
        "text": summary.text,
        "model_name": summary.model_name,
        "created_at": summary.created_at,
    }


async def export_jsonl(store: SessionStore, session_ids: Iterable[int], out: TextIO) -> int:
    """Write the given sessions to ``out``; returns the number of lines written.

    Raises ``StoreError`` for an unknown session id before writing any of its lines.
    """
    lines = 0

    def write(obj: dict[str, Any]) -> None:
        nonlocal lines
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        lines += 1

    for session_id in session_ids:
        info = await store.session_info(session_id)
        after = 0
        while page := await store.messages(session_id, after_id=after, limit=PAGE_SIZE):
            for stored in page:
                write(_message_line(info, stored))
            after = page[-1].id
        for summary in await store.summaries(session_id):
            write(_summary_line(info, summary))
    return lines
