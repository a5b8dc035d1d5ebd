"""The App owns every long-lived part and starts and stops them in order.

Data path: channel → inbox → ``handle`` → per-chat lane → router → command or agent turn
→ fallback chain → provider → channel.send → inbox row done. What one config builds lives
in a ``Generation`` that a reload swaps; the store, lanes, channels and cooldowns outlive
reloads. Nothing long-lived lives at module level.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from bot.channels.base import Channel, DeliveryLog, InboundMessage, Inbox, Resume
from bot.channels.telegram import TelegramChannel
from bot.commands import parse_command
from bot.config.loader import LoadedConfig, load_config
from bot.errors import (
    AllModelsFailed,
    ChannelAuthError,
    ChannelError,
    ChannelUnavailable,
    ConfigError,
    ConfigProblem,
    PersonaBridgeError,
    ProviderError,
    StoreError,
)
from bot.generation import Generation
from bot.lanes import ChatLanes
from bot.ops.gateway import HealthReport, cooling_models
from bot.ops.metrics import BridgeMetrics
from bot.providers.cooldown import CooldownBook
from bot.routing import Route, Router
from bot.sessions.compaction import CompactionWorker
from bot.sessions.outbox import InboxDelivery
from bot.sessions.store import SessionStore, SqliteSessionStore

log = logging.getLogger(__name__)

MODEL_REFUSED = "The model could not answer this message; try rephrasing it."
STORE_FAILED = "I could not save this conversation just now; please try again shortly."
RETRY_UNDELIVERED_S = 30.0
# Telegram caps a message at 4096 characters; other channels (or a hostile API) may not.
MAX_INBOUND_CHARS = 32_000

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
        self.store = store or SqliteSessionStore(loaded.database)
        self.metrics = BridgeMetrics()
        self.cooldowns = CooldownBook()
        self.metrics.track_cooldowns(self.cooldowns.snapshot)
        self.lanes = ChatLanes()
        self._channel_factory = channels
        self._fixed_router = router
        self.compaction = CompactionWorker(
            self.store, None, loaded.config.session, observe=self._compaction_outcome
        )
        self.generation = self._build(loaded)
        self.compaction.use_roles(self.generation.roles)
        self.channels: dict[str, Channel] = {}
        self.refused: dict[str, ChannelError] = {}  # channel → why it did not start
        self.turns_served = 0

    @property
    def loaded(self) -> LoadedConfig:
        return self.generation.loaded

    def secrets(self) -> list[str]:
        """Every secret in the config, for log redaction."""
        config = self.loaded.config
        found = [b.token.get_secret_value() for b in config.channels.bots()]
        found += [m.api_key.get_secret_value() for m in config.model_list if m.api_key]
        return found

    def _build(self, loaded: LoadedConfig) -> Generation:
        return Generation.build(
            loaded,
            store=self.store,
            cooldowns=self.cooldowns,
            compaction=self.compaction,
            post=self._post_result,
            router=self._fixed_router,
            observer=self.metrics,
        )

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, then start every channel; one bad bot does not stop the others.

        Either everything runs afterwards or nothing does: a failed start closes what it
        opened (the store's worker thread would otherwise keep the process alive).
        """
        try:
            await self.store.open()
            self.compaction.start()
            await self._start_channels(list(self._channel_factory(self.loaded, self.store)))
            if not self.channels:
                raise self._nothing_started()
            await self._refresh_backlog()
        except BaseException:
            await self.stop(grace_s=0.0)
            raise

    def _nothing_started(self) -> PersonaBridgeError:
        """Every token rejected is the config's fault (exit 78); anything else is not."""
        channels = self.loaded.config.channels
        paths = {
            b.channel: f"channels.telegram_bots[{i}]" for i, b in enumerate(channels.telegram_bots)
        }
        paths["telegram"] = "channels.telegram"  # the legacy single bot
        rejected = [
            ConfigProblem(
                f"{path}.token",
                f"Telegram rejected the token of channel {name}",
                "check it with @BotFather (a revoked token must be replaced)",
            )
            for name, path in paths.items()
            if isinstance(self.refused.get(name), ChannelAuthError)
        ]
        if rejected and len(rejected) == len(self.refused):
            return ConfigError(rejected)
        reasons = "; ".join(f"{name}: {why}" for name, why in self.refused.items())
        return ChannelError(f"no channel could start ({reasons or 'none configured'})")

    async def _start_channels(self, channels: list[Channel]) -> None:
        # Registered before starting: a channel replays its pending inbox during start().
        self.channels.update({c.name: c for c in channels})
        results = await asyncio.gather(
            *(c.start(self.handle) for c in channels), return_exceptions=True
        )
        for channel, result in zip(channels, results, strict=True):
            if isinstance(result, ChannelError):
                log.error("channel %s not started: %s", channel.name, result)
                del self.channels[channel.name]
                self.refused[channel.name] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                self.refused.pop(channel.name, None)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop receiving, let in-flight turns finish (bounded), then close everything."""
        channels = list(self.channels.values())
        await asyncio.gather(*(c.stop() for c in channels), return_exceptions=True)
        if not await self.lanes.join(within_s=grace_s):
            log.warning("turns still running after %.0fs; cancelling them", grace_s)
            await self.lanes.cancel()
        for channel in channels:
            await channel.close()
        await self.generation.close_now()
        await self.compaction.stop()
        await self.store.aclose()

    async def reload(self, path: Path) -> bool:
        """Re-read the config; an invalid one changes nothing and says why (SPEC §9)."""
        try:
            loaded = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, old config still running: %s", problem)
            return False
        if loaded.database != self.loaded.database:
            log.warning("session.database changed; that takes effect at the next restart")
        old, self.generation = self.generation, self._build(loaded)
        self.compaction.use_roles(self.generation.roles)
        await self._apply_channels(loaded)
        asyncio.create_task(old.retire(), name="retire old generation")  # noqa: RUF006
        log.info(
            "reloaded %s: %d bot(s), %d agent(s)",
            path,
            len(self.channels),
            len(self.generation.agents),
        )
        return True

    async def _apply_channels(self, loaded: LoadedConfig) -> None:
        """Start added bots, stop removed ones, restart the ones whose settings changed."""
        wanted = {c.name: c for c in self._channel_factory(loaded, self.store)}
        stale = [
            current
            for name, current in self.channels.items()
            if name not in wanted
            or getattr(current, "spec", None) != getattr(wanted[name], "spec", None)
        ]
        for channel in stale:
            await channel.stop()
            await channel.close()
            del self.channels[channel.name]
        for name in [n for n in self.refused if n not in wanted]:
            del self.refused[name]
        await self._start_channels([c for n, c in wanted.items() if n not in self.channels])

    # --- the data path --------------------------------------------------------------

    async def handle(self, message: InboundMessage) -> None:
        self.metrics.messages_in.labels(bot=message.channel).inc()
        self.lanes.submit(message.chat_key, lambda: self._turn(message))

    async def _turn(self, message: InboundMessage) -> None:
        channel = self.channels.get(message.channel)
        if channel is None:
            # Left pending in the inbox: answered when the channel runs again.
            log.error("channel %s is not running; message kept for later", message.channel)
            return
        async with self.generation.use() as generation:
            route = generation.router.route(message.channel, message.chat_id, message.topic_id)
            if route is None:
                log.warning("no binding for channel %s chat %s", message.channel, message.chat_id)
                await self._done(message)
                return
            resume = message.resume
            if resume is None:
                started = time.monotonic()
                reply = await self._fresh_reply(generation, message, route, channel)
                self.metrics.turn_seconds.labels(agent=route.agent_id).observe(
                    time.monotonic() - started
                )
                first_chunk = 0
            else:
                # Generated before a restart: send what is left, never ask a model again.
                reply, first_chunk = resume.reply, resume.chunks_sent
                if resume.in_flight:
                    log.warning(
                        "channel=%s update=%s: chunk %d was being sent when the bridge "
                        "stopped; sending it again (it may arrive twice)",
                        message.channel,
                        message.inbox_id,
                        first_chunk,
                    )
        delivery = None
        if message.inbox_id is not None:
            delivery = InboxDelivery(self.store, message.channel, message.inbox_id, first_chunk)
        try:
            await self._send(channel, route, reply, delivery)
        except ChannelUnavailable as exc:
            # Telegram is down: keep the update pending and try the rest again later.
            next_chunk = delivery.next_chunk if delivery is not None else 0
            log.error(
                "reply to channel=%s chat=%s not delivered (%s); retrying in %.0fs",
                route.channel,
                route.chat_id,
                exc,
                RETRY_UNDELIVERED_S,
            )
            retry = dataclasses.replace(message, resume=Resume(reply, next_chunk, False))
            self._later(RETRY_UNDELIVERED_S, retry)
            return
        await self._done(message)

    def _later(self, seconds: float, message: InboundMessage) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(seconds, lambda: loop.create_task(self.handle(message)))

    async def _fresh_reply(
        self, generation: Generation, message: InboundMessage, route: Route, channel: Channel
    ) -> str:
        try:
            reply = await self._reply(generation, message, route, channel)
            if message.inbox_id is not None:
                await self.store.inbox_reply(message.channel, message.inbox_id, reply)
        except StoreError as exc:
            log.error("store failed for channel=%s chat=%s: %s", route.channel, route.chat_id, exc)
            return STORE_FAILED
        return reply

    async def _reply(
        self, generation: Generation, message: InboundMessage, route: Route, channel: Channel
    ) -> str:
        agent = generation.agents[route.agent_id]
        command = parse_command(message.text)
        if command is not None:
            return await generation.commands.answer(command, agent, route)
        if len(message.text) > MAX_INBOUND_CHARS:
            log.warning(
                "channel=%s chat=%s: message of %d characters refused",
                route.channel,
                route.chat_id,
                len(message.text),
            )
            return (
                f"That message is too long for me ({len(message.text):,} characters; "
                f"the limit is {MAX_INBOUND_CHARS:,}). Please send it in parts."
            )
        try:
            async with channel.typing(route.chat_id, route.topic_id):
                result = await generation.runner.run(agent, route, message.text)
        except AllModelsFailed as exc:
            log.error("turn channel=%s agent=%s: %s", route.channel, agent.id, exc)
            return exc.user_message()
        except ProviderError as exc:
            log.error("turn channel=%s agent=%s: %s", route.channel, agent.id, exc)
            return MODEL_REFUSED
        self.turns_served += 1
        log.info(
            "turn channel=%s chat=%s agent=%s model=%s tools=%d",
            route.channel,
            route.chat_id,
            agent.id,
            result.model_name,
            result.tool_rounds,
        )
        return result.text

    async def _send(
        self, channel: Channel, route: Route, text: str, delivery: DeliveryLog | None = None
    ) -> None:
        try:
            await channel.send(route.chat_id, text, topic_id=route.topic_id, delivery=delivery)
        except ChannelUnavailable:
            raise
        except ChannelError as exc:
            log.error("reply to channel=%s chat=%s failed: %s", route.channel, route.chat_id, exc)
            return
        self.metrics.messages_out.labels(bot=route.channel).inc()

    async def _post_result(self, route: Route, text: str) -> None:
        """A spawned task finished: its result goes to the chat that asked for it."""
        channel = self.channels.get(route.channel)
        if channel is None:
            log.error("spawn result for channel %s dropped: channel not running", route.channel)
            return
        try:
            await self._send(channel, route, text)
        except ChannelUnavailable as exc:
            log.error(
                "spawn result to channel=%s chat=%s lost: %s", route.channel, route.chat_id, exc
            )

    async def _done(self, message: InboundMessage) -> None:
        if message.inbox_id is not None:
            await self.store.inbox_done(message.channel, message.inbox_id)
            await self._refresh_backlog()

    async def _refresh_backlog(self) -> None:
        self.metrics.inbox_backlog.set(await self.store.inbox_backlog())

    def _compaction_outcome(self, outcome: str) -> None:
        self.metrics.compactions.labels(outcome=outcome).inc()

    # --- health ---------------------------------------------------------------------

    def polling(self) -> dict[str, bool]:
        return {name: bool(c.status()["polling"]) for name, c in self.channels.items()}

    async def health(self) -> HealthReport:
        """Ready only while every configured bot polls; a refused one is shown with why."""
        bots: dict[str, dict[str, object]] = {
            name: {"polling": False, "username": "", "error": str(why)}
            for name, why in self.refused.items()
        }
        bots.update({name: c.status() for name, c in self.channels.items()})
        polling = self.polling()
        self.metrics.bots_polling.set(sum(polling.values()))
        started = bool(self.channels)
        return HealthReport(
            ready=started and all(polling.values()) and not self.refused,
            bots=bots,
            models=cooling_models(self.cooldowns),
            inbox_backlog=await self.store.inbox_backlog() if started else 0,
        )

    def status_line(self) -> str:
        polling = self.polling()
        return (
            f"{sum(polling.values())}/{len(polling)} bots polling, "
            f"{self.turns_served} turns served, {self.lanes.busy} chats busy"
        )
