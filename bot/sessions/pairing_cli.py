"""``persona-bridge pairing list / approve / revoke``: pairing from the command line.

It writes to the same database as a running bridge (SQLite allows that beside it), and
the bridge reads approvals from the store for each message of a sender not on
``allow_from``: an approval or a revocation made here applies to the next message.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from bot.config.loader import LoadedConfig
from bot.sessions.pairing_store import normalise_code
from bot.sessions.select import database_url, store_for
from bot.sessions.store import SessionStore

CONFIG_HELP = "config file (default: $PERSONA_BRIDGE_CONFIG, then ./config.json)"


def register(commands: Any) -> None:
    """Add ``pairing`` and its three subcommands to ``commands`` (argparse subparsers)."""
    text = "strangers' pairing codes and the users admins approved"
    pairing = commands.add_parser(
        "pairing",
        help=text,
        description="Strangers' pairing codes and the users admins approved. A bot with "
        "pairing on gives a stranger a code; approving it lets that user talk to that bot, "
        "like an allow_from entry, until revoked.",
    )
    actions = pairing.add_subparsers(
        dest="pairing_command", required=True, metavar="{list,approve,revoke}"
    )

    def action(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=text, description=text)
        parser.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
        return parser

    action("list", "open codes and approved users")
    approve = action("approve", "let the holder of a code in (to the bot that gave it)")
    approve.add_argument("code", metavar="CODE", help="the code the bot gave the stranger")
    revoke = action("revoke", "take a user's approval back")
    revoke.add_argument("user_id", metavar="USER_ID", help="the numeric Telegram user id")
    revoke.add_argument("--bot", metavar="BOT_ID", help="only for this bot (default: all)")


async def run(loaded: LoadedConfig, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # looked up now: tests replace it
    if args.pairing_command == "revoke" and not args.user_id.isdigit():
        print(
            f"pairing revoke: {args.user_id!r} is not a numeric user id "
            "(see `persona-bridge pairing list`)",
            file=sys.stderr,
        )
        return 2
    channel = None
    if args.pairing_command == "revoke" and args.bot is not None:
        channels = {bot.id: bot.channel for bot in loaded.config.channels.bots()}
        if args.bot not in channels:
            known = ", ".join(channels) or "none"
            print(f"pairing revoke: no bot {args.bot!r}; bots: {known}", file=sys.stderr)
            return 2
        channel = channels[args.bot]
    if database_url(loaded) is None and not loaded.database.exists():
        return _nothing_yet(args, out)  # nothing was ever issued; do not create a database
    async with store_for(loaded) as store:
        if args.pairing_command == "approve":
            return await _approve(store, args.code, out)
        if args.pairing_command == "revoke":
            return await _revoke(store, args.user_id, channel, out)
        return await _list(store, out)


async def _approve(store: SessionStore, typed: str, out: TextIO) -> int:
    code = normalise_code(typed)
    approval = None if code is None else await store.pairing_approve(code, "cli")
    if approval is None:
        return _no_code(typed)
    out.write(f"approved: user {_who(approval.user_id, approval.username)} on {approval.channel}\n")
    return 0


async def _revoke(store: SessionStore, user_id: str, channel: str | None, out: TextIO) -> int:
    where = "" if channel is None else f" on {channel}"
    if await store.pairing_revoke(user_id, channel) == 0:
        print(f"pairing revoke: user {user_id} is not approved{where}", file=sys.stderr)
        return 1
    out.write(f"revoked: user {user_id}{where}\n")
    return 0


async def _list(store: SessionStore, out: TextIO) -> int:
    codes: list[tuple[str, ...]] = [
        (c.code, c.channel, _who(c.user_id, c.username), _left(c.expires_at))
        for c in await store.pairing_codes()
    ]
    approvals: list[tuple[str, ...]] = [
        (a.channel, _who(a.user_id, a.username), _when(a.approved_at), a.approved_by)
        for a in await store.pairing_approvals()
    ]
    _table(out, "Open codes", ("code", "bot", "user", "expires in"), codes)
    out.write("\n")
    _table(out, "Approved users", ("bot", "user", "approved (UTC)", "by"), approvals)
    return 0


def _nothing_yet(args: argparse.Namespace, out: TextIO) -> int:
    if args.pairing_command == "approve":
        return _no_code(args.code)
    if args.pairing_command == "revoke":
        print(f"pairing revoke: user {args.user_id} is not approved", file=sys.stderr)
        return 1
    out.write("Open codes: none\n\nApproved users: none\n")
    return 0


def _no_code(typed: str) -> int:
    print(
        f"pairing approve: no open code {typed[:20]!r} (unknown, used or expired); "
        "ask them to write to the bot again for a fresh one",
        file=sys.stderr,
    )
    return 1


def _who(user_id: str, username: str | None) -> str:
    return f"{user_id} (@{username})" if username else user_id


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


def _left(expires_at: float) -> str:
    return f"{max(0, round((expires_at - time.time()) / 60))} min"


def _table(out: TextIO, title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    if not rows:
        out.write(f"{title}: none\n")
        return
    out.write(f"{title}:\n")
    every = [header, *rows]
    widths = [max(len(r[i]) for r in every) for i in range(len(header))]
    for row in every:
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        out.write(f"  {line}\n")
