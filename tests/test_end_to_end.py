"""The whole data path, for real: fake Bot API → bridge subprocess → fake LLM → reply."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bot.testing import BridgeProcess, FakeLLM, FakeTelegram, Fault, bridge_config
from bot.testing.bridge import BotPlan

ALICE = BotPlan(
    "alice",
    "1000001:alice-token-AAAAAAAAAAAAAAAAAAAAAAAA",
    "alice",
    "You are Alice, a travel planner.",
    "alice-model-x",
)
BOB = BotPlan(
    "bob",
    "1000002:bob-token-BBBBBBBBBBBBBBBBBBBBBBBBBB",
    "bob",
    "You are Bob, a patient cook.",
    "bob-model-y",
)


async def test_two_bots_each_answered_by_their_own_persona_and_model(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    fake_telegram.add_bot(BOB.token, "bob_bot")
    config = bridge_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE, BOB]
    )
    bridge = BridgeProcess.write(tmp_path, config)
    async with bridge:
        await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
        await fake_telegram.wait_for_poll(BOB.token, timeout=30)
        fake_telegram.inject_message(ALICE.token, chat_id=501, text="Plan me a trip to Rome")
        fake_telegram.inject_message(BOB.token, chat_id=502, text="How do I boil an egg?")
        [to_alice] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=501, timeout=30)
        [to_bob] = await fake_telegram.wait_for_sent(BOB.token, 1, chat_id=502, timeout=30)
        exit_code = await bridge.stop()

    assert to_alice.text == (
        "[model=alice-model-x] [system=You are Alice, a travel planner.] Plan me a trip to Rome"
    )
    assert to_bob.text == (
        "[model=bob-model-y] [system=You are Bob, a patient cook.] How do I boil an egg?"
    )
    # Each bot answered only its own chat.
    assert fake_telegram.sent(ALICE.token, chat_id=502) == []
    assert fake_telegram.sent(BOB.token, chat_id=501) == []
    assert [r.model for r in fake_llm.requests].count("alice-model-x") == 1
    assert exit_code == 0
    logs = bridge.logs()
    assert "Traceback" not in logs
    for token in (ALICE.token, BOB.token):
        assert token not in logs
        assert token.split(":")[1] not in logs


async def test_legacy_single_bot_routes_binding_on_channel_telegram(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(ALICE.token, "legacy_bot")
    config = bridge_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE]
    )
    config["channels"] = {
        "telegram": {"token": ALICE.token, "allow_from": ["*"], "api_base": fake_telegram.base_url}
    }
    config["bindings"] = [{"agent_id": "alice", "match": {"channel": "telegram"}}]
    async with BridgeProcess.write(tmp_path, config) as bridge:
        await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
        fake_telegram.inject_message(ALICE.token, chat_id=7, text="hello legacy")
        [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=7, timeout=30)
        assert await bridge.stop() == 0
    assert reply.text.endswith("] hello legacy")
    assert "[model=alice-model-x]" in reply.text


async def test_stranger_gets_their_id_and_reaches_no_model(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    config = bridge_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE]
    )
    config["channels"]["telegram_bots"][0]["allow_from"] = ["42", "@friend"]
    async with BridgeProcess.write(tmp_path, config) as bridge:
        await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
        fake_telegram.inject_message(ALICE.token, chat_id=999, text="let me in")
        fake_telegram.inject_message(ALICE.token, chat_id=999, text="please")
        fake_telegram.inject_message(ALICE.token, chat_id=77, username="friend", text="hi")
        [friend_reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=77, timeout=30)
        assert await bridge.stop() == 0
    stranger = fake_telegram.sent(ALICE.token, chat_id=999)
    assert len(stranger) == 1
    assert "999" in stranger[0].text
    assert [r.last_user_text for r in fake_llm.requests] == ["hi"]
    assert friend_reply.text.endswith("] hi")


async def test_all_models_failing_gives_the_user_one_short_sentence(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    config = bridge_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE]
    )
    config["agents"]["list"][0]["model"] = {"primary": "m-alice", "fallbacks": ["cheap"]}
    fake_llm.set_default(None, Fault(500, "upstream exploded: stack trace here"))
    async with BridgeProcess.write(tmp_path, config) as bridge:
        await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
        fake_telegram.inject_message(ALICE.token, chat_id=5, text="anyone there?")
        [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=5, timeout=30)
        assert await bridge.stop() == 0
    # Both entries cool down 30 s after a 500; /status shows the same "30 s".
    assert reply.text == "All models are unavailable right now; try again in 30 s."
    assert [r.model for r in fake_llm.requests] == ["alice-model-x", "cheap-summary"]


async def test_offline_demo_runs() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.testing.demo",
        stdin=asyncio.subprocess.DEVNULL,  # the demo is talkable: end of input ends it
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    assert process.returncode == 0
    assert "@alice_bot → you: [model=strong-cloud-model] [system=You are Alice" in text
    assert "@bob_bot → you: [model=small-local-model] [system=You are Bob" in text
