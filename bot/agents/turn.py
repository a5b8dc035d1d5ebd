"""One agent turn: store the message, build context, call the agent's chain, run the tools
it asks for, store every step, and return the text for the channel.

Every step is appended with the model that produced it, so a crash mid-turn loses nothing
that was said and ``/status`` can say which model answered. The tool loop is bounded by
``max_tool_iterations``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from bot.agents.agent import Agent
from bot.agents.tools import ToolContext, ToolRegistry
from bot.config.schema import SessionSettings
from bot.errors import AllModelsFailed, ContextWindowExceeded
from bot.media.history import IMAGE_KINDS, media_refs
from bot.media.intake import PreparedTurn
from bot.media.vision import ImageAdapter, VisionModels
from bot.providers.fallback import FallbackChain
from bot.routing import Route
from bot.sessions.compaction import CompactionWorker
from bot.sessions.context import (
    ContextWindow,
    build_context,
    message_tokens,
    unsummarised_tokens,
)
from bot.sessions.store import SessionKey, SessionStore, TurnContext
from bot.streaming.turn import TurnStream, mark_broken, mark_stopped
from bot.types import ChatMessage, ChatRequest, ChatResponse, JSONObject, ToolCall
from bot.usage.cause import SUBAGENT, TOOL, TURN, for_purpose

log = logging.getLogger(__name__)

# Appended to an answer the model cut short at its output token limit.
TRUNCATED_NOTE = "_(cut short: the model reached its length limit)_"


@dataclass(frozen=True)
class TurnResult:
    text: str
    model_name: str
    session_id: int
    tool_rounds: int = 0


def session_key(route: Route) -> SessionKey:
    return SessionKey(route.channel, route.chat_id, route.topic_id, route.agent_id)


def tool_limit_message(limit: int) -> str:
    return (
        f"I stopped after {limit} tool steps without finishing. "
        "Tell me to continue, or ask for something smaller."
    )


class TurnRunner:
    def __init__(
        self,
        chain: FallbackChain,
        store: SessionStore,
        settings: SessionSettings,
        compaction: CompactionWorker,
        tools: ToolRegistry | None = None,
        *,
        vision: VisionModels | None = None,
    ) -> None:
        self._chain = chain
        self._store = store
        self._settings = settings
        self._compaction = compaction
        self._tools = tools or ToolRegistry()
        self._vision = vision

    async def run(
        self,
        agent: Agent,
        route: Route,
        text: str,
        source: str | None = None,
        media: PreparedTurn | None = None,
        stream: TurnStream | None = None,
    ) -> TurnResult:
        """A chat turn: the person's message in the chat's session. ``source`` names the
        update it came from, so a replayed turn does not store the message twice. ``media``:
        what came with it (bot.media) — references stored, images sent this turn only.

        With ``stream`` the models stream into it; a ``/stop`` (``stream.stop()``) or a model
        failing after its text was shown ends the turn with the text shown so far, stored
        with a note saying so."""
        return await self._turn(
            agent,
            route,
            session_key(route),
            text,
            depth=0,
            source=source,
            media=media,
            stream=stream,
        )

    async def run_task(
        self, agent: Agent, key: SessionKey, task: str, depth: int, source: str | None = None
    ) -> str:
        """A sub-agent task in its own session (``key``), on ``agent``'s own chain."""
        route = Route(key.channel, key.chat_id, key.topic_id, agent.id)
        return (await self._turn(agent, route, key, task, depth=depth, source=source)).text

    async def _turn(
        self,
        agent: Agent,
        route: Route,
        key: SessionKey,
        text: str,
        *,
        depth: int,
        source: str | None = None,
        media: PreparedTurn | None = None,
        stream: TurnStream | None = None,
    ) -> TurnResult:
        extras = media.extras if media is not None else {}
        # The session, the person's message and the first round's context in one store step.
        session_id, message_id, read = await self._store.begin_turn(
            key, ChatMessage("user", text, extras=extras), source=source
        )
        prefetched: TurnContext | None = read
        if extras:
            # Stored before (a replay, or a group that heard it first, without what its
            # files said): the references with their transcripts and texts go on it now.
            await self._store.set_extras(message_id, extras)
            prefetched = None  # read again, with them
        images = ImageTurn.of(media, self._vision)
        progress = _Progress(session_id, stream)
        try:
            return await self._rounds(agent, route, session_id, depth, images, progress, prefetched)
        except asyncio.CancelledError:
            if stream is None or not stream.stopped:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # our own /stop, not a shutdown: the turn ends normally
            log.info("agent %s: turn stopped by /stop", agent.id)
            return await self._cut(progress, mark_stopped(stream.text), "stopped")
        except AllModelsFailed:
            if stream is None or not stream.text:
                raise
            # Text already reached the chat: no other model, the answer ends with a note.
            return await self._cut(progress, mark_broken(stream.text), "failed")
        finally:
            if images is not None and images.adapter.description:
                await self._store.set_extras(message_id, images.described(extras))

    async def _rounds(
        self,
        agent: Agent,
        route: Route,
        session_id: int,
        depth: int,
        images: ImageTurn | None,
        progress: _Progress,
        prefetched: TurnContext | None = None,
    ) -> TurnResult:
        context = ToolContext(agent, route, session_id, depth)
        stream = progress.stream
        rounds = 0
        while True:
            if stream is not None:
                stream.new_round()
            purpose = SUBAGENT if depth > 0 else (TOOL if rounds else TURN)
            with for_purpose(purpose):
                response, history_tokens = await self._ask(
                    agent, session_id, images, prefetched, stream
                )
            prefetched = None  # later rounds read what the tools added
            progress.model_name = response.model_name
            await self._store.append(
                session_id,
                ChatMessage(
                    "assistant",
                    response.text,
                    tool_calls=response.tool_calls,
                    extras=response.extras,
                ),
                model_name=response.model_name,
                usage=response.usage,
            )
            if not response.tool_calls:
                break
            progress.unanswered[:] = response.tool_calls
            if rounds == agent.max_tool_iterations:
                log.warning("agent %s: tool loop cut at %d rounds", agent.id, rounds)
                # Answer the dangling calls so the stored history stays valid for providers.
                for call in response.tool_calls:
                    await self._store.append(
                        session_id,
                        ChatMessage(
                            "tool", "not run: tool step limit reached", tool_call_id=call.id
                        ),
                    )
                progress.unanswered.clear()
                text = tool_limit_message(rounds)
                await self._store.append(session_id, ChatMessage("assistant", text))
                self._compaction.note_size(session_id, history_tokens)
                return TurnResult(text, response.model_name, session_id, rounds)
            rounds += 1
            progress.rounds = rounds
            if stream is not None:
                stream.tools_running(call.name for call in response.tool_calls)
            for call in response.tool_calls:
                result = await self._tools.run(call, context)
                await self._store.append(
                    session_id, ChatMessage("tool", result, tool_call_id=call.id)
                )
                progress.unanswered.remove(call)
        reply_tokens = message_tokens(ChatMessage("assistant", response.text))
        self._compaction.note_size(session_id, history_tokens + reply_tokens)
        return TurnResult(response.text, response.model_name, session_id, rounds)

    async def _cut(self, progress: _Progress, text: str, why: str) -> TurnResult:
        """End a turn early: answer tool calls left open (the history must stay valid for
        providers), then store what the person saw, marked, as the assistant's answer."""
        for call in progress.unanswered:
            await self._store.append(
                progress.session_id,
                ChatMessage("tool", f"not run: the turn {why}", tool_call_id=call.id),
            )
        await self._store.append(
            progress.session_id,
            ChatMessage("assistant", text),
            model_name=progress.model_name or None,
        )
        return TurnResult(text, progress.model_name, progress.session_id, progress.rounds)

    async def _ask(
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
        return window, unsummarised_tokens(history)

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


@dataclass
class _Progress:
    """How far a turn got, for ending it early (/stop, a model failing mid-answer)."""

    session_id: int
    stream: TurnStream | None
    model_name: str = ""
    rounds: int = 0
    unanswered: list[ToolCall] = dataclasses.field(default_factory=list)  # no result yet


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
