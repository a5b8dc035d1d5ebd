"""Telegram behaviour end to end (SPEC §5): the real bridge process, fake Bot API, fake LLM."""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from bot.testing import BridgeProcess, FakeLLM, FakeTelegram, Reply, Slow
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan

BOTS = [
    BotPlan(
        name,
        f"{2000000 + i}:{name}-token-{'X' * 30}",
        name,
        f"You are {name.title()}.",
        f"{name}-model",
    )
    for i, name in enumerate(["alice", "bob", "carol"])
]
ALICE = BOTS[0]


def config_for(fake_telegram: FakeTelegram, fake_llm: FakeLLM, bots: list[BotPlan]) -> dict:
    for bot in bots:
        fake_telegram.add_bot(bot.token, f"{bot.bot_id}_bot")
    return make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=bots
    )


async def started(bridge: BridgeProcess, fake: FakeTelegram, bots: list[BotPlan]) -> None:
    await bridge.start_polling(fake, *(b.token for b in bots))


async def test_three_bots_ten_chats_interleaved_in_order(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    jitter = random.Random(7)
    # Replies take 0-80 ms at random: without per-chat lanes, later messages would overtake.
    fake_llm.set_default(None, lambda r: Slow(jitter.uniform(0, 0.08)))
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, BOTS))
    await started(bridge, fake_telegram, BOTS)
    sent: dict[tuple[str, int], list[str]] = {}
    for round_ in range(3):
        for chat in range(10):
            bot = BOTS[chat % 3]
            text = f"chat{chat}-msg{round_}"
            fake_telegram.inject_message(bot.token, chat_id=100 + chat, text=text)
            sent.setdefault((bot.token, 100 + chat), []).append(text)
    for (token, chat_id), texts in sent.items():
        replies = await fake_telegram.wait_for_sent(token, len(texts), chat_id=chat_id, timeout=60)
        bot = next(b for b in BOTS if b.token == token)
        assert [r.text.rsplit("] ", 1)[1] for r in replies] == texts  # arrival order kept
        for reply in replies:
            assert reply.text.startswith(f"[model={bot.model}] [system={bot.persona}]")
    assert await bridge.stop() == 0
    # The third message of a chat saw the first two as history.
    last = next(r for r in fake_llm.requests if r.last_user_text == "chat4-msg2")
    contents = [m["content"] for m in last.body["messages"]]
    assert "chat4-msg0" in contents
    assert "chat4-msg1" in contents


async def test_kill_9_mid_turn_then_restart_answers_every_message_exactly_once(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bots = BOTS[:2]
    fake_llm.set_default(None, Slow(600))  # every model call is in flight when we kill
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, bots))
    await started(bridge, fake_telegram, bots)
    injected: list[tuple[str, int, str]] = []
    for chat in range(6):
        bot = bots[chat % 2]
        for n in range(2):
            text = f"c{chat}-m{n}"
            fake_telegram.inject_message(bot.token, chat_id=300 + chat, text=text)
            injected.append((bot.token, 300 + chat, text))
    # First message of each chat reached the model; the second waits in its chat's lane.
    await fake_llm.wait_for_requests(6, timeout=30)
    for bot in bots:
        await fake_telegram.wait_for_poll(bot.token, timeout=30)  # offsets confirmed
        assert fake_telegram.pending_updates(bot.token) == 0
    await bridge.kill()
    assert all(fake_telegram.sent(b.token) == [] for b in bots)

    fake_llm.set_default(None, lambda r: Reply(f"answer to {r.last_user_text}"))
    restarted = BridgeProcess(bridge.config_path)
    await started(restarted, fake_telegram, bots)
    for bot in bots:
        await fake_telegram.wait_for_sent(bot.token, 6, timeout=60)
    assert await restarted.stop() == 0

    answers = Counter(
        (m.token, m.chat_id, m.text) for b in bots for m in fake_telegram.sent(b.token)
    )
    expected = Counter((token, chat, f"answer to {text}") for token, chat, text in injected)
    assert answers == expected  # no loss, no duplicate
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        [(pending,)] = db.execute("SELECT count(*) FROM inbox WHERE status = 'pending'")
    assert pending == 0


