"""The App owns every long-lived part and starts and stops them in order.

Data path: channel → inbox → ``handle`` → per-chat lane → ``Lifecycle`` (bot.lifecycle:
generate once, store, deliver, finish) → router → command or agent turn → fallback chain
→ provider → channel.send. What one config builds lives in a ``Generation`` that a reload
swaps; the store, lanes, channels and cooldowns outlive reloads. Nothing long-lived lives
at module level.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from bot.channels.base import Channel, InboundMessage
from bot.channels.telegram import TelegramChannel
from bot.channels.telegram_webhook import WebhookServer
from bot.commands import parse_command
from bot.config.loader import LoadedConfig, load_config
from bot.config.schema import BridgeConfig
from bot.errors import (
    AllModelsFailed,
    BudgetExhausted,
    ChannelAuthError,
    ChannelError,
    ConfigError,
    ConfigProblem,
    PersonaBridgeError,
    ProviderError,
    StoreError,
)
from bot.generation import Generation
from bot.groups import GroupFloor, Seat, group_source
from bot.lanes import ChatLanes
from bot.lifecycle import GROUP_LANE, Lifecycle, Ticket
from bot.media import album
from bot.media.intake import PreparedTurn
from bot.ops.gateway import HealthReport, cooling_models
from bot.ops.metrics import BridgeMetrics
from bot.providers.cooldown import CooldownBook
from bot.redaction import Redactor, secrets_of
from bot.routing import Route, Router
from bot.sessions.compaction import CompactionWorker
from bot.sessions.inbox import TASK, InboxRow
from bot.sessions.lock import StoreLock
from bot.sessions.select import store_for
from bot.sessions.store import SessionStore
from bot.sessions.upkeep import StoreUpkeep
from bot.streaming.preview import Preview
from bot.streaming.turn import RunningTurns, TurnStream
from bot.types import JSONObject
from bot.usage.cause import CallCause, charged_to
from bot.usage.meter import UsageMeter
from bot.work import LocalWork, WorkSource

log = logging.getLogger(__name__)

MODEL_REFUSED = "The model could not answer this message; try rephrasing it."
STORE_FAILED = "I could not save this conversation just now; please try again shortly."
# Telegram caps a message at 4096 characters; other channels (or a hostile API) may not.
MAX_INBOUND_CHARS = 32_000
# The backlog gauge is counted when /metrics is scraped (a COUNT after every answer cost a
# store round trip per message); a store slower than this leaves the last count.
BACKLOG_COUNT_WITHIN_S = 1.0

ChannelFactory = Callable[[LoadedConfig, WorkSource], Iterable[Channel]]


def telegram_channels(
    loaded: LoadedConfig, inbox: WorkSource, webhooks: WebhookServer | None = None
) -> list[Channel]:
    return [
        TelegramChannel(bot, inbox, pairing=inbox.pairing, webhooks=webhooks)
        for bot in loaded.config.channels.bots()
    ]


class App:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        channels: ChannelFactory | None = None,
        store: SessionStore | None = None,
        router: Router | None = None,
        exclusive: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Wall-clock time for the usage ledger and budget periods; tests move it.
        self._clock = clock
        self.store = store or store_for(loaded, clock=clock)
        shared = self.store.shared
        # ``run`` holds a SQLite database alone: two bridges on one file would both replay
        # the pending inbox and answer it twice. On PostgreSQL they share it (SPEC §14).
        self._lock = StoreLock(loaded.database) if exclusive and not shared else None
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.metrics = BridgeMetrics()
        self.channels: dict[str, Channel] = {}
        self.work = self._work_source(loaded) if shared else self._local_work()
        # One redaction for the logs and everything the App serves; reloads teach it more.
        self.redactor = Redactor(secrets_of(loaded.config))
        self.cooldowns = CooldownBook(redactor=self.redactor)
        self.metrics.track_cooldowns(self.cooldowns.snapshot)
        self.lanes = ChatLanes()
        self.running = RunningTurns()  # for /stop, which must not queue behind its turn
        self.chat_moves: dict[tuple[str, str], str] = {}
        self._replayed: dict[str, asyncio.Event] = {}  # channel → its stored rows are queued
        # Webhook bots register here; it listens only while a bot of `run` uses webhook mode.
        self.webhooks = WebhookServer()
        self._serves_webhooks = channels is None  # `chat` (its own channels) binds nothing
        self._channel_factory = channels or (
            lambda loaded, inbox: telegram_channels(loaded, inbox, self.webhooks)
        )
        self._fixed_router = router
        self.compaction = CompactionWorker(
            self.store, None, loaded.config.session, observe=self._compaction_outcome
        )
        self.generation = self._build(loaded)
        self.compaction.use_roles(self.generation.roles)
        self.lifecycle = Lifecycle(
            self.store,
            self.channels,
            generate=self._generate,
            on_move=self._chat_moved,
            on_done=self._done,
        )
        self.groups = GroupFloor(
            self.store,
            self.channels,
            self._seats,
            run=self.lifecycle.run,
            skip=self.lifecycle.skip,
            submit=self.lanes.submit,
        )
        self.refused: dict[str, ChannelError] = {}  # channel → why it did not start
        self.turns_served = 0
        self.upkeep = StoreUpkeep(self.store, lambda: self.loaded.config.session)
        self.metrics.store_file_ok.set_function(lambda: float(self.upkeep.problem is None))

    def _local_work(self) -> WorkSource:
        return LocalWork(self.store, self.owner, self._resume, self._submit)

    def _work_source(self, loaded: LoadedConfig) -> WorkSource:
        """PostgreSQL: rows are claimed from the database, shared with other processes."""
        from bot.sessions.postgres import PostgresSessionStore
        from bot.work_shared import SharedWork

        assert isinstance(self.store, PostgresSessionStore)
        return SharedWork(
            self.store,
            self.owner,
            self._resume,
            self._submit,
            channels=self.channels,
            lease_s=loaded.config.session.claim_lease_s,
            on_takeover=self.metrics.lease_takeovers.inc,
        )

    @property
    def loaded(self) -> LoadedConfig:
        return self.generation.loaded

    def secrets(self) -> list[str]:
        """Every secret in the config, for log redaction."""
        return secrets_of(self.loaded.config)

    def _build(self, loaded: LoadedConfig) -> Generation:
        return Generation.build(
            loaded,
            store=self.store,
            cooldowns=self.cooldowns,
            compaction=self.compaction,
            journal=self,
            router=self._fixed_router,
            observer=self.metrics,
            moved=self.chat_moves,
            redactor=self.redactor,
            meter=self._meter,
            clock=self._clock,
        )

    def _meter(self, config: BridgeConfig) -> UsageMeter:
        return UsageMeter(
            self.store, config, clock=self._clock, counters=self.metrics, warn=self._warn_admins
        )

    async def _warn_admins(self, channel_name: str, text: str) -> None:
        """A budget warning, as a private message from the persona's own bot to each admin
        with a numeric id (an @username cannot be written to first)."""
        channel = self.channels.get(channel_name)
        admins = [a for a in self.loaded.config.admins if a.isdigit()]
        if channel is None or not admins:
            log.warning("budget warning not delivered (no bot or no admin id): %s", text)
            return
        for admin in admins:
            try:
                await channel.send(admin, text)
            except ChannelError as exc:
                log.warning("budget warning to admin %s failed: %s", admin, exc)
        log.info("budget warning sent to %d admin(s): %s", len(admins), text)

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, then start every channel; one bad bot does not stop the others.

        Either everything runs afterwards or nothing does: a failed start closes what it
        opened (the store's worker thread would otherwise keep the process alive).
        """
        try:
            if self._lock is not None:
                self._lock.acquire()
            await self.store.open()
            self.upkeep.start()
            self.chat_moves.update(await self.store.chat_moves())
            self.compaction.start()
            await self._listen_for_webhooks(self.loaded)
            await self.work.start()
            await self._start_channels(list(self._channel_factory(self.loaded, self.work)))
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
        self.channels.update({c.name: c for c in channels})
        # A channel may deliver new updates as soon as it starts; they wait at this gate
        # until its stored rows are queued, so a chat's old messages go first.
        gates = {c.name: self._replayed.setdefault(c.name, asyncio.Event()) for c in channels}
        for gate in gates.values():
            gate.clear()
        results = await asyncio.gather(
            *(c.start(self.handle) for c in channels), return_exceptions=True
        )
        try:
            for channel, result in zip(channels, results, strict=True):
                if isinstance(result, ChannelError):
                    log.error("channel %s not started: %s", channel.name, result)
                    del self.channels[channel.name]
                    self.refused[channel.name] = result
                elif isinstance(result, BaseException):
                    raise result
                else:
                    self.refused.pop(channel.name, None)
                    await self.work.channel_started(channel)
        finally:  # only now: a group's lane is shared by every bot in it
            for gate in gates.values():
                gate.set()

    async def _resume(self, rows: list[InboxRow], channel: Channel) -> None:
        """Stored rows this process now holds (replayed, or claimed from the database), in
        arrival order: an album's parts among them are answered as one message."""
        restored: list[tuple[InboxRow, InboundMessage]] = []
        for row in rows:
            if row.kind == TASK:
                self._resume_task(row)
                continue
            message = channel.restore(row.payload)
            if message is None:
                await self.store.inbox_done(
                    channel.name, row.update_id, outcome="skipped", note="nothing to answer"
                )
                continue
            restored.append((row, message))
        by_id = {message.inbox_id: row for row, message in restored}
        for message in album.regroup(message for _, message in restored):
            self._submit(Ticket.resumed(by_id[message.inbox_id], message))

    def _resume_task(self, row: InboxRow) -> None:
        ticket = Ticket.resumed(row, None)
        if row.reply is not None:
            self._submit(ticket)
            return
        route = Route(row.channel, ticket.chat_id, ticket.topic_id, "")
        payload = json.loads(row.payload)
        self.generation.subagents.resume(route, -row.update_id, payload)

    async def _listen_for_webhooks(self, loaded: LoadedConfig) -> None:
        """The webhook server, before any bot registers its webhook; ConfigError (exit 78)
        when webhook.port cannot be bound. Host and port are fixed until a restart."""
        settings = loaded.config.webhook
        wanted = any(bot.updates == "webhook" for bot in loaded.config.channels.bots())
        if settings is None or not wanted or not self._serves_webhooks:
            return
        if not self.webhooks.listening:
            await self.webhooks.start(settings)
        elif self.webhooks.bound != (settings.host, settings.port):
            log.warning("webhook.host/port changed; that takes effect at the next restart")
        self.webhooks.public_url = settings.public_url  # webhook bots set the new URL

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop receiving, let in-flight turns finish (bounded), then close everything."""
        channels = list(self.channels.values())
        await asyncio.gather(*(c.stop() for c in channels), return_exceptions=True)
        await self.webhooks.stop()  # after the bots: a request meanwhile got a 503
        await self.work.stop_claiming()
        self.lanes.close()
        if not await self.lanes.join(within_s=grace_s):
            log.warning("turns still running after %.0fs; cancelling them", grace_s)
            await self.lanes.cancel()
        for channel in channels:
            await channel.close()
        await self.generation.close_now()
        await self.compaction.stop()
        await self.upkeep.stop()
        await self.work.close()
        await self.store.aclose()
        if self._lock is not None:
            self._lock.release()

    async def reload(self, path: Path) -> bool:
        """Re-read the config; an invalid one changes nothing and says why (SPEC §9)."""
        try:
            loaded = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, old config still running: %s", problem)
            return False
        self.redactor.add(secrets_of(loaded.config))
        if loaded.database != self.loaded.database:
            log.warning("session.database changed; that takes effect at the next restart")
        try:
            await self._listen_for_webhooks(loaded)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, old config still running: %s", problem)
            return False
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
        """Start added bots, stop removed ones, restart the ones whose settings changed.

        Turns already queued keep their rows (claimed by this process): the restarted
        channel does not replay them, and they send through it once generated."""
        wanted = {c.name: c for c in self._channel_factory(loaded, self.work)}
        stale = [
            current
            for name, current in self.channels.items()
            if name not in wanted
            or getattr(current, "spec", None) != getattr(wanted[name], "spec", None)
            or getattr(current, "webhook_url", None) != getattr(wanted[name], "webhook_url", None)
        ]
        for channel in stale:
            await channel.stop()
            del self.channels[channel.name]
            asyncio.create_task(self._close_when_idle(channel))  # noqa: RUF006
        for name in [n for n in self.refused if n not in wanted]:
            del self.refused[name]
        await self._start_channels([c for n, c in wanted.items() if n not in self.channels])

    async def _close_when_idle(self, channel: Channel) -> None:
        """A replaced channel may still be sending a reply: close it once that is done."""
        await self.lanes.join_where(
            lambda key: isinstance(key, tuple) and key[0] in (channel.name, GROUP_LANE),
            within_s=120.0,
        )
        await channel.close()

    # --- the data path --------------------------------------------------------------

    async def handle(self, message: InboundMessage) -> None:
        gate = self._replayed.get(message.channel)
        if gate is not None and not gate.is_set():
            await gate.wait()
        if message.moved_to is not None:
            await self._chat_moved(message.channel, message.chat_id, message.moved_to)
            return
        if parse_command(message.text) == "stop":
            self._stop(message)
            return
        self.metrics.messages_in.labels(bot=message.channel).inc()
        self.work.arrived(message)

    def _stop(self, message: InboundMessage) -> None:
        """/stop (or a draft's stop button) acts now, not after the turn it stops. When it
        stopped something, the stopped answer says so and /stop itself gets no reply."""
        stopped = self.running.stop(message.chat_key)
        log.info(
            "channel=%s chat=%s: /stop (%s)",
            message.channel,
            message.chat_id,
            "stopped the running turn" if stopped else "nothing running",
        )
        if message.generation_stopped and not stopped:
            return  # a late press of a draft's button: nothing to say
        ticket = Ticket.of(message)
        if stopped:
            ticket.settled = "stopped the running turn"
        self._submit(ticket)

    def _submit(self, ticket: Ticket) -> None:
        if ticket.message and (sibling := self.groups.roster.sibling(ticket.message)):
            # Personas never trigger each other by their messages (SPEC §15).
            note = f"written by our own bot {sibling}"
            self.lanes.submit(ticket.key, lambda: self.lifecycle.skip(ticket, note))
            return
        if self.groups.takes(ticket):
            self.groups.submit(ticket)
            return
        self.lanes.submit(ticket.key, lambda: self.lifecycle.run(ticket))

    def _seats(self, chat_id: str, topic_id: str | None) -> list[Seat]:
        """Our bots routed in a chat, in config order, with the persona each speaks as."""
        generation = self.generation
        seats = []
        for bot in self.loaded.config.channels.bots():
            route = generation.router.route(bot.channel, chat_id, topic_id)
            if route is not None:
                agent = generation.agents[route.agent_id]
                seats.append(Seat(bot.channel, bot.group_policy, agent.id, agent.display_name))
        return seats

    async def _generate(
        self, message: InboundMessage, channel: Channel, preview: Preview | None = None
    ) -> str | None:
        """The reply to one message, or None when no binding routes its chat."""
        async with self.generation.use() as generation:
            route = generation.router.route(message.channel, message.chat_id, message.topic_id)
            if route is None:
                log.warning("no binding for channel %s chat %s", message.channel, message.chat_id)
                return None
            started = time.monotonic()
            try:
                reply = await self._reply(generation, message, route, channel, preview)
            except StoreError as exc:
                log.error(
                    "store failed for channel=%s chat=%s: %s", route.channel, route.chat_id, exc
                )
                return STORE_FAILED
            self.metrics.turn_seconds.labels(agent=route.agent_id).observe(
                time.monotonic() - started
            )
            return reply

    async def _reply(
        self,
        generation: Generation,
        message: InboundMessage,
        route: Route,
        channel: Channel,
        preview: Preview | None = None,
    ) -> str | None:
        agent = generation.agents[route.agent_id]
        # Every model call of this turn, and the background work it starts, is charged here.
        cause = CallCause(agent.id, message.sender_id, route.channel, route.chat_id)
        prepared: PreparedTurn | None = None
        if message.attachments:  # bot.media: fetched now, answered with or without a model
            with charged_to(cause):  # a voice note's transcription is this turn's too
                outcome = await generation.media.prepare(message, channel)
            if not isinstance(outcome, PreparedTurn):
                return None if outcome is None else outcome.text
            prepared = outcome
        elif (command := parse_command(message.text)) is not None:
            answer = await generation.commands.answer(
                command, agent, route, message.sender_id, message.sender_username, message.text
            )
            if command == "status":
                answer += await self.groups.roster.describe(route.chat_id, route.topic_id)
            return answer
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
        source = None if message.inbox_id is None else f"{message.channel}:{message.inbox_id}"
        if self.groups.takes(Ticket.of(message)):
            source = group_source(message)  # maybe stored already, as the group heard it
        # Streamed whenever the channel shows a preview; /stop reaches the turn through
        # ``self.running``. The turn's own task copies this context, charges included.
        stream = TurnStream(preview)
        try:
            with charged_to(cause):
                async with channel.typing(route.chat_id, route.topic_id):
                    text = message.text if prepared is None else prepared.text
                    with self.running.running(message.chat_key, stream):
                        result = await stream.run(
                            generation.runner.run(
                                agent, route, text, source=source, media=prepared, stream=stream
                            )
                        )
        except BudgetExhausted as exc:
            log.warning("turn channel=%s agent=%s: over budget", route.channel, agent.id)
            return exc.sentence
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
        return generation.media.echoed(message, prepared, result.text)

    # --- spawned tasks (the TaskJournal of bot.agents.subagents) ---------------------

    async def task_started(self, route: Route, payload: JSONObject) -> int:
        update_id = await self.store.inbox_add_task(
            route.channel, route.chat_id, route.topic_id, json.dumps(payload), self.owner
        )
        return -update_id

    async def task_finished(self, route: Route, number: int, text: str) -> None:
        await self.store.inbox_reply(route.channel, -number, text)
        ticket = Ticket(route.channel, route.chat_id, route.topic_id, -number, None, text)
        self._submit(ticket)

    async def own_bot(self, route: Route, agent_id: str) -> Route | None:
        """Where ``agent_id`` speaks for itself in this chat: its own bot, in a group
        where that bot is present (SPEC §15)."""
        channel = await self.groups.roster.own_bot(route.chat_id, route.topic_id, agent_id)
        if channel is None:
            return None
        return Route(channel, route.chat_id, route.topic_id, agent_id)

    async def post_now(self, route: Route, payload: JSONObject, text: str, caller: str) -> None:
        """A delegated result said by its persona's own bot, at once: the caller's turn
        holds the group's lane and waits for it."""
        number = await self.task_started(route, {**payload, "result": text})
        await self.store.inbox_reply(route.channel, -number, text)
        ticket = Ticket(route.channel, route.chat_id, route.topic_id, -number, None, text)
        await self.groups.post_now(ticket, exclude=(caller,))

    # --- outcomes -------------------------------------------------------------------

    async def _chat_moved(self, channel: str, old_chat_id: str, new_chat_id: str) -> None:
        await self.store.chat_moved(channel, old_chat_id, new_chat_id)
        self.chat_moves[(channel, new_chat_id)] = old_chat_id

    async def _done(self, channel: str, outcome: str) -> None:
        if outcome == "delivered":
            self.metrics.messages_out.labels(bot=channel).inc()

    async def metrics_page(self) -> str:
        """The /metrics page, with the inbox backlog counted now."""
        try:
            async with asyncio.timeout(BACKLOG_COUNT_WITHIN_S):
                await self._refresh_backlog()
        except (TimeoutError, StoreError) as exc:  # the last count beats a failed scrape
            log.warning("inbox backlog not counted for /metrics: %s", exc or "timed out")
        return self.metrics.render()

    async def _refresh_backlog(self) -> None:
        self.metrics.inbox_backlog.set(await self.store.inbox_backlog())

    def _compaction_outcome(self, outcome: str) -> None:
        self.metrics.compactions.labels(outcome=outcome).inc()

    # --- health ---------------------------------------------------------------------

    def polling(self) -> dict[str, bool]:
        """Per bot: its long poll works here, or another process polls it (standby)."""
        return {
            name: bool(c.status()["polling"] or c.status().get("standby"))
            for name, c in self.channels.items()
        }

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
            ready=started
            and all(polling.values())
            and not self.refused
            and self.upkeep.problem is None,
            bots=bots,
            models=cooling_models(self.cooldowns),
            inbox_backlog=await self.store.inbox_backlog() if started else 0,
            store={**self.upkeep.status(), **(await self.work.status() if started else {})},
        )

    def status_line(self) -> str:
        polling = self.polling()
        return (
            f"{sum(polling.values())}/{len(polling)} bots polling, "
            f"{self.turns_served} turns served, {self.lanes.busy} chats busy"
        )
