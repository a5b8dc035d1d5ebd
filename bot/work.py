"""Where the lanes get their work: the seam between one process and several.

``LocalWork`` (SQLite, one process): a channel's update goes straight into its chat's
lane, and a channel's start claims the rows stored before a restart — as before.
``SharedWork`` (PostgreSQL, any number of processes; ``bot.work_shared``): updates are
only stored; every process claims rows from the database, chat by chat, and runs them.
Both hand rows to the App's ``resume`` and tickets to its ``submit``, so the lifecycle of
a row (``bot.lifecycle``) is the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable

from bot.channels.base import Channel, InboundMessage
from bot.lifecycle import Ticket
from bot.sessions.inbox import InboxRow
from bot.sessions.pairing_store import PairingStore
from bot.sessions.store import SessionStore

Resume = Callable[[list[InboxRow], Channel], Awaitable[None]]
Submit = Callable[[Ticket], None]


class WorkSource(ABC):
    """The inbox channels write to, and how rows reach this process's lanes."""

    def __init__(self, store: SessionStore, owner: str, resume: Resume, submit: Submit) -> None:
        self._store = store
        self.owner = owner
        self._resume = resume
        self._submit = submit
        # The one other part of the store a channel touches: strangers' pairing codes.
        self.pairing: PairingStore = store

    @property
    @abstractmethod
    def claim_owner(self) -> str | None:
        """The owner a channel's stored update is claimed for at once (None: nobody yet)."""

    async def start(self) -> None:
        """Before the first channel starts."""
        return None  # nothing to do for one process

    @abstractmethod
    async def channel_started(self, channel: Channel) -> None:
        """A channel runs (again): its stored rows may be taken up."""

    @abstractmethod
    def arrived(self, message: InboundMessage) -> None:
        """A channel of this process stored a new update."""

    @abstractmethod
    def poll_turn(
        self, channel: str, stopping: asyncio.Event
    ) -> contextlib.AbstractAsyncContextManager[bool]: ...

    async def stop_claiming(self) -> None:
        """Take no new rows (the lanes then drain)."""
        return None  # nothing to do for one process

    async def close(self) -> None:
        """After the lanes: hand back what this process still holds."""
        return None  # nothing to do for one process

    async def status(self) -> dict[str, object]:
        """For /readyz: how this process shares the work (nothing to say when alone)."""
        return {}

    # The inbox as channels see it ---------------------------------------------------

    async def inbox_put(
        self,
        channel: str,
        update_id: int,
        payload: str,
        *,
        chat_id: str | None = None,
        topic_id: str | None = None,
    ) -> bool:
        return await self._store.inbox_put(
            channel, update_id, payload, chat_id=chat_id, topic_id=topic_id, owner=self.claim_owner
        )


class LocalWork(WorkSource):
    """One process owns the database: updates go straight into lanes, held by it."""

    @property
    def claim_owner(self) -> str | None:
        return self.owner

    async def channel_started(self, channel: Channel) -> None:
        # Rows stored before a restart (or while the channel was away) and held by no lane
        # of this process: answered before anything new of their chat.
        await self._resume(await self._store.inbox_claim(channel.name, self.owner), channel)

    def arrived(self, message: InboundMessage) -> None:
        self._submit(Ticket.of(message))

    @contextlib.asynccontextmanager
    async def poll_turn(self, channel: str, stopping: asyncio.Event) -> AsyncIterator[bool]:
        yield not stopping.is_set()
