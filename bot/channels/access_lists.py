"""Matching a Telegram user against a list of ids and @usernames (allow_from).

Entries are validated by the config schema: a numeric user id, ``@username`` or ``"*"``.
Ids are compared as text; usernames case-insensitively, as Telegram treats them.
"""

from __future__ import annotations

from collections.abc import Iterable


def listed(user_id: int | str, username: str | None, entries: Iterable[str]) -> bool:
    """True when the id or the ``@username`` is among ``entries`` (``"*"`` is not special)."""
    entries = tuple(entries)
    if str(user_id) in entries:
        return True
    return by_username(username, entries)


def by_username(username: str | None, entries: Iterable[str]) -> bool:
    if not username:
        return False
    handle = f"@{username.lstrip('@')}".lower()
    return any(entry.lower() == handle for entry in entries)
