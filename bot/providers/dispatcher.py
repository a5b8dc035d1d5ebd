"""The one ProviderDispatcher of a process: one lazily built provider per model_list entry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import httpx

from bot.config.schema import ModelEntry
from bot.providers.base import Provider
from bot.tls import client_context

ProviderFactory = Callable[[ModelEntry, httpx.AsyncClient], Provider]


def default_factory(entry: ModelEntry, client: httpx.AsyncClient) -> Provider:
    from bot.providers.registry import provider_for

    return provider_for(entry, client)


class ProviderDispatcher:
    """Creates each provider on first use, exactly once, and shares one HTTP pool.

    Keyed by the entry's name; a reload builds a new dispatcher, so a changed entry
    (protocol, model id, base or key) always gets a fresh provider.
    """

    def __init__(
        self,
        entries: Iterable[ModelEntry],
        *,
        factory: ProviderFactory = default_factory,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._entries = {e.model_name: e for e in entries}
        self._factory = factory
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,
            verify=client_context(),
        )
        self._providers: dict[str, Provider] = {}
        self._lock = asyncio.Lock()
        self.created = 0  # how many providers were built; tests and /metrics read it

    async def get(self, model_name: str) -> Provider:
        provider = self._providers.get(model_name)
        if provider is not None:
            return provider
        async with self._lock:
            provider = self._providers.get(model_name)
            if provider is None:
                provider = self._factory(self._entries[model_name], self._client)
                self._providers[model_name] = provider
                self.created += 1
            return provider

    async def aclose(self) -> None:
        async with self._lock:
            providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.aclose()
        await self._client.aclose()
