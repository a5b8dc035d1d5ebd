"""How a stored user message with media reads to a model: older images as their
description or a short marker, voice as a marked transcript. Never downloads anything."""

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
    if kind in SPEECH_KINDS and ref.get("transcript"):
        return f"[{'voice note' if kind == 'voice' else 'audio'}, transcribed:]"
    if kind == "sticker":
        emoji = ref.get("emoji")
        return f"[sticker {emoji}]" if isinstance(emoji, str) and emoji else "[sticker]"
    return None  # a document's text already carries its name


def rendered(message: ChatMessage, *, live: bool = False) -> ChatMessage:
    """``message`` with its media references written into its text; ``live``: it is the
    current turn's message."""
    refs = media_refs(message.extras)
    if message.role != "user" or not refs:
        return message
    notes = [note for ref in refs if (note := _note(ref, live=live)) is not None]
    if not notes:
        return message
    text = "\n".join([*notes, message.content or ""]).strip()
    return dataclasses.replace(message, content=text)
