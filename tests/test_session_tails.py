"""What the SQLite store remembers between turns stays bounded and never goes stale."""

from __future__ import annotations

from bot.sessions.store import StoredMessage, Summary
from bot.sessions.tails import SessionTails
from bot.types import ChatMessage, Usage


def rows(*ids: int, session: int = 1) -> list[StoredMessage]:
    return [
        StoredMessage(i, session, ChatMessage("user", f"m{i}"), None, Usage(), 0.0) for i in ids
    ]


def ids(history: list[StoredMessage] | None) -> list[int]:
    assert history is not None
    return [m.id for m in history]


def test_a_read_after_what_is_remembered_adds_only_the_new_rows() -> None:
    tails = SessionTails()
    assert tails.read_after(1) == 0
    assert ids(tails.merge(1, 0, None, rows(1, 2))) == [1, 2]
    assert tails.read_after(1) == 2
    # Two reads raced: the second brings a row the first already added.
    assert ids(tails.merge(1, 2, None, rows(3))) == [1, 2, 3]
    assert ids(tails.merge(1, 2, None, rows(3, 4))) == [1, 2, 3, 4]


def test_a_newer_summary_cuts_the_start_and_an_older_one_asks_for_a_full_read() -> None:
    tails = SessionTails()
    tails.merge(1, 0, None, rows(1, 2, 3))
    summary = Summary(1, 2, "m1 m2", "cheap", 0.0)
    assert ids(tails.merge(1, 3, summary, rows(4))) == [3, 4]
    assert tails.merge(1, 4, None, []) is None  # the summary went back: read it all
    assert tails.read_after(1) == 0


def test_a_forgotten_session_asks_for_a_full_read() -> None:
    tails = SessionTails()
    tails.merge(1, 0, None, rows(1, 2))
    tails.forget(1)
    assert tails.merge(1, 2, None, rows(3)) is None
    assert ids(tails.merge(1, 0, None, rows(1, 2, 3))) == [1, 2, 3]


def test_the_least_recently_read_sessions_go_first_and_a_huge_one_is_not_kept() -> None:
    tails = SessionTails(max_messages=5)
    tails.merge(1, 0, None, rows(1, 2, session=1))
    tails.merge(2, 0, None, rows(3, 4, session=2))
    tails.merge(1, 2, None, [])  # session 1 read again: now the most recent
    tails.merge(3, 0, None, rows(5, 6, session=3))  # 6 held: session 2 goes
    assert (tails.read_after(1), tails.read_after(2), tails.read_after(3)) == (2, 0, 6)
    assert ids(tails.merge(4, 0, None, rows(*range(10, 17), session=4))) == list(range(10, 17))
    assert tails.read_after(4) == 0  # returned, but longer than the bound alone: not kept
    assert tails.read_after(1) == 2
