"""The streaming seam (issue 13): ``Provider.stream`` for OpenAI and Anthropic SSE, the
default for providers that cannot stream, closing a stream early, and the fakes' streaming."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.config.schema import ModelEntry
from bot.errors import InvalidResponse, ProviderUnavailable
from bot.providers.anthropic import AnthropicProvider
from bot.providers.base import Provider
from bot.providers.openai import OpenAIProvider
from bot.providers.sse import SseLines
from bot.streaming.pacing import BotPacer
from bot.streaming.partial import stable_markdown
from bot.testing import FakeLLM, Malformed, Streamed, ToolCall, Unterminated
from bot.types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)

REQUEST = ChatRequest(system="s", messages=(ChatMessage("user", "hello"),))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


def openai(fake: FakeLLM, client: httpx.AsyncClient) -> OpenAIProvider:
    entry = ModelEntry(model_name="oa", model="openai/oa-id", api_base=fake.openai_base)
    return OpenAIProvider(entry, client)


def anthropic(fake: FakeLLM, client: httpx.AsyncClient) -> AnthropicProvider:
    entry = ModelEntry(
        model_name="an", model="anthropic/an-id", api_base=fake.anthropic_base, api_key="sk-ant-x"
    )
    return AnthropicProvider(entry, client)


async def events_of(provider: Provider) -> list[StreamEvent]:
    return [event async for event in provider.stream(REQUEST)]


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_stream_yields_text_then_tool_call_deltas_then_the_whole_answer(
    fake_llm: FakeLLM, client: httpx.AsyncClient, api: str
) -> None:
    provider = openai(fake_llm, client) if api == "openai" else anthropic(fake_llm, client)
    fake_llm.script(None, ToolCall("weather", {"city": "Lisbon"}, text="Let me look that up."))
    events = await events_of(provider)
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(texts) > 1
    assert "".join(texts) == "Let me look that up."
    assert calls[0].name == "weather"
    assert json.loads("".join(c.arguments for c in calls)) == {"city": "Lisbon"}
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.response.text == "Let me look that up."
    [call] = done.response.tool_calls
    assert (call.name, call.arguments) == ("weather", {"city": "Lisbon"})
    assert done.response.usage.completion_tokens > 0
    assert done.response.usage.prompt_tokens > 0
    assert fake_llm.requests[0].stream is True


async def test_anthropic_stream_without_message_stop_is_an_error(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    fake_llm.script(None, Unterminated("half an answer"))
    with pytest.raises(ProviderUnavailable, match="without message_stop"):
        await events_of(anthropic(fake_llm, client))


async def test_anthropic_error_event_mid_stream_is_a_failover_error(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    body = (
        'event: message_start\ndata: {"type": "message_start", "message": {"usage": '
        '{"input_tokens": 3}}}\n\nevent: error\ndata: {"type": "error", "error": '
        '{"type": "overloaded_error", "message": "Overloaded (key sk-ant-x)"}}\n\n'
    )
    fake_llm.script(None, Malformed(body, content_type="text/event-stream"))
    with pytest.raises(ProviderUnavailable, match="Overloaded") as caught:
        await events_of(anthropic(fake_llm, client))
    assert "sk-ant-x" not in str(caught.value)  # the key a careless server echoes


async def test_anthropic_stream_garbage_is_invalid_response(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    body = 'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0}\n\n'
    fake_llm.script(None, Malformed(body, content_type="text/event-stream"))
    with pytest.raises(InvalidResponse, match="never started"):
        await events_of(anthropic(fake_llm, client))


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_closing_a_stream_early_closes_the_connection(
    fake_llm: FakeLLM, client: httpx.AsyncClient, api: str
) -> None:
    provider = openai(fake_llm, client) if api == "openai" else anthropic(fake_llm, client)
    fake_llm.script(None, Streamed(" ".join(["word"] * 200), seconds=10.0))
    stream = provider.stream(REQUEST)
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for event in stream:
            assert isinstance(event, TextDelta)
            break
    closed_at = asyncio.get_running_loop().time()
    [(_, at)] = await fake_llm.wait_for_disconnect(1, timeout=5)
    assert at - closed_at < 1.0


async def test_a_provider_that_cannot_stream_gives_the_whole_text_at_the_end() -> None:
    class Whole(Provider):
        async def chat(self, request: ChatRequest) -> ChatResponse:
            assert request.stream_to is None
            return ChatResponse(text="all at once", model_name="w")

    events = [event async for event in Whole().stream(REQUEST)]
    assert events == [
        TextDelta("all at once"),
        StreamDone(ChatResponse("all at once", model_name="w")),
    ]


async def test_the_fake_paces_a_stream_and_can_cut_it(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    text = " ".join(f"w{n}" for n in range(20))
    fake_llm.script(None, Streamed(text, seconds=1.0), Streamed(text, fail_after=12))
    loop = asyncio.get_running_loop()
    arrivals = []
    async for event in openai(fake_llm, client).stream(REQUEST):
        if isinstance(event, TextDelta):
            arrivals.append(loop.time())
    assert arrivals[-1] - arrivals[0] >= 0.8
    seen: list[str] = []

    async def read() -> None:
        async for event in openai(fake_llm, client).stream(REQUEST):
            if isinstance(event, TextDelta):
                seen.append(event.text)

    with pytest.raises(ProviderUnavailable):
        await read()
    assert 12 <= len("".join(seen)) < len(text)


# -- the pieces previews are made of -----------------------------------------------------------


@pytest.mark.parametrize(
    ("partial", "shown"),
    [
        ("so **bold", "so **bold"),
        ("so **", "so "),
        ("a [link](https://exa", "a "),
        ("code:\n```py\nx = 1\n``", "code:\n```py\nx = 1\n"),
        ("plain words ", "plain words "),
    ],
)
def test_half_written_markdown_holds_back_its_unfinished_end(partial: str, shown: str) -> None:
    assert stable_markdown(partial) == shown


async def test_the_pacer_keeps_slots_for_finals_and_counts_calls_until_they_end() -> None:
    now = [100.0]
    pacer = BotPacer(per_second=10, reserve=3, clock=lambda: now[0])
    assert sum(pacer.try_preview() for _ in range(20)) == 7  # 3 left for finals
    for _ in range(3):
        await asyncio.wait_for(pacer.final(), 0.1)  # finals take the reserve at once
    assert not pacer.try_preview()
    waiting = asyncio.ensure_future(pacer.final())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # all ten in flight: nothing frees by time alone
    now[0] += 5.0
    assert not waiting.done()
    pacer.release()  # one call ends: its slot stays counted for a second …
    await asyncio.sleep(0.05)
    assert not waiting.done()
    now[0] += 1.01  # … after which the waiting final gets it
    await asyncio.wait_for(waiting, 2.0)
    for _ in range(10):
        pacer.release()
    assert not pacer.try_preview()
    now[0] += 1.01
    assert pacer.try_preview()  # a second after the calls ended, their slots are free


def test_a_bots_pace_keeps_a_fifth_of_its_slots_for_finals_at_most_five() -> None:
    """``messages_per_second`` (per bot): 1 leaves previews that one slot, 1000 (paid
    broadcasts, or the benches' fakes) keeps the usual five for finals."""
    for per_second, previews in ((1, 1), (10, 8), (25, 20), (1000, 995)):
        pacer = BotPacer.at(per_second, clock=lambda: 0.0)
        assert pacer.per_second == per_second
        assert sum(pacer.try_preview() for _ in range(per_second + 5)) == previews


async def test_a_stream_splits_lines_only_where_sse_does(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    # A raw U+2028 is legal inside a JSON string; str.splitlines would cut the line there.
    chunk = {"choices": [{"delta": {"content": "one\u2028two é"}}]}
    body = f"data: {json.dumps(chunk, ensure_ascii=False)}\r\n\r\ndata: [DONE]\r\n\r\n"
    fake_llm.script(None, Malformed(body, content_type="text/event-stream"))
    events = await events_of(openai(fake_llm, client))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["one\u2028two é"]


def test_sse_lines_join_what_reads_cut() -> None:
    lines = SseLines()
    data = "data: é\r\n\r\ndata: x\rdata: y\n".encode()
    got = [line for n in range(len(data)) for line in lines.feed(data[n : n + 1])]
    assert got == ["data: é", "", "data: x", "data: y"]
    assert lines.feed(b"data: tail") == []
    assert lines.flush() == ["data: tail"]
