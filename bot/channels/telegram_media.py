"""Telegram's media: what a message carries (as ``Attachment`` references) and fetching a
file's bytes through the bot's own ``api_base`` — ``getFile``, then
``{api_base}/file/bot<token>/<path>`` — never more than the bot's ``max_file_mb``."""

from __future__ import annotations

import logging

import httpx
from telegram import Bot, Message
from telegram import error as tg

from bot.channels import telegram_errors
from bot.errors import FileTooLarge, MediaUnavailable
from bot.types import Attachment

log = logging.getLogger(__name__)

# Content people send that we answer with one sentence; service messages (members
# joining, pins …) are not listed and stay ignored.
UNSUPPORTED = (
    "video",
    "video_note",
    "animation",
    "location",
    "venue",
    "contact",
    "poll",
    "dice",
    "game",
    "story",
    "paid_media",
)
DOWNLOAD_TIMEOUT_S = 60.0


def attachments_of(message: Message) -> tuple[Attachment, ...]:
    """The files a message carries, as references; one for any unsupported content."""
    group = message.media_group_id
    if message.photo:
        largest = max(message.photo, key=lambda p: p.width * p.height)
        return (Attachment("photo", largest.file_id, "image/jpeg", largest.file_size, "", group),)
    if message.voice is not None:
        voice = message.voice
        mime = voice.mime_type or "audio/ogg"
        return (Attachment("voice", voice.file_id, mime, voice.file_size, "voice.ogg", group),)
    if message.audio is not None:
        audio = message.audio
        name = audio.file_name or "audio"
        mime = audio.mime_type or "audio/mpeg"
        return (Attachment("audio", audio.file_id, mime, audio.file_size, name, group),)
    if message.document is not None:
        doc = message.document
        mime = doc.mime_type or ""
        kind = "image" if mime.startswith("image/") and mime != "image/svg+xml" else "document"
        name = doc.file_name or "file"
        return (Attachment(kind, doc.file_id, mime, doc.file_size, name, group),)
    if message.sticker is not None:
        sticker = message.sticker
        return (
            Attachment(
                "sticker", sticker.file_id, "", sticker.file_size, emoji=sticker.emoji or ""
            ),
        )
    for kind in UNSUPPORTED:
        if getattr(message, kind, None):
            return (Attachment(kind, media_group_id=group),)
    return ()


class TelegramFiles:
    """Fetches files for one bot; the token-bearing URL never reaches a log or an error."""

    def __init__(self, bot: Bot, client: httpx.AsyncClient) -> None:
        self._bot = bot
        self._client = client

    async def download(self, attachment: Attachment, max_bytes: int) -> bytes:
        if attachment.size is not None and attachment.size > max_bytes:
            raise FileTooLarge(f"{attachment.kind}: {attachment.size} bytes", max_bytes)
        try:
            file = await self._bot.get_file(attachment.file_id)
        except tg.TelegramError as exc:
            error = telegram_errors.translate(exc)
            raise MediaUnavailable(f"getFile failed for a {attachment.kind}: {error}") from exc
        if file.file_size is not None and file.file_size > max_bytes:
            raise FileTooLarge(f"{attachment.kind}: {file.file_size} bytes", max_bytes)
        if not file.file_path:
            raise MediaUnavailable(f"Telegram gave no path for a {attachment.kind}")
        # PTB made file_path the whole URL from base_file_url ({api_base}/file/bot<token>).
        return await self._stream(file.file_path, attachment.kind, max_bytes)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _stream(self, url: str, kind: str, max_bytes: int) -> bytes:
        data = bytearray()
        try:
            async with self._client.stream("GET", url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                if response.status_code != 200:
                    raise MediaUnavailable(f"download of a {kind} answered {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FileTooLarge(f"{kind}: {declared} bytes", max_bytes)
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > max_bytes:  # the size was missing or wrong: stop here
                        raise FileTooLarge(f"{kind}: over {max_bytes} bytes", max_bytes)
        except httpx.HTTPError as exc:  # str(exc) may hold the URL, so only its type
            raise MediaUnavailable(f"download of a {kind} failed ({type(exc).__name__})") from exc
        return bytes(data)
