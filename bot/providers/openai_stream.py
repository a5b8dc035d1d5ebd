"""Reassemble an OpenAI ``/chat/completions`` SSE stream into one message.

Deltas arrive as ``data: {json}`` lines: text pieces, tool-call fragments keyed by
``index`` (id and name first, then argument fragments), a finish chunk, optionally a
usage-only chunk with ``choices: []``, then ``data: [DONE]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bot.types import TextSink


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class StreamAssembler:
    """Feeds SSE lines in, forwards text deltas to ``sink``, and builds the final message."""

    sink: TextSink | None = None
    text: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    _calls: dict[int, _PartialCall] = field(default_factory=dict)
    chunks: int = 0

    async def feed(self, line: str) -> None:
        """Take one SSE line; raises ``ValueError`` on a data line that is not JSON."""
        if not line.startswith("data:"):
            return  # comments (": keep-alive"), event names, blank separators
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            raise ValueError("stream chunk is not an object")
        self.chunks += 1
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                await self._take(delta)

    async def _take(self, delta: dict[str, Any]) -> None:
        piece = delta.get("content")
        if isinstance(piece, str) and piece:
            self.text += piece
            if self.sink is not None:
                await self.sink(piece)
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str):
            self.extras["reasoning_content"] = self.extras.get("reasoning_content", "") + reasoning
        for wire in delta.get("tool_calls") or ():
            if not isinstance(wire, dict):
                continue
            call = self._calls.setdefault(int(wire.get("index", 0)), _PartialCall())
            call.id = call.id or str(wire.get("id") or "")
            function = as_object(wire.get("function"))
            call.name = call.name or str(function.get("name") or "")
            call.arguments += str(function.get("arguments") or "")
            for key in ("extra_content", "thought_signature"):
                if key in wire:
                    call.extras[key] = wire[key]

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


def as_object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: wire data is never trusted."""
    return value if isinstance(value, dict) else {}
