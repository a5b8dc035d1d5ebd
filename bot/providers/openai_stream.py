"""Reassemble an OpenAI ``/chat/completions`` SSE stream into one message.

Deltas arrive as ``data: {json}`` lines: text pieces, tool-call fragments keyed by
``index`` (id and name first, then argument fragments), a finish chunk, optionally a
usage-only chunk with ``choices: []``, then ``data: [DONE]``.

A stream that stops before ``[DONE]`` was cut (a proxy timeout, a dropped connection): the
caller treats it as a failure, never as a complete answer. Chunks are validated as they
come: a chunk of the wrong shape raises ``ValueError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bot.providers.wire_values import as_object
from bot.types import TextDelta, ToolCallDelta


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class StreamAssembler:
    """Feeds SSE lines in, returns their deltas as events, and builds the final message."""

    text: str = ""
    usage: Any = None  # the wire value, validated by the provider
    finish_reason: Any = None  # the last one sent, validated by the provider
    done: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    _calls: dict[int, _PartialCall] = field(default_factory=dict)
    chunks: int = 0

    def feed(self, line: str) -> list[TextDelta | ToolCallDelta]:
        """Take one SSE line and return its deltas; raises ``ValueError`` on a data line
        that is not JSON or of the wrong shape."""
        if not line.startswith("data:"):
            return []  # comments (": keep-alive"), event names, blank separators
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return []
        if self.done:
            return []  # nothing after the terminator is part of the answer
        try:
            chunk = json.loads(payload)
        except RecursionError as exc:  # absurdly deep nesting
            raise ValueError("stream chunk is nested too deeply") from exc
        if not isinstance(chunk, dict):
            raise ValueError("stream chunk is not an object")
        self.chunks += 1
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if choices is not None and not isinstance(choices, list):
            raise ValueError("stream chunk choices are not a list")
        events: list[TextDelta | ToolCallDelta] = []
        for choice in choices or ():
            if not isinstance(choice, dict):
                raise ValueError("stream chunk choice is not an object")
            if choice.get("finish_reason") is not None:
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta")
            if isinstance(delta, dict):
                events += self._take(delta)
        return events

    def _take(self, delta: dict[str, Any]) -> list[TextDelta | ToolCallDelta]:
        events: list[TextDelta | ToolCallDelta] = []
        piece = delta.get("content")
        if piece is not None and not isinstance(piece, str):
            raise ValueError("stream delta content is not text")
        if piece:
            self.text += piece
            events.append(TextDelta(piece))
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str):
            self.extras["reasoning_content"] = self.extras.get("reasoning_content", "") + reasoning
        calls = delta.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise ValueError("stream delta tool_calls are not a list")
        for wire in calls or ():
            if not isinstance(wire, dict):
                raise ValueError("stream tool call is not an object")
            index = wire.get("index", 0)
            if isinstance(index, bool) or not isinstance(index, int):
                raise ValueError("stream tool call index is not an integer")
            call = self._calls.setdefault(index, _PartialCall())
            function = as_object(wire.get("function"))
            for key in ("id", "name", "arguments"):
                value = (wire if key == "id" else function).get(key)
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"stream tool call {key} is not text")
            call.id = call.id or wire.get("id") or ""
            name = "" if call.name else function.get("name") or ""
            call.name = call.name or name
            fragment = function.get("arguments") or ""
            call.arguments += fragment
            for key in ("extra_content", "thought_signature"):
                if key in wire:
                    call.extras[key] = wire[key]
            if name or fragment:
                events.append(ToolCallDelta(index, name, fragment))
        return events

    def message(self) -> dict[str, Any]:
        """The assembled message in the non-streaming wire shape."""
        calls = [
            {
                "id": c.id or f"call_{index}",
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments or "{}"},
                **c.extras,
            }
            for index, c in sorted(self._calls.items())
        ]
        message: dict[str, Any] = {"role": "assistant", "content": self.text, **self.extras}
        if calls:
            message["tool_calls"] = calls
        return message
