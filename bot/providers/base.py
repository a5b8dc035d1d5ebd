"""The Provider seam: ``chat()`` for a whole answer, ``stream()`` for one as it is written,
plus ``aclose()`` and ``async with``.

``stream()`` yields ``TextDelta`` and ``ToolCallDelta`` events as the model writes and ends
with exactly one ``StreamDone`` carrying the whole, validated answer (usage included). A
provider that cannot stream inherits the default: the whole text at the end. Closing the
iterator early (``/stop``, a cancelled turn) closes the model's HTTP stream, so no more
tokens are generated or billed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from types import TracebackType

from bot.errors import InvalidRequest, InvalidResponse
from bot.types import (
    AudioClip,
    ChatRequest,
    ChatResponse,
    StreamDone,
    StreamEvent,
    StreamSink,
    TextDelta,
)


class Provider(ABC):
    """Talks to one model_list entry. Raises only ``bot.errors.ProviderError`` subclasses."""

    @abstractmethod
    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Send one request and return the whole answer; a provider that streams sends the
        deltas to ``request.stream_to`` on the way when it is set."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """The answer as events; this default waits for the whole answer."""
        response = await self.chat(dataclasses.replace(request, stream_to=None))
        if response.text:
            yield TextDelta(response.text)
        yield StreamDone(response)

    async def transcribe(self, audio: AudioClip) -> str:
        """Speech to text (``roles.transcription``); most protocols cannot."""
        raise InvalidRequest(
            "this model's protocol cannot transcribe audio; use an openai-protocol entry "
            "(OpenAI, Groq or a local whisper server) in roles.transcription"
        )

    async def aclose(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections; the dispatcher calls it once on shutdown or reload."""

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def drain(
    events: AsyncIterator[StreamEvent], sink: StreamSink | None, model_name: str
) -> ChatResponse:
    """Run a stream to its end: deltas to ``sink``, the final answer returned. The stream is
    closed whatever happens, so a failing sink or a cancellation closes the connection."""
    async with contextlib.aclosing(events) as stream:  # type: ignore[type-var]
        async for event in stream:
            if isinstance(event, StreamDone):
                return event.response
            if sink is not None:
                await sink(event)
    raise InvalidResponse("stream ended without its final answer", model_name=model_name)