LONG_MARKDOWN = "\n\n".join(
    [f"Paragraph {i}: compare a < b && b > c, said **Ann & Bob** to `x<y>`." * 3 for i in range(24)]
    + [
        "```python\n"
        + "\n".join(f"if a < {i} and b > {i}: print('&')" for i in range(120))
        + "\n```"
    ]
    + [f"Line {i} with <tags> & ampersands." for i in range(40)]
)


async def test_long_reply_is_split_into_valid_messages(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    assert len(LONG_MARKDOWN) >= 10_000
    fake_llm.set_default(None, Reply(LONG_MARKDOWN))
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [ALICE]))
    await started(bridge, fake_telegram, [ALICE])
    fake_telegram.inject_message(ALICE.token, chat_id=9, text="write a lot")
    first = await fake_telegram.wait_for_sent(ALICE.token, 3, chat_id=9, timeout=30)
    assert await bridge.stop() == 0
    sent = fake_telegram.sent(ALICE.token, chat_id=9)
    assert len(sent) >= 3
    assert len(sent) == len(first)
    # Every sendMessage was accepted: none was refused and retried as plain text.
    assert len(fake_telegram.calls_to("sendMessage", ALICE.token)) == len(sent)
    assert all(m.parse_mode == "HTML" for m in sent)
    visible = " ".join(m.text for m in sent)
    assert "if a < 119 and b > 119: print('&')" in visible
    assert "Line 39 with <tags> & ampersands." in visible


async def test_reply_refused_for_entities_is_resent_as_plain_text(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.set_default(None, Reply("**bold** claim"))
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [ALICE]))
    await started(bridge, fake_telegram, [ALICE])
    fake_telegram.fail_next(
        ALICE.token,
        "sendMessage",
        status=400,
        description='Bad Request: can\'t parse entities: Unsupported start tag "b"',
    )
    fake_telegram.inject_message(ALICE.token, chat_id=10, text="hi")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=10, timeout=30)
    assert await bridge.stop() == 0
    assert reply.parse_mode is None
    assert reply.text == "bold claim"


async def test_rate_limit_retry_after_is_honoured(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [ALICE]))
    await started(bridge, fake_telegram, [ALICE])
    fake_telegram.fail_next(ALICE.token, "sendMessage", status=429, retry_after=1)
    fake_telegram.inject_message(ALICE.token, chat_id=11, text="hi")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=11, timeout=30)
    assert await bridge.stop() == 0
    attempts = fake_telegram.calls_to("sendMessage", ALICE.token)
    assert len(attempts) == 2
    assert attempts[1].at - attempts[0].at >= 1.0
    assert reply.text.endswith("] hi")


async def test_strangers_groups_and_bots_never_reach_a_model(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm, [ALICE])
    config["channels"]["telegram_bots"][0]["allow_from"] = ["42", "@friend"]
    bridge = BridgeProcess.write(tmp_path, config)
    await started(bridge, fake_telegram, [ALICE])
    token = ALICE.token
    fake_telegram.inject_message(token, chat_id=999, text="stranger 1")
    fake_telegram.inject_message(token, chat_id=999, text="stranger 2")
    fake_telegram.inject_message(
        token, chat_id=-500, user_id=42, chat_type="group", text="group chatter without mention"
    )
    fake_telegram.inject_message(
        token, chat_id=42, user_id=4242, from_bot=True, text="hello from another bot"
    )
    fake_telegram.inject_message(
        token, chat_id=-500, user_id=42, chat_type="group", text="@alice_bot what now?"
    )
    [group_reply] = await fake_telegram.wait_for_sent(token, 1, chat_id=-500, timeout=30)
    assert await bridge.stop() == 0
    assert [r.last_user_text for r in fake_llm.requests] == ["what now?"]
    assert len(fake_telegram.sent(token, chat_id=999)) == 1  # one short reply, once
    assert "999" in fake_telegram.sent(token, chat_id=999)[0].text
    assert fake_telegram.sent(token, chat_id=42) == []
    assert group_reply.text.endswith("] what now?")
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        stored = [row[0] for row in db.execute("SELECT content FROM messages")]
        inbox = db.execute("SELECT count(*) FROM inbox").fetchone()[0]
    assert not any("stranger" in (c or "") or "chatter" in (c or "") for c in stored)
    assert inbox == 1  # only the addressed group message was stored


