"""Chat commands every channel understands: /start, /help, /new, /status, /usage (SPEC §5,
§12), the admins' /approve CODE (SPEC §13), and /stop (SPEC §10: the App acts on it the moment
it arrives; what reaches here found nothing running)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

from bot.agents.agent import Agent
from bot.agents.turn import session_key
from bot.config.schema import ChainSpec
from bot.durations import wait_text
from bot.providers.cooldown import CooldownBook
from bot.routing import Route
from bot.sessions.context import unsummarised_tokens
from bot.sessions.pairing_store import normalise_code
from bot.sessions.store import SessionStore
from bot.usage.report import is_admin, usage_reply

log = logging.getLogger(__name__)

COMMANDS = ("start", "help", "new", "status", "usage", "approve", "stop")
NOT_ADMIN = "Only an admin of this bridge can approve pairing codes."
# Roles that serve a chat's turns directly (SPEC §11), shown by /status when configured.
MEDIA_ROLES = (("vision", "Images described by"), ("transcription", "Voice transcribed by"))
NOTHING_RUNNING = "Nothing is being written right now, so there is nothing to stop."


def parse_command(text: str) -> str | None:
    """``"/status@bot args"`` → ``"status"``; None when the text is not one of ours."""
    if not text.startswith("/"):
        return None
    name = text[1:].split(maxsplit=1)[0].split("@", 1)[0].lower() if len(text) > 1 else ""
    return name if name in COMMANDS else None


class CommandHandler:
    def __init__(
        self,
        store: SessionStore,
        cooldowns: CooldownBook,
        *,
        admins: Sequence[str] = (),
        budget_timezone: str = "UTC",
        clock: Callable[[], float] = time.time,
        roles: Mapping[str, ChainSpec] | None = None,
    ) -> None:
        self._store = store
        self._cooldowns = cooldowns
        self._admins = admins
        self._zone = ZoneInfo(budget_timezone)
        self._clock = clock
        self._roles = dict(roles or {})

    async def answer(
        self,
        command: str,
        agent: Agent,
        route: Route,
        sender_id: str = "",
        sender_username: str | None = None,
        text: str = "",
    ) -> str:
        if command == "approve":
            return await self._approve(route, sender_id, sender_username, text)
        if command == "start":
            return f"Hi, I'm {agent.display_name}. Just write to me.\n\n{self._help()}"
        if command == "help":
            return self._help()
        if command == "stop":
            return NOTHING_RUNNING
        if command == "new":
            archived = await self._store.archive(session_key(route))
            if archived is None:
                return "Nothing to archive; this is already a fresh conversation."
            return "Started a fresh conversation. The old one is archived, not deleted."
        if command == "usage":
            return await usage_reply(
                self._store,
                agent.id,
                agent.display_name,
                sender_id,
                admin=is_admin(self._admins, sender_id, sender_username),
                now=self._clock(),
                zone=self._zone,
            )
        return await self._status(agent, route)

    async def _approve(
        self, route: Route, sender_id: str, sender_username: str | None, text: str
    ) -> str:
        """An admin, in any bot, lets the holder of a pairing code in (to the bot that
        issued it)."""
        if not is_admin(self._admins, sender_id, sender_username):
            log.info("/approve from %s refused: not an admin", sender_id or "?")
            return NOT_ADMIN
        words = text.split(maxsplit=1)
        typed = words[1].strip() if len(words) > 1 else ""
        if not typed:
            return "Usage: /approve CODE — the code the person got from the bot."
        code = normalise_code(typed)
        approval = (
            None
            if code is None
            else await self._store.pairing_approve(code, f"{route.channel}:{sender_id}")
        )
        if approval is None:
            return (
                f"No open pairing code {typed[:20]!r}: it is unknown, used or expired. "
                "Ask them to write to the bot again for a fresh one."
            )
        name = f" (@{approval.username})" if approval.username else ""
        log.info(
            "pairing: admin %s approved user %s%s for %s",
            sender_id,
            approval.user_id,
            name,
            approval.channel,
        )
        return (
            f"Approved: user {approval.user_id}{name} may now talk to {approval.channel}. "
            "They can write to it again now."
        )

    @staticmethod
    def _help() -> str:
        return (
            "/new — start a fresh conversation (the old one is archived)\n"
            "/status — who answers, on which models, and how big this conversation is\n"
            "/usage — the tokens you used with me today and this month\n"
            "/stop — stop the answer being written (what was written so far is kept)\n"
            "/help — this list"
        )

    async def _status(self, agent: Agent, route: Route) -> str:
        session_id = await self._store.active_session(session_key(route))
        count = await self._store.message_count(session_id)
        summary = await self._store.latest_summary(session_id)
        # Only what the model still sees verbatim: a long session stays cheap to inspect.
        recent = await self._store.messages(
            session_id, after_id=summary.covers_up_to if summary else 0
        )
        last_model = next((m.model_name for m in reversed(recent) if m.model_name), None)
        tokens = unsummarised_tokens(recent)
        lines = [
            f"Agent: {agent.display_name} ({agent.id})",
            f"Models: {self._chain(agent.chain)}",
            f"Last answer from: {last_model or 'nobody yet'}",
            f"Session: {count} messages, about {tokens} tokens not yet summarised",
        ]
        lines += [
            f"{label}: {self._chain(self._roles[role])}"
            for role, label in MEDIA_ROLES
            if role in self._roles
        ]
        if summary is None:
            lines.append("Compaction: not yet")
        else:
            ago = max(0, int(time.time() - summary.created_at))
            lines.append(
                f"Compaction: {ago}s ago by {summary.model_name}, "
                f"covers messages up to #{summary.covers_up_to}"
            )
        return "\n".join(lines)

    def _chain(self, chain: ChainSpec) -> str:
        names = []
        for name in chain.names:
            left = self._cooldowns.remaining(name)
            names.append(f"{name} (cooling, back in {wait_text(left)})" if left else name)
        return " → ".join(names)
