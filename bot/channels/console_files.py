"""``/attach PATH [caption]`` in ``persona-bridge chat``: a local file sent as if it came
from Telegram (image, voice or document), so media can be tried without a bot."""

from __future__ import annotations

import asyncio
import mimetypes
import shlex
from pathlib import Path

from bot.channels.base import InboundMessage
from bot.errors import FileTooLarge, MediaUnavailable
from bot.types import Attachment

ATTACH = "/attach"
USAGE = "usage: /attach PATH [caption]  (an image, a voice note or audio file, a document)"
VOICE_SUFFIXES = (".ogg", ".oga", ".opus")


def attachment_for(path: Path) -> Attachment:
    """The attachment a local file stands for; its path is its file id."""
    mime = mimetypes.guess_type(path.name)[0] or ""
    if path.suffix.lower() in VOICE_SUFFIXES:
        kind, mime = "voice", "audio/ogg"
    elif mime.startswith("audio/"):
        kind = "audio"
    elif mime.startswith("image/") and mime != "image/svg+xml":
        kind = "image"
    else:
        kind = "document"
    return Attachment(kind, str(path), mime, path.stat().st_size, path.name)


def parse_attach(line: str, base: InboundMessage) -> InboundMessage | str:
    """``base`` with the file attached and the caption as its text, or one line saying why
    not. Lines that are not ``/attach`` come back as ``base`` unchanged."""
    if line.split(maxsplit=1)[0].lower() != ATTACH:
        return base
    try:
        words = shlex.split(line)[1:]
    except ValueError as exc:
        return f"{USAGE} ({exc})"
    if not words:
        return USAGE
    path = Path(words[0]).expanduser()
    if not path.is_file():
        return f"no such file: {path}"
    return InboundMessage(
        channel=base.channel,
        chat_id=base.chat_id,
        sender_id=base.sender_id,
        text=" ".join(words[1:]),
        attachments=(attachment_for(path.resolve()),),
    )


async def read_local(attachment: Attachment, max_bytes: int) -> bytes:
    """The file's bytes, refused over ``max_bytes`` (the console's default bound)."""
    return await asyncio.to_thread(_read, Path(attachment.file_id), max_bytes)


def _read(path: Path, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)  # never more than the bound and one byte
    except OSError as exc:
        raise MediaUnavailable(f"cannot read {path.name} ({exc.strerror})") from exc
    if len(data) > max_bytes:
        raise FileTooLarge(f"{path.name}: over {max_bytes} bytes", max_bytes)
    return data
