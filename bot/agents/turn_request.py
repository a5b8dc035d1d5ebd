"""One model request of a turn: the context that fits, the images, and the answer.

Split from the turn's tool loop (bot.agents.turn) because building what is sent is its own
concern: the window of history that fits the budget, the current turn's images fitted to
each candidate model, one smaller retry when a model's context window turns out smaller
than estimated, and a note on an answer cut short at its length limit.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from bot.agents.agent import Agent
from bot.agents.tools import ToolRegistry
from bot.config.schema import SessionSettings
from bot.errors import ContextWindowExceeded
from bot.media.history import IMAGE_KINDS, media_refs
from bot.media.intake import PreparedTurn
from bot.media.vision import ImageAdapter, VisionModels
from bot.providers.fallback import FallbackChain
from bot.sessions.compaction import CompactionWorker
from bot.sessions.context import ContextWindow, build_context
from bot.sessions.store import SessionStore, TurnContext
from bot.streaming.turn import TurnStream
from bot.types import ChatMessage, ChatRequest, ChatResponse, JSONObject

# The turn's logger: these lines are part of a turn and read as they did before the split.
log = logging.getLogger("bot.agents.turn")

# Appended to an answer the model cut short at its output token limit.
TRUNCATED_NOTE = "_(cut short: the model reached its length limit)_"


class ModelAsker:
    """Asks an agent's chain once per round, with the session's context."""

    def __init__(
        self,
        chain: FallbackChain,
        store: SessionStore,
        settings: SessionSettings,
        compaction: CompactionWorker,
        tools: ToolRegistry,
    ) -> None:
        self._chain = chain
        self._store = store
        self._settings = settings
        self._compaction = compaction
        self._tools = tools

    async def ask(
        self,
        agent: Agent,
        session_id: int,
        images: ImageTurn | None = None,
        prefetched: TurnContext | None = None,
        stream: TurnStream | None = None,
    ) -> tuple[ChatResponse, int]:
        """The model's answer, and the size of the unsummarised history it was built from."""
        first, history_tokens = await self._context(
            agent, session_id, self._settings.context_window_tokens, prefetched
        )
        try:
            response = await self._request(agent, first, images, stream)
        except ContextWindowExceeded:
            # The model's window is smaller than our estimate said: compact in the background
            # and retry once with half of what was sent. Resending the same request would only
            # fail again, so without older turns left to drop the turn gives up.
            self._compaction.request(session_id)
            retry, _ = await self._context(agent, session_id, first.tokens // 2)
            if len(retry.messages) >= len(first.messages):
                log.warning(
                    "agent %s: context window exceeded by the current message alone", agent.id
                )
                raise
            log.warning(
                "agent %s: context window exceeded; retrying with %d of %d messages",
                agent.id,
                len(retry.messages),
                len(first.messages),
            )
            response = await self._request(agent, retry, images, stream)
        if response.truncated and not response.tool_calls:
            log.warning("agent %s: model %s hit its length limit", agent.id, response.model_name)
            response = dataclasses.replace(response, text=mark_truncated(response.text))
        return response, history_tokens

    async def _context(
        self, agent: Agent, session_id: int, budget: int, read: TurnContext | None = None
    ) -> tuple[ContextWindow, int]:
        """The window that fits ``budget``, and the size of the unsummarised history
        (``read``: the store's answer already in hand)."""
        summary, history = read or await self._store.turn_context(session_id)
        window = build_context(agent.persona, summary, history, budget)
        if window.dropped:
            log.info(
                "agent %s session %d: %d older messages left out of the context",
                agent.id,
                session_id,
                window.dropped,
            )
        return window, window.history_tokens

    async def _request(
        self,
        agent: Agent,
        window: ContextWindow,
        images: ImageTurn | None = None,
        stream: TurnStream | None = None,
    ) -> ChatResponse:
        messages = window.messages if images is None else images.attach(window.messages)
        sink = stream.on_event if stream is not None and stream.streams else None
        return await self._chain.chat(
            agent.chain,
            ChatRequest(
                system=window.system, messages=messages, tools=self._tools.specs(), stream_to=sink
            ),
            adapt=None if images is None else images.adapter,
        )


@dataclass(frozen=True)
class ImageTurn:
    """The current turn's images: parts on its user message, fitted to each candidate."""

    adapter: ImageAdapter

    @classmethod
    def of(cls, media: PreparedTurn | None, vision: VisionModels | None) -> ImageTurn | None:
        if media is None or not media.images or vision is None:
            return None
        return cls(vision.adapter(media.images))

    def attach(self, messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
        """The newest user message (the current turn, always in the window) with images."""
        last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        if last is None:
            return messages
        current = dataclasses.replace(messages[last], images=self.adapter.images)
        return (*messages[:last], current, *messages[last + 1 :])

    def described(self, extras: JSONObject) -> JSONObject:
        """``extras`` with the vision role's description on its images' references."""
        refs = [dict(r) for r in media_refs(extras)]
        for ref in refs:
            if ref.get("kind") in IMAGE_KINDS:
                ref["description"] = self.adapter.description
        return {**extras, "media": refs}


def mark_truncated(text: str) -> str:
    """``text`` with a note that it is not the whole answer; a code block the cut left open
    is closed first, so the note is not shown as code."""
    if text.count("```") % 2:
        text += "\n```"
    return f"{text}\n\n{TRUNCATED_NOTE}"
