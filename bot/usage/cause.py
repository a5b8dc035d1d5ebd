"""Who a model call is charged to: the persona, user and chat whose turn caused it.

The cause travels in a ``ContextVar`` rather than as a parameter through every layer: the
turn sets it once, and everything the turn starts inherits it without being told —
tool rounds, ``delegate`` (same task), ``spawn`` (asyncio copies the context into the new
task when it is created). Work that outlives the turn on a task of its own (the compaction
worker, a spawned task resumed after a restart) captures the cause when it is scheduled and
sets it again when it runs. The one seam that records usage (``FallbackChain``) reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

# What a call was for. Transcription and vision calls, once they exist, use their own.
TURN = "turn"  # the first answer to a person's message
TOOL = "tool"  # a follow-up call after a round of tool results
SUBAGENT = "subagent"  # spawn / delegate, on the target agent's chain
COMPACTION = "compaction"  # background summary on roles.compaction
TRANSCRIPTION = "transcription"
VISION = "vision"
PURPOSES = (TURN, TOOL, SUBAGENT, COMPACTION, TRANSCRIPTION, VISION)


@dataclass(frozen=True)
class CallCause:
    """Frozen, so a background job can keep it without the turn changing it later."""

    agent_id: str
    user_id: str
    channel: str
    chat_id: str
    purpose: str = TURN


# Calls no turn caused (none today but a misuse); recorded, matched only by "*" rules.
NOBODY = CallCause("", "", "", "")

_current: ContextVar[CallCause | None] = ContextVar("persona_bridge_call_cause", default=None)


def current_cause() -> CallCause | None:
    return _current.get()


@contextlib.contextmanager
def charged_to(cause: CallCause | None) -> Iterator[None]:
    """Calls made inside are charged to ``cause`` (None: to nobody; they are still recorded)."""
    token = _current.set(cause)
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def for_purpose(purpose: str) -> Iterator[None]:
    """Calls made inside keep the current cause but count under ``purpose``."""
    cause = _current.get() or NOBODY
    with charged_to(dataclasses.replace(cause, purpose=purpose)):
        yield
