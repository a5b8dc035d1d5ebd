"""What the SQLite store remembers of each session's unsummarised history between turns.

Every turn sends the model the messages after the latest summary. Reading and decoding all of
them again each turn made a message in a 500-message chat cost three times one in a new chat;
with this, a turn reads only the rows added since the last one (its own message, the previous
answer) and reuses the decoded rest.

Safe because stored messages are append-only: rows only ever get a higher id, a summary only
moves the start forward, and the one in-place change (``set_extras``) forgets its session. The
read always asks the database for the latest summary and every row past what is remembered, so
rows written by other code paths (tool results, group attributions) are picked up too.
Only the single-process SQLite store uses this; several processes on PostgreSQL would each hold
a stale copy.

Bounded by the number of messages held across sessions; the least recently used session is
forgotten first, and a session longer than the bound alone is not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.sessions.store import StoredMessage, Summary

MAX_MESSAGES = 10_000


@dataclass
class _Tail:
    summary: Summary | None
    messages: list[StoredMessage] = field(default_factory=list)

    @property
    def covers(self) -> int:
        return self.summary.covers_up_to if self.summary is not None else 0

    @property
    def last_id(self) -> int:
        return self.messages[-1].id if self.messages else self.covers


class SessionTails:
    def __init__(self, max_messages: int = MAX_MESSAGES) -> None:
        self._max = max_messages
        self._tails: OrderedDict[int, _Tail] = OrderedDict()
        self._held = 0

    def read_after(self, session_id: int) -> int:
        """Rows with a higher id than this are what the database must still give (0: all)."""
        tail = self._tails.get(session_id)
        return 0 if tail is None else tail.last_id

    def merge(
        self,
        session_id: int,
        read_after: int,
        summary: Summary | None,
        rows: Sequence[StoredMessage],
    ) -> list[StoredMessage] | None:
        """The whole unsummarised history: what is remembered plus ``rows``, the database's
        answer to a read from ``read_after`` with ``summary`` the latest summary then.

        None when the remembered part cannot be trusted (the summary moved back, or the
        remembered tail changed since the read began): read again from 0."""
        tail = self._pop(session_id)
        if read_after == 0:
            tail = _Tail(summary, list(rows))
        elif tail is None or tail.last_id < read_after:
            return None  # forgotten (or cut) while the read was on its way
        else:
            covers = summary.covers_up_to if summary is not None else 0
            if covers < tail.covers:
                return None
            if covers > tail.covers:
                tail.messages = [m for m in tail.messages if m.id > covers]
                tail.summary = summary
            last = tail.last_id
            tail.messages.extend(m for m in rows if m.id > last)
        held = len(tail.messages)
        if held <= self._max:
            self._tails[session_id] = tail
            self._held += held
            while self._held > self._max:
                _, oldest = self._tails.popitem(last=False)
                self._held -= len(oldest.messages)
        return list(tail.messages)

    def forget(self, session_id: int) -> None:
        self._pop(session_id)

    def _pop(self, session_id: int) -> _Tail | None:
        tail = self._tails.pop(session_id, None)
        if tail is not None:
            self._held -= len(tail.messages)
        return tail

    def clear(self) -> None:
        self._tails.clear()
        self._held = 0
