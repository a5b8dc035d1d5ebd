"""Background compaction: summaries on the ``roles.compaction`` chain, never on an agent's.

A turn only *notes* that its session grew; a worker task does the summarising later, so a
reply is never delayed. A summary covers everything but the last ``keep_recent_messages``
(moved earlier so a tool call is never separated from its result), folds in the previous
summary, and is committed only if the model produced one, whole: a summary cut at the token
limit would silently lose the facts it never reached, so it counts as a failure. Failures
leave history untouched and retry with backoff; until a summary lands, the context builder
keeps prompts bounded by leaving out the oldest turns. A summary is charged to the persona
and user whose turn asked for it; over their budget it is postponed to the next period.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

from bot.config.schema import SessionSettings
from bot.errors import AllModelsFailed, BudgetExhausted, ProviderError, StoreError
from bot.media.history import rendered
from bot.providers.fallback import RoleChains
from bot.sessions.store import SessionStore, StoredMessage
from bot.types import ChatMessage, ChatRequest
from bot.usage.cause import COMPACTION, NOBODY, CallCause, charged_to, current_cause

log = logging.getLogger(__name__)

ROLE = "compaction"
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 300.0
SUMMARY_MAX_TOKENS = 1024
INSTRUCTIONS = (
    "You maintain the running summary of a chat between a user and an assistant. "
    "Merge the previous summary and the new messages into one concise summary. Keep every "
    "fact the user may rely on later: names, numbers, dates, decisions, preferences, open "
    "questions, and anything the user asked to be remembered, verbatim. Write plain prose, "
    "no preamble."
)


class CompactionWorker:
    def __init__(
        self,
        store: SessionStore,
        roles: RoleChains | None,
        settings: SessionSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        observe: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self._store = store
        self._roles = roles
        self._observe = observe
        self._settings = settings
        self._clock = clock
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()  # queued or running: at most one job per session
        self._failures: dict[int, int] = {}
        self._not_before: dict[int, float] = {}
        self._retries: set[asyncio.TimerHandle] = set()
        # Who the summary is charged to: the turn that asked for it (bot.usage.cause).
        self._causes: dict[int, CallCause] = {}
        self._task: asyncio.Task[None] | None = None

    def use_roles(self, roles: RoleChains) -> None:
        """After a reload: later jobs run on the new config's compaction chain."""
        self._roles = roles

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="compaction")

    async def stop(self) -> None:
        for handle in self._retries:
            handle.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def note_size(self, session_id: int, unsummarised_tokens: int) -> None:
        """After a turn: queue a job if the unsummarised part passed ``compact_at_tokens``.

        The turn passes the size it already knows, so the history is not read twice."""
        if session_id in self._queued or self._clock() < self._not_before.get(session_id, 0):
            return
        if unsummarised_tokens > self._settings.compact_at_tokens:
            self.request(session_id)

    def request(self, session_id: int) -> None:
        """Queue a job now, e.g. after a provider said the context window was exceeded."""
        cause = current_cause()
        if cause is not None:
            self._causes[session_id] = cause
        if session_id not in self._queued:
            self._queued.add(session_id)
            self._queue.put_nowait(session_id)

    async def _run(self) -> None:
        while True:
            session_id = await self._queue.get()
            try:
                await self._compact(session_id)
            except Exception:
                log.exception("compaction of session %d crashed", session_id)
                self._schedule_retry(session_id)
            finally:
                self._queued.discard(session_id)

    async def _compact(self, session_id: int) -> None:
        summary = await self._store.latest_summary(session_id)
        pending = await self._store.messages(
            session_id, after_id=summary.covers_up_to if summary else 0
        )
        cut = summary_cut(pending, self._settings.keep_recent_messages)
        if cut == 0:
            return
        request = ChatRequest(
            system=INSTRUCTIONS,
            messages=(
                ChatMessage("user", _transcript(summary.text if summary else "", pending[:cut])),
            ),
            max_tokens=SUMMARY_MAX_TOKENS,
        )
        if self._roles is None:
            raise RuntimeError("CompactionWorker.use_roles() was not called")
        cause = dataclasses.replace(self._causes.get(session_id, NOBODY), purpose=COMPACTION)
        try:
            with charged_to(cause):
                response = await self._roles.chat(ROLE, request)
        except BudgetExhausted as exc:
            # Not run over budget, not dropped: tried again once the period renews.
            log.warning(
                "compaction of session %d postponed %.0fs: agent %s / user %s is over budget",
                session_id,
                exc.retry_in,
                cause.agent_id,
                cause.user_id,
            )
            self._observe("postponed")
            self._schedule_retry(session_id, at_least=exc.retry_in)
            return
        except (AllModelsFailed, ProviderError) as exc:
            log.warning("compaction of session %d failed: %s", session_id, exc)
            self._observe("failed")
            self._schedule_retry(session_id)
            return
        text = response.text.strip()
        if response.truncated:
            log.warning(
                "compaction of session %d: the summary was cut at the length limit; not committed",
                session_id,
            )
            self._observe("truncated")
            self._schedule_retry(session_id)
            return
        if not text:
            log.warning("compaction of session %d got an empty summary; not committed", session_id)
            self._observe("empty")
            self._schedule_retry(session_id)
            return
        try:
            await self._store.add_summary(
                session_id, pending[cut - 1].id, text, response.model_name
            )
        except StoreError as exc:
            log.error("compaction of session %d could not be saved: %s", session_id, exc)
            self._schedule_retry(session_id)
            return
        self._failures.pop(session_id, None)
        self._not_before.pop(session_id, None)
        self._causes.pop(session_id, None)
        self._observe("ok")
        log.info(
            "compaction session=%d summarised %d messages up to #%d model=%s",
            session_id,
            cut,
            pending[cut - 1].id,
            response.model_name,
        )

    def _schedule_retry(self, session_id: int, at_least: float = 0.0) -> None:
        failures = self._failures[session_id] = self._failures.get(session_id, 0) + 1
        delay = max(min(FIRST_RETRY_S * 2 ** (failures - 1), MAX_RETRY_S), at_least)
        self._not_before[session_id] = self._clock() + delay
        loop = asyncio.get_running_loop()

        def retry() -> None:
            self._retries.discard(handle)
            self.request(session_id)

        handle = loop.call_later(delay, retry)
        self._retries.add(handle)


def summary_cut(messages: Sequence[StoredMessage], keep_recent: int) -> int:
    """How many of ``messages`` to summarise: all but the last ``keep_recent``, moved earlier
    so the first kept message is never a tool result cut off from its call."""
    cut = len(messages) - keep_recent
    while cut > 0 and messages[cut].message.role == "tool":
        cut -= 1
    return max(cut, 0)


def _transcript(previous: str, messages: Sequence[StoredMessage]) -> str:
    lines = [f"Previous summary:\n{previous or '(none)'}", "", "New messages:"]
    for stored in messages:
        message = rendered(stored.message)  # transcripts and document texts included
        if message.role == "tool":
            lines.append(f"Tool result: {message.content or ''}")
            continue
        speaker = "User" if message.role == "user" else "Assistant"
        if message.content:
            lines.append(f"{speaker}: {message.content}")
        for call in message.tool_calls:
            lines.append(f"{speaker} called {call.name} with {call.arguments}")
    lines += ["", "Write the updated summary."]
    return "\n".join(lines)
