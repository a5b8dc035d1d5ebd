"""How long a person has to wait, written the same way wherever they read it.

The all-models-failed sentence and ``/status`` both say it; one function keeps them from
disagreeing ("a minute" in one place, "27s" in the other).
"""

from __future__ import annotations

import math


def wait_text(seconds: float) -> str:
    """``27 s`` under a minute, whole minutes above (``3 min``); rounded up, never ``0 s``."""
    whole = max(1, math.ceil(seconds))
    if whole < 60:
        return f"{whole} s"
    return f"{math.ceil(whole / 60)} min"
