"""Values read from a model server's answer: nothing it sends is trusted until it passes here.

Every provider parses its wire format into ``ChatResponse`` through these helpers, so one
hostile or broken server can never crash a turn with a stray ``TypeError``/``OverflowError``:

- answer text, tool calls and stop reasons that are the wrong type make the answer
  unusable → ``InvalidResponse``, which fails over to the next model;
- token usage is bookkeeping, not the answer: a count that is not a plain non-negative
  integer (a string, an object, ``true``, ``-3``, ``1e999``, NaN, more than
  ``MAX_TOKEN_COUNT``) is read as *unknown* (0) and logged, and the answer is kept. Failing
  over would throw away a good answer and pay for a second one.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from bot.errors import InvalidResponse
from bot.types import Usage

log = logging.getLogger(__name__)

# No single call uses a billion tokens; a larger count is garbage (and SQLite's INTEGER
# column would overflow on the biggest ones).
MAX_TOKEN_COUNT = 1_000_000_000


def as_object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def token_count(value: Any) -> int | None:
    """A usable token count, or None. Integral floats (``12.0``) are accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    return None


def usage(wire: Any, prompt_keys: tuple[str, ...], completion_key: str, model_name: str) -> Usage:
    """Usage from a wire ``usage`` object; the prompt is the sum of ``prompt_keys``.

    Absent fields count 0 silently; present but unusable ones count 0 with a warning."""
    if wire is None:
        return Usage()
    fields = as_object(wire)
    bad = [] if isinstance(wire, dict) else ["usage"]

    def read(key: str) -> int:
        if key not in fields or fields[key] is None:
            return 0
        count = token_count(fields[key])
        if count is None:
            bad.append(key)
            return 0
        return count

    prompt = sum(read(key) for key in prompt_keys)
    completion = read(completion_key)
    if bad:
        log.warning(
            "model %s: unusable token usage (%s); counted as unknown", model_name, ", ".join(bad)
        )
    return Usage(prompt_tokens=min(prompt, MAX_TOKEN_COUNT), completion_tokens=completion)


def text_or_none(value: Any, what: str, model_name: str) -> str | None:
    """A string field that may be absent or null; anything else is ``InvalidResponse``."""
    if value is None or isinstance(value, str):
        return value
    raise InvalidResponse(f"{what} is {_kind(value)}, not text", model_name=model_name)


def stop_reason(value: Any, what: str, model_name: str) -> str | None:
    """``finish_reason``/``stop_reason``: absent or null is tolerated (some local servers
    omit it), anything but a string is garbage."""
    return text_or_none(value, what, model_name)


def _kind(value: Any) -> str:
    """A JSON type name for an error message; never the value (it could be huge)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else "null"
