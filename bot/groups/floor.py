"""The floor of a group: the copies of each human message gathered, and the personas
that answer it given the floor in order (see ``bot.groups`` for the design)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from bot.channels.base import Channel, InboundMessage
from bot.commands import parse_command
from bot.groups.conversation import GroupConversation, heard, said
from bot.groups.roster import GroupRoster, Seat, Seats
from bot.lanes import RetryLater
from bot.lifecycle import DELIVERED, Ticket, in_group
from bot.sessions.group_turns import GroupTurn
from bot.sessions.store import SessionStore

log = logging.getLogger(__name__)

COPY_WAIT_S = 3.0  # how long a message waits for a sibling bot's copy of it
KEPT_MESSAGES = 512  # recent messages remembered, so a late copy joins the right one


Job = Callable[[], Awaitable[None]]


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

    def copy(self, channel: str) -> InboundMessage:
        """The message as ``channel``'s persona hears it: its own copy when it came (its
        own @mention taken out, as in its turns), else the first copy."""
        own = self.copies.get(channel)
        return own.message if own is not None and own.message is not None else self.text

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
        self.roster = GroupRoster(store, channels, seats)
        self._conversation = GroupConversation(store, self.roster)
        self._run_ticket = run
        self._skip = skip
        self._submit = submit
        self._copy_wait_s = copy_wait_s
        self._messages: OrderedDict[tuple[str, str | None, str], _Message] = OrderedDict()

    # --- what the App asks ------------------------------------------------------------

    def takes(self, ticket: Ticket) -> bool:
        message = ticket.message
        return in_group(ticket.chat_id) and (message is None or bool(message.shared_id))

    def submit(self, ticket: Ticket) -> None:
        message = ticket.message
        if message is None:  # a spawned task's result, posted in the group
            self._submit(ticket.key, lambda: self._post(ticket))
            return
        self.roster.arrived(message.chat_id, ticket.channel)
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
        seats = {s.channel: s for s in self.roster.seats(chat, topic)}
        turn = gathered.turn = gathered.turn or await self._decide(gathered, seats)
        # Commands (/status, /new) are not conversation: the others neither hear them nor
        # their answers, as a persona's own session does not keep them either.
        talk = parse_command(gathered.text.text) is None
        if talk and not gathered.shared:
            await self._conversation.share(chat, topic, lambda c: [heard(gathered.copy(c))])
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
        accounts = {c: a for c in seats if (a := self.roster.account(c)) is not None}
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
        if channel in gathered.copies:
            return True
        if self.roster.account(channel) is None:
            return False  # not running
        if self.roster.is_absent(gathered.chat_id, channel) and not named:
            return False
        if await gathered.copy_of(channel) is not None:
            return True
        self.roster.missed(gathered.chat_id, channel)
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
            answer = (said(seat.name, ticket.reply), f"group:{gathered.shared_id}:{seat.channel}")
            await self._conversation.share(
                gathered.chat_id,
                gathered.topic_id,
                lambda c: [heard(gathered.copy(c)), answer],
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
        seats = self.roster.seats(ticket.chat_id, ticket.topic_id)
        seat = next((s for s in seats if s.channel == ticket.channel), None)
        if row is None or row.outcome != DELIVERED or not ticket.reply or seat is None:
            return
        result = (said(seat.name, ticket.reply), f"task:{ticket.channel}:{ticket.inbox_id}")
        await self._conversation.share(
            ticket.chat_id, ticket.topic_id, lambda _: [result], {ticket.channel, *exclude}
        )
