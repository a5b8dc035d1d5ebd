"""Groups with several personas (SPEC §15), through the real bridge: two bots of ours in one
supergroup, each receiving its own copy of every message, as Telegram delivers them."""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from bot.channels.telegram import BOT_LOOP_LIMIT
from bot.channels.telegram_access import mentioned_accounts
from bot.testing import BridgeProcess, FakeLLM, FakeTelegram, Hang, RecordedRequest, ToolCall
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan

ALICE = BotPlan(
    "alice", "7000001:alice-token-" + "G" * 30, "alice", "You are Alice.", "alice-model"
)
BOB = BotPlan("bob", "7000002:bob-token-" + "H" * 32, "bob", "You are Bob.", "bob-model")
BOTS = [ALICE, BOB]
GROUP = -1007001
PERSON = 4242


def config(fake_telegram: FakeTelegram, fake_llm: FakeLLM, **bot_settings: Any) -> dict[str, Any]:
    for plan in BOTS:
        fake_telegram.add_bot(plan.token, f"{plan.bot_id}_bot", plan.agent_id.title())
    cfg = make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=BOTS
    )
    for bot in cfg["channels"]["telegram_bots"]:
        bot.update({"group_policy": "all", **bot_settings})
    return cfg


async def started(
    tmp_path: Path, fake_telegram: FakeTelegram, cfg: dict[str, Any]
) -> BridgeProcess:
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start_polling(fake_telegram, ALICE.token, BOB.token)
    return bridge


def say(fake: FakeTelegram, text: str, reply_to: tuple[str, int] | None = None) -> None:
    fake.inject_group_message(
        [ALICE.token, BOB.token], GROUP, text, user_id=PERSON, first_name="Pat", reply_to=reply_to
    )


def contents(request: RecordedRequest) -> list[str]:
    return [str(m.get("content")) for m in request.body["messages"]]


def db_rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        return db.execute(sql).fetchall()


async def test_one_answer_by_default_mentions_in_order_and_a_shared_conversation(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = await started(tmp_path, fake_telegram, config(fake_telegram, fake_llm))
    say(fake_telegram, "where shall we travel?")
    [first] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=GROUP, timeout=30)
    say(fake_telegram, "@bob_bot what do you think of what alice said?")
    [bob_said] = await fake_telegram.wait_for_sent(BOB.token, 1, chat_id=GROUP, timeout=30)
    say(fake_telegram, "@alice_bot @bob_bot hi")
    await fake_telegram.wait_for_sent(BOB.token, 2, chat_id=GROUP, timeout=30)
    say(fake_telegram, "/status")
    await fake_telegram.wait_for_sent(ALICE.token, 3, chat_id=GROUP, timeout=30)
    assert await bridge.stop() == 0

    alice = fake_telegram.sent(ALICE.token, GROUP)
    bob = fake_telegram.sent(BOB.token, GROUP)
    said_to_alice = [m.text.rsplit("] ", 1)[-1] for m in alice[:2]]
    assert said_to_alice == ["where shall we travel?", "@bob_bot hi"]  # her mention taken out
    assert len(alice) == 3  # one answer each time, never both by default
    assert len(bob) == 2
    assert alice[1].message_id < bob[1].message_id  # "@alice @bob": alice first, then bob

    # Bob saw what Alice said, attributed to her, after the message she answered.
    ask_bob = fake_llm.requests_for("bob-model")[0]
    said = contents(ask_bob)
    assert f"[Alice]: {first.text}" in said
    assert said.index("where shall we travel?") < said.index(f"[Alice]: {first.text}")
    assert bob_said.text.endswith("what do you think of what alice said?")
    # "@alice @bob hi": bob's request holds alice's answer to that very message.
    second_for_bob = contents(fake_llm.requests_for("bob-model")[1])
    assert f"[Alice]: {alice[1].text}" in second_for_bob
    asked = next(i for i, c in enumerate(second_for_bob) if c.endswith(" hi") and "[" not in c)
    assert asked < second_for_bob.index(f"[Alice]: {alice[1].text}")
    # And alice, later, heard bob: the group is one conversation for both.
    status = alice[2].text
    assert "Personas here: Alice (@alice_bot), Bob (@bob_bot)" in status
    assert "Answers by default: Alice" in status
    commands = "SELECT count(*) FROM messages WHERE content LIKE '%/status%' OR content LIKE"
    assert db_rows(tmp_path, f"{commands} '%Personas here%'") == [(0,)]  # not conversation
    # Every copy is stored; the ones not answered are done as skipped, saying by whom.
    outcomes = db_rows(
        tmp_path, "SELECT channel, outcome, note FROM inbox WHERE update_id > 0 ORDER BY rowid"
    )
    assert Counter((c, o) for c, o, _ in outcomes) == {
        ("telegram-alice", "delivered"): 3,
        ("telegram-alice", "skipped"): 1,
        ("telegram-bob", "delivered"): 2,
        ("telegram-bob", "skipped"): 2,
    }
    assert ("telegram-bob", "skipped", "answered by Alice") in outcomes


