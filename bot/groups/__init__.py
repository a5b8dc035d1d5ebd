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

The parts: ``floor`` (copies gathered, who answers, in what order), ``roster`` (which of
our bots are in a group) and ``conversation`` (what each persona hears there).
"""

from bot.groups.conversation import group_source
from bot.groups.floor import GroupFloor
from bot.groups.roster import Seat

__all__ = ["GroupFloor", "Seat", "group_source"]
