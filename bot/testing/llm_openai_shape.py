"""OpenAI Chat Completions wire format for :mod:`bot.testing.fake_llm`.

The fake decides *what* to answer; this module only decides *how that looks on the wire*, so it
knows nothing about scripting. It mirrors what api.openai.com really sends, including the parts
clients tend to trip over (``content: null`` next to tool calls, the usage-only stream chunk with
``choices: []``), because a fake that is kinder than production hides bugs.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

# Error "type" per status, as OpenAI sends them; 429 really is typed "requests" (or "tokens").
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "requests",
}
_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
# Stands in for every token count while rendering, then replaced by the raw JSON of
# ``raw_usage``: lets a test send values json.dumps cannot write (``1e999``).
_RAW_USAGE = "__fake_llm_raw_usage__"


def _text(content: Any) -> str:
    """Text of a message content: a plain string or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def system_text(body: Mapping[str, Any]) -> str:
    """System prompt: every system (or newer "developer") message, joined by newlines."""
    return "\n".join(
        _text(m.get("content")) for m in _messages(body) if m.get("role") in ("system", "developer")
    )


def last_user_text(body: Mapping[str, Any]) -> str:
    for message in reversed(_messages(body)):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def tool_result(body: Mapping[str, Any]) -> str | None:
    """Content of the final message when it is a tool result (role "tool"), else None."""
    messages = _messages(body)
    if messages and messages[-1].get("role") == "tool":
        return _text(messages[-1].get("content"))
    return None


def content_chars(body: Mapping[str, Any]) -> int:
    return sum(len(_text(m.get("content"))) for m in _messages(body))


def error(
    status: int,
    message: str,
    error_type: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    payload = {
        "error": {
            "message": message,
            "type": error_type or _ERROR_TYPES.get(status, default_type),
            "param": None,
            "code": code if code is not None else _ERROR_CODES.get(status),
        }
    }
    return web.json_response(payload, status=status, headers=headers)


def check(body: Mapping[str, Any], headers: Mapping[str, str]) -> web.Response | None:
    """Reject what OpenAI would reject. Keys are not checked: local servers often have none."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return error(400, "you must provide a model parameter")
    if not _messages(body):
        return error(400, "'messages' must be a non-empty array", code="invalid_value")
    return None


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _words(text: str) -> list[str]:
    """Split text into word-sized pieces that concatenate back to exactly ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


def _thirds(text: str) -> list[str]:
    size = max(1, -(-len(text) // 3))
    return [text[i : i + size] for i in range(0, len(text), size)]


async def respond(
    request: web.Request,
    body: Mapping[str, Any],
    *,
    model: str,
    text: str,
    tool_name: str | None,
    tool_id: str | None,
    tool_arguments: str,
    prompt_tokens: int,
    completion_tokens: int,
    stop_reason: str | None = None,
    raw_usage: str | None = None,
    terminate: bool = True,
    pace_s: float = 0.0,
    cut_after: int | None = None,
) -> web.StreamResponse:
    """A chat completion (or its SSE stream) with ``text`` and optionally one tool call.

    Streams only: ``pace_s`` waits before each text piece; ``cut_after`` drops the
    connection once that many characters of text went out (a mid-stream fault).

    ``stop_reason`` overrides ``finish_reason`` ("length": cut at the token limit);
    ``raw_usage`` is JSON text written verbatim as every token count; ``terminate=False``
    ends a stream without ``data: [DONE]`` and cuts a plain answer's body in half.
    """
    call_id = tool_id or f"call_{uuid.uuid4().hex[:24]}"
    finish = stop_reason or ("stop" if tool_name is None else "tool_calls")
    usage: dict[str, Any] = _usage(prompt_tokens, completion_tokens)
    if raw_usage is not None:
        usage = dict.fromkeys(usage, _RAW_USAGE)
    if body.get("stream") is True:
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in _words(text)]
        if tool_name is not None:
            function = {"name": tool_name, "arguments": ""}
            first = {"index": 0, "id": call_id, "type": "function", "function": function}
            deltas.append({"tool_calls": [first]})
            deltas += [
                {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
                for fragment in _thirds(tool_arguments)
            ]
        choices: list[list[dict[str, Any]]] = [
            [{"index": 0, "delta": d, "finish_reason": None}] for d in deltas
        ]
        choices.append([{"index": 0, "delta": {}, "finish_reason": finish}])
        return await _stream(
            request, body, model, choices, usage, raw_usage, terminate, pace_s, cut_after
        )

    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_name is not None:
        message["content"] = text or None  # OpenAI sends null, not "", beside tool calls
        function = {"name": tool_name, "arguments": tool_arguments}
        message["tool_calls"] = [{"id": call_id, "type": "function", "function": function}]
    choice = {"index": 0, "message": message, "finish_reason": finish}
    text_body = _dumps(_completion(model, [choice], usage), raw_usage)
    if not terminate:
        text_body = text_body[: len(text_body) // 2]
    return web.Response(text=text_body, content_type="application/json")


def _dumps(value: Any, raw_usage: str | None) -> str:
    text = json.dumps(value)
    return text if raw_usage is None else text.replace(f'"{_RAW_USAGE}"', raw_usage)


async def respond_empty(
    request: web.Request, body: Mapping[str, Any], *, model: str, prompt_tokens: int
) -> web.StreamResponse:
    """A well-formed completion with ``choices: []`` (some proxies do this on upstream trouble)."""
    usage = _usage(prompt_tokens, 0)
    if body.get("stream") is True:
        return await _stream(request, body, model, [[]], usage)
    return web.json_response(_completion(model, [], usage))


def _completion(model: str, choices: list[Any], usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


async def _stream(
    request: web.Request,
    body: Mapping[str, Any],
    model: str,
    choices_per_chunk: list[list[dict[str, Any]]],
    usage: dict[str, Any],
    raw_usage: str | None = None,
    terminate: bool = True,
    pace_s: float = 0.0,
    cut_after: int | None = None,
) -> web.StreamResponse:
    """Send one ``data:`` chunk per choices list, then (if asked) a usage chunk, then [DONE].

    Like OpenAI, usage comes in its own trailing chunk with ``choices: []`` and every earlier
    chunk carries ``"usage": null`` when ``stream_options.include_usage`` is set.
    """
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    base: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    chunks = [{**base, "choices": choices} for choices in choices_per_chunk]
    if include_usage:
        chunks = [{**chunk, "usage": None} for chunk in chunks]
        chunks.append({**base, "choices": [], "usage": usage})
    sent = 0
    for chunk in chunks:
        piece = _piece(chunk)
        if piece:
            if cut_after is not None and sent >= cut_after:
                if request.transport is not None:
                    request.transport.abort()
                return response
            if pace_s:
                await asyncio.sleep(pace_s)
            sent += len(piece)
        await response.write(f"data: {_dumps(chunk, raw_usage)}\n\n".encode())
    if terminate:
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _piece(chunk: dict[str, Any]) -> str:
    """The text a stream chunk carries ("" for role, tool and usage chunks)."""
    choices = chunk.get("choices") or [{}]
    content = choices[0].get("delta", {}).get("content")
    return content if isinstance(content, str) else ""
