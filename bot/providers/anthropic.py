"""Anthropic Messages API (``/v1/messages``) over httpx (protocol anthropic).

Our conversation model is OpenAI-shaped: tool calls ride on assistant messages and each tool
result is its own ``tool`` message. Anthropic wants content blocks instead, tool results inside
``user`` messages, and strict user/assistant alternation. :meth:`AnthropicProvider.body` does
that translation; :meth:`AnthropicProvider._parse` maps the answer back.

Message ``extras`` and tool-call ``extras`` are not sent: they hold other providers' fields
(reasoning_content, thought_signature) that Anthropic would reject. For the same reason the
response carries no ``extras``: they would travel to an OpenAI-compatible fallback verbatim.

``stream()`` uses the Messages SSE events (:mod:`bot.providers.anthropic_stream`); only
``message_stop`` completes a stream. Either way the answer is validated through
:mod:`bot.providers.wire_values`, and ``stop_reason: "max_tokens"`` marks it ``truncated``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bot.errors import InvalidResponse, ProviderUnavailable
from bot.providers import http_errors, wire_values
from bot.providers.anthropic_stream import AnthropicStreamAssembler
from bot.providers.base import drain
from bot.providers.http_base import HttpProvider
from bot.providers.sse import sse_batches
from bot.types import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    JSONObject,
    StreamDone,
    StreamEvent,
    ToolCall,
)

ANTHROPIC_VERSION = "2023-06-01"
# Anthropic requires max_tokens; a request that sets none gets this.
DEFAULT_MAX_TOKENS = 4096
# A tool without parameters still needs an object schema.
_EMPTY_SCHEMA: JSONObject = {"type": "object", "properties": {}}


class AnthropicProvider(HttpProvider):
    path = "/v1/messages"

    async def chat(self, request: ChatRequest) -> ChatResponse:
        # Anthropic's {"type": "error", "error": {"type", "message"}} is understood by
        # http_errors: 529 overloaded is >= 500, "prompt is too long" is a context marker.
        if request.stream_to is not None:
            return await drain(self.stream(request), request.stream_to, self._entry.model_name)
        return self._parse(await self._post_json(self.body(request)))

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        name = self._entry.model_name
        body = {**self.body(request), "stream": True}
        assembler = AnthropicStreamAssembler()
        headers = {**self._headers(), "accept": "text/event-stream"}
        try:
            async with self._client.stream(
                "POST", self._url, json=body, headers=headers, timeout=self._timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise http_errors.from_response(response, name)
                async for lines in sse_batches(response, lambda: assembler.done):
                    for line in lines:
                        try:
                            events = assembler.feed(line)
                        except ValueError as exc:
                            raise InvalidResponse(
                                f"unusable stream event ({exc})", model_name=name
                            ) from exc
                        if assembler.error is not None:
                            raise http_errors.stream_error(response, assembler.error, name)
                        for event in events:
                            yield event
        except httpx.HTTPError as exc:
            raise http_errors.from_transport_error(exc, name) from exc
        if not assembler.done:
            raise ProviderUnavailable("stream ended without message_stop", model_name=name)
        yield StreamDone(self._parse(assembler.message()))

    def body(self, request: ChatRequest) -> JSONObject:
        """The wire body; public so tests and ``models check`` can inspect it."""
        body: JSONObject = {
            "model": self._entry.model_id,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": wire_messages(request.messages),
        }
        if request.system:
            body["system"] = request.system
        if request.tools:
            body["tools"] = [
                {
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.parameters or _EMPTY_SCHEMA,
                }
                for t in request.tools
            ]
        return body

    def _headers(self) -> dict[str, str]:
        headers = {
            "accept": "application/json",
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        if self._entry.api_key is not None:
            headers["x-api-key"] = self._entry.api_key.get_secret_value()
        return headers

    def _parse(self, data: dict[str, Any]) -> ChatResponse:
        name = self._entry.model_name
        content = data.get("content")
        if not isinstance(content, list):
            raise InvalidResponse("answer has no content list", model_name=name)
        if not all(isinstance(b, dict) for b in content):
            raise InvalidResponse("a content block is not an object", model_name=name)
        texts = [b.get("text") for b in content if b.get("type") == "text"]
        if not all(isinstance(t, str) for t in texts):
            raise InvalidResponse("a text block's text is not text", model_name=name)
        # Text blocks are consecutive pieces of one answer (split e.g. around citations), so
        # they are joined without a separator. Thinking and other block kinds are skipped.
        text = "".join(t for t in texts if isinstance(t, str))
        calls = tuple(_tool_call(b, name) for b in content if b.get("type") == "tool_use")
        if not text.strip() and not calls:
            raise InvalidResponse("answer is empty", model_name=name)
        stop = wire_values.stop_reason(data.get("stop_reason"), "stop_reason", name)
        # input_tokens excludes cache reads/writes; add them so prompt_tokens means the whole
        # prompt, as it does for OpenAI-compatible providers.
        usage = wire_values.usage(
            data.get("usage"),
            ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"),
            "output_tokens",
            name,
        )
        return ChatResponse(
            text=text,
            tool_calls=calls,
            usage=usage,
            model_name=name,
            truncated=stop == "max_tokens",
        )


def wire_messages(messages: tuple[ChatMessage, ...]) -> list[JSONObject]:
    """Our messages as alternating Anthropic messages of content blocks.

    - assistant: an optional text block, then one ``tool_use`` block per tool call;
    - tool: a ``tool_result`` block in a ``user`` message;
    - consecutive messages of the same wire role are merged into one message, so several tool
      results answering one assistant turn become one user message, as Anthropic requires;
    - inside a user message ``tool_result`` blocks come before text (the API rejects text
      ahead of them), otherwise order is kept;
    - blank text blocks are dropped (the API rejects them) and a message left without blocks
      is dropped.

    A history that starts with an assistant message is sent as it is: we invent no user turn
    and drop no model output. Should the API refuse it, that is a 400 → ``InvalidRequest``;
    trimming history to start at a user turn is the session's job, not this mapping's.
    """
    merged: list[JSONObject] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if merged and merged[-1]["role"] == role:
            merged[-1]["content"].extend(blocks)
        else:
            merged.append({"role": role, "content": blocks})
    for wire in merged:
        if wire["role"] == "user":
            wire["content"].sort(key=lambda b: b["type"] != "tool_result")  # stable
    return merged


def _blocks(message: ChatMessage) -> list[JSONObject]:
    if message.role == "tool":
        result: JSONObject = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
        if message.content:  # content is optional; an empty string would be refused
            result["content"] = message.content
        return [result]
    blocks: list[JSONObject] = [
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": image.mime,
                "data": base64.b64encode(image.data).decode("ascii"),
            },
        }
        for image in message.images
    ]
    if message.content and message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    if message.role == "assistant":
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
            for c in message.tool_calls
        ]
    return blocks


def _tool_call(block: dict[str, Any], model_name: str) -> ToolCall:
    name = block.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidResponse("a tool_use block has no name", model_name=model_name)
    call_id = wire_values.text_or_none(block.get("id"), "a tool_use id", model_name)
    raw = block.get("input")
    arguments: JSONObject = raw if isinstance(raw, dict) else {}
    return ToolCall(
        id=call_id or f"toolu_{name}",
        name=name,
        arguments=arguments,
        arguments_error=None if isinstance(raw, dict) else "arguments are not a JSON object",
    )