async def until_db(tmp_path: Path, sql: str, expected: list[Any], within_s: float = 30) -> None:
    """Wait for a query to return ``expected`` (the bridge commits in its own process)."""
    async with asyncio.timeout(within_s):
        while db_rows(tmp_path, sql) != expected:  # noqa: ASYNC110 - a file, no notification
            await asyncio.sleep(0.02)


async def test_the_default_answerer_does_not_depend_on_whose_copy_came_first(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = await started(tmp_path, fake_telegram, config(fake_telegram, fake_llm))
    # Bob's copy reaches the bridge first; Alice's only once Bob's is stored.
    fake_telegram.inject_group_message([BOB.token], GROUP, "first words", user_id=PERSON)
    await until_db(tmp_path, "SELECT count(*) FROM inbox WHERE channel = 'telegram-bob'", [(1,)])
    fake_telegram.inject_group_message(
        [ALICE.token], GROUP, "first words", user_id=PERSON, message_id=1
    )
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=GROUP, timeout=30)
    # Alice leaves: her copies stop coming, and after one bounded wait Bob answers alone;
    # even when she is named, as she never gets the message.
    texts = ["anyone there?", "still there?", "@alice_bot are you there?"]
    for text in texts:
        fake_telegram.inject_group_message([BOB.token], GROUP, text, user_id=PERSON)
    bob = await fake_telegram.wait_for_sent(BOB.token, 3, chat_id=GROUP, timeout=30)
    assert await bridge.stop() == 0
    assert [m.text.rsplit("] ", 1)[-1] for m in bob] == texts
    assert len(fake_telegram.sent(ALICE.token, GROUP)) == 1
    # Waited for her once by default, and once more when named.
    assert bridge.logs().count("telegram-alice; it counts as absent") == 2


async def test_a_crash_between_two_mentioned_answers_gives_each_exactly_once(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.script("bob-model", Hang())
    bridge = await started(tmp_path, fake_telegram, config(fake_telegram, fake_llm))
    say(fake_telegram, "@alice_bot @bob_bot plan the trip")
    [alice_said] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=GROUP, timeout=30)
    await fake_llm.wait_for_requests(1, model="bob-model", timeout=30)  # bob is thinking
    await bridge.kill()
    await bridge.start_polling(fake_telegram, ALICE.token, BOB.token)
    await fake_telegram.wait_for_sent(BOB.token, 1, chat_id=GROUP, timeout=30)
    fake_telegram.inject_message(ALICE.token, PERSON, "sync")  # the replay is done before it
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=PERSON, timeout=30)
    assert await bridge.stop() == 0
    assert len(fake_telegram.sent(ALICE.token, GROUP)) == 1
    assert len(fake_telegram.sent(BOB.token, GROUP)) == 1
    assert len(fake_llm.requests_for("alice-model")) == 2  # the group once, then "sync"
    assert f"[Alice]: {alice_said.text}" in contents(fake_llm.requests_for("bob-model")[-1])


async def test_delegate_and_spawn_results_are_said_by_the_targets_own_bot(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    cfg = config(fake_telegram, fake_llm)
    cfg["agents"]["list"][0]["allow_agents"] = ["bob"]
    fake_llm.script(
        "alice-model", ToolCall("delegate", {"task": "price of saffron?", "agent_id": "bob"})
    )
    bridge = await started(tmp_path, fake_telegram, cfg)
    say(fake_telegram, "how much is saffron?")
    [delegated] = await fake_telegram.wait_for_sent(BOB.token, 1, chat_id=GROUP, timeout=30)
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=GROUP, timeout=30)
    fake_llm.script(
        "alice-model", ToolCall("spawn", {"task": "find a risotto recipe", "agent_id": "bob"})
    )
    say(fake_telegram, "and dinner?")
    sent = await fake_telegram.wait_for_sent(BOB.token, 2, chat_id=GROUP, timeout=30)
    await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=GROUP, timeout=30)
    assert await bridge.stop() == 0
    assert delegated.text == "[model=bob-model] [system=You are Bob.] price of saffron?"
    spawned = sent[1].raw["text"]
    assert not spawned.startswith("<b>Bob</b>")  # its own bot: no name needed
    assert spawned.endswith("find a risotto recipe")
    assert len(fake_telegram.sent(ALICE.token, GROUP)) == 2  # her own answers only
    tasks = db_rows(tmp_path, "SELECT channel, outcome FROM inbox WHERE update_id < 0")
    assert tasks == [("telegram-bob", "delivered")] * 2


