"""Pairing in the store (SPEC §13): codes given to strangers, and the users admins approved.

A stranger writing to a bot with ``pairing`` on is given a short code, one per user and
bot, valid for a while. An admin turns the code into an approval of that user on that
bot (``/approve`` in any bot, or the CLI). Approvals last until revoked. Nothing a
stranger wrote is kept here: only their id, username and private chat, to say who a code
belongs to. The SQL is kept plain (upserts as ``ON CONFLICT``) so that other stores can
follow it.
"""

from __future__ import annotations

import re
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass

from bot.sessions.doors import SqliteDoor
from bot.sessions.schema import clean_text

# No 0/O, 1/I/L: a code read out or typed from a screenshot stays unambiguous.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(text: str) -> str | None:
    """What a person typed (``abc-234``, `` ABC 234``) as a code, or None if it is none."""
    code = re.sub(r"[\s-]", "", text).upper()
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


@dataclass(frozen=True)
class PairingCode:
    code: str
    channel: str  # the bot that issued it; the approval is for that bot
    user_id: str
    username: str | None
    chat_id: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class PairingApproval:
    channel: str
    user_id: str
    username: str | None
    approved_by: str  # "<channel>:<admin id>" or "cli"
    approved_at: float


class PairingStore(ABC):
    """The pairing half of the store seam. Raises only ``StoreError``."""

    @abstractmethod
    async def pairing_issue(
        self,
        channel: str,
        user_id: str,
        username: str | None,
        chat_id: str,
        code: str,
        *,
        ttl_s: float,
        max_open: int,
    ) -> PairingCode | None:
        """The user's open code on ``channel``, else ``code`` issued now for ``ttl_s``.

        None when ``channel`` already has ``max_open`` open codes. Expired codes are
        deleted on the way. A ``code`` that is already open elsewhere is a StoreError."""

    @abstractmethod
    async def pairing_approve(self, code: str, approved_by: str) -> PairingApproval | None:
        """Turn an open code into an approval of its user on its channel; the code is used
        up. None when no such code is open (unknown, used or expired)."""

    @abstractmethod
    async def pairing_is_approved(self, channel: str, user_id: str) -> bool: ...

    @abstractmethod
    async def pairing_revoke(self, user_id: str, channel: str | None = None) -> int:
        """Remove the user's approvals (on one channel, or all); how many went."""

    @abstractmethod
    async def pairing_codes(self) -> list[PairingCode]:
        """Codes still open, oldest first."""

    @abstractmethod
    async def pairing_approvals(self) -> list[PairingApproval]:
        """Every approval, oldest first."""


CODE_COLUMNS = "code, channel, user_id, username, chat_id, created_at, expires_at"
APPROVAL_COLUMNS = "channel, user_id, username, approved_by, approved_at"


class SqlitePairing(SqliteDoor, PairingStore):
    """The pairing methods of ``SqliteSessionStore``; it provides the connection door."""

    async def pairing_issue(
        self,
        channel: str,
        user_id: str,
        username: str | None,
        chat_id: str,
        code: str,
        *,
        ttl_s: float,
        max_open: int,
    ) -> PairingCode | None:
        now = self._clock()
        async with self._use("pairing_issue", transaction=True) as conn:
            await conn.execute("DELETE FROM pairing_codes WHERE expires_at <= ?", (now,))
            mine = f"SELECT {CODE_COLUMNS} FROM pairing_codes WHERE channel = ? AND user_id = ?"
            rows = list(await conn.execute_fetchall(mine, (channel, user_id)))
            if rows:
                return PairingCode(*rows[0])
            count = "SELECT COUNT(*) FROM pairing_codes WHERE channel = ?"
            [(open_codes,)] = await conn.execute_fetchall(count, (channel,))
            if int(open_codes) >= max_open:
                return None
            issued = PairingCode(
                code,
                channel,
                user_id,
                None if username is None else clean_text(username),
                chat_id,
                now,
                now + ttl_s,
            )
            await conn.execute(
                f"INSERT INTO pairing_codes ({CODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    issued.code,
                    issued.channel,
                    issued.user_id,
                    issued.username,
                    issued.chat_id,
                    issued.created_at,
                    issued.expires_at,
                ),
            )
            return issued

    async def pairing_approve(self, code: str, approved_by: str) -> PairingApproval | None:
        now = self._clock()
        async with self._use("pairing_approve", transaction=True) as conn:
            sql = (
                "SELECT channel, user_id, username FROM pairing_codes"
                " WHERE code = ? AND expires_at > ?"
            )
            rows = list(await conn.execute_fetchall(sql, (code, now)))
            if not rows:
                return None
            channel, user_id, username = rows[0]
            approval = PairingApproval(channel, user_id, username, clean_text(approved_by), now)
            await conn.execute(
                f"INSERT INTO pairing_approvals ({APPROVAL_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (channel, user_id) DO UPDATE SET username = excluded.username,"
                " approved_by = excluded.approved_by, approved_at = excluded.approved_at",
                (channel, user_id, username, approval.approved_by, now),
            )
            await conn.execute("DELETE FROM pairing_codes WHERE code = ?", (code,))
            return approval

    async def pairing_is_approved(self, channel: str, user_id: str) -> bool:
        sql = "SELECT 1 FROM pairing_approvals WHERE channel = ? AND user_id = ?"
        return bool(await self._fetch("pairing_is_approved", sql, (channel, user_id)))

    async def pairing_revoke(self, user_id: str, channel: str | None = None) -> int:
        sql = "DELETE FROM pairing_approvals WHERE user_id = ?"
        params: tuple[str, ...] = (user_id,)
        if channel is not None:
            sql, params = sql + " AND channel = ?", (user_id, channel)
        return (await self._write("pairing_revoke", sql, params))[1]

    async def pairing_codes(self) -> list[PairingCode]:
        sql = (
            f"SELECT {CODE_COLUMNS} FROM pairing_codes WHERE expires_at > ?"
            " ORDER BY created_at, code"
        )
        return [PairingCode(*r) for r in await self._fetch("pairing_codes", sql, (self._clock(),))]

    async def pairing_approvals(self) -> list[PairingApproval]:
        sql = f"SELECT {APPROVAL_COLUMNS} FROM pairing_approvals ORDER BY approved_at, channel"
        return [PairingApproval(*r) for r in await self._fetch("pairing_approvals", sql)]
