"""Groups with several personas (SPEC §15): one conversation, one answer per message.

Telegram gives every bot of ours in a group its own copy of each human message (its own
update, the same ``shared_id``) and never shows one bot what another bot wrote. The
bridge holds all of them, so it can do what separate processes cannot:

- **One lane per group.** Every bot's turns in a group run in one lane (``Ticket.key``),
  so the group is one conversation, handled one message at a time in the order its first
  copy reached the bridge.
- **The copies of a message meet.** The first copy to arrive opens a ``_Message``; later
  copies join it instead of queueing their own job. Its job decides who answers, runs
  those copies' turns in order, and finishes every other copy as ``skipped``
  ("answered by Alice"). Waiting for a copy is bounded (``COPY_WAIT_S``); a copy that
  comes later still follows the stored decision.
- **Who answers**, from the message and the config alone: every persona it replies to or
  @mentions, in that order (the replied-to one first); otherwise the first bot, in config
  order, whose ``group_policy`` admits it and that is in the group. Membership is learnt
  from copies: the job waits for the copies of the bots before the one it would choose,
  so the choice does not depend on which bot's copy happened to arrive first (the race).
  A bot whose copy does not come within the wait counts as absent until one comes again
  (and a message naming only absent bots goes to the default answerer).
  The decision is stored (``bot.sessions.group_turns``) before anyone answers: a restart,
  or another process on the same database, follows it instead of deciding again.
- **Shared context.** Each persona keeps its own session for the group. The human
  message goes into the session of every persona in the group before anyone answers, and
  each delivered answer goes into the others' sessions as ``[Alice]: …`` right after it
  is delivered, before the next persona's turn. So a persona never sees an answer before
  the message it answers, nor misses one given before its turn; compaction and budgets
  work on these sessions as on any other.
- **No bot-to-bot triggers.** A message written by one of our bots (which Telegram only
  delivers with ``allow_bots`` and bot-to-bot mode on) is stored as seen and skipped:
  personas reach each other only through the spawn/delegate tools, bounded as in §8.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from bot.channels.base import Account, Channel, InboundMessage
from bot.commands import parse_command
from bot.lanes import RetryLater
from bot.lifecycle import DELIVERED, Ticket, in_group
from bot.sessions.group_turns import GroupTurn
from bot.sessions.store import SessionKey, SessionStore
from bot.types import ChatMessage

log = logging.getLogger(__name__)

COPY_WAIT_S = 3.0  # how long a message waits for a sibling bot's copy of it
KEPT_MESSAGES = 512  # recent messages remembered, so a late copy joins the right one


@dataclass(frozen=True)
class Seat:
    """One of our bots as routed in a chat, in config order: who speaks there, and when."""

    channel: str
    policy: str  # the bot's group_policy
    agent_id: str
    name: str  # the persona's display name


@dataclass(frozen=True)
class Member:
    seat: Seat
    account: Account


Seats = Callable[[str, str | None], list[Seat]]
Job = Callable[[], Awaitable[None]]


def group_source(message: InboundMessage) -> str:
    """What a group message is stored as in every persona's session: one id for all the
    copies, so the persona's own turn finds it there instead of storing it again."""
    return f"group:{message.shared_id}"


def admits(policy: str, message: InboundMessage) -> bool:
    """Whether a bot answers an unaddressed group message (SPEC §5 ``group_policy``)."""
    if policy == "all":
        return True
    return policy == "mention" and message.text.startswith("/")  # a command for every bot


@dataclass
class _Message:
    """One human message of a group and the copies of it that have arrived."""

    chat_id: str
    topic_id: str | None
    shared_id: str
    deadline: float
    copies: dict[str, Ticket] = field(default_factory=dict)
    handled: set[str] = field(default_factory=set)
    turn: GroupTurn | None = None
    shared: bool = False
    finished: bool = False
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, ticket: Ticket) -> None:
        self.copies[ticket.channel] = ticket
        self._arrived.set()
        self._arrived = asyncio.Event()

    @property
    def text(self) -> InboundMessage:
        first = next(iter(self.copies.values())).message
        assert first is not None
        return first

    async def copy_of(self, channel: str) -> Ticket | None:
        """``channel``'s copy, waiting for it until the deadline."""
        loop = asyncio.get_running_loop()
        while channel not in self.copies:
            remaining = self.deadline - loop.time()
            if remaining <= 0:
                return None
            arrived = self._arrived
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), remaining)
        return self.copies[channel]


