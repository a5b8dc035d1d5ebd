"""Bindings: the most specific match wins; among equals, the first in the file."""

from __future__ import annotations

from bot.config.schema import Binding, BindingMatch
from bot.routing import Route, Router


def bind(agent: str, channel: str, chat: str | None = None) -> Binding:
    return Binding(agent_id=agent, match=BindingMatch(channel=channel, chat_id=chat))


ROUTER = Router(
    [
        bind("bob", "telegram-bob"),
        bind("alice", "telegram-bob", "-100123"),
        bind("carol", "telegram-bob"),  # a tie with bob: the earlier binding wins
        bind("carol", "telegram-bob", "-100123"),  # a tie with alice: alice wins
        bind("alice", "telegram-alice"),
    ]
)


def test_chat_specific_binding_beats_channel_wide() -> None:
    assert ROUTER.route("telegram-bob", "-100123") == Route(
        "telegram-bob", "-100123", None, "alice"
    )


def test_channel_wide_binding_for_other_chats_first_wins() -> None:
    assert ROUTER.route("telegram-bob", "42") == Route("telegram-bob", "42", None, "bob")


def test_topic_travels_with_the_route() -> None:
    route = ROUTER.route("telegram-alice", "-5", "77")
    assert route == Route("telegram-alice", "-5", "77", "alice")


def test_unbound_channel_has_no_route() -> None:
    assert ROUTER.route("telegram-nobody", "1") is None
