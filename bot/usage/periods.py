"""Calendar periods for budgets: day, week (from Monday) and month, in one time zone.

Periods are computed from wall-clock dates in the configured zone, so "today" starts at
local midnight even across a daylight-saving change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.durations import wait_text

PERIODS = ("day", "week", "month")
_ADJECTIVE = {"day": "today's", "week": "this week's", "month": "this month's"}


@dataclass(frozen=True)
class Period:
    name: str
    start: float  # epoch seconds, inclusive
    end: float  # epoch seconds, exclusive: when it renews


def period_at(name: str, now: float, zone: ZoneInfo) -> Period:
    local = datetime.fromtimestamp(now, zone)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if name == "day":
        end = start + timedelta(days=1)
    elif name == "week":
        start -= timedelta(days=start.weekday())
        end = start + timedelta(days=7)
    elif name == "month":
        start = start.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown period {name!r}")
    # Re-anchor the wall-clock dates in the zone: a DST change in between moves the offset.
    start = start.replace(tzinfo=zone)
    end = end.replace(tzinfo=zone)
    return Period(name, start.timestamp(), end.timestamp())


def exhausted_sentence(period: str, persona: str, seconds_left: float) -> str:
    return (
        f"You have used {_ADJECTIVE[period]} allowance with {persona}; "
        f"it renews in {wait_text(seconds_left)}."
    )
