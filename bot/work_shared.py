"""Several bridge processes on one PostgreSQL database share the work (SPEC §14).

A stored update is held by nobody until a process claims it (``PgClaims.claim_work``:
a chat's rows go to one live process at a time, in arrival order). Each process keeps a
lease alive with a heartbeat; a process that dies stops renewing, and within the lease
another takes its unfinished rows over, resuming from their stored reply and chunk
progress as a restart does. Idle processes sleep on LISTEN/NOTIFY; the slow timer that
remains only notices lapsed leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping

from bot.channels.base import Channel, InboundMessage
from bot.errors import StoreError
from bot.lifecycle import Ticket
from bot.media import album
from bot.sessions.inbox import InboxRow
from bot.sessions.postgres import PostgresSessionStore
from bot.work import Resume, Submit, WorkSource

log = logging.getLogger(__name__)

CLAIM_BATCH_S = 0.01


class SharedWork(WorkSource):
    def __init__(
        self,
        store: PostgresSessionStore,
        owner: str,
        resume: Resume,
        submit: Submit,
        *,
        channels: Mapping[str, Channel],
        lease_s: float,
        on_takeover: Callable[[int], None] = lambda n: None,
    ) -> None:
        super().__init__(store, owner, resume, submit)
        self._pg = store
        self._channels = channels
        self.lease_s = lease_s
        self._on_takeover = on_takeover
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.polling_for: set[str] = set()
        self.takeovers = 0

    @property
    def claim_owner(self) -> str | None:
        return None  # whichever process may run the chat now claims it

    async def start(self) -> None:
        await self._pg.lease_renew(self.owner, self.lease_s)
        await self._pg.listen(self._wake.set)
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="lease heartbeat"),
            asyncio.create_task(self._claim_forever(), name="claim work"),
        ]

    async def channel_started(self, channel: Channel) -> None:
        self._wake.set()

    def arrived(self, message: InboundMessage) -> None:
        if message.inbox_id is None:  # not durable (the terminal chat): nothing to claim
            self._submit(Ticket.of(message))
            return
        self._wake.set()  # the NOTIFY comes too; this saves its round trip

    @contextlib.asynccontextmanager
    async def poll_turn(self, channel: str, stopping: asyncio.Event) -> AsyncIterator[bool]:
        async with self._pg.poll_turn(channel, stopping) as elected:
            if elected:
                log.info("channel %s: this process polls it", channel)
                self.polling_for.add(channel)
            try:
                yield elected
            finally:
                self.polling_for.discard(channel)

    async def stop_claiming(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.stop_claiming()
        try:
            await self._pg.release_claims(self.owner)
        except StoreError as exc:
            log.warning("could not hand back unfinished rows (%s); its lease lapses instead", exc)

    async def status(self) -> dict[str, object]:
        return {
            "owner": self.owner,
            "polls": sorted(self.polling_for),
            "claims_held": await self._pg.claims_held(self.owner),
            "lease_takeovers": self.takeovers,
        }

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self._pg.lease_renew(self.owner, self.lease_s)
            except StoreError as exc:
                log.error("lease not renewed (%s); other processes may take this one's rows", exc)

    async def _claim_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._claim_once()
            except StoreError as exc:
                log.error("claiming work failed (%s); retrying", exc)
            with contextlib.suppress(TimeoutError):
                # Woken by NOTIFY; the timeout only notices leases that lapsed.
                await asyncio.wait_for(self._wake.wait(), timeout=self.lease_s / 3)
            # Under load, updates arrive faster than claims return: one claim a little
            # later takes a batch of them, instead of one claim (and scan) per update.
            await asyncio.sleep(CLAIM_BATCH_S)

    async def _claim_once(self) -> None:
        # An album's parts are stored as they come: its chat waits until the album is
        # complete (the channel holding it wakes us then), so it is answered as one.
        album_since = time.time() - album.GATHER_S * 0.9
        rows = await self._pg.claim_work(self.owner, list(self._channels), album_since=album_since)
        taken = [r for r in rows if r.claimed_by is not None]
        if taken:
            self.takeovers += len(taken)
            self._on_takeover(len(taken))
            log.warning(
                "took over %d unfinished row(s) of process(es) %s whose lease lapsed",
                len(taken),
                ", ".join(sorted({str(r.claimed_by) for r in taken})),
            )
        by_channel: dict[str, list[InboxRow]] = {}
        for row in rows:  # arrival order, kept within each channel
            by_channel.setdefault(row.channel, []).append(row)
        for name, claimed in by_channel.items():
            channel = self._channels.get(name)
            if channel is not None:
                await self._resume(claimed, channel)
