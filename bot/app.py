"""The App owns every long-lived part and starts and stops them in order.

Data path: channel → ``handle`` → per-chat lane → router → agent turn → fallback chain
→ provider → channel.send. Nothing long-lived lives at module level.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from bot.agents.agent import agents_from
from bot.agents.turn import TurnRunner
from bot.channels.base import Channel, InboundMessage
from bot.channels.telegram import TelegramChannel
from bot.config.loader import LoadedConfig
from bot.errors import AllModelsFailed, ChannelError, ProviderError
from bot.lanes import ChatLanes
from bot.providers.dispatcher import ProviderDispatcher
from bot.providers.fallback import FallbackChain
from bot.routing import Router

log = logging.getLogger(__name__)

MODEL_REFUSED = "The model could not answer this message; try rephrasing it."


class App:
    def __init__(self, loaded: LoadedConfig, channels: Iterable[Channel] | None = None) -> None:
        config = loaded.config
        self.loaded = loaded
        self.dispatcher = ProviderDispatcher(config.model_list)
        self.chain = FallbackChain(self.dispatcher)
        self.router = Router(config.bindings)
        self.agents = agents_from(loaded)
        self.runner = TurnRunner(self.chain)
        self.lanes = ChatLanes()
        if channels is None:
            channels = [TelegramChannel(bot) for bot in config.channels.bots()]
        self.channels: dict[str, Channel] = {c.name: c for c in channels}

    def secrets(self) -> list[str]:
        """Every secret in the config, for log redaction."""
        config = self.loaded.config
        found = [b.token.get_secret_value() for b in config.channels.bots()]
        found += [m.api_key.get_secret_value() for m in config.model_list if m.api_key]
        return found

    async def start(self) -> None:
        """Start every channel; one bot failing (bad token) does not take the others down."""
        channels = list(self.channels.values())
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
        """Stop receiving, let in-flight turns finish (bounded), then close connections."""
        await asyncio.gather(*(c.stop() for c in self.channels.values()), return_exceptions=True)
        if not await self.lanes.join(within_s=grace_s):
            log.warning("turns still running after %.0fs; cancelling them", grace_s)
            await self.lanes.cancel()
        await self.dispatcher.aclose()

    async def handle(self, message: InboundMessage) -> None:
        self.lanes.submit(message.chat_key, lambda: self._turn(message))

    async def _turn(self, message: InboundMessage) -> None:
        route = self.router.route(message.channel, message.chat_id, message.topic_id)
        if route is None:
            log.warning("no binding for channel %s chat %s", message.channel, message.chat_id)
            return
        agent = self.agents[route.agent_id]
        try:
            response = await self.runner.run(agent, message.text)
            reply = response.text
            log.info(
                "turn channel=%s chat=%s agent=%s model=%s",
                route.channel,
                route.chat_id,
                agent.id,
                response.model_name,
            )
        except AllModelsFailed as exc:
            log.error("turn channel=%s agent=%s: %s", route.channel, agent.id, exc)
            reply = exc.user_message()
        except ProviderError as exc:
            log.error("turn channel=%s agent=%s: %s", route.channel, agent.id, exc)
            reply = MODEL_REFUSED
        channel = self.channels.get(route.channel)
        if channel is None:
            return
        try:
            await channel.send(route.chat_id, reply, topic_id=route.topic_id)
        except ChannelError as exc:
            log.error("reply to channel=%s chat=%s failed: %s", route.channel, route.chat_id, exc)
