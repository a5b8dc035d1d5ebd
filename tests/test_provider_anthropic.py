"""AnthropicProvider over real HTTP against the fake LLM's Anthropic shape."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.config.schema import ModelEntry
from bot.errors import (
    ContextWindowExceeded,
    InvalidRequest,
    InvalidResponse,
    ModelNotFound,
    ProviderAuthError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from bot.providers.anthropic import AnthropicProvider
from bot.testing.fake_llm import EmptyChoices, FakeLLM, Fault, Hang, Malformed, Reply
from bot.testing.fake_llm import ToolCall as FakeToolCall
from bot.types import ChatMessage, ChatRequest, ToolCall, ToolSpec

API_KEY = "sk-ant-test-key-123456"
MODEL_ID = "claude-test"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: a proxy configured in the environment must not intercept 127.0.0.1.
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


def entry(api_base: str, timeout_s: float = 10.0) -> ModelEntry:
    return ModelEntry(
        model_name="claude",
        model=f"anthropic/{MODEL_ID}",
        api_key=API_KEY,  # type: ignore[arg-type]  # pydantic wraps it in SecretStr
        api_base=api_base,
        timeout_s=timeout_s,
    )


@pytest.fixture
def provider(fake_llm: FakeLLM, client: httpx.AsyncClient) -> AnthropicProvider:
    return AnthropicProvider(entry(fake_llm.anthropic_base), client)


def user(text: str) -> ChatRequest:
    return ChatRequest(system="You are Ada.\nBe brief.", messages=(ChatMessage("user", text),))


def tool_round(*results: tuple[str, str]) -> ChatRequest:
    """A user question, an assistant turn calling one tool per result, then the results."""
    calls = tuple(
        ToolCall(id=call_id, name="now", arguments={"tz": "UTC"}) for call_id, _ in results
    )
    return ChatRequest(
        system="sys",
        messages=(
            ChatMessage("user", "what time is it?"),
            ChatMessage("assistant", "let me check", tool_calls=calls),
            *(ChatMessage("tool", out, tool_call_id=call_id) for call_id, out in results),
        ),
    )


def tool_use(call_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": "now", "input": {"tz": "UTC"}}


# -- happy paths -------------------------------------------------------------------------------


async def test_echo_round_trip(fake_llm: FakeLLM, provider: AnthropicProvider) -> None:
    response = await provider.chat(user("hello there"))

    assert response.text == f"[model={MODEL_ID}] [system=You are Ada.] hello there"
    assert response.tool_calls == ()
    assert response.model_name == "claude"
    (seen,) = fake_llm.requests
    assert seen.path == "/v1/messages"
    assert seen.body["system"] == "You are Ada.\nBe brief."
    assert seen.body["model"] == MODEL_ID
    assert seen.body["max_tokens"] == 4096
    assert seen.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello there"}]}
    ]
    assert "tools" not in seen.body
    assert seen.headers["x-api-key"] == API_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["content-type"] == "application/json"
    assert "authorization" not in seen.headers


async def test_empty_system_omitted_and_max_tokens_passed(
    fake_llm: FakeLLM, provider: AnthropicProvider
) -> None:
    request = ChatRequest(system="", messages=(ChatMessage("user", "hi"),), max_tokens=77)
    await provider.chat(request)

    body = fake_llm.requests[-1].body
    assert "system" not in body
    assert body["max_tokens"] == 77


async def test_usage_mapped(fake_llm: FakeLLM, provider: AnthropicProvider) -> None:
    fake_llm.script(MODEL_ID, Reply("twelve chars"))
    response = await provider.chat(user("hello"))

    assert response.text == "twelve chars"
    # The fake estimates input as (system + message chars) // 4 + 1 and output as len // 4 + 1.
    expected_prompt = (len("You are Ada.\nBe brief.") + len("hello")) // 4 + 1
    assert response.usage.prompt_tokens == expected_prompt
    assert response.usage.completion_tokens == len("twelve chars") // 4 + 1


async def test_tool_spec_sent_as_input_schema(
    fake_llm: FakeLLM, provider: AnthropicProvider
) -> None:
    schema = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
    request = ChatRequest(
        system="s",
        messages=(ChatMessage("user", "time?"),),
        tools=(ToolSpec("now", "Current time.", schema), ToolSpec("ping", "No arguments.", {})),
    )
    await provider.chat(request)

    assert fake_llm.requests[-1].body["tools"] == [
        {"name": "now", "description": "Current time.", "input_schema": schema},
        {
            "name": "ping",
            "description": "No arguments.",
            "input_schema": {"type": "object", "properties": {}},
        },
    ]


async def test_scripted_tool_call_parsed(fake_llm: FakeLLM, provider: AnthropicProvider) -> None:
    fake_llm.script(
        MODEL_ID, FakeToolCall("now", {"tz": "UTC"}, text="checking", call_id="toolu_abc")
    )
    response = await provider.chat(user("time?"))

    assert response.text == "checking"
    assert response.tool_calls == (ToolCall(id="toolu_abc", name="now", arguments={"tz": "UTC"}),)
    assert response.tool_calls[0].arguments_error is None


async def test_tool_call_without_text(fake_llm: FakeLLM, provider: AnthropicProvider) -> None:
    fake_llm.script(MODEL_ID, FakeToolCall("now", {}))
    response = await provider.chat(user("time?"))

    assert response.text == ""
    (call,) = response.tool_calls
    assert call.name == "now"
    assert call.arguments == {}
    assert call.id.startswith("toolu_")


async def test_tool_input_not_an_object_sets_arguments_error(
    fake_llm: FakeLLM, provider: AnthropicProvider
) -> None:
    fake_llm.script(MODEL_ID, FakeToolCall("now", "{broken"))
    response = await provider.chat(user("time?"))

    (call,) = response.tool_calls
    assert call.arguments == {}
    assert call.arguments_error == "arguments are not a JSON object"


# -- message mapping ---------------------------------------------------------------------------


async def test_tool_round_trip_body(fake_llm: FakeLLM, provider: AnthropicProvider) -> None:
    response = await provider.chat(tool_round(("toolu_1", "12:00")))

    assert response.text == f"[model={MODEL_ID}] tool-result: 12:00"
    assert fake_llm.requests[-1].body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "what time is it?"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "let me check"}, tool_use("toolu_1")],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00"}],
        },
    ]


async def test_consecutive_tool_results_merged(
    fake_llm: FakeLLM, provider: AnthropicProvider
) -> None:
    await provider.chat(tool_round(("toolu_1", "12:00"), ("toolu_2", "13:00")))

    messages = fake_llm.requests[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"][1:] == [tool_use("toolu_1"), tool_use("toolu_2")]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "13:00"},
    ]
    assert fake_llm.requests[-1].tool_result == "13:00"


def test_assistant_tool_call_without_text_has_no_text_block(provider: AnthropicProvider) -> None:
    request = ChatRequest(
        system="",
        messages=(
            ChatMessage("user", "time?"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("toolu_1", "now", {"tz": "UTC"}),)),
            ChatMessage("tool", "", tool_call_id="toolu_1"),
        ),
    )
    messages = provider.body(request)["messages"]

    assert messages[1] == {"role": "assistant", "content": [tool_use("toolu_1")]}
    # An empty tool result omits content rather than sending an empty string.
    assert messages[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}],
    }


def test_same_role_messages_merged_and_tool_results_first(provider: AnthropicProvider) -> None:
    request = ChatRequest(
        system="",
        messages=(
            ChatMessage("user", "one"),
            ChatMessage("user", "two"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("toolu_1", "now", {"tz": "UTC"}),)),
            ChatMessage("user", "hurry up"),  # the user spoke before the tool result was added
            ChatMessage("tool", "12:00", tool_call_id="toolu_1"),
            ChatMessage("assistant", "It is noon."),
            ChatMessage("assistant", "   "),  # blank: dropped, never an empty text block
            ChatMessage("assistant", "Anything else?"),
        ),
    )
    messages = provider.body(request)["messages"]

    assert messages == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {"role": "assistant", "content": [tool_use("toolu_1")]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00"},
                {"type": "text", "text": "hurry up"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "It is noon."},
                {"type": "text", "text": "Anything else?"},
            ],
        },
    ]


def test_leading_assistant_kept_as_is(provider: AnthropicProvider) -> None:
    """Documented choice: nothing is prepended or dropped; merging still applies."""
    request = ChatRequest(
        system="",
        messages=(
            ChatMessage("assistant", "Hi, I am Ada."),
            ChatMessage("assistant", "How can I help?"),
            ChatMessage("user", "hello"),
        ),
    )
    messages = provider.body(request)["messages"]

    assert [m["role"] for m in messages] == ["assistant", "user"]
    assert len(messages[0]["content"]) == 2


def test_extras_not_sent(provider: AnthropicProvider) -> None:
    call = ToolCall("toolu_1", "now", {}, extras={"thought_signature": "sig"})
    request = ChatRequest(
        system="",
        messages=(
            ChatMessage("user", "q"),
            ChatMessage("assistant", "a", tool_calls=(call,), extras={"reasoning_content": "r"}),
        ),
    )
    body = provider.body(request)

    assert "thought_signature" not in str(body)
    assert "reasoning_content" not in str(body)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error_type", "status"),
    [
        (Fault(500), ProviderUnavailable, 500),
        (Fault(529, "Overloaded"), ProviderUnavailable, 529),
        (Fault(401, "invalid x-api-key"), ProviderAuthError, 401),
        (Fault(404, "model: claude-test"), ModelNotFound, 404),
        (
            Fault(400, "prompt is too long: 250000 tokens > 200000 maximum"),
            ContextWindowExceeded,
            400,
        ),
    ],
)
async def test_http_errors_classified(
    fake_llm: FakeLLM,
    provider: AnthropicProvider,
    fault: Fault,
    error_type: type[ProviderError],
    status: int,
) -> None:
    fake_llm.script(MODEL_ID, fault)
    with pytest.raises(error_type) as caught:
        await provider.chat(user("hi"))

    assert type(caught.value) is error_type
    assert caught.value.status == status
    assert caught.value.model_name == "claude"
    assert caught.value.failover is (error_type is not ContextWindowExceeded)


async def test_rate_limited_carries_retry_after(
    fake_llm: FakeLLM, provider: AnthropicProvider
) -> None:
    fake_llm.script(MODEL_ID, Fault(429, "slow down", retry_after=7))
    with pytest.raises(RateLimited) as caught:
        await provider.chat(user("hi"))

    assert caught.value.retry_after == pytest.approx(7.0)
    assert caught.value.failover is True
    assert "rate_limit_error" in str(caught.value)


async def test_other_400_is_invalid_request(fake_llm: FakeLLM, provider: AnthropicProvider) -> None:
    fake_llm.script(MODEL_ID, Fault(400, "messages.1.content: unexpected tool_use_id"))
    with pytest.raises(InvalidRequest) as caught:
        await provider.chat(user("hi"))

    assert type(caught.value) is InvalidRequest
    assert caught.value.failover is False
    assert "unexpected tool_use_id" in str(caught.value)


@pytest.mark.parametrize(
    "behaviour",
    [Malformed(), Malformed('["a list"]'), EmptyChoices(), Reply("   ")],
    ids=["not-json", "not-object", "empty-content", "blank-text"],
)
async def test_unusable_answers_are_invalid_response(
    fake_llm: FakeLLM, provider: AnthropicProvider, behaviour: Any
) -> None:
    fake_llm.script(MODEL_ID, behaviour)
    with pytest.raises(InvalidResponse) as caught:
        await provider.chat(user("hi"))

    assert caught.value.failover is True
    assert caught.value.model_name == "claude"


async def test_hang_times_out(fake_llm: FakeLLM, client: httpx.AsyncClient) -> None:
    fake_llm.script(MODEL_ID, Hang())
    provider = AnthropicProvider(entry(fake_llm.anthropic_base, timeout_s=0.5), client)
    with pytest.raises(ProviderUnavailable, match="timed out") as caught:
        await provider.chat(user("hi"))

    assert isinstance(caught.value.__cause__, httpx.TimeoutException)


async def test_connection_refused(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = AnthropicProvider(entry(f"http://127.0.0.1:{port}"), client)
    with pytest.raises(ProviderUnavailable, match="connection failed") as caught:
        await provider.chat(user("hi"))

    assert type(caught.value) is ProviderUnavailable


async def test_api_key_never_in_errors_or_logs(
    fake_llm: FakeLLM,
    provider: AnthropicProvider,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_llm.script(
        MODEL_ID,
        Fault(401, "invalid x-api-key"),
        Fault(429, retry_after=1),
        Fault(400, "bad request"),
        Fault(500),
        Malformed(),
    )
    errors: list[BaseException] = []
    for _ in range(5):
        with pytest.raises(ProviderError) as caught:
            await provider.chat(user("hi"))
        errors.append(caught.value)
    hung = AnthropicProvider(entry(fake_llm.anthropic_base, timeout_s=0.5), client)
    fake_llm.script(MODEL_ID, Hang())
    with pytest.raises(ProviderUnavailable) as timed_out:
        await hung.chat(user("hi"))
    errors.append(timed_out.value)

    assert len(fake_llm.requests) == 6
    assert fake_llm.requests[0].headers["x-api-key"] == API_KEY  # the key was really sent
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            assert API_KEY not in str(chain)
            assert API_KEY not in repr(chain)
            chain = chain.__cause__
    assert API_KEY not in caplog.text
