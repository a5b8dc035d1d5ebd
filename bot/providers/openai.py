"""OpenAI-compatible ``/chat/completions`` over httpx (protocols openai, openrouter, ollama)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bot.errors import InvalidResponse, ProviderUnavailable
from bot.providers import http_errors, wire_values
from bot.providers.base import drain
from bot.providers.http_base import HttpProvider
from bot.providers.openai_stream import StreamAssembler
from bot.providers.sse import sse_batches
from bot.providers.wire_values import as_object
from bot.types import (
    AudioClip,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    JSONObject,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCall,
)

# Fields some servers add and expect back, but strict OpenAI-compatible servers reject.
NON_STANDARD_FIELDS = ("reasoning_content", "extra_content", "thought_signature")


class OpenAIProvider(HttpProvider):
    path = "/chat/completions"

    async def chat(self, request: ChatRequest) -> ChatResponse:
        if request.stream_to is None:
            return self._parse(await self._post_json(self.body(request)))
        return await drain(self.stream(request), request.stream_to, self._entry.model_name)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """``stream: true`` with usage in the last chunk; ends with ``StreamDone`` only after
        ``data: [DONE]``: a stream cut before it is a failure, whatever text arrived."""
        name = self._entry.model_name
        body = {**self.body(request), "stream": True, "stream_options": {"include_usage": True}}
        assembler = StreamAssembler()
        try:
            async with self._client.stream(
                "POST", self._url, json=body, headers=self._headers(), timeout=self._timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise http_errors.from_response(response, name)
                if "text/event-stream" not in response.headers.get("content-type", ""):
                    # Some servers ignore "stream": true and answer in one piece.
                    await response.aread()
                    whole = self._parse(http_errors.parse_json(response, name))
                    if whole.text:
                        yield TextDelta(whole.text)
                    yield StreamDone(whole)
                    return
                async for lines in sse_batches(response, lambda: assembler.done):
                    for line in lines:
                        try:
                            events = assembler.feed(line)
                        except ValueError as exc:
                            raise InvalidResponse(
                                f"unusable stream chunk ({exc})", model_name=name
                            ) from exc
                        for event in events:
                            yield event
        except httpx.HTTPError as exc:
            raise http_errors.from_transport_error(exc, name) from exc
        if not assembler.done:
            # Cut off (proxy timeout, dropped connection): what arrived may be any prefix.
            raise ProviderUnavailable("stream ended without [DONE]", model_name=name)
        if assembler.chunks == 0:
            raise InvalidResponse("stream carried no chunks", model_name=name)
        choice = {"message": assembler.message(), "finish_reason": assembler.finish_reason}
        yield StreamDone(self._parse({"choices": [choice], "usage": assembler.usage}))

    async def transcribe(self, audio: AudioClip) -> str:
        """``POST {api_base}/audio/transcriptions`` (multipart: the file as sent, the model
        id); OpenAI, Groq and local whisper servers all answer ``{"text": ...}``."""
        name = self._entry.model_name
        url = f"{self._entry.base_url}/audio/transcriptions"
        files = {"file": (audio.file_name, audio.data, audio.mime)}
        try:
            response = await self._client.post(
                url,
                data={"model": self._entry.model_id, "response_format": "json"},
                files=files,
                headers=self._headers(),
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise http_errors.from_transport_error(exc, name) from exc
        if response.status_code != 200:
            raise http_errors.from_response(response, name)
        text = http_errors.parse_json(response, name).get("text")
        if not isinstance(text, str):
            raise InvalidResponse("transcription answer has no text", model_name=name)
        return text.strip()

    def body(self, request: ChatRequest) -> JSONObject:
        """The wire body; public so tests and ``models check`` can inspect it."""
        messages: list[JSONObject] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages += [self._wire_message(m) for m in request.messages]
        body: JSONObject = {"model": self._entry.model_id, "messages": messages}
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        return body

    def _wire_message(self, message: ChatMessage) -> JSONObject:
        if not (message.tool_calls or message.images or message.extras) and (
            message.tool_call_id is None
        ):  # most of a long history: plain text
            return {"role": message.role, "content": message.content or ""}
        strict = self._entry.strict_compat
        wire: JSONObject = {"role": message.role}
        if message.tool_calls:
            if message.content or not strict:
                wire["content"] = message.content or ""
            wire["tool_calls"] = [self._wire_tool_call(c) for c in message.tool_calls]
        elif message.images:
            # A photo without a caption has no text: an empty text part is refused by some.
            parts: list[JSONObject] = (
                [{"type": "text", "text": message.content}] if message.content else []
            )
            parts += [
                {"type": "image_url", "image_url": {"url": _data_url(i.mime, i.data)}}
                for i in message.images
            ]
            wire["content"] = parts
        else:
            wire["content"] = message.content or ""
        if message.tool_call_id is not None:
            wire["tool_call_id"] = message.tool_call_id
        if not strict:  # only what a server sent us; other extras (media refs) stay home
            wire.update({k: v for k, v in message.extras.items() if k in NON_STANDARD_FIELDS})
        return wire

    def _wire_tool_call(self, call: ToolCall) -> JSONObject:
        wire: JSONObject = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        if not self._entry.strict_compat:
            wire.update(call.extras)
        return wire

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json"}
        if self._entry.api_key is not None:
            headers["authorization"] = f"Bearer {self._entry.api_key.get_secret_value()}"
        return headers

    def _parse(self, data: dict[str, Any]) -> ChatResponse:
        name = self._entry.model_name
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise InvalidResponse("answer has no choices", model_name=name)
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise InvalidResponse("answer has no message", model_name=name)
        text = _content_text(message.get("content"), name)
        finish = wire_values.stop_reason(choices[0].get("finish_reason"), "finish_reason", name)
        wire_calls = message.get("tool_calls")
        if wire_calls is not None and not isinstance(wire_calls, list):
            raise InvalidResponse("tool_calls is not a list", model_name=name)
        calls = tuple(_tool_call(c, name) for c in wire_calls or ())
        if not text.strip() and not calls:
            raise InvalidResponse("answer is empty", model_name=name)
        return ChatResponse(
            text=text,
            tool_calls=calls,
            usage=wire_values.usage(
                data.get("usage"), ("prompt_tokens",), "completion_tokens", name
            ),
            model_name=name,
            extras={k: message[k] for k in NON_STANDARD_FIELDS if k in message},
            truncated=finish == "length",
        )


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _content_text(content: Any, model_name: str) -> str:
    """``content``: a string, null (beside tool calls), or a list of text parts."""
    if isinstance(content, list):
        parts = [as_object(p) for p in content]
        if not all(isinstance(p.get("text"), str) for p in parts if p.get("type") == "text"):
            raise InvalidResponse("a content part's text is not text", model_name=model_name)
        return "".join(p["text"] for p in parts if p.get("type") == "text")
    return wire_values.text_or_none(content, "content", model_name) or ""


def _tool_call(wire: Any, model_name: str) -> ToolCall:
    """One wire tool call; a call without a name cannot be run or answered → garbage."""
    if not isinstance(wire, dict) or not isinstance(wire.get("function"), dict):
        raise InvalidResponse("a tool call is not an object", model_name=model_name)
    function = wire["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidResponse("a tool call has no name", model_name=model_name)
    call_id = wire.get("id")
    if isinstance(call_id, bool) or not isinstance(call_id, str | int | None):
        raise InvalidResponse("a tool call id is not text", model_name=model_name)
    raw = function.get("arguments")
    arguments: JSONObject = {}
    error = None
    if isinstance(raw, dict):
        arguments = raw
    elif raw is None or isinstance(raw, str):
        try:
            parsed = json.loads(raw or "{}")
        except (json.JSONDecodeError, RecursionError):
            parsed = None
        if isinstance(parsed, dict):
            arguments = parsed
        else:
            error = "arguments are not a JSON object"
    else:  # a number, a list, a boolean: reported back to the model by the tool loop
        error = "arguments are not a JSON object"
    return ToolCall(
        id=str(call_id or f"call_{name}"),
        name=name,
        arguments=arguments,
        arguments_error=error,
        extras={k: wire[k] for k in NON_STANDARD_FIELDS if k in wire},
    )