async def test_commands_new_and_status(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [ALICE]))
    await started(bridge, fake_telegram, [ALICE])
    token = ALICE.token
    fake_telegram.inject_message(token, chat_id=12, text="remember the codeword")
    await fake_telegram.wait_for_sent(token, 1, chat_id=12, timeout=30)
    fake_telegram.inject_message(token, chat_id=12, text="/status")
    status = (await fake_telegram.wait_for_sent(token, 2, chat_id=12, timeout=30))[1].text
    fake_telegram.inject_message(token, chat_id=12, text="/new")
    fake_telegram.inject_message(token, chat_id=12, text="fresh start")
    await fake_telegram.wait_for_sent(token, 4, chat_id=12, timeout=30)
    assert await bridge.stop() == 0
    assert "Agent: Alice (alice)" in status
    assert "Models: m-alice" in status
    assert "Last answer from: m-alice" in status
    assert "Session: 2 messages" in status
    assert [c.params.get("commands") for c in fake_telegram.calls_to("setMyCommands", token)]
    fresh = next(r for r in fake_llm.requests if r.last_user_text == "fresh start")
    assert "remember the codeword" not in str(fresh.body["messages"])


async def test_typing_indicator_is_kept_alive(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.set_default(None, Slow(4.5))  # longer than one typing refresh (4 s)
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [ALICE]))
    await started(bridge, fake_telegram, [ALICE])
    fake_telegram.inject_message(ALICE.token, chat_id=13, text="think hard")
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=13, timeout=30)
    assert await bridge.stop() == 0
    actions = [a for a in fake_telegram.chat_actions(ALICE.token) if a[0] == 13]
    assert len(actions) >= 2  # refreshed while the model worked
    assert {a[1] for a in actions} == {"typing"}


async def test_a_quick_answer_sends_no_typing_action(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    # The model answers at once: a typing indicator would be one more request per message.
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [ALICE]))
    await started(bridge, fake_telegram, [ALICE])
    for n in range(3):
        fake_telegram.inject_message(ALICE.token, chat_id=14, text=f"quick {n}")
        await fake_telegram.wait_for_sent(ALICE.token, n + 1, chat_id=14, timeout=30)
    assert await bridge.stop() == 0
    assert [a for a in fake_telegram.chat_actions(ALICE.token) if a[0] == 14] == []


async def test_rejected_token_is_reported_and_other_bots_keep_working(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm, [ALICE])
    stranger_token = "2999999:never-registered-token-ZZZZZZZZZZZZZZ"
    config["channels"]["telegram_bots"].append(
        {
            "id": "ghost",
            "token": stranger_token,
            "allow_from": ["*"],
            "api_base": fake_telegram.base_url,
        }
    )
    config["bindings"].append({"agent_id": "alice", "match": {"channel": "telegram-ghost"}})
    bridge = BridgeProcess.write(tmp_path, config)
    await started(bridge, fake_telegram, [ALICE])
    fake_telegram.inject_message(ALICE.token, chat_id=14, text="still there?")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=14, timeout=30)
    assert await bridge.stop() == 0
    assert reply.text.endswith("] still there?")
    assert "channel telegram-ghost not started: Telegram rejected the bot token" in bridge.logs()


async def test_polling_survives_getupdates_failures_with_backoff(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [ALICE]))
    await started(bridge, fake_telegram, [ALICE])
    # The parked long poll returns the first message; the next three polls then fail.
    fake_telegram.fail_next(
        ALICE.token, "getUpdates", status=502, description="Bad Gateway", times=2
    )
    fake_telegram.drop_connection_next(ALICE.token, "getUpdates")
    fake_telegram.inject_message(ALICE.token, chat_id=15, text="before the outage")
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=15, timeout=30)
    fake_telegram.inject_message(ALICE.token, chat_id=15, text="after the outage")
    replies = await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=15, timeout=60)
    assert await bridge.stop() == 0
    assert replies[1].text.endswith("] after the outage")
    polls = fake_telegram.calls_to("getUpdates", ALICE.token)
    gaps = [b.at - a.at for a, b in itertools.pairwise(polls)]
    # Failed polls are retried after 1 s, 2 s, 4 s: backoff, not a busy loop.
    assert len(polls) >= 5
    assert max(gaps) >= 3.5
    assert sum(1 for g in gaps if g < 0.5) <= 3


