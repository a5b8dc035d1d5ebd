"""One agent turn: store the message, ask the agent's chain, run the tools it asks for,
store every step, and return the text for the channel.

Every step is appended with the model that produced it, so a crash mid-turn loses nothing
that was said and ``/status`` can say which model answered. The tool loop is bounded by
``max_tool_iterations``; a ``/stop`` or a model failing mid-answer ends the turn with what
was shown. What one round sends to the model (context window, images, the retry on a
too-small window) is built in bot.agents.turn_request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from bot.agents.agent import Agent
from bot.agents.tools import ToolContext, ToolRegistry
from bot.agents.turn_request import TRUNCATED_NOTE, ImageTurn, ModelAsker
from bot.config.schema import SessionSettings
from bot.errors import AllModelsFailed
from bot.media.intake import PreparedTurn
from bot.media.vision import VisionModels
from bot.providers.fallback import FallbackChain
from bot.routing import Route
from bot.sessions.compaction import CompactionWorker
from bot.sessions.context import message_tokens
from bot.sessions.store import SessionKey, SessionStore, TurnContext
from bot.streaming.turn import TurnStream, mark_broken, mark_stopped
from bot.types import ChatMessage, ToolCall
from bot.usage.cause import SUBAGENT, TOOL, TURN, for_purpose

log = logging.getLogger(__name__)

# Still importable from here, where callers and tests found them before the split.
__all__ = [
    "TRUNCATED_NOTE",
    "ImageTurn",
    "TurnResult",
    "TurnRunner",
    "session_key",
    "tool_limit_message",
]


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
        self._store = store
        self._compaction = compaction
        self._tools = tools or ToolRegistry()
        self._vision = vision
        self._asker = ModelAsker(chain, store, settings, compaction, self._tools)

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
                response, history_tokens = await self._asker.ask(
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


@dataclass
class _Progress:
    """How far a turn got, for ending it early (/stop, a model failing mid-answer)."""

    session_id: int
    stream: TurnStream | None
    model_name: str = ""
    rounds: int = 0
    unanswered: list[ToolCall] = dataclasses.field(default_factory=list)  # no result yet
