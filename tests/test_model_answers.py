"""What a model server answers, checked at the provider boundary (issue 11, Models).

Garbage becomes ``InvalidResponse`` (fails over), unusable token usage counts as unknown and
keeps the answer, a cut-off answer is marked ``truncated``, a stream without its terminator
is an error, and a chain is tried to its end.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.config.schema import ChainSpec, ModelEntry
from bot.errors import AllModelsFailed, InvalidResponse, ProviderUnavailable
from bot.providers.anthropic import AnthropicProvider
from bot.providers.base import Provider
from bot.providers.cli import FLAVOURS
from bot.providers.dispatcher import ProviderDispatcher
from bot.providers.fallback import FallbackChain
from bot.providers.openai import OpenAIProvider
from bot.testing import (
    FakeLLM,
    Fault,
    GarbageUsage,
    Malformed,
    Reply,
    Truncated,
    Unterminated,
)
from bot.types import ChatMessage, ChatRequest, ChatResponse, TextDelta, ToolCallDelta, Usage

REQUEST = ChatRequest(system="s", messages=(ChatMessage("user", "hello"),))
# Each is JSON text written verbatim as every token count of an answer.
GARBAGE_USAGE = {
    "string": '"lots"',
    "object": '{"n": 1}',
    "list": "[1, 2]",
    "overflow": "1e999",
    "nan": "NaN",
    "fraction": "12.5",
    "negative": "-5",
    "boolean": "true",
    "huge int": "123456789012345678901234567890",
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


def openai(fake: FakeLLM, client: httpx.AsyncClient, name: str = "oa") -> OpenAIProvider:
    entry = ModelEntry(model_name=name, model=f"openai/{name}-id", api_base=fake.openai_base)
    return OpenAIProvider(entry, client)


def anthropic(fake: FakeLLM, client: httpx.AsyncClient) -> AnthropicProvider:
    entry = ModelEntry(
        model_name="an",
        model="anthropic/an-id",
        api_base=fake.anthropic_base,
        api_key="sk-ant-answers-0000",
    )
    return AnthropicProvider(entry, client)


async def collect(request: ChatRequest, pieces: list[str]) -> ChatRequest:
    async def sink(event: TextDelta | ToolCallDelta) -> None:
        if isinstance(event, TextDelta):
            pieces.append(event.text)

    return ChatRequest(system=request.system, messages=request.messages, stream_to=sink)


# -- usage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", GARBAGE_USAGE.values(), ids=GARBAGE_USAGE.keys())
@pytest.mark.parametrize("api", ["openai", "openai-stream", "anthropic"])
async def test_unusable_usage_counts_as_unknown_and_keeps_the_answer(
    fake_llm: FakeLLM, client: httpx.AsyncClient, api: str, value: str
) -> None:
    provider = anthropic(fake_llm, client) if api == "anthropic" else openai(fake_llm, client)
    fake_llm.set_default(None, GarbageUsage(value, "the answer"))
    request = await collect(REQUEST, []) if api == "openai-stream" else REQUEST
    response = await provider.chat(request)
    assert response.text == "the answer"
    assert response.usage == Usage(0, 0)


async def test_integral_float_usage_is_a_count(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    fake_llm.set_default(None, GarbageUsage("12.0", "ok"))
    response = await openai(fake_llm, client).chat(REQUEST)
    assert response.usage == Usage(12, 12)


# -- garbage answers -------------------------------------------------------------------------

OPENAI_GARBAGE = {
    "tool_calls not a list": {"content": "hi", "tool_calls": "oops"},
    "tool call not an object": {"content": "hi", "tool_calls": [5]},
    "tool call without name": {
        "content": "hi",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"arguments": "{}"}}],
    },
    "tool call name not text": {
        "content": None,
        "tool_calls": [{"id": "c1", "function": {"name": ["x"], "arguments": "{}"}}],
    },
    "content not text": {
        "content": {"text": "hi"},
        "tool_calls": [{"id": "c1", "function": {"name": "now", "arguments": "{}"}}],
    },
    "content part text not text": {"content": [{"type": "text", "text": 5}]},
}


def completion(message: dict[str, Any], **choice: Any) -> str:
    body = {"choices": [{"index": 0, "message": message, **choice}], "usage": None}
    return json.dumps(body)


@pytest.mark.parametrize("message", OPENAI_GARBAGE.values(), ids=OPENAI_GARBAGE.keys())
async def test_openai_garbage_is_invalid_response(
    fake_llm: FakeLLM, client: httpx.AsyncClient, message: dict[str, Any]
) -> None:
    fake_llm.script(None, Malformed(completion({"role": "assistant", **message})))
    with pytest.raises(InvalidResponse):
        await openai(fake_llm, client).chat(REQUEST)


@pytest.mark.parametrize(
    "body",
    [
        completion({"content": "hi"}, finish_reason=7),
        "[" * 100_000 + "]" * 100_000,  # nested past the JSON decoder's recursion limit
    ],
    ids=["finish_reason not text", "deep nesting"],
)
async def test_openai_unreadable_answers_are_invalid_response(
    fake_llm: FakeLLM, client: httpx.AsyncClient, body: str
) -> None:
    fake_llm.script(None, Malformed(body))
    with pytest.raises(InvalidResponse):
        await openai(fake_llm, client).chat(REQUEST)


async def test_odd_but_usable_openai_answers_are_accepted(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    call = {"id": 7, "function": {"name": "now", "arguments": [1]}}
    fake_llm.script(
        None,
        Malformed(completion({"content": [{"type": "text", "text": "a"}, {"type": "image"}]})),
        Malformed(completion({"content": None, "tool_calls": [call]})),
    )
    first = await openai(fake_llm, client).chat(REQUEST)
    assert first.text == "a"
    assert first.truncated is False  # finish_reason absent: some local servers omit it
    second = await openai(fake_llm, client).chat(REQUEST)
    assert second.tool_calls[0].id == "7"
    assert second.tool_calls[0].arguments_error == "arguments are not a JSON object"


STREAM_GARBAGE = {
    "index not a number": {"tool_calls": [{"index": None, "function": {"name": "now"}}]},
    "index a string": {"tool_calls": [{"index": "first", "function": {"name": "now"}}]},
    "content not text": {"content": 5},
    "arguments not text": {
        "tool_calls": [{"index": 0, "id": "c", "function": {"name": "now", "arguments": 3}}]
    },
}


@pytest.mark.parametrize("delta", STREAM_GARBAGE.values(), ids=STREAM_GARBAGE.keys())
async def test_openai_stream_garbage_is_invalid_response(
    fake_llm: FakeLLM, client: httpx.AsyncClient, delta: dict[str, Any]
) -> None:
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": "stop"}]}
    body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
    fake_llm.script(None, Malformed(body, content_type="text/event-stream"))
    with pytest.raises(InvalidResponse):
        await openai(fake_llm, client).chat(await collect(REQUEST, []))


ANTHROPIC_GARBAGE = {
    "text not text": [{"type": "text", "text": "hi"}, {"type": "text", "text": 5}],
    "block not an object": [{"type": "text", "text": "hi"}, "block"],
    "tool_use without name": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t"}],
    "tool_use id not text": [{"type": "tool_use", "id": {}, "name": "now", "input": {}}],
}


@pytest.mark.parametrize("content", ANTHROPIC_GARBAGE.values(), ids=ANTHROPIC_GARBAGE.keys())
async def test_anthropic_garbage_is_invalid_response(
    fake_llm: FakeLLM, client: httpx.AsyncClient, content: list[Any]
) -> None:
    body = {"type": "message", "role": "assistant", "content": content, "stop_reason": "end_turn"}
    fake_llm.script(None, Malformed(json.dumps(body)))
    with pytest.raises(InvalidResponse):
        await anthropic(fake_llm, client).chat(REQUEST)


async def test_anthropic_stop_reason_not_text_is_invalid_response(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    body = {"content": [{"type": "text", "text": "hi"}], "stop_reason": ["max_tokens"]}
    fake_llm.script(None, Malformed(json.dumps(body)))
    with pytest.raises(InvalidResponse):
        await anthropic(fake_llm, client).chat(REQUEST)


def test_cli_output_is_validated() -> None:
    claude = FLAVOURS["claude-cli"].parse
    huge = 10**30
    output = claude(json.dumps({"result": "hi", "usage": {"input_tokens": huge}}))
    assert output.usage == Usage(0, 0)
    with pytest.raises(ValueError, match="not text"):
        claude(json.dumps({"result": {"text": "hi"}}))
    codex = FLAVOURS["codex-cli"].parse
    event = {"type": "item.completed", "item": {"type": "agent_message", "text": ["hi"]}}
    with pytest.raises(ValueError, match="not text"):
        codex(json.dumps(event))
    gemini = FLAVOURS["gemini-cli"].parse
    stats = {"models": {"g": {"tokens": {"prompt": True, "candidates": 3}}}}
    assert gemini(json.dumps({"response": "hi", "stats": stats})).usage == Usage(0, 3)


# -- truncation and cut streams --------------------------------------------------------------


@pytest.mark.parametrize("api", ["openai", "openai-stream", "anthropic"])
async def test_answers_cut_at_the_token_limit_are_marked(
    fake_llm: FakeLLM, client: httpx.AsyncClient, api: str
) -> None:
    provider = anthropic(fake_llm, client) if api == "anthropic" else openai(fake_llm, client)
    fake_llm.script(None, Truncated("The three reasons are: first"), Reply("Complete."))
    request = await collect(REQUEST, []) if api == "openai-stream" else REQUEST
    cut = await provider.chat(request)
    assert cut.text == "The three reasons are: first"
    assert cut.truncated is True
    assert (await provider.chat(request)).truncated is False


async def test_stream_without_done_is_an_error(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    fake_llm.script(None, Unterminated("half an answer"))
    with pytest.raises(ProviderUnavailable, match=r"without \[DONE\]"):
        await openai(fake_llm, client).chat(await collect(REQUEST, []))


def chain_of(fake: FakeLLM, *names: str) -> tuple[ProviderDispatcher, FallbackChain]:
    entries = [
        ModelEntry(model_name=n, model=f"openai/{n}-id", api_base=fake.openai_base) for n in names
    ]
    dispatcher = ProviderDispatcher(entries)
    return dispatcher, FallbackChain(dispatcher)


async def test_cut_stream_fails_over_when_nothing_reached_the_user(fake_llm: FakeLLM) -> None:
    dispatcher, chain = chain_of(fake_llm, "a", "b")
    # A whole tool call (nothing for the user to see), then the connection drops before [DONE].
    call = {"index": 0, "id": "c1", "function": {"name": "now", "arguments": "{}"}}
    chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
    cut = Malformed(f"data: {json.dumps(chunk)}\n\n", content_type="text/event-stream")
    fake_llm.script("a-id", cut)
    pieces: list[str] = []
    response = await chain.chat(
        ChainSpec(primary="a", fallbacks=("b",)), await collect(REQUEST, pieces)
    )
    assert response.model_name == "b"
    assert response.tool_calls == ()
    assert "".join(pieces) == response.text
    await dispatcher.aclose()


async def test_cut_stream_after_text_reached_the_user_is_not_stitched(fake_llm: FakeLLM) -> None:
    dispatcher, chain = chain_of(fake_llm, "a", "b")
    fake_llm.script("a-id", Unterminated("the first half"))
    with pytest.raises(AllModelsFailed):
        await chain.chat(ChainSpec(primary="a", fallbacks=("b",)), await collect(REQUEST, []))
    assert fake_llm.requests_for("b-id") == []
    await dispatcher.aclose()


# -- chains ----------------------------------------------------------------------------------


async def test_the_whole_chain_is_tried_however_long(fake_llm: FakeLLM) -> None:
    names = [f"m{i}" for i in range(7)]
    dispatcher, chain = chain_of(fake_llm, *names)
    for name in names[:-1]:
        fake_llm.set_default(f"{name}-id", Fault(500))
    response = await chain.chat(ChainSpec(primary="m0", fallbacks=tuple(names[1:])), REQUEST)
    assert response.model_name == "m6"
    assert [r.model for r in fake_llm.requests] == [f"{n}-id" for n in names]
    await dispatcher.aclose()


async def test_an_entry_listed_twice_is_tried_once(fake_llm: FakeLLM) -> None:
    dispatcher, chain = chain_of(fake_llm, "a", "b")
    fake_llm.set_default(None, Fault(500))
    with pytest.raises(AllModelsFailed):
        await chain.chat(ChainSpec(primary="a", fallbacks=("b", "a")), REQUEST)
    assert [r.model for r in fake_llm.requests] == ["a-id", "b-id"]
    await dispatcher.aclose()


class Buggy(Provider):
    async def chat(self, request: ChatRequest) -> ChatResponse:
        raise KeyError("a provider bug")


async def test_a_provider_bug_fails_over_instead_of_crashing(
    fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    def factory(entry: ModelEntry, client: httpx.AsyncClient) -> Provider:
        return Buggy() if entry.model_name == "a" else OpenAIProvider(entry, client)

    entries = [
        ModelEntry(model_name=n, model=f"openai/{n}-id", api_base=fake_llm.openai_base)
        for n in ("a", "b")
    ]
    dispatcher = ProviderDispatcher(entries, factory=factory)
    chain = FallbackChain(dispatcher)
    response = await chain.chat(ChainSpec(primary="a", fallbacks=("b",)), REQUEST)
    assert response.model_name == "b"
    assert "KeyError" in caplog.text
    await dispatcher.aclose()
