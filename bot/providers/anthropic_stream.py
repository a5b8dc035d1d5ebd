"""Reassemble an Anthropic Messages SSE stream into the non-streamed message shape.

Events arrive as ``event: NAME`` / ``data: {json}`` pairs: ``message_start`` (id, input
usage), per content block ``content_block_start`` / ``content_block_delta`` (``text_delta``
or ``input_json_delta``) / ``content_block_stop``, ``message_delta`` (stop reason, output
usage), then ``message_stop``. ``ping`` keeps the connection alive; ``error`` (e.g.
``overloaded_error``) can arrive mid-stream.

Only ``message_stop`` completes a stream: one that ends before it was cut, and the caller
treats it as a failure. Events are validated as they come: a wrong shape raises
``ValueError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bot.providers.wire_values import as_object
from bot.types import TextDelta, ToolCallDelta


@dataclass
class AnthropicStreamAssembler:
    done: bool = False
    error: str | None = None  # an ``error`` event's message: the stream failed
    events: int = 0
    stop_reason: Any = None
    usage: dict[str, Any] = field(default_factory=dict)
    _blocks: dict[int, dict[str, Any]] = field(default_factory=dict)

    def feed(self, line: str) -> list[TextDelta | ToolCallDelta]:
        if not line.startswith("data:") or self.done:
            return []  # "event:" names repeat the data's "type"; blanks separate events
        try:
            event = json.loads(line[5:].strip())
        except RecursionError as exc:
            raise ValueError("stream event is nested too deeply") from exc
        if not isinstance(event, dict):
            raise ValueError("stream event is not an object")
        self.events += 1
        kind = event.get("type")
        if kind == "message_start":
            self.usage.update(as_object(as_object(event.get("message")).get("usage")))
        elif kind == "content_block_start":
            block = event.get("content_block")
            if not isinstance(block, dict):
                raise ValueError("content_block_start without a block")
            index = _index(event)
            self._blocks[index] = {**block, "_json": ""}
            if block.get("type") == "tool_use":
                name = block.get("name")
                return [ToolCallDelta(index, name if isinstance(name, str) else "")]
        elif kind == "content_block_delta":
            return self._delta(_index(event), as_object(event.get("delta")))
        elif kind == "message_delta":
            self.stop_reason = as_object(event.get("delta")).get("stop_reason")
            self.usage.update(as_object(event.get("usage")))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            message = as_object(event.get("error")).get("message")
            self.error = message if isinstance(message, str) else "error event"
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[TextDelta | ToolCallDelta]:
        block = self._blocks.get(index)
        if block is None:
            raise ValueError("content_block_delta for a block never started")
        if delta.get("type") == "text_delta":
            text = delta.get("text")
            if not isinstance(text, str):
                raise ValueError("text_delta text is not text")
            block["text"] = str(block.get("text") or "") + text
            return [TextDelta(text)] if text and block.get("type") == "text" else []
        if delta.get("type") == "input_json_delta":
            fragment = delta.get("partial_json")
            if not isinstance(fragment, str):
                raise ValueError("input_json_delta partial_json is not text")
            block["_json"] += fragment
            return [ToolCallDelta(index, arguments=fragment)] if fragment else []
        return []  # thinking and signature deltas are not part of the answer

    def message(self) -> dict[str, Any]:
        """The assembled message, as ``/v1/messages`` answers without streaming."""
        content = []
        for _, block in sorted(self._blocks.items()):
            wire = {k: v for k, v in block.items() if k != "_json"}
            if wire.get("type") == "tool_use":
                raw = block["_json"]
                try:
                    wire["input"] = json.loads(raw) if raw else wire.get("input") or {}
                except (json.JSONDecodeError, RecursionError):
                    wire["input"] = raw  # reported back to the model as unusable arguments
            content.append(wire)
        return {"content": content, "stop_reason": self.stop_reason, "usage": self.usage}


def _index(event: dict[str, Any]) -> int:
    index = event.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError("stream event index is not an integer")
    return index
