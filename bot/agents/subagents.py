"""spawn / delegate / spawn_status: agents handing work to agents, each on its OWN chain.

A sub-task runs as the target agent — its persona, its model chain — in an isolated
sub-session (its own session key), so it neither sees nor pollutes the chat's history.
``spawn`` returns at once and posts the result to the chat when done; ``delegate`` waits
and hands the result back to the calling model. A spawned task is written to the store
(the ``TaskJournal``) before it starts, and its result goes out through the same durable
path as replies: a task cut short by a restart is run again and its result still posted.
The caller's ``allow_agents`` governs both, self included (SPEC §8): absent → only
itself; a list → exactly those ids; ``["*"]`` → anyone. Depth ≤ 2, at most 3 running
per chat, 300 s each. A failure's text is posted to the chat, stored and handed to
another model, so it is redacted first. Every call of a sub-task is charged to the persona
and user whose turn started it (bot.usage.cause), also after a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from bot.agents.agent import Agent
from bot.agents.tools import Tool, ToolContext, ToolError, ToolRegistry
from bot.errors import AllModelsFailed, BudgetExhausted, ProviderError
from bot.redaction import Redactor
from bot.routing import Route
from bot.sessions.store import SessionKey, SessionStore
from bot.types import ChatMessage, JSONObject
from bot.usage.cause import CallCause, charged_to, current_cause

log = logging.getLogger(__name__)

MAX_DEPTH = 2
MAX_RUNNING_PER_CHAT = 3
TIMEOUT_S = 300.0


class TaskRunner(Protocol):
    async def run_task(
        self, agent: Agent, key: SessionKey, task: str, depth: int, source: str | None = None
    ) -> str: ...


class TaskJournal(Protocol):
    """The durable record of spawned tasks (the app's inbox): started, then finished."""

    async def task_started(self, route: Route, payload: JSONObject) -> int:
        """Store the task before it runs; returns its number, unique in the chat's channel."""
        ...

    async def task_finished(self, route: Route, number: int, text: str) -> None:
        """Store the result and send it to the chat, in the chat's order."""
        ...

    async def own_bot(self, route: Route, agent_id: str) -> Route | None:
        """Where ``agent_id``'s own bot speaks in the chat, when it is there (a group)."""
        ...

    async def post_now(self, route: Route, payload: JSONObject, text: str, caller: str) -> None:
        """Say a delegated result through ``route`` (the persona's own bot) right away."""
        ...


@dataclass
class SubTask:
    id: str
    agent_id: str
    caller_id: str
    chat: tuple[str, str, str | None]
    started: float = field(default_factory=time.monotonic)
    state: str = "running"  # running, done, failed, timed out
    result: str = ""


def may_call(caller: Agent, target_id: str) -> bool:
    allowed = caller.allow_agents
    if allowed is None:
        return target_id == caller.id
    return "*" in allowed or target_id in allowed


class SubAgents:
    def __init__(
        self,
        agents: Mapping[str, Agent],
        store: SessionStore,
        journal: TaskJournal,
        *,
        timeout_s: float = TIMEOUT_S,
        redactor: Redactor | None = None,
    ) -> None:
        self._agents = agents
        self._store = store
        self._journal = journal
        self._timeout_s = timeout_s
        self._redactor = redactor if redactor is not None else Redactor()
        self._runner: TaskRunner | None = None
        self._tasks: dict[str, SubTask] = {}
        self._background: set[asyncio.Task[None]] = set()

    def bind(self, runner: TaskRunner) -> None:
        self._runner = runner

    def registry(self) -> ToolRegistry:
        return ToolRegistry([SpawnTool(self), DelegateTool(self), SpawnStatusTool(self)])

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self.wait()

    async def wait(self) -> None:
        """Until every spawned task has finished (each is bounded by the task timeout)."""
        await asyncio.gather(*self._background, return_exceptions=True)

    def _admit(self, context: ToolContext, target_id: str) -> Agent:
        """The target agent, or ``ToolError`` saying exactly which rule refused."""
        caller = context.agent
        target = self._agents.get(target_id)
        if target is None:
            raise ToolError(f"there is no agent {target_id!r}")
        if not may_call(caller, target_id):
            allowed = (
                "only itself"
                if caller.allow_agents is None
                else (", ".join(caller.allow_agents) or "no agent")
            )
            raise ToolError(f"{caller.id} may not hand work to {target_id} (allowed: {allowed})")
        if context.depth + 1 > MAX_DEPTH:
            raise ToolError(f"sub-agents may nest only {MAX_DEPTH} deep; do this task yourself")
        chat = _chat(context.route)
        running = sum(1 for t in self._tasks.values() if t.chat == chat and t.state == "running")
        if running >= MAX_RUNNING_PER_CHAT:
            raise ToolError(
                f"{running} sub-tasks are already running in this chat (limit "
                f"{MAX_RUNNING_PER_CHAT}); wait for one to finish"
            )
        return target

    def _new_task(self, context: ToolContext, target: Agent, task_id: str) -> SubTask:
        task = SubTask(task_id, target.id, context.agent.id, _chat(context.route))
        self._tasks[task.id] = task
        return task

    async def _execute(self, task: SubTask, target: Agent, text: str, context: ToolContext) -> str:
        assert self._runner is not None, "SubAgents.bind() was not called"
        route = context.route
        key = SessionKey(route.channel, route.chat_id, f"sub:{task.id}", target.id)
        try:
            async with asyncio.timeout(self._timeout_s):
                task.result = await self._runner.run_task(
                    target, key, text, context.depth + 1, source=f"task:{task.id}"
                )
            task.state = "done"
        except TimeoutError:
            task.state, task.result = "timed out", f"gave up after {self._timeout_s:.0f}s"
        except BudgetExhausted as exc:
            task.state, task.result = "failed", exc.sentence
        except AllModelsFailed as exc:
            task.state, task.result = "failed", exc.user_message()
        except ProviderError as exc:
            task.state, task.result = "failed", self._redactor.redact(f"the model refused: {exc}")
        log.info("sub-task %s by %s for %s: %s", task.id, target.id, context.agent.id, task.state)
        return task.result

    async def spawn(self, context: ToolContext, target_id: str, text: str) -> str:
        target = self._admit(context, target_id)
        route = context.route
        payload: JSONObject = {
            "agent_id": target.id,
            "caller_id": context.agent.id,
            "route_agent_id": route.agent_id,
            "session_id": context.session_id,
            "depth": context.depth,
            "task": text,
        }
        cause = current_cause()
        if cause is not None:  # a restart resumes the task charged to the same turn
            payload["charged_to"] = dataclasses.asdict(cause)
        # In a group where the target's own bot is present, that bot posts the result.
        own = await self._journal.own_bot(route, target.id)
        payload |= {"channel": route.channel, "own_bot": own is not None}
        posted_by = own or route
        number = await self._journal.task_started(posted_by, payload)
        task = self._new_task(context, target, f"t{number}")
        self._launch(task, target, text, context, number, posted_by, own is not None)
        return f"started task {task.id} as {target.display_name}; the result will be posted"

    def resume(self, route: Route, number: int, payload: Mapping[str, object]) -> None:
        """Run again a spawned task that a restart cut short; its result is posted as usual."""
        caller = self._agents.get(str(payload.get("caller_id")))
        target = self._agents.get(str(payload.get("agent_id")))
        chat_route = Route(
            str(payload.get("channel") or route.channel),
            route.chat_id,
            route.topic_id,
            str(payload.get("route_agent_id")),
        )
        if "result" in payload:  # a delegated result cut short on its way to the chat
            job = asyncio.create_task(
                self._journal.task_finished(route, number, str(payload["result"]))
            )
            self._background.add(job)
            job.add_done_callback(self._background.discard)
            return
        session_id, depth = payload.get("session_id"), payload.get("depth")
        if (
            caller is None
            or target is None
            or not isinstance(session_id, int)
            or not isinstance(depth, int)
        ):
            text = f"(task t{number} could not be resumed: its agent is no longer configured)"
            job = asyncio.create_task(self._journal.task_finished(route, number, text))
        else:
            context = ToolContext(caller, chat_route, session_id, depth)
            task = self._new_task(context, target, f"t{number}")
            log.info("sub-task %s by %s: resumed after a restart", task.id, target.id)
            text = str(payload.get("task", ""))
            own_bot = payload.get("own_bot") is True
            with charged_to(_cause_of(payload.get("charged_to"))):  # the new task copies it
                self._launch(task, target, text, context, number, route, own_bot)
            return
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    def _launch(
        self,
        task: SubTask,
        target: Agent,
        text: str,
        context: ToolContext,
        number: int,
        posted_by: Route,
        own_bot: bool,
    ) -> None:
        async def background() -> None:
            result = await self._execute(task, target, text, context)
            outcome = result if task.state == "done" else f"(task {task.state}) {result}"
            if not own_bot:  # said by the caller's bot: say whose result it is
                outcome = f"**{target.display_name}**: {outcome}"
            await self._store.append(
                context.session_id,
                ChatMessage(
                    "assistant",
                    f"[sub-task {task.id} by {target.display_name} {task.state}] {result}",
                ),
                source=f"result:{task.id}",
            )
            await self._journal.task_finished(posted_by, number, outcome)

        job = asyncio.create_task(background(), name=f"spawn {task.id}")
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    async def delegate(self, context: ToolContext, target_id: str, text: str) -> str:
        target = self._admit(context, target_id)
        task = self._new_task(context, target, f"d{uuid.uuid4().hex[:8]}")
        result = await self._execute(task, target, text, context)
        if task.state != "done":
            raise ToolError(f"{target.display_name} could not finish: {result}")
        own = await self._journal.own_bot(context.route, target.id)
        if own is not None and own.channel != context.route.channel:
            # A group where the target's own bot is present: it says the result there.
            payload: JSONObject = {
                "agent_id": target.id,
                "caller_id": context.agent.id,
                "route_agent_id": context.route.agent_id,
                "channel": context.route.channel,
                "task": text,
            }
            await self._journal.post_now(own, payload, result, context.route.channel)
        return result

    def status(self, context: ToolContext) -> str:
        chat = _chat(context.route)
        mine = [t for t in self._tasks.values() if t.chat == chat]
        if not mine:
            return "no sub-tasks in this chat"
        now = time.monotonic()
        return "\n".join(
            f"{t.id}: {t.agent_id} for {t.caller_id}, {t.state}, {now - t.started:.0f}s"
            for t in mine[-10:]
        )


def _cause_of(stored: object) -> CallCause | None:
    """The cause a spawned task was started under, as its journal row stored it."""
    if not isinstance(stored, dict):
        return None
    try:
        return CallCause(**{k: str(v) for k, v in stored.items()})
    except TypeError:
        return None


def _chat(route: Route) -> tuple[str, str, str | None]:
    return (route.channel, route.chat_id, route.topic_id)


_TASK_SCHEMA: JSONObject = {
    "type": "object",
    "properties": {
        "task": {"type": "string", "description": "what to do, self-contained"},
        "agent_id": {"type": "string", "description": "who does it; empty = yourself"},
    },
    "required": ["task"],
}


class SpawnTool(Tool):
    name = "spawn"
    description = (
        "Start a task in the background as another agent (or yourself). Returns at once; "
        "the result is posted to the chat when done."
    )
    parameters: ClassVar[JSONObject] = _TASK_SCHEMA

    def __init__(self, subagents: SubAgents) -> None:
        self._subagents = subagents

    async def run(self, arguments: JSONObject, context: ToolContext) -> str:
        target = arguments.get("agent_id") or context.agent.id
        return await self._subagents.spawn(context, str(target), str(arguments["task"]))


class DelegateTool(Tool):
    name = "delegate"
    description = "Ask another agent to do a task and wait for its answer."
    parameters: ClassVar[JSONObject] = {**_TASK_SCHEMA, "required": ["task", "agent_id"]}

    def __init__(self, subagents: SubAgents) -> None:
        self._subagents = subagents

    async def run(self, arguments: JSONObject, context: ToolContext) -> str:
        return await self._subagents.delegate(
            context, str(arguments["agent_id"]), str(arguments["task"])
        )


class SpawnStatusTool(Tool):
    name = "spawn_status"
    description = "List the sub-tasks of this chat and their state."
    parameters: ClassVar[JSONObject] = {"type": "object", "properties": {}}

    def __init__(self, subagents: SubAgents) -> None:
        self._subagents = subagents

    async def run(self, arguments: JSONObject, context: ToolContext) -> str:
        return self._subagents.status(context)
