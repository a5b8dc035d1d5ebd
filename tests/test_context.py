"""build_context: budget, tool-call units, orphan results, the current turn, summaries."""

from __future__ import annotations

import random
from collections.abc import Sequence

from bot.sessions.context import (
    MESSAGE_OVERHEAD_TOKENS,
    SUMMARY_HEADING,
    ContextWindow,
    build_context,
    estimate_tokens,
    message_tokens,
    unsummarised_tokens,
)
from bot.sessions.store import StoredMessage, Summary
from bot.types import ChatMessage, ToolCall, Usage

PERSONA = "P" * 40  # 10 tokens + 4 overhead
TEXT = "x" * 40  # every plain message below costs 14 tokens


def stored(messages: Sequence[ChatMessage], first_id: int = 1) -> list[StoredMessage]:
    return [
        StoredMessage(first_id + i, 1, m, None, Usage(), float(i)) for i, m in enumerate(messages)
    ]


def user(text: str = TEXT) -> ChatMessage:
    return ChatMessage("user", text)


def assistant(text: str = TEXT) -> ChatMessage:
    return ChatMessage("assistant", text)


def calls(*ids: str) -> ChatMessage:
    return ChatMessage(
        "assistant", None, tool_calls=tuple(ToolCall(i, "lookup", {"q": i}) for i in ids)
    )


def result(call_id: str, text: str = TEXT) -> ChatMessage:
    return ChatMessage("tool", text, tool_call_id=call_id)


def window_tokens(window: ContextWindow) -> int:
    system = estimate_tokens(window.system) + MESSAGE_OVERHEAD_TOKENS
    return system + sum(message_tokens(m) for m in window.messages)


def test_estimate_tokens_rounds_up_and_counts_overhead_and_tool_calls() -> None:
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]
    assert message_tokens(user("abcd")) == 1 + MESSAGE_OVERHEAD_TOKENS
    assert message_tokens(ChatMessage("assistant", None)) == MESSAGE_OVERHEAD_TOKENS
    with_call = ChatMessage("assistant", None, tool_calls=(ToolCall("c", "abcd", {"k": 1}),))
    assert message_tokens(with_call) == MESSAGE_OVERHEAD_TOKENS + 1 + estimate_tokens('{"k": 1}')
    history = stored([user(), assistant(), user("abcd")])
    assert unsummarised_tokens(history) == 14 + 14 + 5


def test_the_window_counts_the_whole_history_for_compaction_whatever_it_keeps() -> None:
    history = stored([user(), calls("c1"), result("c1"), assistant(), user("abcd")])
    window = build_context(PERSONA, None, history, budget_tokens=40)
    assert window.dropped > 0
    assert window.history_tokens == unsummarised_tokens(history)


def test_budget_respected_and_oldest_dropped_first() -> None:
    history = stored([user(), assistant(), user(), assistant(), user(), assistant(), user()])
    window = build_context(PERSONA, None, history, budget_tokens=100)
    # system 14 + current turn 14 leave 72: five more messages (70) fit, but the window
    # must open at a user message, so it starts at the second user message.
    assert window.messages == tuple(m.message for m in history[2:])
    assert window.dropped == 2
    assert window.tokens == window_tokens(window) == 14 + 5 * 14
    assert window.tokens <= 100
    assert window.system == PERSONA


def test_everything_fits_with_a_large_budget() -> None:
    history = stored([user(), assistant(), user()])
    window = build_context(PERSONA, None, history, budget_tokens=10_000)
    assert window.messages == tuple(m.message for m in history)
    assert window.dropped == 0


def test_tool_call_is_kept_or_dropped_together_with_its_results() -> None:
    big = "y" * 400  # 104 tokens each
    history = stored(
        [
            user(),
            calls("c1", "c2"),
            result("c1", big),
            result("c2", big),
            assistant(),
            user(),
        ]
    )
    for budget in range(0, 400, 7):
        window = build_context(PERSONA, None, history, budget)
        kept = list(window.messages)
        has_call = calls("c1", "c2") in kept
        results = [m for m in kept if m.role == "tool"]
        assert (has_call and len(results) == 2) or (not has_call and not results), budget
        if has_call:
            i = kept.index(calls("c1", "c2"))
            assert kept[i + 1 : i + 3] == [result("c1", big), result("c2", big)]
        assert window.tokens <= max(budget, window_tokens(window))
    # A budget that would hold the last result alone but not the whole unit drops the unit.
    partial = build_context(PERSONA, None, history, budget_tokens=14 + 14 + 14 + 104 + 20)
    assert [m.role for m in partial.messages] == ["user"]
    assert partial.dropped == 5


