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


def image_note(ref: JSONObject, *, live: bool) -> str:
    """An image in text: its description when one was written; else nothing in the
    current turn (the part itself rides beside, or the adapter says why not) and a
    marker in older turns."""
    description = ref.get("description")
    if isinstance(description, str) and description:
        return f"[image, described by a vision model: {description}]"
    return "" if live else "[image sent earlier; not shown again]"


def rendered(message: ChatMessage, *, live: bool = False) -> ChatMessage:
    """``message`` with its media references written into its text."""
    refs = media_refs(message.extras)
    if message.role != "user" or not refs:
        return message
    notes: list[str] = []
    for ref in refs:
        kind = ref.get("kind")
        if kind in IMAGE_KINDS:
            notes.append(image_note(ref, live=live) if not live else "")
        elif kind in SPEECH_KINDS and ref.get("transcript"):
            notes.append(f"[{'voice note' if kind == 'voice' else 'audio'}, transcribed:]")
        elif kind == "sticker":
            notes.append(f"[sticker {ref.get('emoji') or ''}]".replace(" ]", "]"))
    notes = [n for n in notes if n]
    if not notes:
        return message
    text = "\n".join([*notes, message.content or ""]).strip()
    return dataclasses.replace(message, content=text)
