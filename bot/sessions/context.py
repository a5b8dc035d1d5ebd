"""What the model sees for one turn: persona + latest summary + the newest messages that fit.

The store keeps everything; this module only chooses (and writes stored media as text).
Messages are chosen in *units*: an assistant message that carries tool calls travels with
the tool results answering it, because every provider rejects a tool call without its
result or a result without its call.
The window is cut at a unit boundary and starts at a user message, so it never opens with
an orphan tool result or a stray assistant reply (Anthropic refuses histories that do not
start with the user). The current turn — the newest user message and everything after it —
is always kept, even over budget: without it there is nothing to answer, and an over-long
prompt surfaces as ``ContextWindowExceeded``, which triggers compaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from bot.media.history import rendered
from bot.sessions.store import StoredMessage, Summary
from bot.types import ChatMessage

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
SUMMARY_HEADING = "\n\nSummary of the earlier conversation:\n"


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` by the chars/4 rule, rounded up.

    No tokenizer is shipped (each provider has its own); ~4 characters per token holds for
    English with the common BPE vocabularies. It underestimates CJK text and dense code,
    which is why ``context_window_tokens`` should sit well below the model's real window.
    Each message adds ``MESSAGE_OVERHEAD_TOKENS`` on top (see ``message_tokens``).
    """
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def message_tokens(message: ChatMessage) -> int:
    """Content + tool-call names and arguments + the per-message overhead (role, framing)."""
    total = MESSAGE_OVERHEAD_TOKENS + estimate_tokens(message.content or "")
    for call in message.tool_calls:
        arguments = json.dumps(call.arguments, ensure_ascii=False)
        total += estimate_tokens(call.name) + estimate_tokens(arguments)
    return total


def unsummarised_tokens(messages: Sequence[StoredMessage]) -> int:
    """Estimated size of ``messages`` (those after the latest summary): compaction's trigger."""
    return sum(message_tokens(rendered(m.message)) for m in messages)


@dataclass(frozen=True)
class ContextWindow:
    system: str
    messages: tuple[ChatMessage, ...]
    dropped: int  # candidate messages left out: too old to fit, or orphan tool results
    tokens: int  # estimated, system prompt included
    # Estimated size of every candidate (kept or not, orphans aside): compaction's trigger,
    # as ``unsummarised_tokens`` counts it, without a second pass over a long history.
    history_tokens: int = 0


def _units(messages: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """Group messages into units that are kept or dropped whole.

    A tool result joins the unit of the assistant tool-call message it follows (directly or
    after sibling results). A tool result with no such message before it — e.g. the summary
    boundary fell between a call and its result — is an orphan and is left out.
    """
    units: list[list[ChatMessage]] = []
    for message in messages:
        if message.role != "tool":
            units.append([message])
        elif units and units[-1][0].role == "assistant" and units[-1][0].tool_calls:
            units[-1].append(message)
    return units


def build_context(
    persona: str,
    summary: Summary | None,
    messages: Sequence[StoredMessage],
    budget_tokens: int,
) -> ContextWindow:
    """Choose the newest messages that fit ``budget_tokens`` with the system prompt.

    ``messages`` are a session's messages in ascending id order, normally those after the
    summary; any the summary already covers are ignored (and not counted as dropped).
    """
    system = persona if summary is None else f"{persona}{SUMMARY_HEADING}{summary.text}"
    system_tokens = MESSAGE_OVERHEAD_TOKENS + estimate_tokens(system)
    after = summary.covers_up_to if summary is not None else 0
    candidates = [m.message for m in messages if m.id > after]
    # Media show as text: older images as their description or a marker, voice as a
    # marked transcript; the newest user message is the current turn, whose images ride
    # as parts (bot.media). Nothing is downloaded here.
    current = len(candidates) - 1
    while current >= 0 and candidates[current].role != "user":
        current -= 1
    candidates = [rendered(m, live=i == current) for i, m in enumerate(candidates)]
    units = _units(candidates)
    cost = [sum(map(message_tokens, unit)) for unit in units]

    user_starts = [i for i, unit in enumerate(units) if unit[0].role == "user"]
    start = user_starts[-1] if user_starts else len(units)  # the current turn is kept
    remaining = budget_tokens - system_tokens - sum(cost[start:])
    while start > 0 and cost[start - 1] <= remaining:
        start -= 1
        remaining -= cost[start]
    if user_starts:  # open the window at a user message
        start = min(i for i in user_starts if i >= start)

    kept = tuple(m for unit in units[start:] for m in unit)
    tokens = system_tokens + sum(cost[start:])
    return ContextWindow(system, kept, len(candidates) - len(kept), tokens, sum(cost))
