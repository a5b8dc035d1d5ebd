"""One agent turn: store the message, build context, call the agent's chain, store the reply.

Every step is appended to the session store with the model that produced it, so a crash
mid-turn loses nothing that was said, and ``/status`` can say which model answered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.agents.agent import Agent
from bot.config.schema import SessionSettings
from bot.errors import ContextWindowExceeded
from bot.providers.fallback import FallbackChain
from bot.routing import Route
from bot.sessions.compaction import CompactionWorker
from bot.sessions.context import build_context
from bot.sessions.store import SessionKey, SessionStore
from bot.types import ChatMessage, ChatRequest, ChatResponse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnResult:
    text: str
    model_name: str
    session_id: int


def session_key(route: Route) -> SessionKey:
    return SessionKey(route.channel, route.chat_id, route.topic_id, route.agent_id)


class TurnRunner:
    def __init__(
        self,
        chain: FallbackChain,
        store: SessionStore,
        settings: SessionSettings,
        compaction: CompactionWorker,
    ) -> None:
        self._chain = chain
        self._store = store
        self._settings = settings
        self._compaction = compaction

    async def run(self, agent: Agent, route: Route, text: str) -> TurnResult:
        session_id = await self._store.active_session(session_key(route))
        await self._store.append(session_id, ChatMessage("user", text))
        budget = self._settings.context_window_tokens
        try:
            response = await self._ask(agent, session_id, budget)
        except ContextWindowExceeded:
            # The model's window is smaller than our estimate said: compact in the
            # background and retry this turn once with half the context.
            self._compaction.request(session_id)
            log.warning(
                "agent %s: context window exceeded; retrying with a smaller context", agent.id
            )
            response = await self._ask(agent, session_id, budget // 2)
        await self._store.append(
            session_id,
            ChatMessage(
                "assistant", response.text, tool_calls=response.tool_calls, extras=response.extras
            ),
            model_name=response.model_name,
            usage=response.usage,
        )
        await self._compaction.note_growth(session_id)
        return TurnResult(response.text, response.model_name, session_id)

    async def _ask(self, agent: Agent, session_id: int, budget: int) -> ChatResponse:
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
        return await self._chain.chat(
            agent.chain, ChatRequest(system=window.system, messages=window.messages)
        )