def test_orphan_tool_result_never_opens_the_window() -> None:
    # The summary covered the call (id 2) but not its results: they arrive as orphans.
    history = stored([result("c1"), result("c2"), assistant(), user()], first_id=3)
    summary = Summary(1, 2, "earlier: a lookup was made", "cheap", 0.0)
    window = build_context(PERSONA, summary, history, budget_tokens=10_000)
    assert window.messages[0].role == "user"
    assert all(m.role != "tool" for m in window.messages)
    assert window.dropped == 3


def test_orphan_tool_result_in_the_middle_is_left_out() -> None:
    history = stored([user(), assistant(), result("ghost"), user()])
    window = build_context(PERSONA, None, history, budget_tokens=10_000)
    assert [m.role for m in window.messages] == ["user", "assistant", "user"]
    assert window.dropped == 1


def test_newest_user_message_is_kept_even_over_budget() -> None:
    huge = user("z" * 10_000)
    history = stored([user(), assistant(), huge])
    window = build_context(PERSONA, None, history, budget_tokens=50)
    assert window.messages == (huge,)
    assert window.dropped == 2
    assert window.tokens == window_tokens(window) > 50


def test_current_turn_with_tool_round_is_kept_whole_over_budget() -> None:
    history = stored([user(), assistant(), user(), calls("c1"), result("c1", "r" * 4000)])
    window = build_context(PERSONA, None, history, budget_tokens=30)
    assert [m.role for m in window.messages] == ["user", "assistant", "tool"]
    assert window.dropped == 2


def test_summary_goes_into_system_and_covered_messages_are_ignored() -> None:
    history = stored([user("old"), assistant("old"), user("new q")])
    summary = Summary(1, 2, "They talked about old things.", "cheap", 0.0)
    window = build_context(PERSONA, summary, history, budget_tokens=10_000)
    assert window.system == PERSONA + SUMMARY_HEADING + "They talked about old things."
    assert window.system.endswith("\n\nSummary of the earlier conversation:\n" + summary.text)
    assert window.messages == (user("new q"),)
    assert window.dropped == 0  # covered by the summary, not dropped
    assert window.tokens == window_tokens(window)


def test_summary_tokens_count_against_the_budget() -> None:
    history = stored([user(), assistant(), user()], first_id=10)
    long_summary = Summary(1, 9, "s" * 200, "cheap", 0.0)  # +60 tokens of system
    without = build_context(PERSONA, None, history, budget_tokens=60)
    with_summary = build_context(PERSONA, long_summary, history, budget_tokens=60)
    assert len(without.messages) == 3
    assert with_summary.messages == (user(),)
    assert with_summary.dropped == 2


def test_history_without_user_messages_keeps_the_newest_that_fit() -> None:
    history = stored([assistant("a" * 40), assistant("b" * 40), assistant("c" * 40)])
    window = build_context(PERSONA, None, history, budget_tokens=14 + 28)
    assert [m.content for m in window.messages] == ["b" * 40, "c" * 40]
    assert window.dropped == 1


def test_empty_history() -> None:
    window = build_context(PERSONA, None, [], budget_tokens=100)
    assert window.messages == ()
    assert window.dropped == 0
    assert window.tokens == 14


def random_history(rng: random.Random) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for turn in range(rng.randint(1, 8)):
        messages.append(user("u" * rng.randint(1, 200)))
        for round_ in range(rng.randint(0, 2)):
            ids = [f"t{turn}r{round_}c{k}" for k in range(rng.randint(1, 3))]
            messages.append(calls(*ids))
            messages += [result(i, "r" * rng.randint(1, 300)) for i in ids]
        if rng.random() < 0.8:
            messages.append(assistant("a" * rng.randint(1, 200)))
    return messages


def test_invariants_hold_for_random_conversations() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        messages = random_history(rng)
        history = stored(messages)
        budget = rng.randint(0, 600)
        window = build_context(PERSONA, None, history, budget)
        kept = list(window.messages)
        last_user = max(i for i, m in enumerate(messages) if m.role == "user")
        # The window is a suffix of the history (no orphans arise without a summary) ...
        assert kept == messages[len(messages) - len(kept) :]
        assert window.dropped == len(messages) - len(kept)
        # ... holding the whole current turn, opening with a user message.
        assert len(kept) >= len(messages) - last_user
        assert kept[0].role == "user"
        # Every tool result follows its call; every call has all its results.
        pending: set[str] = set()
        for m in kept:
            if m.role == "tool":
                assert m.tool_call_id in pending
            else:
                assert not pending
                pending = {c.id for c in m.tool_calls}
            if m.role == "tool":
                pending.discard(m.tool_call_id or "")
        assert not pending
        # Over budget only when nothing but the current turn is kept.
        assert window.tokens == window_tokens(window)
        if window.tokens > budget:
            assert len(kept) == len(messages) - last_user