async def test_a_hundred_random_messages_are_answered_as_addressed_and_bots_never_trigger(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    # allow_bots on: were our bots to see each other's messages, nothing may follow from it.
    bridge = await started(
        tmp_path, fake_telegram, config(fake_telegram, fake_llm, allow_bots=True)
    )
    chance = random.Random(17)
    expected: dict[int, list[str]] = {}
    last_sent: dict[str, int] = {}
    for n in range(100):
        kind = chance.choice(["plain", "plain", "alice", "bob", "both", "both-reversed", "reply"])
        reply_to = None
        if kind == "reply" and last_sent:
            token = chance.choice(sorted(last_sent))
            reply_to = (token, last_sent[token])
            answerers = ["alice" if token == ALICE.token else "bob"]
        elif kind in ("alice", "bob"):
            answerers = [kind]
        elif kind == "both":
            answerers = ["alice", "bob"]
        elif kind == "both-reversed":
            answerers = ["bob", "alice"]
        else:
            answerers = ["alice"]
        mentions = (
            " ".join(f"@{a}_bot" for a in answerers) if kind not in ("plain", "reply") else ""
        )
        say(fake_telegram, f"{mentions} #{n} tell me something".strip(), reply_to)
        expected[n] = answerers
        if n % 10 == 9:
            # Let answers arrive now and then, so replies to them become possible.
            alice_count = sum(a.count("alice") for a in expected.values())
            bob_count = sum(a.count("bob") for a in expected.values())
            alice_sent = await fake_telegram.wait_for_sent(ALICE.token, alice_count, chat_id=GROUP)
            bob_sent = await fake_telegram.wait_for_sent(BOB.token, bob_count, chat_id=GROUP)
            last_sent = {ALICE.token: alice_sent[-1].message_id}
            if bob_sent:
                last_sent[BOB.token] = bob_sent[-1].message_id
    total = {name: sum(a.count(name) for a in expected.values()) for name in ("alice", "bob")}
    alice_sent = await fake_telegram.wait_for_sent(
        ALICE.token, total["alice"], chat_id=GROUP, timeout=60
    )
    bob_sent = await fake_telegram.wait_for_sent(BOB.token, total["bob"], chat_id=GROUP, timeout=60)
    # Each bot's messages shown to the other, as bot-to-bot mode would deliver them.
    for text, token, author in [(m.text, BOB.token, ALICE) for m in alice_sent] + [
        (m.text, ALICE.token, BOB) for m in bob_sent
    ]:
        fake_telegram.inject_message(
            token,
            GROUP,
            text,
            user_id=int(author.token.split(":")[0]),
            chat_type="supergroup",
            from_bot=True,
        )
    fake_telegram.inject_message(ALICE.token, PERSON, "sync")  # after every bot message
    fake_telegram.inject_message(BOB.token, PERSON, "sync")
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=PERSON, timeout=30)
    await fake_telegram.wait_for_sent(BOB.token, 1, chat_id=PERSON, timeout=30)
    assert await bridge.stop() == 0

    answered: dict[int, list[str]] = {n: [] for n in expected}
    for message in sorted(
        fake_telegram.sent(ALICE.token, GROUP) + fake_telegram.sent(BOB.token, GROUP),
        key=lambda m: m.message_id,
    ):
        tag = re.search(r"#(\d+) ", message.text)
        assert tag is not None, message.text
        answered[int(tag.group(1))].append("alice" if message.token == ALICE.token else "bob")
    assert answered == expected  # the expected personas, once each, in mention order
    group_requests = [r for r in fake_llm.requests if r.last_user_text != "sync"]
    assert len(group_requests) == total["alice"] + total["bob"]  # zero bot-to-bot turns
    ignored = db_rows(
        tmp_path, "SELECT count(*) FROM inbox WHERE note LIKE 'written by our own bot%'"
    )
    assert ignored == [(2 * BOT_LOOP_LIMIT,)]  # the rest never got past the loop guard


def test_mentions_are_read_in_order_with_a_commands_target_first() -> None:
    assert mentioned_accounts("/status@Bob_bot hi @alice_bot and @bob_bot") == (
        "bob_bot",
        "alice_bot",
    )
    assert mentioned_accounts("mail me at pat@example.com") == ()
