"""Usage as people read it: the ``/usage`` reply and the ``persona-bridge usage`` table."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from bot.sessions.usage import UsageStore, UsageTotal
from bot.usage.periods import period_at

_SINCE = re.compile(r"(\d+)\s*([mhdw])")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"2w"`` → seconds; ValueError with the fix otherwise."""
    match = _SINCE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"--since {text!r}: write a number and a unit, e.g. 7d, 12h, 30m, 2w")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def figures(total: UsageTotal) -> str:
    """``"1,234 tokens (1,000 in, 234 out), $0.0123"``; the cost only when something was priced."""
    text = f"{total.tokens:,} tokens ({total.prompt_tokens:,} in, {total.completion_tokens:,} out)"
    if total.priced_calls:
        text += f", ${total.cost_usd:.4f}"
    return text


def is_admin(admins: Sequence[str], user_id: str, username: str | None) -> bool:
    """Whether the sender is listed in top-level ``admins`` by id or @username."""
    names = {a.lower() for a in admins}
    return user_id in names or (username is not None and f"@{username.lower()}" in names)


async def usage_reply(
    store: UsageStore,
    agent_id: str,
    name: str,
    user_id: str,
    *,
    admin: bool,
    now: float,
    zone: ZoneInfo,
) -> str:
    """The sender's own usage with this persona today and this month; admins see totals too."""
    day, month = period_at("day", now, zone), period_at("month", now, zone)
    lines = [f"Your usage with {name}:"]
    for label, period in (("Today", day), ("This month", month)):
        [(_, total)] = await store.usage_summary(
            period.start, period.end, agent_id=agent_id, user_id=user_id
        )
        lines.append(f"{label}: {figures(total)}")
    if admin:
        for by, heading in (("agent", "persona"), ("model", "model entry")):
            groups = await store.usage_summary(month.start, month.end, by=(by,))
            lines.append("")
            lines.append(f"This month, everyone, per {heading}:")
            lines += [f"  {key[0] or '(none)'}: {figures(t)}" for key, t in groups] or ["  none"]
    return "\n".join(lines)


async def usage_table(store: UsageStore, since: float, by: Sequence[str], *, as_json: bool) -> str:
    """``persona-bridge usage``: one line (or JSON object) per group, largest first."""
    groups = await store.usage_summary(since, by=by)
    if as_json:
        return json.dumps(
            [
                {
                    **dict(zip(by, key, strict=True)),
                    "calls": t.calls,
                    "prompt_tokens": t.prompt_tokens,
                    "completion_tokens": t.completion_tokens,
                    "tokens": t.tokens,
                    "cost_usd": round(t.cost_usd, 6) if t.priced_calls else None,
                    "estimated_calls": t.estimated_calls,
                }
                for key, t in groups
                if t.calls
            ],
            indent=2,
        )
    header = [*by, "calls", "prompt", "completion", "tokens", "cost_usd", "estimated"]
    rows = [header]
    for key, t in groups:
        if not t.calls:
            continue
        cost = f"{t.cost_usd:.4f}" if t.priced_calls else "-"
        numbers = [t.calls, t.prompt_tokens, t.completion_tokens, t.tokens]
        rows.append([*(k or "-" for k in key), *(f"{n:,}" for n in numbers), cost,
                     str(t.estimated_calls)])  # fmt: skip
    if len(rows) == 1:
        return "no usage recorded in that time"
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = len(by)
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i < numeric else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )
