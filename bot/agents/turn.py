"""One agent turn: persona + conversation → the agent's model chain → reply text."""

from __future__ import annotations

from bot.agents.agent import Agent
from bot.providers.fallback import FallbackChain
from bot.types import ChatMessage, ChatRequest, ChatResponse


class TurnRunner:
    def __init__(self, chain: FallbackChain) -> None:
        self._chain = chain

    async def run(self, agent: Agent, text: str) -> ChatResponse:
        request = ChatRequest(
            system=agent.persona, messages=(ChatMessage(role="user", content=text),)
        )
        return await self._chain.chat(agent.chain, request)
