"""OpenAI-compatible provider: wire bodies as the server received them, parsing, streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bot.config.schema import ModelEntry
from bot.providers.openai import OpenAIProvider
from bot.testing import FakeLLM, Reply, ToolCall
from bot.types import ChatMessage, ChatRequest, TextDelta, ToolCallDelta, ToolSpec
from bot.types import ToolCall as OurToolCall

WEATHER = ToolSpec(
    name="weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)

HISTORY = ChatRequest(
    system="You are terse.",
    messages=(
        ChatMessage("user", "Weather in Rome?"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(
                OurToolCall(
                    "call_1",
                    "weather",
                    {"city": "Rome"},
                    extras={"thought_signature": "sig-abc", "extra_content": {"google": 1}},
                ),
            ),
            extras={"reasoning_content": "I should look it up."},
        ),
        ChatMessage("tool", "Sunny, 24°C", tool_call_id="call_1"),
    ),
    tools=(WEATHER,),
)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def provider(fake: FakeLLM, client: httpx.AsyncClient, *, strict: bool) -> OpenAIProvider:
    entry = ModelEntry(
        model_name="local",
        model="openai/qwen-test",
        api_base=fake.openai_base,
        api_key="sk-local-key-0000000",
        strict_compat=strict,
    )
    return OpenAIProvider(entry, client)


async def test_default_body_keeps_provider_fields(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    await provider(fake_llm, client, strict=False).chat(HISTORY)
    body = fake_llm.requests[0].body
    assert body["model"] == "qwen-test"
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert body["messages"][2] == {
        "role": "assistant",
        "content": "",
        "reasoning_content": "I should look it up.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                "thought_signature": "sig-abc",
                "extra_content": {"google": 1},
            }
        ],
    }
    assert fake_llm.requests[0].headers["authorization"] == "Bearer sk-local-key-0000000"


async def test_strict_compat_body_field_by_field(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    await provider(fake_llm, client, strict=True).chat(HISTORY)
    messages = fake_llm.requests[0].body["messages"]
    assert messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Rome?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                }
            ],
        },
        {"role": "tool", "content": "Sunny, 24°C", "tool_call_id": "call_1"},
    ]
    assert fake_llm.requests[0].body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather for a city",
                "parameters": WEATHER.parameters,
            },
        }
    ]


async def test_tool_call_answer_is_parsed(fake_llm: FakeLLM, client: httpx.AsyncClient) -> None:
    fake_llm.script("qwen-test", ToolCall("weather", {"city": "Oslo"}, call_id="c9"))
    response = await provider(fake_llm, client, strict=False).chat(HISTORY)
    assert response.tool_calls == (OurToolCall("c9", "weather", {"city": "Oslo"}),)
    assert response.usage.prompt_tokens > 0
    assert response.usage.completion_tokens > 0


async def test_broken_tool_arguments_are_flagged_not_raised(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    fake_llm.script("qwen-test", ToolCall("weather", '{"city": "Os'))
    response = await provider(fake_llm, client, strict=False).chat(HISTORY)
    [call] = response.tool_calls
    assert call.arguments == {}
    assert call.arguments_error == "arguments are not a JSON object"


async def test_streamed_tool_call_is_reassembled(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    fake_llm.script(
        "qwen-test", ToolCall("weather", {"city": "Lisbon", "days": 3}, text="Checking.")
    )
    pieces: list[str] = []

    async def sink(event: TextDelta | ToolCallDelta) -> None:
        if isinstance(event, TextDelta):
            pieces.append(event.text)

    request = ChatRequest(system="s", messages=(ChatMessage("user", "hi"),), stream_to=sink)
    response = await provider(fake_llm, client, strict=False).chat(request)
    assert "".join(pieces) == response.text == "Checking."
    [call] = response.tool_calls
    assert (call.name, call.arguments) == ("weather", {"city": "Lisbon", "days": 3})
    assert response.usage.completion_tokens > 0
    assert fake_llm.requests[0].body["stream_options"] == {"include_usage": True}


async def test_streamed_plain_reply(fake_llm: FakeLLM, client: httpx.AsyncClient) -> None:
    fake_llm.script("qwen-test", Reply("alpha beta gamma delta"))
    seen: list[str] = []

    async def sink(event: TextDelta | ToolCallDelta) -> None:
        if isinstance(event, TextDelta):
            seen.append(event.text)

    request = ChatRequest(system="", messages=(ChatMessage("user", "x"),), stream_to=sink)
    response = await provider(fake_llm, client, strict=True).chat(request)
    assert response.text == "alpha beta gamma delta"
    assert len(seen) >= 2
    assert fake_llm.requests[0].body["messages"] == [{"role": "user", "content": "x"}]
