"""Images per candidate (SPEC §11): the chain candidate that serves the turn gets image
parts when its model_list entry says ``"vision": true``; one without vision gets the
description ``roles.vision`` wrote (asked once per turn), or an explicit marker that an
image was sent but not shown — so a text-only model never pretends to see it."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping

from bot.config.schema import ModelEntry
from bot.errors import AllModelsFailed, BudgetExhausted, ProviderError
from bot.media.history import NOT_SEEN, described
from bot.providers.fallback import RoleChains
from bot.types import ChatMessage, ChatRequest, ImagePart
from bot.usage.cause import VISION, for_purpose

log = logging.getLogger(__name__)

VISION_ROLE = "vision"
DESCRIBE = (
    "Describe the image(s) for someone who cannot see them: what they show, any text in "
    "them (verbatim), and the details a reply might need. Be factual and concise."
)


class ImageAdapter:
    """One turn's ``RequestAdapter`` for ``FallbackChain.chat``."""

    def __init__(
        self, entries: Mapping[str, ModelEntry], roles: RoleChains, images: tuple[ImagePart, ...]
    ) -> None:
        self._entries = entries
        self._roles = roles
        self.images = images
        self._asked = False
        self.description: str | None = None  # written by roles.vision this turn, if asked

    async def __call__(self, name: str, request: ChatRequest) -> ChatRequest:
        entry = self._entries.get(name)
        if entry is not None and entry.vision:
            return request
        note = await self._text_instead()
        messages = tuple(
            dataclasses.replace(m, images=(), content=f"{m.content or ''}\n{note}".strip())
            if m.images
            else m
            for m in request.messages
        )
        return dataclasses.replace(request, messages=messages)

    async def _text_instead(self) -> str:
        if not self._asked:
            self._asked = True
            self.description = await self._describe()
        if self.description:
            return described(self.description)
        return NOT_SEEN

    async def _describe(self) -> str | None:
        if not self._roles.has(VISION_ROLE):
            return None
        request = ChatRequest(
            system=DESCRIBE,
            messages=(ChatMessage("user", "Describe this.", images=self.images),),
        )
        try:
            with for_purpose(VISION):  # a usage row of its own kind, charged to the turn
                response = await self._roles.chat(VISION_ROLE, request)
        except (AllModelsFailed, ProviderError, BudgetExhausted) as exc:
            log.warning("roles.vision could not describe the image: %s", exc)
            return None
        return response.text.strip() or None


class VisionModels:
    """Which entries see images, and the role that describes them for the others."""

    def __init__(self, entries: Iterable[ModelEntry], roles: RoleChains) -> None:
        self._entries = {e.model_name: e for e in entries}
        self._roles = roles

    def adapter(self, images: tuple[ImagePart, ...]) -> ImageAdapter:
        return ImageAdapter(self._entries, self._roles, images)
