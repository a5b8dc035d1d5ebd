"""The fake LLM server, exercised over real HTTP with plain httpx."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.testing.fake_llm import (
    EmptyChoices,
    FakeLLM,
    Fault,
    GarbageUsage,
    Hang,
    Malformed,
    RecordedRequest,
    Reply,
    ToolCall,
    Truncated,
    Unterminated,
)

OPENAI_KEY = "sk-openai-secret-123"
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-secret-456", "anthropic-version": "2023-06-01"}


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as fake:
        yield fake


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: a proxy configured in the environment must not intercept 127.0.0.1.
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        yield http


def openai_body(model: str, user: str, system: str | None = None, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": user})
    return {"model": model, "messages": messages, **extra}


def anthropic_body(model: str, user: str, system: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": 256, **extra}
    body["messages"] = [{"role": "user", "content": user}]
    if system is not None:
        body["system"] = system
    return body


async def chat(
    client: httpx.AsyncClient, llm: FakeLLM, body: dict[str, Any], **kwargs: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {OPENAI_KEY}"}
    url = f"{llm.openai_base}/chat/completions"
    return await client.post(url, json=body, headers=headers, **kwargs)


async def messages(
    client: httpx.AsyncClient, llm: FakeLLM, body: dict[str, Any], **kwargs: Any
) -> httpx.Response:
    url = f"{llm.anthropic_base}/v1/messages"
    return await client.post(url, json=body, headers=ANTHROPIC_HEADERS, **kwargs)


async def text_of(response: httpx.Response) -> str:
    """The answer text of either shape."""
    data = response.json()
    if "choices" in data:
        return str(data["choices"][0]["message"]["content"])
    return "".join(block["text"] for block in data["content"] if block["type"] == "text")


def sse_data(raw: str) -> list[str]:
    return [line.removeprefix("data: ") for line in raw.splitlines() if line.startswith("data: ")]


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


# -- echo, recording, usage -------------------------------------------------------------------


async def test_openai_echo_records_request(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    body = openai_body("m-open", "hello there", system="You are Ada.\nBe brief.")
    response = await chat(client, llm, body)

    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "m-open"
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "[model=m-open] [system=You are Ada.] hello there"
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]

    (seen,) = llm.requests
    assert seen.api == "openai"
    assert seen.path == "/v1/chat/completions"
    assert seen.body == body
    assert seen.system == "You are Ada.\nBe brief."
    assert seen.last_user_text == "hello there"
    assert seen.stream is False
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"


async def test_openai_usage_follows_the_estimate(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    response = await chat(client, llm, openai_body("m", "hello", system="You are Ada."))
    usage = response.json()["usage"]
    answer = await text_of(response)
    assert usage["prompt_tokens"] == len("You are Ada." + "hello") // 4 + 1
    assert usage["completion_tokens"] == len(answer) // 4 + 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_anthropic_echo_records_request(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    system = [{"type": "text", "text": "You are Bo."}, {"type": "text", "text": "Be kind."}]
    body = anthropic_body("claude-x", "hi", system=system)
    body["messages"] = [
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}],
        },
    ]
    response = await messages(client, llm, body)

    assert response.status_code == 200
    data = response.json()
    assert data["type"] == "message"
    assert data["role"] == "assistant"
    assert data["model"] == "claude-x"
    assert data["content"] == [
        {"type": "text", "text": "[model=claude-x] [system=You are Bo.] part one\ntwo"}
    ]
    assert data["stop_reason"] == "end_turn"
    assert data["usage"]["input_tokens"] > 0
    assert data["usage"]["output_tokens"] > 0

    (seen,) = llm.requests_for("claude-x")
    assert seen.api == "anthropic"
    assert seen.system == "You are Bo.\nBe kind."
    assert seen.headers["x-api-key"] == ANTHROPIC_HEADERS["x-api-key"]
    assert seen.headers["anthropic-version"] == "2023-06-01"


async def test_echo_without_system(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    response = await chat(client, llm, openai_body("m", "just this"))
    assert await text_of(response) == "[model=m] [system=] just this"


async def test_prefixed_paths_share_one_server(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    openrouter = f"{llm.base_url}/openrouter/api/v1/chat/completions"
    response = await client.post(openrouter, json=openai_body("a", "x"))
    assert await text_of(response) == "[model=a] [system=] x"
    proxy = f"{llm.base_url}/proxy/v1/messages"
    response = await client.post(proxy, json=anthropic_body("b", "y"), headers=ANTHROPIC_HEADERS)
    assert await text_of(response) == "[model=b] [system=] y"
    assert [(r.api, r.path) for r in llm.requests] == [
        ("openai", "/openrouter/api/v1/chat/completions"),
        ("anthropic", "/proxy/v1/messages"),
    ]


async def test_unknown_path_is_404(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    response = await client.post(f"{llm.base_url}/v1/completions", json={})
    assert response.status_code == 404
    assert "error" in response.json()
    assert llm.requests == []


async def test_echo_of_tool_results(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    body = openai_body("m", "weather?")
    body["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    assert await text_of(await chat(client, llm, body)) == "[model=m] tool-result: sunny"
    assert llm.requests[-1].last_user_text == "weather?"

    body = anthropic_body("c", "weather?")
    result = {"type": "tool_result", "tool_use_id": "toolu_1"}
    body["messages"] += [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}],
        },
        {"role": "user", "content": [{**result, "content": [{"type": "text", "text": "rainy"}]}]},
    ]
    assert await text_of(await messages(client, llm, body)) == "[model=c] tool-result: rainy"
    assert llm.requests[-1].last_user_text == "weather?"
    assert llm.requests[-1].tool_result == "rainy"


async def test_keys_are_not_logged(
    llm: FakeLLM, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await chat(client, llm, openai_body("m-logged", "x"))
    await messages(client, llm, anthropic_body("c-logged", "x"))
    assert "m-logged" in caplog.text  # the log is there...
    assert OPENAI_KEY not in caplog.text  # ...without the keys
    assert ANTHROPIC_HEADERS["x-api-key"] not in caplog.text


# -- scripting --------------------------------------------------------------------------------


async def test_queue_is_consumed_in_order_then_default(
    llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    llm.script("m", Reply("one"), Reply("two"))
    answers = [await text_of(await chat(client, llm, openai_body("m", "q"))) for _ in range(3)]
    assert answers == ["one", "two", "[model=m] [system=] q"]

    llm.set_default("m", Reply("fallback"))
    llm.set_default(None, Reply("any fallback"))
    assert await text_of(await chat(client, llm, openai_body("m", "q"))) == "fallback"
    assert await text_of(await chat(client, llm, openai_body("other", "q"))) == "any fallback"

    llm.reset()
    assert llm.requests == []
    assert await text_of(await chat(client, llm, openai_body("m", "q"))) == "[model=m] [system=] q"


async def test_model_queue_before_any_model_queue(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script(None, Reply("any-1"), Reply("any-2"))
    llm.script("a", Reply("a-1"))

    async def ask(model: str) -> str:
        return await text_of(await chat(client, llm, openai_body(model, "q")))

    assert [await ask("a"), await ask("a"), await ask("b"), await ask("b")] == [
        "a-1",
        "any-1",
        "any-2",
        "[model=b] [system=] q",
    ]
    assert [r.model for r in llm.requests] == ["a", "a", "b", "b"]
    assert len(llm.requests_for("a")) == 2


async def test_callable_behaviour(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    def shout_or_fail(request: RecordedRequest) -> Reply | Fault:
        if "fail" in request.last_user_text:
            return Fault(503)
        return Reply(request.last_user_text.upper())

    llm.set_default(None, shout_or_fail)
    assert await text_of(await chat(client, llm, openai_body("m", "hey"))) == "HEY"
    assert (await chat(client, llm, openai_body("m", "fail"))).status_code == 503
    assert await text_of(await messages(client, llm, anthropic_body("c", "yo"))) == "YO"


async def test_raising_callable_is_a_500_in_api_shape(
    llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    def broken(request: RecordedRequest) -> Reply:
        raise ValueError("oops")

    llm.script("c", broken)
    response = await messages(client, llm, anthropic_body("c", "x"))
    assert response.status_code == 500
    assert response.json()["type"] == "error"
    assert "oops" in response.json()["error"]["message"]


# -- tool calls -------------------------------------------------------------------------------


async def test_openai_tool_call(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script("m", ToolCall("get_weather", {"city": "Oslo"}, call_id="call_1"))
    llm.script("m", ToolCall("get_weather", '{"city": "Os', text="Let me check."))

    choice = (await chat(client, llm, openai_body("m", "q"))).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "call_1"
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert isinstance(call["function"]["arguments"], str)
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}

    choice = (await chat(client, llm, openai_body("m", "q"))).json()["choices"][0]
    assert choice["message"]["content"] == "Let me check."
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["arguments"] == '{"city": "Os'  # broken JSON, verbatim
    assert call["id"].startswith("call_")


async def test_anthropic_tool_call(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script("c", ToolCall("get_weather", {"city": "Oslo"}, text="Checking."))
    data = (await messages(client, llm, anthropic_body("c", "q"))).json()
    assert data["stop_reason"] == "tool_use"
    text, tool = data["content"]
    assert text == {"type": "text", "text": "Checking."}
    assert tool["type"] == "tool_use"
    assert tool["id"].startswith("toolu_")
    assert tool["name"] == "get_weather"
    assert tool["input"] == {"city": "Oslo"}


# -- streaming --------------------------------------------------------------------------------


async def test_openai_stream_reassembles_text(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script("m", Reply("The quick brown fox jumps."))
    body = openai_body("m", "q", stream=True, stream_options={"include_usage": True})
    response = await chat(client, llm, body)

    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_data(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    pieces = [d["content"] for d in deltas if d.get("content")]
    assert len(pieces) > 1
    assert "".join(pieces) == "The quick brown fox jumps."
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] == len("The quick brown fox jumps.") // 4 + 1
    assert llm.requests[0].stream is True


async def test_openai_stream_without_usage_option(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    response = await chat(client, llm, openai_body("m", "hello", stream=True))
    chunks = [json.loads(p) for p in sse_data(response.text)[:-1]]
    assert all("usage" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "[model=m] [system=] hello"


async def test_openai_stream_reassembles_tool_call(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    arguments = {"city": "Oslo", "days": 3, "units": "metric"}
    llm.script("m", ToolCall("forecast", arguments, call_id="call_9"))
    response = await chat(client, llm, openai_body("m", "q", stream=True))
    chunks = [json.loads(p) for p in sse_data(response.text)[:-1]]

    calls: dict[int, dict[str, str]] = {}
    fragments = 0
    for chunk in chunks:
        for delta in chunk["choices"][0]["delta"].get("tool_calls", []):
            call = calls.setdefault(delta["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.get("id", "")
            call["name"] += delta.get("function", {}).get("name", "")
            piece = delta.get("function", {}).get("arguments", "")
            call["arguments"] += piece
            fragments += bool(piece)
    assert fragments > 1
    assert list(calls) == [0]
    assert calls[0]["id"] == "call_9"
    assert calls[0]["name"] == "forecast"
    assert json.loads(calls[0]["arguments"]) == arguments
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_anthropic_stream_reassembles(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script("c", ToolCall("forecast", {"city": "Oslo", "days": 3}, text="Let me look."))
    response = await messages(client, llm, anthropic_body("c", "q", stream=True))
    events = sse_events(response.text)

    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    text = "".join(
        d["delta"]["text"] for n, d in events if d.get("delta", {}).get("type") == "text_delta"
    )
    assert text == "Let me look."
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use"]
    assert starts[1]["name"] == "forecast"
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if d.get("delta", {}).get("type") == "input_json_delta"
    )
    assert json.loads(partial) == {"city": "Oslo", "days": 3}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] > 0


# -- hostile answers --------------------------------------------------------------------------


async def test_garbage_usage_is_written_verbatim(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script(None, GarbageUsage("1e999"), GarbageUsage('"lots"', "fixed"))
    plain = await chat(client, llm, openai_body("m", "hi"))
    assert '"prompt_tokens": 1e999' in plain.text
    assert await text_of(plain) == "[model=m] [system=] hi"  # empty text: the echo
    anthropic = await messages(client, llm, anthropic_body("c", "hi"))
    assert anthropic.json()["usage"] == {"input_tokens": "lots", "output_tokens": "lots"}
    assert await text_of(anthropic) == "fixed"
    llm.script(None, GarbageUsage("-5", "x"))
    body = openai_body("m", "q", stream=True, stream_options={"include_usage": True})
    chunks = [json.loads(p) for p in sse_data((await chat(client, llm, body)).text)[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == -5


async def test_truncated_in_each_shape(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script(None, Truncated("cut"), Truncated("cut"), Truncated("cut"))
    plain = (await chat(client, llm, openai_body("m", "q"))).json()
    assert plain["choices"][0]["finish_reason"] == "length"
    assert (await messages(client, llm, anthropic_body("c", "q"))).json()["stop_reason"] == (
        "max_tokens"
    )
    streamed = await messages(client, llm, anthropic_body("c", "q", stream=True))
    assert sse_events(streamed.text)[-2][1]["delta"]["stop_reason"] == "max_tokens"


async def test_unterminated_streams_and_bodies(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script(None, *[Unterminated("half of it")] * 3)
    openai_stream = await chat(client, llm, openai_body("m", "q", stream=True))
    payloads = sse_data(openai_stream.text)
    assert "[DONE]" not in payloads
    pieces = [json.loads(p)["choices"][0]["delta"].get("content") or "" for p in payloads]
    assert "".join(pieces) == "half of it"
    anthropic = await messages(client, llm, anthropic_body("c", "q", stream=True))
    assert [n for n, _ in sse_events(anthropic.text)][-1] == "message_delta"
    plain = await chat(client, llm, openai_body("m", "q"))
    with pytest.raises(json.JSONDecodeError):
        plain.json()


# -- faults -----------------------------------------------------------------------------------


async def test_rate_limit_openai(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script("m", Fault(429, "slow down", retry_after=2))
    response = await chat(client, llm, openai_body("m", "q"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "2000"
    error = response.json()["error"]
    assert error["message"] == "slow down"
    assert error["code"] == "rate_limit_exceeded"
    assert {"message", "type", "code"} <= error.keys()


async def test_rate_limit_anthropic(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script("c", Fault(429, retry_after=0.5))
    response = await messages(client, llm, anthropic_body("c", "q"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "0.5"
    assert response.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "429 Too Many Requests"},
    }


@pytest.mark.parametrize(
    ("status", "openai_type", "anthropic_type"),
    [
        (500, "server_error", "api_error"),
        (401, "invalid_request_error", "authentication_error"),
        (404, "invalid_request_error", "not_found_error"),
        (529, "server_error", "overloaded_error"),
    ],
)
async def test_faults_in_each_shape(
    llm: FakeLLM, client: httpx.AsyncClient, status: int, openai_type: str, anthropic_type: str
) -> None:
    llm.script(None, Fault(status, "nope"), Fault(status, "nope"))
    response = await chat(client, llm, openai_body("m", "q"))
    assert response.status_code == status
    assert "retry-after" not in response.headers
    assert response.json()["error"]["type"] == openai_type
    assert response.json()["error"]["message"] == "nope"

    response = await messages(client, llm, anthropic_body("c", "q"))
    assert response.status_code == status
    assert response.json() == {
        "type": "error",
        "error": {"type": anthropic_type, "message": "nope"},
    }


async def test_context_length_faults(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    too_long = "This model's maximum context length is 8192 tokens."
    llm.script("m", Fault(400, too_long, code="context_length_exceeded"))
    error = (await chat(client, llm, openai_body("m", "q"))).json()["error"]
    assert error == {
        "message": too_long,
        "type": "invalid_request_error",
        "param": None,
        "code": "context_length_exceeded",
    }

    llm.script("c", Fault(400, "prompt is too long: 210000 tokens > 200000 maximum"))
    response = await messages(client, llm, anthropic_body("c", "q"))
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["message"].startswith("prompt is too long")


async def test_malformed_body_is_verbatim(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script(None, Malformed(), Malformed("<html>Bad gateway</html>", 502, "text/html"))
    response = await chat(client, llm, openai_body("m", "q"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.text == "{not json"
    with pytest.raises(json.JSONDecodeError):
        response.json()

    response = await messages(client, llm, anthropic_body("c", "q"))
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html"
    assert response.text == "<html>Bad gateway</html>"


async def test_empty_choices(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script(None, EmptyChoices(), EmptyChoices())
    data = (await chat(client, llm, openai_body("m", "q"))).json()
    assert data["choices"] == []
    assert data["object"] == "chat.completion"
    data = (await messages(client, llm, anthropic_body("c", "q"))).json()
    assert data["content"] == []
    assert data["type"] == "message"


async def test_anthropic_requires_version_and_key(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script("c", Reply("scripted"))
    url = f"{llm.anthropic_base}/v1/messages"
    body = anthropic_body("c", "q")

    response = await client.post(url, json=body, headers={"x-api-key": "k"})
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in response.json()["error"]["message"]

    response = await client.post(url, json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"

    # Rejected requests are recorded but do not consume the script.
    assert len(llm.requests) == 2
    assert await text_of(await messages(client, llm, body)) == "scripted"


async def test_openai_rejects_bad_bodies(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    url = f"{llm.openai_base}/chat/completions"
    response = await client.post(url, json={"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = await client.post(
        url, content=b"{oops", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "error" in response.json()


# -- hanging, waiting, lifecycle ----------------------------------------------------------------


async def test_hang_times_out_client_side(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script("slow", Hang())
    with pytest.raises(httpx.ReadTimeout):
        await chat(client, llm, openai_body("slow", "q"), timeout=0.5)
    assert len(llm.requests_for("slow")) == 1


async def test_hang_does_not_block_others_and_stop_is_prompt(client: httpx.AsyncClient) -> None:
    llm = FakeLLM()
    await llm.start()
    try:
        llm.script("slow", Hang())
        hung = asyncio.create_task(chat(client, llm, openai_body("slow", "q")))
        await llm.wait_for_requests(1, model="slow")

        response = await messages(client, llm, anthropic_body("fast", "q"))
        assert await text_of(response) == "[model=fast] [system=] q"
        assert not hung.done()

        started = time.monotonic()
        await llm.stop()
        assert time.monotonic() - started < 1.0
        # Released by stop(): the hung request ends with a 504 instead of waiting an hour.
        assert (await asyncio.wait_for(hung, 2.0)).status_code == 504
    finally:
        await llm.stop()


async def test_hang_with_seconds_ends_in_504(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    llm.script("c", Hang(0.05))
    response = await messages(client, llm, anthropic_body("c", "q"))
    assert response.status_code == 504
    assert response.json()["type"] == "error"


async def test_wait_for_requests(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    waiter = asyncio.create_task(llm.wait_for_requests(2, model="m"))
    await chat(client, llm, openai_body("other", "q"))
    await chat(client, llm, openai_body("m", "first"))
    assert not waiter.done()
    await chat(client, llm, openai_body("m", "second"))
    seen = await asyncio.wait_for(waiter, 5.0)
    assert [r.last_user_text for r in seen] == ["first", "second"]


async def test_wait_for_requests_times_out(llm: FakeLLM, client: httpx.AsyncClient) -> None:
    await chat(client, llm, openai_body("other", "q"))
    with pytest.raises(TimeoutError, match=r"saw 0 matching.*'other'"):
        await llm.wait_for_requests(1, model="m", timeout=0.1)


async def test_urls_and_lifecycle() -> None:
    llm = FakeLLM()
    with pytest.raises(RuntimeError):
        _ = llm.base_url
    async with llm:
        assert llm.base_url.startswith("http://127.0.0.1:")
        assert int(llm.base_url.rsplit(":", 1)[1]) > 0
        assert llm.openai_base == f"{llm.base_url}/v1"
        assert llm.anthropic_base == llm.base_url
    with pytest.raises(RuntimeError):
        _ = llm.base_url
