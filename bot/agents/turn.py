"""One agent turn: store the message, build context, call the agent's chain, run the tools
it asks for, store every step, and return the text for the channel.

Every step is appended with the model that produced it, so a crash mid-turn loses nothing
that was said and ``/status`` can say which model answered. The tool loop is bounded by
``max_tool_iterations``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.agents.agent import Agent
from bot.agents.tools import ToolContext, ToolRegistry
from bot.config.schema import SessionSettings
from bot.errors import ContextWindowExceeded
from bot.providers.fallback import FallbackChain
from bot.routing import Route
from bot.sessions.compaction import CompactionWorker
from bot.sessions.context import build_context, message_tokens, unsummarised_tokens
from bot.sessions.store import SessionKey, SessionStore
from bot.types import ChatMessage, ChatRequest, ChatResponse

log = logging.getLogger(__name__)


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
    ) -> None:
        self._chain = chain
        self._store = store
        self._settings = settings
        self._compaction = compaction
        self._tools = tools or ToolRegistry()

    async def run(
        self, agent: Agent, route: Route, text: str, source: str | None = None
    ) -> TurnResult:
        """A chat turn: the person's message in the chat's session. ``source`` names the
        update it came from, so a replayed turn does not store the message twice."""
        return await self._turn(agent, route, session_key(route), text, depth=0, source=source)

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
    ) -> TurnResult:
        session_id = await self._store.active_session(key)
        await self._store.append(session_id, ChatMessage("user", text), source=source)
        context = ToolContext(agent, route, session_id, depth)
        rounds = 0
        while True:
            response, history_tokens = await self._ask(agent, session_id)
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
                text = tool_limit_message(rounds)
                await self._store.append(session_id, ChatMessage("assistant", text))
                self._compaction.note_size(session_id, history_tokens)
                return TurnResult(text, response.model_name, session_id, rounds)
            rounds += 1
            for call in response.tool_calls:
                result = await self._tools.run(call, context)
                await self._store.append(
                    session_id, ChatMessage("tool", result, tool_call_id=call.id)
                )
        reply_tokens = message_tokens(ChatMessage("assistant", response.text))
        self._compaction.note_size(session_id, history_tokens + reply_tokens)
        return TurnResult(response.text, response.model_name, session_id, rounds)

    async def _ask(self, agent: Agent, session_id: int) -> tuple[ChatResponse, int]:
        """The model's answer, and the size of the unsummarised history it was built from."""
        budget = self._settings.context_window_tokens
        try:
            return await self._request(agent, session_id, budget)
        except ContextWindowExceeded:
            # The model's window is smaller than our estimate said: compact in the
            # background and retry once with half the context.
            self._compaction.request(session_id)
            log.warning(
                "agent %s: context window exceeded; retrying with a smaller context", agent.id
            )
            return await self._request(agent, session_id, budget // 2)

    async def _request(
        self, agent: Agent, session_id: int, budget: int
    ) -> tuple[ChatResponse, int]:
        summary = await self._store.latest_summary(session_id)
        after = summary.covers_up_to if summary else 0
        history = await self._store.messages(session_id, after_id=after)
        window = build_context(agent.persona, summary, history, budget)
        if window.dropped:
            log.info(
                "agent %s session %d: %d older messages left out of the context",
                agent.id,
                session_id,
                window.dropped,
            )
        response = await self._chain.chat(
            agent.chain,
            ChatRequest(system=window.system, messages=window.messages, tools=self._tools.specs()),
        )
        return response, unsummarised_tokens(history)
