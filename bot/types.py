"""Value types shared along the data path: chat messages, tool calls and usage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant", "tool"]
JSONObject = dict[str, Any]


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
class Attachment:
    """A file a person sent with a message: a reference only, never the bytes.

    ``kind``: photo, image (an image sent as a file), voice, audio, document, sticker, or the
    name of a type we do not handle (video, location, …). ``emoji`` carries a sticker's.
    """

    kind: str
    file_id: str = ""
    mime: str = ""
    size: int | None = None
    file_name: str = ""
    media_group_id: str | None = None
    emoji: str = ""

    def reference(self) -> JSONObject:
        """What the store keeps of it (SPEC §11): kind, file id, MIME, size, name."""
        ref: JSONObject = {"kind": self.kind, "file_id": self.file_id, "mime": self.mime}
        if self.size is not None:
            ref["size"] = self.size
        if self.file_name:
            ref["name"] = self.file_name
        if self.emoji:
            ref["emoji"] = self.emoji
        return ref


@dataclass(frozen=True)
class ImagePart:
    """An image's bytes for one turn's request; never stored."""

    mime: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class AudioClip:
    """Speech to transcribe, sent as it came (Telegram voice notes are OGG/Opus)."""

    data: bytes = field(repr=False)
    file_name: str = "voice.ogg"
    mime: str = "audio/ogg"


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation as a model sees it (the system prompt travels apart).

    ``images`` ride only on the current turn's user message and are never stored; the store
    keeps the media references in ``extras["media"]``.
    """

    role: Role
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    extras: JSONObject = field(default_factory=dict, compare=False)
    images: tuple[ImagePart, ...] = field(default=(), compare=False)


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
    # Set: the call is streamed and every delta goes here as it arrives (providers that
    # cannot stream send the whole text at the end). Once it was called with text, that
    # text may have reached the user.
    stream_to: StreamSink | None = field(default=None, compare=False)


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


# -- streaming: what ``Provider.stream`` yields ----------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer's text, in order."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call ``index``: its name when it starts, then argument fragments."""

    index: int
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True)
class StreamDone:
    """The last event of every complete stream: the whole answer, usage included."""

    response: ChatResponse


StreamEvent = TextDelta | ToolCallDelta | StreamDone
StreamSink = Callable[[TextDelta | ToolCallDelta], Awaitable[None]]
