"""Value types shared along the data path: chat messages, tool calls and usage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant", "tool"]
JSONObject = dict[str, Any]
# Receives text as it is generated; once called, the text has reached the user.
TextSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ToolCall:
    """A model's request to run one tool; ``arguments`` is already parsed JSON."""

    id: str
    name: str
    arguments: JSONObject
    # Set when the model sent arguments that are not a JSON object; the tool loop
    # reports it back to the model instead of running the tool.
    arguments_error: str | None = None
    # Provider-specific fields that must travel back with the call (e.g. a Gemini
    # thought_signature); strict_compat providers drop them.
    extras: JSONObject = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model, described by a JSON schema."""

    name: str
    description: str
    parameters: JSONObject


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation as a model sees it (the system prompt travels apart)."""

    role: Role
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    extras: JSONObject = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ChatRequest:
    """Everything a provider needs for one call; independent of any wire format."""

    system: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int | None = None
    # Providers that can stream send text deltas here; others ignore it.
    stream_to: TextSink | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ChatResponse:
    """A model's answer; ``model_name`` is the model_list entry that produced it.

    ``truncated``: the model stopped at its output token limit (OpenAI ``finish_reason:
    "length"``, Anthropic ``stop_reason: "max_tokens"``), so the text is not the whole answer.
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    model_name: str = ""
    extras: JSONObject = field(default_factory=dict, compare=False)
    truncated: bool = False
