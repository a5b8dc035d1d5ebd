"""FallbackChain, CooldownBook and ProviderDispatcher against the fake LLM over real HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.agents.agent import Agent
from bot.commands import CommandHandler
from bot.config.schema import ChainSpec, ModelEntry
from bot.durations import wait_text
from bot.errors import (
    AllModelsFailed,
    ContextWindowExceeded,
    InvalidRequest,
    ProviderUnavailable,
)
from bot.providers.base import Provider
from bot.providers.cooldown import CooldownBook
from bot.providers.dispatcher import ProviderDispatcher
from bot.providers.fallback import FallbackChain, RoleChains
from bot.routing import Route
from bot.sessions.store import SqliteSessionStore
from bot.testing import EmptyChoices, FakeLLM, Fault, Hang, Malformed, Reply
from bot.types import ChatMessage, ChatRequest, ChatResponse, TextDelta, ToolCallDelta

REQUEST = ChatRequest(system="You are a test.", messages=(ChatMessage("user", "hello"),))


class Clock:
    """A hand-moved clock, so cooldown tests need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def entries(fake: FakeLLM, *names: str, timeout_s: float = 5.0) -> list[ModelEntry]:
    return [
        ModelEntry(
            model_name=name,
            model=f"openai/{name}-id",
            api_base=fake.openai_base,
            api_key="sk-test-fallback-123456",
            timeout_s=timeout_s,
        )
        for name in names
    ]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def chain(fake_llm: FakeLLM, clock: Clock) -> AsyncIterator[FallbackChain]:
    models = entries(fake_llm, "primary", "backup", "third", "shared")
    models.append(
        ModelEntry(
            model_name="slow", model="openai/slow-id", api_base=fake_llm.openai_base, timeout_s=0.3
        )
    )
    models.append(
        ModelEntry(
            model_name="refused",
            model="openai/refused-id",
            api_base=f"http://127.0.0.1:{closed_port()}/v1",
        )
    )
    dispatcher = ProviderDispatcher(models)
    yield FallbackChain(dispatcher, CooldownBook(clock))
    await dispatcher.aclose()


FAILOVER_CASES = {
    "500": Fault(500),
    "429 with Retry-After": Fault(429, retry_after=12),
    "401": Fault(401),
    "404 model not found": Fault(404, "The model does not exist"),
    "malformed JSON": Malformed(),
    "empty choices": EmptyChoices(),
}


@pytest.mark.parametrize("fault", FAILOVER_CASES.values(), ids=FAILOVER_CASES.keys())
async def test_failover_class_moves_to_next_candidate(
    chain: FallbackChain, fake_llm: FakeLLM, fault: object
) -> None:
    fake_llm.script("primary-id", fault)  # type: ignore[arg-type]
    response = await chain.chat(ChainSpec(primary="primary", fallbacks=("backup",)), REQUEST)
    assert response.model_name == "backup"
    assert response.text.startswith("[model=backup-id]")
    assert [r.model for r in fake_llm.requests] == ["primary-id", "backup-id"]


async def test_timeout_fails_over(chain: FallbackChain, fake_llm: FakeLLM) -> None:
    fake_llm.script("slow-id", Hang())
    response = await chain.chat(ChainSpec(primary="slow", fallbacks=("backup",)), REQUEST)
    assert response.model_name == "backup"


async def test_connection_refused_fails_over(chain: FallbackChain, fake_llm: FakeLLM) -> None:
    response = await chain.chat(ChainSpec(primary="refused", fallbacks=("backup",)), REQUEST)
    assert response.model_name == "backup"
    assert chain.cooldowns.remaining("refused") > 0


async def test_400_does_not_fail_over(chain: FallbackChain, fake_llm: FakeLLM) -> None:
    fake_llm.script("primary-id", Fault(400, "Invalid value for 'messages'"))
    with pytest.raises(InvalidRequest):
        await chain.chat(ChainSpec(primary="primary", fallbacks=("backup",)), REQUEST)
    assert [r.model for r in fake_llm.requests] == ["primary-id"]
    assert chain.cooldowns.remaining("primary") == 0


async def test_context_window_error_is_raised_for_compaction(
    chain: FallbackChain, fake_llm: FakeLLM
) -> None:
    fake_llm.script(
        "primary-id",
        Fault(
            400,
            "This model's maximum context length is 8192 tokens",
            code="context_length_exceeded",
        ),
    )
    with pytest.raises(ContextWindowExceeded):
        await chain.chat(ChainSpec(primary="primary", fallbacks=("backup",)), REQUEST)
    assert len(fake_llm.requests) == 1