class GroupFloor:
    """Gathers the copies of each group message and gives the floor to the right personas."""

    def __init__(
        self,
        store: SessionStore,
        channels: Mapping[str, Channel],
        seats: Seats,
        *,
        run: Callable[[Ticket], Awaitable[None]],
        skip: Callable[[Ticket, str], Awaitable[None]],
        submit: Callable[[Hashable, Job], None],
        copy_wait_s: float = COPY_WAIT_S,
    ) -> None:
        self._store = store
        self._channels = channels
        self._seats = seats
        self._run_ticket = run
        self._skip = skip
        self._submit = submit
        self._copy_wait_s = copy_wait_s
        self._messages: OrderedDict[tuple[str, str | None, str], _Message] = OrderedDict()
        self._present: dict[str, set[str]] = {}  # chat → channels seen there
        self._absent: dict[str, set[str]] = {}  # chat → channels whose copy did not come
        self._recalled: set[str] = set()  # chats whose members were read from the store

    # --- what the App asks ------------------------------------------------------------

    def takes(self, ticket: Ticket) -> bool:
        message = ticket.message
        return in_group(ticket.chat_id) and (message is None or bool(message.shared_id))

    def sibling(self, message: InboundMessage) -> str | None:
        """The channel of ours that wrote ``message``, if one of our bots did."""
        for name, channel in self._channels.items():
            account = channel.account()
            if name != message.channel and account and account.user_id == message.sender_id:
                return name
        return None

    def submit(self, ticket: Ticket) -> None:
        message = ticket.message
        if message is None:  # a spawned task's result, posted in the group
            self._submit(ticket.key, lambda: self._post(ticket))
            return
        self._present.setdefault(message.chat_id, set()).add(ticket.channel)
        self._absent.get(message.chat_id, set()).discard(ticket.channel)
        key = (message.chat_id, message.topic_id, message.shared_id)
        current = self._messages.get(key)
        if current is not None and not current.finished and ticket.channel not in current.copies:
            current.add(ticket)
            return
        loop = asyncio.get_running_loop()
        # A copy of a message already handled follows its decision without waiting.
        wait = self._copy_wait_s if current is None else 0.0
        gathered = _Message(*key, deadline=loop.time() + wait)
        gathered.add(ticket)
        self._messages[key] = gathered
        self._messages.move_to_end(key)
        while len(self._messages) > KEPT_MESSAGES:
            self._messages.popitem(last=False)
        self._submit(ticket.key, lambda: self._floor(gathered))

    async def post_now(self, ticket: Ticket, exclude: Iterable[str] = ()) -> None:
        """Deliver a task's result at once, from inside a turn that holds the group's lane
        (delegate); if Telegram cannot take it now, it waits in the lane."""
        try:
            await self._post(ticket, exclude)
        except RetryLater:
            self._submit(ticket.key, lambda: self._post(ticket, exclude))

    async def own_bot(self, chat_id: str, topic_id: str | None, agent_id: str) -> str | None:
        """The channel through which ``agent_id`` speaks in this group, if its bot is there."""
        if not in_group(chat_id):
            return None
        for member in await self._members(chat_id, topic_id):
            if member.seat.agent_id == agent_id:
                return member.seat.channel
        return None

    async def describe(self, chat_id: str, topic_id: str | None) -> str:
        """/status lines for a group: the personas present and who answers by default."""
        if not in_group(chat_id):
            return ""
        members = await self._members(chat_id, topic_id)
        here = ", ".join(f"{m.seat.name} (@{m.account.username})" for m in members)
        default = next((m.seat.name for m in members if m.seat.policy == "all"), None)
        return (
            f"\nPersonas here: {here or 'none known yet'}"
            f"\nAnswers by default: {default or 'nobody; mention one of us'}"
        )

    # --- one message, all its copies --------------------------------------------------

    async def _floor(self, gathered: _Message) -> None:
        try:
            await self._answer(gathered)
        except RetryLater:
            raise  # the lane runs this job again; what is done stays done
        except BaseException:
            gathered.finished = True
            raise

    async def _answer(self, gathered: _Message) -> None:
        chat, topic = gathered.chat_id, gathered.topic_id
        seats = {s.channel: s for s in self._seats(chat, topic)}
        turn = gathered.turn = gathered.turn or await self._decide(gathered, seats)
        # Commands (/status, /new) are not conversation: the others neither hear them nor
        # their answers, as a persona's own session does not keep them either.
        talk = parse_command(gathered.text.text) is None
        if talk and not gathered.shared:
            await self._share(chat, topic, lambda channel: [self._heard(gathered, channel)])
            gathered.shared = True
        for channel in turn.answerers:
            if channel in turn.answered or channel in gathered.handled:
                continue
            ticket = await gathered.copy_of(channel)
            if ticket is None:
                log.warning(
                    "group %s: %s is to answer message %s but its copy did not arrive",
                    chat,
                    channel,
                    gathered.shared_id,
                )
                continue
            await self._run_ticket(ticket)
            gathered.handled.add(channel)
            await self._answered(gathered, ticket, seats if talk else {})
        names = ", ".join(seats[c].name if c in seats else c for c in turn.answerers)
        note = f"answered by {names}" if names else "none of our personas answers it here"
        while rest := [c for c in gathered.copies if c not in gathered.handled]:
            for channel in rest:
                gathered.handled.add(channel)
                await self._skip(gathered.copies[channel], note)
        gathered.finished = True

    async def _decide(self, gathered: _Message, seats: Mapping[str, Seat]) -> GroupTurn:
        chat, topic, shared_id = gathered.chat_id, gathered.topic_id, gathered.shared_id
        stored = await self._store.group_turn(chat, topic, shared_id)
        if stored is not None:
            return stored
        message = gathered.text
        accounts = {c: a for c in seats if (a := self._account(c)) is not None}
        named = [c for c, a in accounts.items() if a.user_id == message.reply_to_user]
        for username in message.mentions:
            named += [c for c, a in accounts.items() if a.username.lower() == username]
        if not message.text.startswith("/"):
            # A "mention" bot stores only what it judged addressed to it (a voice note
            # naming it, say): its copy counts as being named, after the ones named here.
            named += [c for c in gathered.copies if c in seats and seats[c].policy == "mention"]
        # Only bots that got the message too: one mentioned but not in the group (its
        # copy never comes) leaves the message to the default answerer.
        answerers = [
            c
            for c in dict.fromkeys(named)
            if seats[c].policy != "off" and await self._is_here(gathered, c, named=True)
        ]
        if not answerers:
            answerers = await self._first_in_group(gathered, seats, message)
        log.info("group %s message %s: answered by %s", chat, shared_id, answerers or "nobody")
        return await self._store.group_decide(chat, topic, shared_id, answerers)

    async def _first_in_group(
        self, gathered: _Message, seats: Mapping[str, Seat], message: InboundMessage
    ) -> list[str]:
        """The first bot in config order that admits the message and is in the group:
        each bot before it had its chance to show, by its copy, that it is there."""
        for channel, seat in seats.items():
            if admits(seat.policy, message) and await self._is_here(gathered, channel):
                return [channel]
        return []

    async def _is_here(self, gathered: _Message, channel: str, *, named: bool = False) -> bool:
        """Whether ``channel``'s bot got the message too: its copy came, or comes within
        the wait. One known absent is not waited for unless the message names it."""
        absent = self._absent.setdefault(gathered.chat_id, set())
        if channel in gathered.copies:
            return True
        if channel not in self._channels or (channel in absent and not named):
            return False
        if await gathered.copy_of(channel) is not None:
            return True
        log.info("group %s: no copy for %s; it counts as absent", gathered.chat_id, channel)
        absent.add(channel)
        return False

    async def _answered(
        self, gathered: _Message, ticket: Ticket, seats: Mapping[str, Seat]
    ) -> None:
        """After a persona's turn: the others hear what it said, before anyone goes on."""
        assert ticket.inbox_id is not None
        row = await self._store.inbox_row(ticket.channel, ticket.inbox_id)
        if row is None or row.status != "done":
            return  # released (its bot stopped): answered at the bot's next start
        seat = seats.get(ticket.channel)
        if row.outcome == DELIVERED and ticket.reply and seat is not None:
            # The message first: a persona that joined the group while it was being
            # answered must not hear an answer before what it answers.
            said = ChatMessage("user", f"[{seat.name}]: {ticket.reply}")
            source = f"group:{gathered.shared_id}:{ticket.channel}"
            await self._share(
                gathered.chat_id,
                gathered.topic_id,
                lambda channel: [self._heard(gathered, channel), (said, source)],
                {seat.channel},
            )
        await self._store.group_answered(
            gathered.chat_id, gathered.topic_id, gathered.shared_id, ticket.channel
        )

    async def _post(self, ticket: Ticket, exclude: Iterable[str] = ()) -> None:
        """A task's result through the group's lane; the others hear it once delivered."""
        await self._run_ticket(ticket)
        assert ticket.inbox_id is not None
        row = await self._store.inbox_row(ticket.channel, ticket.inbox_id)
        seat = next(
            (
                s
                for s in self._seats(ticket.chat_id, ticket.topic_id)
                if s.channel == ticket.channel
            ),
            None,
        )
        if row is None or row.outcome != DELIVERED or not ticket.reply or seat is None:
            return
        said = ChatMessage("user", f"[{seat.name}]: {ticket.reply}")
        source = f"task:{ticket.channel}:{ticket.inbox_id}"
        await self._share(
            ticket.chat_id, ticket.topic_id, lambda _: [(said, source)], {ticket.channel, *exclude}
        )

    # --- membership and sessions ------------------------------------------------------

    def _account(self, channel: str) -> Account | None:
        running = self._channels.get(channel)
        return running.account() if running is not None else None

    async def _members(self, chat_id: str, topic_id: str | None) -> list[Member]:
        """Our bots in the group, in config order: seen there (copies, or a conversation
        kept from before a restart) and not found absent since."""
        present = self._present.setdefault(chat_id, set())
        if chat_id not in self._recalled:
            present |= await self._store.group_members(chat_id)
            self._recalled.add(chat_id)
        absent = self._absent.get(chat_id, set())
        return [
            Member(seat, account)
            for seat in self._seats(chat_id, topic_id)
            if seat.channel in present
            and seat.channel not in absent
            and (account := self._account(seat.channel)) is not None
        ]

    @staticmethod
    def _heard(gathered: _Message, channel: str) -> tuple[ChatMessage, str]:
        """The human message as ``channel``'s persona hears it: its own copy when it came
        (its own @mention taken out, as in its turns), else the first copy."""
        copy = gathered.copies.get(channel)
        message = copy.message if copy is not None and copy.message else gathered.text
        return ChatMessage("user", message.text), group_source(message)

    async def _share(
        self,
        chat_id: str,
        topic_id: str | None,
        entries: Callable[[str], list[tuple[ChatMessage, str]]],
        exclude: Iterable[str] = (),
    ) -> None:
        """Append each (message, source) to the session of every persona in the group but
        ``exclude``; the source makes it once per session, however often this runs."""
        skipped = set(exclude)
        for member in await self._members(chat_id, topic_id):
            seat = member.seat
            if seat.channel in skipped:
                continue
            key = SessionKey(seat.channel, chat_id, topic_id, seat.agent_id)
            session_id = await self._store.active_session(key)
            for message, source in entries(seat.channel):
                await self._store.append(session_id, message, source=source)
