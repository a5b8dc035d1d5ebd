"""``persona-bridge usage``: the ledger as a table (or JSON) over a recent time span.

Imports only the standard library at module level: the CLI builds its parser before it
loads anything heavy.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config.loader import LoadedConfig

DEFAULT_BY = "agent,model"
GROUP_NAMES = "agent, user, model, purpose, channel, chat"


def register(usage: argparse.ArgumentParser) -> None:
    """The options of ``usage``; the CLI made the subcommand (with ``--config``)."""
    usage.add_argument("--since", default="30d", help="how far back: 7d, 12h, 30m, 2w (30d)")
    usage.add_argument(
        "--by",
        default=DEFAULT_BY,
        help=f"group by, comma-separated: {GROUP_NAMES} (default {DEFAULT_BY})",
    )
    usage.add_argument("--json", action="store_true", help="a JSON array instead of a table")


async def run(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from bot.sessions.select import database_url, store_for
    from bot.sessions.usage import GROUPS
    from bot.usage.report import parse_since, usage_table

    try:
        since = time.time() - parse_since(args.since)
    except ValueError as exc:
        print(f"usage: {exc}", file=sys.stderr)
        return 2
    by = [name.strip() for name in args.by.split(",") if name.strip()]
    unknown = [name for name in by if name not in GROUPS]
    if unknown:
        print(
            f"usage: --by {','.join(unknown)}: group by one of {', '.join(GROUPS)}",
            file=sys.stderr,
        )
        return 2
    if database_url(loaded) is None and not loaded.database.exists():
        print(f"{loaded.database}: no session database yet", file=sys.stderr)
        return 1
    async with store_for(loaded) as store:
        print(await usage_table(store, since, by, as_json=args.json))
    return 0
