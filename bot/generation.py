"""A Generation: everything built from one config — models, chains, router, agents, tools.

A reload builds a new Generation and swaps it in; turns already running keep the one they
started with, and an old Generation closes its HTTP pools only once its last turn and
sub-task are done. That is how SIGHUP applies a new config without dropping a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from bot.agents.agent import Agent, agents_from
from bot.agents.subagents import SubAgents, TaskJournal
from bot.agents.turn import TurnRunner
from bot.commands import CommandHandler
from bot.config.loader import LoadedConfig
from bot.config.schema import BridgeConfig
from bot.media.intake import MediaIntake
from bot.media.vision import VisionModels
from bot.providers.cooldown import CooldownBook
from bot.providers.dispatcher import ProviderDispatcher
from bot.providers.fallback import ChainObserver, FallbackChain, RoleChains
from bot.redaction import Redactor
from bot.routing import Router
from bot.sessions.compaction import CompactionWorker
from bot.sessions.store import SessionStore
from bot.usage.meter import UsageMeter

log = logging.getLogger(__name__)


@dataclass
class Generation:
    loaded: LoadedConfig
    dispatcher: ProviderDispatcher
    chain: FallbackChain
    roles: RoleChains
    router: Router
    agents: dict[str, Agent]
    runner: TurnRunner
    commands: CommandHandler
    subagents: SubAgents
    media: MediaIntake
    _busy: int = 0
    _retired: bool = False
    _closed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(
        cls,
        loaded: LoadedConfig,
        *,
        store: SessionStore,
        cooldowns: CooldownBook,
        compaction: CompactionWorker,
        journal: TaskJournal,
        router: Router | None = None,
        observer: ChainObserver | None = None,
        moved: dict[tuple[str, str], str] | None = None,
        redactor: Redactor | None = None,
        meter: Callable[[BridgeConfig], UsageMeter] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Generation:
        config = loaded.config
        dispatcher = ProviderDispatcher(config.model_list)
        chain = FallbackChain(
            dispatcher,
            cooldowns,
            observer=observer,
            meter=None if meter is None else meter(config),
        )
        agents = agents_from(loaded)
        subagents = SubAgents(agents, store, journal, redactor=redactor)
        roles = RoleChains(config.roles, chain)
        runner = TurnRunner(
            chain,
            store,
            config.session,
            compaction,
            subagents.registry(),
            vision=VisionModels(config.model_list, roles),
        )
        subagents.bind(runner)
        return cls(
            loaded=loaded,
            dispatcher=dispatcher,
            chain=chain,
            roles=roles,
            router=router or Router(config.bindings, moved),
            agents=agents,
            runner=runner,
            commands=CommandHandler(
                store,
                cooldowns,
                admins=config.admins,
                budget_timezone=config.budget_timezone,
                clock=clock,
                roles=config.roles,
            ),
            subagents=subagents,
            media=MediaIntake(roles, config),
        )

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[Generation]:
        """Hold this generation open for the duration of one turn."""
        self._busy += 1
        try:
            yield self
        finally:
            self._busy -= 1
            if self._retired and self._busy == 0:
                await self._close()

    async def retire(self) -> None:
        """No new turns will use it; close once the running ones are done."""
        self._retired = True
        if self._busy == 0:
            await self._close()

    async def close_now(self) -> None:
        """Shutdown: cancel sub-tasks still running and close connections."""
        await self.subagents.stop()
        await self._close()

    async def _close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        await self.subagents.wait()
        await self.dispatcher.aclose()
        log.debug("generation of %s closed", self.loaded.path)
