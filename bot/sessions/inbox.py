"""The durable inbox and outbox: every admitted update (and spawned task) as one row.

A row is the whole memory of one unit of work (see ``bot.lifecycle``): stored before its
offset is confirmed, claimed by the process whose lane holds it, given its reply before
any of it is sent, advanced chunk by chunk, and finally done with an outcome. The
(channel, update_id) key is stored once, so a redelivered update is answered at most once.
Spawned tasks get ids below zero on their chat's channel, so they never meet update ids.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from bot.errors import StoreError
from bot.sessions.doors import SqliteDoor
from bot.sessions.schema import clean_text

UPDATE = "update"
TASK = "task"


@dataclass(frozen=True)
class InboxRow:
    channel: str
    update_id: int
    payload: str  # JSON text, as the channel received it (a task's own description)
    status: str  # "pending" | "done"
    received_at: float
    reply: str | None = None  # set once generated: a restart re-sends it, no model call
    chunks_sent: int = 0  # reply chunks confirmed delivered
    sending: int | None = None  # the chunk whose send had started, until confirmed
    chat_id: str | None = None  # where the reply goes (None on rows from before v5)
    topic_id: str | None = None
    kind: str = UPDATE  # UPDATE or TASK
    outcome: str | None = None  # delivered | given_up | skipped, once done
    note: str | None = None  # why it was given up or skipped
    claimed_by: str | None = None  # the process holding it in a lane
    preview_id: str | None = None  # the streamed preview message, edited into the reply


class InboxStore(ABC):
    """The inbox half of the store seam. Raises only ``StoreError``."""

    @abstractmethod
    async def inbox_put(
        self,
        channel: str,
        update_id: int,
        payload: str,
        *,
        chat_id: str | None = None,
        topic_id: str | None = None,
        owner: str | None = None,
    ) -> bool:
        """Persist an update before its offset is confirmed; False if already stored."""

    @abstractmethod
    async def inbox_add_task(
        self, channel: str, chat_id: str, topic_id: str | None, payload: str, owner: str
    ) -> int:
        """Record a spawned task before it runs; returns its (negative) id."""

    @abstractmethod
    async def inbox_claim(self, channel: str, owner: str) -> list[InboxRow]:
        """Pending rows of ``channel`` not held by ``owner``, now held by it, oldest first."""

    @abstractmethod
    async def inbox_release(self, channel: str, update_id: int) -> None:
        """Give a row back: the next start of its channel picks it up again."""

    @abstractmethod
    async def inbox_pending(self, channel: str | None = None) -> list[InboxRow]:
        """Updates not yet answered, in arrival order (all channels when None)."""

    @abstractmethod
    async def inbox_row(self, channel: str, update_id: int) -> InboxRow | None: ...

    @abstractmethod
    async def inbox_done(
        self, channel: str, update_id: int, *, outcome: str = "delivered", note: str | None = None
    ) -> None:
        """Mark a row finished; StoreError if it was never put."""

    @abstractmethod
    async def inbox_reply(self, channel: str, update_id: int, reply: str) -> None:
        """Keep the generated reply with its update, before any of it is sent."""

    @abstractmethod
    async def inbox_progress(
        self, channel: str, update_id: int, *, sending: int | None, chunks_sent: int
    ) -> None:
        """Record delivery: ``sending`` before a chunk goes out, ``chunks_sent`` after."""

    async def inbox_delivered(self, channel: str, update_id: int, *, chunks_sent: int) -> None:
        """The last chunk confirmed and the row done as delivered: one step where the store
        can; this default is built from the two methods it stands for."""
        await self.inbox_progress(channel, update_id, sending=None, chunks_sent=chunks_sent)
        await self.inbox_done(channel, update_id, outcome="delivered")

    @abstractmethod
    async def inbox_preview(self, channel: str, update_id: int, message_id: str | None) -> None:
        """Keep (or forget, with None) the id of the preview message the reply grows in."""

    @abstractmethod
    async def inbox_backlog(self) -> int:
        """How many updates wait to be answered, over all channels."""

    @abstractmethod
    async def chat_moved(self, channel: str, old_chat_id: str, new_chat_id: str) -> None:
        """Telegram moved a group: its sessions and pending rows follow the new id."""

    @abstractmethod
    async def chat_moves(self) -> dict[tuple[str, str], str]:
        """Every recorded move as (channel, new chat id) → old chat id."""


_ROW_COLUMNS = (
    "channel, update_id, payload, status, received_at, reply, chunks_sent, sending,"
    " chat_id, topic_id, kind, outcome, note, claimed_by, preview_id"
)


def missing_row(channel: str, update_id: int) -> StoreError:
    return StoreError(f"session store: inbox has no update {channel}/{update_id}")


class SqliteInbox(SqliteDoor, InboxStore):
    """The inbox methods of ``SqliteSessionStore``; it provides the connection door."""

    async def inbox_put(
        self,
        channel: str,
        update_id: int,
        payload: str,
        *,
        chat_id: str | None = None,
        topic_id: str | None = None,
        owner: str | None = None,
    ) -> bool:
        sql = (
            "INSERT OR IGNORE INTO inbox (channel, update_id, payload, received_at, chat_id,"
            " topic_id, claimed_by) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        params = (
            clean_text(channel),
            update_id,
            clean_text(payload),
            self._clock(),
            chat_id,
            topic_id,
            owner,
        )
        return (await self._write("inbox_put", sql, params))[1] == 1

    async def inbox_add_task(
        self, channel: str, chat_id: str, topic_id: str | None, payload: str, owner: str
    ) -> int:
        async with self._use("inbox_add_task", transaction=True) as conn:
            sql = "SELECT min(ifnull(min(update_id), 0), 0) - 1 FROM inbox WHERE channel = ?"
            rows = list(await conn.execute_fetchall(sql, (channel,)))
            task_id = int(rows[0][0])
            await conn.execute(
                "INSERT INTO inbox (channel, update_id, payload, received_at, chat_id, topic_id,"
                " kind, claimed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    channel,
                    task_id,
                    clean_text(payload),
                    self._clock(),
                    chat_id,
                    topic_id,
                    TASK,
                    owner,
                ),
            )
            return task_id

    async def inbox_claim(self, channel: str, owner: str) -> list[InboxRow]:
        async with self._use("inbox_claim", transaction=True) as conn:
            # rowid is arrival order; received_at could go backwards with the wall clock.
            select = (
                f"SELECT {_ROW_COLUMNS} FROM inbox WHERE channel = ? AND status = 'pending'"
                " AND claimed_by IS NOT ? ORDER BY rowid"
            )
            rows = [InboxRow(*r) for r in await conn.execute_fetchall(select, (channel, owner))]
            await conn.execute(
                "UPDATE inbox SET claimed_by = ? WHERE channel = ? AND status = 'pending'",
                (owner, channel),
            )
            return rows

    async def inbox_release(self, channel: str, update_id: int) -> None:
        sql = "UPDATE inbox SET claimed_by = NULL WHERE channel = ? AND update_id = ?"
        await self._write("inbox_release", sql, (channel, update_id))

    async def inbox_pending(self, channel: str | None = None) -> list[InboxRow]:
        sql = f"SELECT {_ROW_COLUMNS} FROM inbox WHERE status = 'pending'"
        sql += "" if channel is None else " AND channel = ?"
        params = () if channel is None else (channel,)
        rows = await self._fetch("inbox_pending", sql + " ORDER BY rowid", params)
        return [InboxRow(*row) for row in rows]

    async def inbox_row(self, channel: str, update_id: int) -> InboxRow | None:
        sql = f"SELECT {_ROW_COLUMNS} FROM inbox WHERE channel = ? AND update_id = ?"
        rows = await self._fetch("inbox_row", sql, (channel, update_id))
        return InboxRow(*rows[0]) if rows else None

    async def inbox_done(
        self, channel: str, update_id: int, *, outcome: str = "delivered", note: str | None = None
    ) -> None:
        sql = (
            "UPDATE inbox SET status = 'done', done_at = ifnull(done_at, ?), outcome = ?,"
            " note = ?, claimed_by = NULL WHERE channel = ? AND update_id = ?"
        )
        params = (self._clock(), outcome, note, channel, update_id)
        if (await self._write("inbox_done", sql, params))[1] != 1:
            raise missing_row(channel, update_id)

    async def inbox_reply(self, channel: str, update_id: int, reply: str) -> None:
        sql = "UPDATE inbox SET reply = ? WHERE channel = ? AND update_id = ?"
        if (await self._write("inbox_reply", sql, (clean_text(reply), channel, update_id)))[1] != 1:
            raise missing_row(channel, update_id)

    async def inbox_progress(
        self, channel: str, update_id: int, *, sending: int | None, chunks_sent: int
    ) -> None:
        sql = "UPDATE inbox SET sending = ?, chunks_sent = ? WHERE channel = ? AND update_id = ?"
        params = (sending, chunks_sent, channel, update_id)
        if (await self._write("inbox_progress", sql, params))[1] != 1:
            raise missing_row(channel, update_id)

    async def inbox_delivered(self, channel: str, update_id: int, *, chunks_sent: int) -> None:
        sql = (
            "UPDATE inbox SET sending = NULL, chunks_sent = ?, status = 'done',"
            " done_at = ifnull(done_at, ?), outcome = 'delivered', note = NULL,"
            " claimed_by = NULL WHERE channel = ? AND update_id = ?"
        )
        params = (chunks_sent, self._clock(), channel, update_id)
        if (await self._write("inbox_delivered", sql, params))[1] != 1:
            raise missing_row(channel, update_id)

    async def inbox_preview(self, channel: str, update_id: int, message_id: str | None) -> None:
        sql = "UPDATE inbox SET preview_id = ? WHERE channel = ? AND update_id = ?"
        if (await self._write("inbox_preview", sql, (message_id, channel, update_id)))[1] != 1:
            raise missing_row(channel, update_id)

    async def inbox_backlog(self) -> int:
        sql = "SELECT COUNT(*) FROM inbox WHERE status = 'pending'"
        return int((await self._fetch("inbox_backlog", sql))[0][0])

    async def chat_moved(self, channel: str, old_chat_id: str, new_chat_id: str) -> None:
        async with self._use("chat_moved", transaction=True) as conn:
            await conn.execute(
                "INSERT OR REPLACE INTO chat_moves (channel, old_chat_id, new_chat_id, moved_at)"
                " VALUES (?, ?, ?, ?)",
                (channel, old_chat_id, new_chat_id, self._clock()),
            )
            # A session already active under the new id (someone wrote there first) wins;
            # the old one is then archived rather than merged.
            await conn.execute(
                "UPDATE sessions SET archived_at = ? WHERE channel = ? AND chat_id = ?"
                " AND archived_at IS NULL AND EXISTS (SELECT 1 FROM sessions n"
                " WHERE n.channel = sessions.channel AND n.chat_id = ?"
                " AND n.topic_id IS sessions.topic_id AND n.agent_id = sessions.agent_id"
                " AND n.archived_at IS NULL)",
                (self._clock(), channel, old_chat_id, new_chat_id),
            )
            await conn.execute(
                "UPDATE sessions SET chat_id = ? WHERE channel = ? AND chat_id = ?",
                (new_chat_id, channel, old_chat_id),
            )
            await conn.execute(
                "UPDATE inbox SET chat_id = ? WHERE channel = ? AND chat_id = ?"
                " AND status = 'pending'",
                (new_chat_id, channel, old_chat_id),
            )

    async def chat_moves(self) -> dict[tuple[str, str], str]:
        sql = "SELECT channel, new_chat_id, old_chat_id FROM chat_moves"
        return {(c, new): old for c, new, old in await self._fetch("chat_moves", sql)}
