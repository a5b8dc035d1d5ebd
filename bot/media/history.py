"""How a stored user message with media reads to a model. The store keeps what the person
typed as the content and each file as a reference in ``extras["media"]`` together with
what was derived from it (a transcript, a document's text, an image's description); this
module writes them out: older images as their description or a short marker, voice as a
marked transcript, documents as their named text. Never downloads anything."""

from __future__ import annotations

import dataclasses
from typing import Any

from bot.types import ChatMessage, JSONObject

IMAGE_KINDS = frozenset({"photo", "image"})
SPEECH_KINDS = frozenset({"voice", "audio"})
NOT_SEEN = (
    "[An image was sent here, but it cannot be shown to you. Do not guess what it shows; "
    "say that you cannot see images.]"
)


def media_refs(extras: JSONObject) -> list[JSONObject]:
    refs: Any = extras.get("media")
    return [r for r in refs if isinstance(r, dict)] if isinstance(refs, list) else []


def described(description: str) -> str:
    return f"[image, described by a vision model: {description}]"


def _note(ref: JSONObject, *, live: bool) -> str | None:
    kind = ref.get("kind")
    if kind in IMAGE_KINDS:
        # The current turn's images ride as parts, or bot.media.vision says why not.
        if live:
            return None
        description = ref.get("description")
        if isinstance(description, str) and description:
            return described(description)
        return "[image sent earlier; not shown again]"
    if kind in SPEECH_KINDS:
        what = "voice note" if kind == "voice" else "audio"
        transcript = ref.get("transcript")
        if isinstance(transcript, str) and transcript:
            return f"[{what}, transcribed:]\n{transcript}"
        return f"[{what}, not transcribed]"
    if kind == "document":
        name, text = ref.get("name") or "file", ref.get("text")
        if not isinstance(text, str) or not text:
            return f"[document {name}]"
        cut = ref.get("cut_at")
        note = f", cut at {cut:,} characters" if isinstance(cut, int) else ""
        return f"[document {name}{note}]\n{text}"
    if kind == "sticker":
        emoji = ref.get("emoji")
        return f"[sticker {emoji}]" if isinstance(emoji, str) and emoji else "[sticker]"
    return None


def rendered(message: ChatMessage, *, live: bool = False) -> ChatMessage:
    """``message`` with its media written into its text: what was derived from them
    (transcript, document text, description) or a marker, then what the person typed;
    ``live``: it is the current turn's message."""
    if message.role != "user" or not message.extras:  # most of a long history
        return message
    refs = media_refs(message.extras)
    if not refs:
        return message
    blocks = [note for ref in refs if (note := _note(ref, live=live)) is not None]
    if not blocks:
        return message
    text = "\n\n".join([*blocks, message.content or ""]).strip()
    return dataclasses.replace(message, content=text)