async def test_cooled_entry_gets_no_request_until_cooldown_ends(
    chain: FallbackChain, fake_llm: FakeLLM, clock: Clock
) -> None:
    spec = ChainSpec(primary="primary", fallbacks=("backup",))
    fake_llm.script("primary-id", Fault(429, retry_after=40))
    assert (await chain.chat(spec, REQUEST)).model_name == "backup"
    assert chain.cooldowns.remaining("primary") == pytest.approx(40)
    for _ in range(3):
        assert (await chain.chat(spec, REQUEST)).model_name == "backup"
    assert len(fake_llm.requests_for("primary-id")) == 1  # skipped without a request
    clock.now += 41
    assert (await chain.chat(spec, REQUEST)).model_name == "primary"
    assert len(fake_llm.requests_for("primary-id")) == 2


async def test_cooldown_escalates_without_retry_after(
    chain: FallbackChain, fake_llm: FakeLLM, clock: Clock
) -> None:
    spec = ChainSpec(primary="primary", fallbacks=("backup",))
    seen = []
    for _ in range(4):
        fake_llm.script("primary-id", Fault(503))
        await chain.chat(spec, REQUEST)
        seen.append(round(chain.cooldowns.remaining("primary")))
        clock.now += 10_000
    assert seen == [30, 60, 300, 300]


async def test_two_agents_sharing_an_entry_share_its_cooldown(
    chain: FallbackChain, fake_llm: FakeLLM
) -> None:
    alice = ChainSpec(primary="shared", fallbacks=("primary",))
    bob = ChainSpec(primary="shared", fallbacks=("backup",))
    fake_llm.script("shared-id", Fault(500))
    assert (await chain.chat(alice, REQUEST)).model_name == "primary"
    assert (await chain.chat(bob, REQUEST)).model_name == "backup"
    assert len(fake_llm.requests_for("shared-id")) == 1


async def test_when_all_cool_the_soonest_is_tried_once(
    chain: FallbackChain, fake_llm: FakeLLM, clock: Clock
) -> None:
    spec = ChainSpec(primary="primary", fallbacks=("backup",))
    fake_llm.script("primary-id", Fault(429, retry_after=100))
    fake_llm.script("backup-id", Fault(429, retry_after=20))
    with pytest.raises(AllModelsFailed) as first:
        await chain.chat(spec, REQUEST)
    assert first.value.retry_in == pytest.approx(20)
    clock.now += 5  # both still cooling: backup (15 s left) comes back first
    response = await chain.chat(spec, REQUEST)
    assert response.model_name == "backup"
    assert [r.model for r in fake_llm.requests] == ["primary-id", "backup-id", "backup-id"]


async def test_all_fail_gives_one_short_sentence(chain: FallbackChain, fake_llm: FakeLLM) -> None:
    fake_llm.script("primary-id", Fault(429, retry_after=240))
    fake_llm.script("backup-id", Fault(429, retry_after=180))
    with pytest.raises(AllModelsFailed) as caught:
        await chain.chat(ChainSpec(primary="primary", fallbacks=("backup",)), REQUEST)
    error = caught.value
    assert [r.model_name for r in error.reasons] == ["primary", "backup"]
    assert error.retry_in == pytest.approx(180)
    assert error.user_message() == "All models are unavailable right now; try again in 3 min."
    assert "\n" not in error.user_message()
    assert "HTTP" not in error.user_message()
    assert "sk-test-fallback" not in str(error)


async def test_attempts_per_turn_are_bounded(fake_llm: FakeLLM, clock: Clock) -> None:
    names = [f"m{i}" for i in range(6)]
    dispatcher = ProviderDispatcher(entries(fake_llm, *names))
    chain = FallbackChain(dispatcher, CooldownBook(clock), max_attempts=3)
    fake_llm.set_default(None, Fault(500))
    with pytest.raises(AllModelsFailed):
        await chain.chat(ChainSpec(primary="m0", fallbacks=tuple(names[1:])), REQUEST)
    assert len(fake_llm.requests) == 3
    await dispatcher.aclose()


async def test_roles_use_their_own_chain(chain: FallbackChain, fake_llm: FakeLLM) -> None:
    roles = RoleChains({"compaction": ChainSpec(primary="third")}, chain)
    response = await roles.chat("compaction", REQUEST)
    assert response.model_name == "third"
    assert [r.model for r in fake_llm.requests] == ["third-id"]


