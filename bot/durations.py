"""How long a person has to wait, written the same way wherever they read it.

The all-models-failed sentence, ``/status`` and the budget sentence all say it; one function
keeps them from disagreeing ("a minute" in one place, "27s" in the other).
"""

from __future__ import annotations

import math


def wait_text(seconds: float) -> str:
    """``27 s`` under a minute, then whole minutes (``3 min``), hours (``5 h``) from an hour
    and days (``3 days``) from two days; rounded up, never ``0 s``."""
    whole = max(1, math.ceil(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{math.ceil(whole / 60)} min"
    if whole < 48 * 3600:
        return f"{math.ceil(whole / 3600)} h"
    return f"{math.ceil(whole / 86400)} days"
