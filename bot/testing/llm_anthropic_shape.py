"""Anthropic Messages API wire format for :mod:`bot.testing.fake_llm`.

Like :mod:`bot.testing.llm_openai_shape`, this knows nothing about scripting: it parses the
request body and renders answers and errors the way api.anthropic.com does, including the
streaming event sequence (message_start, ping, content blocks, message_delta, message_stop).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

# Stands in for every token count while rendering, then replaced by the raw JSON of
# ``raw_usage``: lets a test send values json.dumps cannot write (``1e999``).
_RAW_USAGE = "__fake_llm_raw_usage__"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _blocks(content: Any, kind: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == kind]


def _text(content: Any) -> str:
    """Text of a content: a plain string or its text blocks joined by newlines."""
    if isinstance(content, str):
        return content
    return "\n".join(b["text"] for b in _blocks(content, "text") if isinstance(b.get("text"), str))


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def system_text(body: Mapping[str, Any]) -> str:
    """The top-level ``system``: a string, or a list of text blocks joined by newlines."""
    return _text(body.get("system"))


def last_user_text(body: Mapping[str, Any]) -> str:
    """Text of the last user-authored message.

    Tool results travel as role "user" messages here; those carrying only tool_result blocks are
    skipped so this matches what the OpenAI shape reports for the same conversation.
    """
    for message in reversed(_messages(body)):
        content = message.get("content")
        if message.get("role") != "user":
            continue
        if _blocks(content, "tool_result") and not _blocks(content, "text"):
            continue
        return _text(content)
    return ""


def tool_result(body: Mapping[str, Any]) -> str | None:
    """Content of the last tool_result block when the final message carries one, else None."""
    messages = _messages(body)
    if not messages or messages[-1].get("role") != "user":
        return None
    results = _blocks(messages[-1].get("content"), "tool_result")
    return _text(results[-1].get("content")) if results else None


def content_chars(body: Mapping[str, Any]) -> int:
    total = len(system_text(body))
    for message in _messages(body):
        content = message.get("content")
        total += len(_text(content))
        total += sum(len(_text(b.get("content"))) for b in _blocks(content, "tool_result"))
    return total


def error(
    status: int,
    message: str,
    error_type: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An error in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``.

    Anthropic has no error code field; ``code`` is accepted for interface parity and ignored.
    """
    default_type = "api_error" if status >= 500 else "invalid_request_error"
    kind = error_type or _ERROR_TYPES.get(status, default_type)
    payload = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(payload, status=status, headers=headers)


def check(body: Mapping[str, Any], headers: Mapping[str, str]) -> web.Response | None:
    """Reject what Anthropic would reject: missing key or version header, model or messages."""
    if not headers.get("x-api-key"):
        return error(401, "x-api-key header is required")
    if not headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return error(400, "model: Field required")
    if not _messages(body):
        return error(400, "messages: Field required")
    return None


def _tool_input(arguments: str) -> Any:
    """The tool_use ``input`` object; a string that is not a JSON object is sent verbatim."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    return parsed if isinstance(parsed, dict) else arguments


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
    """A message (or its event stream) with a text block and optionally one tool_use block.

    Streams only: ``pace_s`` waits before each text piece; ``cut_after`` drops the
    connection once that many characters of text went out (a mid-stream fault).

    ``stop_reason`` overrides the stop reason ("max_tokens": cut at the token limit);
    ``raw_usage`` is JSON text written verbatim as every token count; ``terminate=False``
    ends a stream without ``message_stop`` and cuts a plain answer's body in half.
    """
    content: list[dict[str, Any]] = []
    if text or tool_name is None:
        content.append({"type": "text", "text": text})
    if tool_name is not None:
        call_id = tool_id or f"toolu_{uuid.uuid4().hex[:24]}"
        tool = {"type": "tool_use", "id": call_id, "name": tool_name}
        content.append({**tool, "input": _tool_input(tool_arguments)})
    stop = stop_reason or ("end_turn" if tool_name is None else "tool_use")
    message = _message(model, content, stop, prompt_tokens, completion_tokens)
    if raw_usage is not None:
        message["usage"] = dict.fromkeys(message["usage"], _RAW_USAGE)
    if body.get("stream") is True:
        return await _stream(
            request, message, tool_arguments, raw_usage, terminate, pace_s, cut_after
        )
    text_body = _dumps(message, raw_usage)
    if not terminate:
        text_body = text_body[: len(text_body) // 2]
    return web.Response(text=text_body, content_type="application/json")


def _dumps(value: Any, raw_usage: str | None) -> str:
    text = json.dumps(value)
    return text if raw_usage is None else text.replace(f'"{_RAW_USAGE}"', raw_usage)


async def respond_empty(
    request: web.Request, body: Mapping[str, Any], *, model: str, prompt_tokens: int
) -> web.StreamResponse:
    """A well-formed message with ``content: []``."""
    message = _message(model, [], "end_turn", prompt_tokens, 0)
    if body.get("stream") is True:
        return await _stream(request, message, "")
    return web.json_response(message)


def _message(
    model: str, content: list[dict[str, Any]], stop_reason: str, input_tokens: int, output: int
) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output},
    }


async def _stream(
    request: web.Request,
    message: dict[str, Any],
    tool_arguments: str,
    raw_usage: str | None = None,
    terminate: bool = True,
    pace_s: float = 0.0,
    cut_after: int | None = None,
) -> web.StreamResponse:
    """Replay a finished message as the Messages streaming event sequence."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)

    async def send(event: str, data: dict[str, Any]) -> None:
        payload = _dumps({"type": event, **data}, raw_usage)
        await response.write(f"event: {event}\ndata: {payload}\n\n".encode())

    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": usage["input_tokens"], "output_tokens": 1}
    sent = 0
    await send("message_start", {"message": start})
    await send("ping", {})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            await send(
                "content_block_start", {"index": index, "content_block": {**block, "text": ""}}
            )
            deltas = [
                {"type": "text_delta", "text": t} for t in re.findall(r"\S+\s*|\s+", block["text"])
            ]
        else:
            await send(
                "content_block_start", {"index": index, "content_block": {**block, "input": {}}}
            )
            size = max(1, -(-len(tool_arguments) // 3))
            fragments = [tool_arguments[i : i + size] for i in range(0, len(tool_arguments), size)]
            deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
        for delta in deltas:
            piece = delta.get("text", "")
            if piece:
                if cut_after is not None and sent >= cut_after:
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                if pace_s:
                    await asyncio.sleep(pace_s)
                sent += len(piece)
            await send("content_block_delta", {"index": index, "delta": delta})
        await send("content_block_stop", {"index": index})
    final = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    await send(
        "message_delta", {"delta": final, "usage": {"output_tokens": usage["output_tokens"]}}
    )
    if terminate:
        await send("message_stop", {})
    await response.write_eof()
    return response