async def test_streamed_text_reaches_the_sink(chain: FallbackChain, fake_llm: FakeLLM) -> None:
    fake_llm.script("primary-id", Reply("one two three four five six seven eight"))
    pieces: list[str] = []

    async def sink(event: TextDelta | ToolCallDelta) -> None:
        assert isinstance(event, TextDelta)
        pieces.append(event.text)

    request = ChatRequest(system="s", messages=(ChatMessage("user", "hi"),), stream_to=sink)
    response = await chain.chat(ChainSpec(primary="primary"), request)
    assert len(pieces) > 1
    assert "".join(pieces) == response.text == "one two three four five six seven eight"
    assert fake_llm.requests[0].stream is True


class HalfStream(Provider):
    """Streams one piece, then fails: what a dropped connection mid-answer looks like."""

    async def chat(self, request: ChatRequest) -> ChatResponse:
        assert request.stream_to is not None
        await request.stream_to(TextDelta("Hel"))
        raise ProviderUnavailable("connection reset mid-stream")


async def test_no_other_model_after_output_reached_the_user(
    fake_llm: FakeLLM, clock: Clock
) -> None:
    def factory(entry: ModelEntry, client: httpx.AsyncClient) -> Provider:
        from bot.providers.openai import OpenAIProvider

        return HalfStream() if entry.model_name == "primary" else OpenAIProvider(entry, client)

    dispatcher = ProviderDispatcher(entries(fake_llm, "primary", "backup"), factory=factory)
    chain = FallbackChain(dispatcher, CooldownBook(clock))
    shown: list[str] = []

    async def sink(event: TextDelta | ToolCallDelta) -> None:
        assert isinstance(event, TextDelta)
        shown.append(event.text)

    request = ChatRequest(system="s", messages=(ChatMessage("user", "hi"),), stream_to=sink)
    with pytest.raises(AllModelsFailed):
        await chain.chat(ChainSpec(primary="primary", fallbacks=("backup",)), request)
    assert shown == ["Hel"]
    assert fake_llm.requests == []  # backup was never asked
    await dispatcher.aclose()


async def test_concurrent_first_calls_create_one_provider_per_entry(fake_llm: FakeLLM) -> None:
    created: list[str] = []

    def factory(entry: ModelEntry, client: httpx.AsyncClient) -> Provider:
        from bot.providers.registry import provider_for

        created.append(entry.model_name)
        return provider_for(entry, client)

    dispatcher = ProviderDispatcher(entries(fake_llm, "a", "b"), factory=factory)
    chain = FallbackChain(dispatcher)
    await asyncio.gather(
        *(chain.chat(ChainSpec(primary=name), REQUEST) for name in ["a", "b"] * 25)
    )
    assert sorted(created) == ["a", "b"]
    assert dispatcher.created == 2
    assert len(fake_llm.requests) == 50
    await dispatcher.aclose()


async def test_413_is_treated_as_a_context_window_error(
    chain: FallbackChain, fake_llm: FakeLLM
) -> None:
    fake_llm.script("primary-id", Fault(413, "Request Entity Too Large"))
    with pytest.raises(ContextWindowExceeded):
        await chain.chat(ChainSpec(primary="primary", fallbacks=("backup",)), REQUEST)
    assert [r.model for r in fake_llm.requests] == ["primary-id"]


async def test_all_failed_sentence_and_status_say_the_same_wait(
    chain: FallbackChain, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    spec = ChainSpec(primary="primary", fallbacks=("backup",))
    fake_llm.script("primary-id", Fault(429, retry_after=27.4))
    fake_llm.script("backup-id", Fault(429, retry_after=90))
    with pytest.raises(AllModelsFailed) as caught:
        await chain.chat(spec, REQUEST)
    assert caught.value.user_message() == (
        "All models are unavailable right now; try again in 28 s."
    )
    agent = Agent("a", "A", "", spec, None, 3)
    async with SqliteSessionStore(tmp_path / "s.db") as store:
        status = await CommandHandler(store, chain.cooldowns).answer(
            "status", agent, Route("console", "local", None, "a")
        )
    assert "Models: primary (cooling, back in 28 s) → backup (cooling, back in 2 min)" in status


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "1 s"),
        (27.0, "27 s"),
        (59.1, "1 min"),
        (60, "1 min"),
        (61, "2 min"),
        (180, "3 min"),
        (3600, "1 h"),
        (5 * 3600 - 30, "5 h"),
        (47 * 3600 + 1, "48 h"),
        (48 * 3600, "2 days"),
    ],
)
def test_wait_text_rounds_up(seconds: float, text: str) -> None:
    assert wait_text(seconds) == text