@pytest.mark.parametrize(
    ("policy", "answered"),
    [("all", ["plain chatter", "reply to you"]), ("off", []), ("mention", ["reply to you"])],
)
async def test_group_policies_and_reply_to_the_bot(
    tmp_path: Path,
    fake_telegram: FakeTelegram,
    fake_llm: FakeLLM,
    policy: str,
    answered: list[str],
) -> None:
    config = config_for(fake_telegram, fake_llm, [ALICE])
    config["channels"]["telegram_bots"][0]["group_policy"] = policy
    bridge = BridgeProcess.write(tmp_path, config)
    await started(bridge, fake_telegram, [ALICE])
    token = ALICE.token
    bot_user = {"id": 2000000, "is_bot": True, "first_name": "alice", "username": "alice_bot"}
    group = {"id": -600, "type": "group", "title": "Trip"}
    person = {"id": 16, "is_bot": False, "first_name": "Pat"}
    fake_telegram.inject_message(
        token, chat_id=-600, user_id=16, chat_type="group", text="plain chatter"
    )
    fake_telegram.inject_update(
        token,
        {
            "message": {
                "message_id": 51,
                "date": 1_700_000_000,
                "chat": group,
                "from": person,
                "text": "reply to you",
                "reply_to_message": {
                    "message_id": 50,
                    "date": 1_699_999_999,
                    "chat": group,
                    "from": bot_user,
                    "text": "earlier words",
                },
            }
        },
    )
    fake_telegram.inject_message(token, chat_id=16, text="sync")  # processed after both
    await fake_telegram.wait_for_sent(token, 1, chat_id=16, timeout=30)
    if answered:
        await fake_telegram.wait_for_sent(token, len(answered), chat_id=-600, timeout=30)
    assert await bridge.stop() == 0
    group_texts = [
        r.last_user_text for r in fake_llm.requests if r.last_user_text not in ("hello", "sync")
    ]
    assert group_texts == answered


async def test_bot_authors_allowed_but_loop_guarded(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm, [ALICE])
    config["channels"]["telegram_bots"][0]["allow_bots"] = True
    bridge = BridgeProcess.write(tmp_path, config)
    await started(bridge, fake_telegram, [ALICE])
    for n in range(6):
        fake_telegram.inject_message(
            ALICE.token, chat_id=17, user_id=555, from_bot=True, text=f"bot says {n}"
        )
    fake_telegram.inject_message(ALICE.token, chat_id=18, text="human elsewhere")
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=18, timeout=30)
    await fake_telegram.wait_for_sent(ALICE.token, 3, chat_id=17, timeout=30)
    assert await bridge.stop() == 0
    assert len(fake_telegram.sent(ALICE.token, chat_id=17)) == 3  # BOT_LOOP_LIMIT
    assert "bot-to-bot loop guard tripped" in bridge.logs()


async def test_restart_resumes_a_reply_from_the_chunk_in_flight(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    three_chunks = "\n\n".join(f"Part {i}: " + "word " * 700 for i in range(3))
    fake_llm.set_default(None, Reply(three_chunks))
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [ALICE]))
    await started(bridge, fake_telegram, [ALICE])
    held = fake_telegram.hold_next(ALICE.token, "sendMessage", after=1)  # chunk 1 in flight
    fake_telegram.inject_message(ALICE.token, chat_id=19, text="tell me everything")
    await asyncio.wait_for(held.wait(), 30)
    await bridge.kill()

    restarted = BridgeProcess(bridge.config_path)
    await started(restarted, fake_telegram, [ALICE])
    sent = await fake_telegram.wait_for_sent(ALICE.token, 3, chat_id=19, timeout=30)
    assert await restarted.stop() == 0
    assert [m.text.split(":")[0] for m in sent] == ["Part 0", "Part 1", "Part 2"]
    assert len(fake_llm.requests) == 1  # the stored reply was re-sent, not regenerated
    assert "chunk 1 was being sent when the bridge stopped" in restarted.logs()


async def test_telegram_outage_on_send_is_retried_not_lost(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [ALICE]))
    await started(bridge, fake_telegram, [ALICE])
    fake_telegram.fail_next(
        ALICE.token, "sendMessage", status=502, description="Bad Gateway", times=2
    )
    fake_telegram.drop_connection_next(ALICE.token, "sendMessage")
    fake_telegram.inject_message(ALICE.token, chat_id=20, text="through the storm")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=20, timeout=30)
    assert await bridge.stop() == 0
    assert reply.text.endswith("] through the storm")
    assert len(fake_telegram.calls_to("sendMessage", ALICE.token)) == 4
