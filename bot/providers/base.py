"""The Provider seam: one coroutine, ``chat()``, plus ``aclose()`` and ``async with``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

from bot.errors import InvalidRequest
from bot.types import AudioClip, ChatRequest, ChatResponse


class Provider(ABC):
    """Talks to one model_list entry. Raises only ``bot.errors.ProviderError`` subclasses."""

    @abstractmethod
    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Send one request and return the whole answer."""

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
