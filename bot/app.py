"""The App owns every long-lived part and starts and stops them in order.

Data path: channel → inbox → ``handle`` → per-chat lane → router → command or agent turn
→ fallback chain → provider → channel.send → inbox row done. Nothing long-lived lives at
module level.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from bot.agents.agent import agents_from
from bot.agents.subagents import SubAgents
from bot.agents.turn import TurnRunner
from bot.channels.base import Channel, InboundMessage, Inbox
from bot.channels.telegram import TelegramChannel
from bot.commands import CommandHandler, parse_command
from bot.config.loader import LoadedConfig
from bot.errors import AllModelsFailed, ChannelError, ProviderError, StoreError
from bot.lanes import ChatLanes
from bot.providers.dispatcher import ProviderDispatcher
from bot.providers.fallback import FallbackChain, RoleChains
from bot.routing import Route, Router
from bot.sessions.compaction import CompactionWorker
from bot.sessions.store import SessionStore, SqliteSessionStore

log = logging.getLogger(__name__)

MODEL_REFUSED = "The model could not answer this message; try rephrasing it."
STORE_FAILED = "I could not save this conversation just now; please try again shortly."

ChannelFactory = Callable[[LoadedConfig, Inbox], Iterable[Channel]]


def telegram_channels(loaded: LoadedConfig, inbox: Inbox) -> list[Channel]:
    return [TelegramChannel(bot, inbox) for bot in loaded.config.channels.bots()]


class App:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        channels: ChannelFactory = telegram_channels,
        store: SessionStore | None = None,
        router: Router | None = None,
    ) -> None:
        config = loaded.config
        self.loaded = loaded
        self.store = store or SqliteSessionStore(loaded.database)
        self.dispatcher = ProviderDispatcher(config.model_list)
        self.chain = FallbackChain(self.dispatcher)
        self.roles = RoleChains(config.roles, self.chain)
        self.router = router or Router(config.bindings)
        self.agents = agents_from(loaded)
        self.compaction = CompactionWorker(self.store, self.roles, config.session)
        self.subagents = SubAgents(self.agents, self.store, self._post_result)
        self.runner = TurnRunner(
            self.chain, self.store, config.session, self.compaction, self.subagents.registry()
        )
        self.subagents.bind(self.runner)
        self.commands = CommandHandler(self.store, self.chain.cooldowns)
        self.lanes = ChatLanes()
        self._channel_factory = channels
        self.channels: dict[str, Channel] = {}

    def secrets(self) -> list[str]:
        """Every secret in the config, for log redaction."""
        config = self.loaded.config
        found = [b.token.get_secret_value() for b in config.channels.bots()]
        found += [m.api_key.get_secret_value() for m in config.model_list if m.api_key]
        return found

    async def start(self) -> None:
        """Open the store, then start every channel; one bad bot does not stop the others."""
        await self.store.open()
        self.compaction.start()
        channels = list(self._channel_factory(self.loaded, self.store))
        # Registered before starting: a channel replays its pending inbox during start().
        self.channels = {c.name: c for c in channels}
        results = await asyncio.gather(
            *(c.start(self.handle) for c in channels), return_exceptions=True
        )
        for channel, result in zip(channels, results, strict=True):
            if isinstance(result, ChannelError):
                log.error("channel %s not started: %s", channel.name, result)
                del self.channels[channel.name]
            elif isinstance(result, BaseException):
                raise result
        if not self.channels:
            raise ChannelError("no channel could start")

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop receiving, let in-flight turns finish (bounded), then close everything."""
        channels = list(self.channels.values())
        await asyncio.gather(*(c.stop() for c in channels), return_exceptions=True)
        if not await self.lanes.join(within_s=grace_s):
            log.warning("turns still running after %.0fs; cancelling them", grace_s)
            await self.lanes.cancel()
        for channel in channels:
            if isinstance(channel, TelegramChannel):
                await channel.close()
        await self.subagents.stop()
        await self.compaction.stop()
        await self.dispatcher.aclose()
        await self.store.aclose()

    async def handle(self, message: InboundMessage) -> None:
        self.lanes.submit(message.chat_key, lambda: self._turn(message))

    async def _turn(self, message: InboundMessage) -> None:
        channel = self.channels.get(message.channel)
        if channel is None:
            # Left pending in the inbox: answered when the channel runs again.
            log.error("channel %s is not running; message kept for later", message.channel)
            return
        route = self.router.route(message.channel, message.chat_id, message.topic_id)
        if route is None:
            log.warning("no binding for channel %s chat %s", message.channel, message.chat_id)
            await self._done(message)
            return
        agent = self.agents[route.agent_id]
        command = parse_command(message.text)
        try:
            if command is not None:
                reply = await self.commands.answer(command, agent, route)
            else:
                async with channel.typing(route.chat_id, route.topic_id):
                    reply = await self._agent_reply(message, route.agent_id)
        except StoreError as exc:
            log.error("store failed for channel=%s chat=%s: %s", route.channel, route.chat_id, exc)
            reply = STORE_FAILED
        try:
            await channel.send(route.chat_id, reply, topic_id=route.topic_id)
        except ChannelError as exc:
            log.error("reply to channel=%s chat=%s failed: %s", route.channel, route.chat_id, exc)
        await self._done(message)

    async def _agent_reply(self, message: InboundMessage, agent_id: str) -> str:
        agent = self.agents[agent_id]
        route = self.router.route(message.channel, message.chat_id, message.topic_id)
        assert route is not None
        try:
            result = await self.runner.run(agent, route, message.text)
        except AllModelsFailed as exc:
            log.error("turn channel=%s agent=%s: %s", route.channel, agent.id, exc)
            return exc.user_message()
        except ProviderError as exc:
            log.error("turn channel=%s agent=%s: %s", route.channel, agent.id, exc)
            return MODEL_REFUSED
        log.info(
            "turn channel=%s chat=%s agent=%s model=%s",
            route.channel,
            route.chat_id,
            agent.id,
            result.model_name,
        )
        return result.text

    async def _post_result(self, route: Route, text: str) -> None:
        """A spawned task finished: its result goes to the chat that asked for it."""
        channel = self.channels.get(route.channel)
        if channel is None:
            log.error("spawn result for channel %s dropped: channel not running", route.channel)
            return
        try:
            await channel.send(route.chat_id, text, topic_id=route.topic_id)
        except ChannelError as exc:
            log.error(
                "spawn result to channel=%s chat=%s failed: %s", route.channel, route.chat_id, exc
            )

    async def _done(self, message: InboundMessage) -> None:
        if message.inbox_id is not None:
            await self.store.inbox_done(message.channel, message.inbox_id)
