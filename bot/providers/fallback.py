"""FallbackChain: try a chain's candidates in order, for the current turn only (SPEC §6)."""

from __future__ import annotations

import logging

from bot.config.schema import ChainSpec
from bot.errors import AllModelsFailed, ProviderError
from bot.providers.dispatcher import ProviderDispatcher
from bot.types import ChatRequest, ChatResponse

log = logging.getLogger(__name__)


class FallbackChain:
    """Resolves every chain (agents' and roles') through the one shared dispatcher."""

    def __init__(self, dispatcher: ProviderDispatcher) -> None:
        self._dispatcher = dispatcher

    async def chat(self, chain: ChainSpec, request: ChatRequest) -> ChatResponse:
        reasons: list[ProviderError] = []
        for name in chain.names:
            provider = await self._dispatcher.get(name)
            try:
                return await provider.chat(request)
            except ProviderError as exc:
                exc.model_name = exc.model_name or name
                if not exc.failover:
                    raise
                log.warning("model %s failed (%s); trying the next candidate", name, exc)
                reasons.append(exc)
        raise AllModelsFailed(reasons)
