"""One inbound message's attachments → what the turn sends and stores (SPEC §11).

Runs at turn time, inside the chat's lane: files are fetched now (bounded by the bot's
``max_file_mb``), their bytes live only for this turn, and the store gets references (kind,
file id, MIME, size) plus any transcript. A message that needs no model — an unsupported
type, a file too large, voice without ``roles.transcription`` — gets one sentence instead.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from bot.channels.base import Channel, InboundMessage
from bot.config.schema import BridgeConfig, TelegramBotBase
from bot.errors import (
    AllModelsFailed,
    BudgetExhausted,
    FileTooLarge,
    MediaUnavailable,
    ProviderError,
)
from bot.media import documents
from bot.media.history import IMAGE_KINDS, SPEECH_KINDS
from bot.providers.fallback import RoleChains
from bot.types import Attachment, AudioClip, ImagePart, JSONObject
from bot.usage.cause import TRANSCRIPTION, for_purpose

log = logging.getLogger(__name__)

TRANSCRIPTION_ROLE = "transcription"
NO_VOICE = "Voice messages are not set up for me; please type your message instead."
NO_TRANSCRIPT = "I could not make out that voice message just now; please try again or type it."
NOT_FETCHED = "I could not fetch that file just now; please send it again."
UNSUPPORTED_DOCUMENT = f"I can read {documents.SUPPORTED}; I cannot open that file."
HANDLED = "text, photos, voice messages, stickers and documents"
DEFAULT_MAX_FILE_MB = 20.0


@dataclass(frozen=True)
class MediaSettings:
    """A bot's media limits; the terminal chat uses the defaults."""

    max_file_mb: float = DEFAULT_MAX_FILE_MB
    echo_transcript: bool = False
    max_document_chars: int = 20_000

    @classmethod
    def of(cls, bot: TelegramBotBase | None) -> MediaSettings:
        if bot is None:
            return cls()
        return cls(bot.max_file_mb, bot.echo_transcript, bot.max_document_chars)

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


@dataclass(frozen=True)
class PreparedTurn:
    """The turn's message: what the person typed (a caption, maybe empty), the references
    with what was derived from each file (transcript, document text), and the images that
    ride with this turn only."""

    text: str
    images: tuple[ImagePart, ...] = ()
    refs: tuple[JSONObject, ...] = ()
    transcript: str | None = None  # shown first when the bot echoes transcripts

    @property
    def extras(self) -> JSONObject:
        return {"media": [dict(r) for r in self.refs]} if self.refs else {}


@dataclass(frozen=True)
class Answered:
    """One sentence that answers the message without any model."""

    text: str


@dataclass
class _Parts:
    images: list[ImagePart] = field(default_factory=list)
    refs: list[JSONObject] = field(default_factory=list)
    transcript: str | None = None


class MediaIntake:
    """Built with each config generation: the roles to call and every bot's limits."""

    def __init__(self, roles: RoleChains, config: BridgeConfig) -> None:
        self._roles = roles
        self._bots = {bot.channel: bot for bot in config.channels.bots()}

    def settings(self, channel: str) -> MediaSettings:
        return MediaSettings.of(self._bots.get(channel))

    def echoed(self, message: InboundMessage, prepared: PreparedTurn | None, reply: str) -> str:
        """The reply, after the transcript when the bot echoes transcripts."""
        if prepared is None or prepared.transcript is None:
            return reply
        if not self.settings(message.channel).echo_transcript:
            return reply
        return f"🎤 _{prepared.transcript}_\n\n{reply}"

    async def prepare(
        self, message: InboundMessage, channel: Channel
    ) -> PreparedTurn | Answered | None:
        """None: a group voice note that turned out not to name the bot (not answered)."""
        outcome = await self._prepare(message, channel)
        if message.voice_must_name and isinstance(outcome, Answered):
            # Not addressed to us unless its transcript says so: no sentence in the group.
            log.info(
                "channel=%s chat=%s: group voice note left: %s",
                message.channel,
                message.chat_id,
                outcome.text,
            )
            return None
        return outcome

    async def _prepare(
        self, message: InboundMessage, channel: Channel
    ) -> PreparedTurn | Answered | None:
        settings = self.settings(message.channel)
        parts = _Parts()
        try:
            for attachment in message.attachments:
                refused = await self._take(attachment, channel, settings, parts)
                if refused is not None:
                    return refused
        except FileTooLarge as exc:
            limit = exc.limit_bytes / (1024 * 1024)
            return Answered(f"That file is too large for me; the limit is {limit:g} MB.")
        except MediaUnavailable as exc:
            log.warning("channel=%s chat=%s: %s", message.channel, message.chat_id, exc)
            return Answered(NOT_FETCHED)
        if message.voice_must_name and not _names(parts.transcript, message.voice_must_name):
            log.info("channel=%s chat=%s: voice note not for us", message.channel, message.chat_id)
            return None
        return PreparedTurn(
            message.text,
            tuple(parts.images),
            tuple(parts.refs),
            parts.transcript,
        )

    async def _take(
        self, attachment: Attachment, channel: Channel, settings: MediaSettings, parts: _Parts
    ) -> Answered | None:
        kind = attachment.kind
        ref = attachment.reference()
        if kind in IMAGE_KINDS:
            data = await _fetch(channel, attachment, settings)
            parts.images.append(ImagePart(attachment.mime or "image/jpeg", data))
        elif kind in SPEECH_KINDS:
            if not self._roles.has(TRANSCRIPTION_ROLE):
                return Answered(NO_VOICE)
            data = await _fetch(channel, attachment, settings)
            clip = AudioClip(
                data, attachment.file_name or "voice.ogg", attachment.mime or "audio/ogg"
            )
            try:
                with for_purpose(TRANSCRIPTION):
                    transcript = await self._roles.transcribe(TRANSCRIPTION_ROLE, clip)
            except BudgetExhausted as exc:
                return Answered(exc.sentence)
            except (AllModelsFailed, ProviderError) as exc:
                log.warning("voice note not transcribed: %s", exc)
                return Answered(NO_TRANSCRIPT)
            if not transcript:
                return Answered(NO_TRANSCRIPT)
            ref["transcript"] = transcript
            parts.transcript = transcript
        elif kind == "document":
            name, mime = attachment.file_name or "file", attachment.mime
            if not documents.supported(name, mime):
                return Answered(UNSUPPORTED_DOCUMENT)
            data = await _fetch(channel, attachment, settings)
            limit = settings.max_document_chars
            try:
                text = await asyncio.to_thread(documents.extract, name, mime, data, limit)
            except documents.DocumentUnreadable as exc:
                return Answered(f"I could not read {name}: {exc}.")
            ref["text"] = text.text
            if text.truncated:
                ref["cut_at"] = limit
        elif kind == "sticker":
            pass  # its emoji is in the reference; history renders it
        else:
            return Answered(
                f"I cannot handle {kind.replace('_', ' ')} messages; I understand {HANDLED}."
            )
        parts.refs.append(ref)
        return None


async def _fetch(channel: Channel, attachment: Attachment, settings: MediaSettings) -> bytes:
    limit = settings.max_bytes
    if attachment.size is not None and attachment.size > limit:  # refused before fetching
        raise FileTooLarge(f"{attachment.kind} of {attachment.size} bytes", limit)
    return await channel.download(attachment, limit)


def _names(transcript: str | None, names: tuple[str, ...]) -> bool:
    """Does the transcript name the bot? Speech has no @ and no underscores: words match."""
    if not transcript:
        return False
    spoken = f" {_words(transcript)} "
    return any(words and f" {words} " in spoken for words in map(_words, names))


def _words(text: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())
