"""Start, stop and reload of the real bridge process (SPEC §9, §13): exit codes that say
what is wrong, bots that come up late, early signals, poison updates and stranger floods."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from bot.testing import BridgeProcess, FakeLLM, FakeTelegram
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan

ALICE = BotPlan(
    "alice", "7000001:alice-token-" + "Q" * 30, "alice", "You are Alice.", "alice-model"
)
BOB = BotPlan("bob", "7000002:bob-token-" + "W" * 32, "bob", "You are Bob.", "bob-model")
EXIT_WITHIN_S = 20.0


def config_for(
    fake_telegram: FakeTelegram, fake_llm: FakeLLM, bots: list[BotPlan], *, register: bool = True
) -> dict[str, Any]:
    if register:
        for bot in bots:
            fake_telegram.add_bot(bot.token, f"{bot.bot_id}_bot")
    return make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=bots
    )


@pytest_asyncio.fixture(autouse=True)
async def no_bridge_left_behind(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """A test that fails half-way must not leave its bridge running."""
    started: list[BridgeProcess] = []
    original = BridgeProcess.start

    async def start(self: BridgeProcess) -> None:
        started.append(self)
        await original(self)

    monkeypatch.setattr(BridgeProcess, "start", start)
    yield
    for bridge in started:
        await bridge.kill()


async def exit_code(bridge: BridgeProcess, within_s: float = EXIT_WITHIN_S) -> int:
    """The bridge's exit code; fails (and kills it) if it does not exit in time."""
    assert bridge.process is not None
    try:
        return await asyncio.wait_for(bridge.process.wait(), within_s)
    except TimeoutError:
        await bridge.kill()
        pytest.fail(f"bridge still running after {within_s}s:\n{bridge.logs()[-2000:]}")


async def gateway_base(bridge: BridgeProcess) -> str:
    match = await bridge.wait_for_log(r"gateway listening on http://127\.0\.0\.1:(\d+)")
    return f"http://127.0.0.1:{match.group(1)}"


# --- exit codes ----------------------------------------------------------------------------


async def test_every_token_rejected_exits_78_promptly(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm, [ALICE, BOB], register=False)
    bridge = BridgeProcess.write(tmp_path, config)
    await bridge.start()
    assert await exit_code(bridge) == 78
    logs = bridge.logs()
    assert "channels.telegram_bots[0].token" in logs
    assert "channels.telegram_bots[1].token" in logs
    assert "Traceback" not in logs


async def test_damaged_database_exits_74_naming_session_database(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    (tmp_path / "sessions.db").write_bytes(b"this is not an SQLite database\n" * 200)
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [ALICE]))
    await bridge.start()
    assert await exit_code(bridge) == 74
    logs = bridge.logs()
    assert "session.database" in logs
    assert "Traceback" not in logs
    assert fake_telegram.calls_to("getUpdates") == []


async def test_database_directory_missing_exits_78_naming_session_database(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm, [ALICE])
    config["session"]["database"] = "no-such-dir/sessions.db"
    bridge = BridgeProcess.write(tmp_path, config)
    await bridge.start()
    assert await exit_code(bridge) == 78
    logs = bridge.logs()
    assert "session.database" in logs
    assert "Traceback" not in logs


async def test_gateway_port_in_use_exits_78_before_any_bot_starts(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = config_for(fake_telegram, fake_llm, [ALICE])
        config["gateway"] = {"port": taken.getsockname()[1]}
        bridge = BridgeProcess.write(tmp_path, config)
        await bridge.start()
        assert await exit_code(bridge) == 78
    logs = bridge.logs()
    assert "gateway.port" in logs
    assert "Traceback" not in logs
    assert fake_telegram.calls_to("getMe") == []  # failed before any bot was touched
    assert fake_telegram.calls_to("getUpdates") == []


# --- bots that cannot start at once -------------------------------------------------------


@pytest.mark.parametrize("method", ["getMe", "deleteWebhook", "setMyCommands"])
async def test_a_bot_that_fails_to_start_is_retried_and_readiness_says_so(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM, method: str
) -> None:
    config = config_for(fake_telegram, fake_llm, [ALICE, BOB])
    # Two failures: the first retry (after ~1 s) fails too, so there is time to look.
    fake_telegram.fail_next(BOB.token, method, status=502, description="Bad Gateway", times=2)
    bridge = BridgeProcess.write(tmp_path, config)
    await bridge.start_polling(fake_telegram, ALICE.token)
    base = await gateway_base(bridge)
    await bridge.wait_for_log(r"telegram-bob.*retry")
    async with httpx.AsyncClient(base_url=base) as http:
        early = (await http.get("/readyz")).json()
        await fake_telegram.wait_for_poll(BOB.token, timeout=30)
        fake_telegram.inject_message(BOB.token, chat_id=21, text="late but here")
        [reply] = await fake_telegram.wait_for_sent(BOB.token, 1, chat_id=21, timeout=30)
        late = (await http.get("/readyz")).json()
    assert await bridge.stop() == 0
    assert early["ready"] is False
    assert early["bots"]["telegram-alice"]["polling"] is True
    assert early["bots"]["telegram-bob"]["polling"] is False
    assert "Bad Gateway" in str(early["bots"]["telegram-bob"].get("error"))
    assert late["ready"] is True
    assert late["bots"]["telegram-bob"]["polling"] is True
    assert reply.text.endswith("] late but here")


async def test_a_rejected_token_among_working_bots_shows_in_readiness(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm, [ALICE])
    config["channels"]["telegram_bots"].append(
        {"id": "ghost", "token": BOB.token, "allow_from": ["*"], "api_base": fake_telegram.base_url}
    )
    config["bindings"].append({"agent_id": "alice", "match": {"channel": "telegram-ghost"}})
    bridge = BridgeProcess.write(tmp_path, config)
    await bridge.start_polling(fake_telegram, ALICE.token)
    base = await gateway_base(bridge)
    await bridge.wait_for_log("persona-bridge ready")
    async with httpx.AsyncClient(base_url=base) as http:
        ready = (await http.get("/readyz")).json()
    assert await bridge.stop() == 0
    assert ready["ready"] is False  # a configured bot is not polling
    assert ready["bots"]["telegram-alice"]["polling"] is True
    assert ready["bots"]["telegram-ghost"]["polling"] is False
    assert "rejected" in str(ready["bots"]["telegram-ghost"].get("error"))


# --- signals ------------------------------------------------------------------------------


async def test_sighup_while_the_config_is_still_being_read_is_harmless(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = json.dumps(config_for(fake_telegram, fake_llm, [ALICE]))
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)  # reading the config blocks until we write it: a wide "early" window

    def feed() -> None:
        with fifo.open("w") as writer:  # returns once the bridge opened the config
            os.kill(bridge.pid, signal.SIGHUP)
            writer.write(config)

    bridge = BridgeProcess(fifo)
    await bridge.start()
    await asyncio.wait_for(asyncio.to_thread(feed), 30)
    await bridge.wait_for_log("reload requested before ready")
    # The early SIGHUP is applied once ready: the config is read a second time.
    await asyncio.wait_for(asyncio.to_thread(fifo.write_text, config), 30)
    await bridge.wait_for_log(r"reloaded .*: 1 bot\(s\)")
    await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
    fake_telegram.inject_message(ALICE.token, chat_id=31, text="still alive?")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=31, timeout=30)
    assert await bridge.stop() == 0
    assert reply.text.endswith("] still alive?")


# --- poison updates and strangers ---------------------------------------------------------


async def test_malformed_updates_are_skipped_and_polling_moves_past_them(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = BridgeProcess.write(tmp_path, config_for(fake_telegram, fake_llm, [ALICE]))
    await bridge.start_polling(fake_telegram, ALICE.token)
    chat = {"id": 41, "type": "private", "first_name": "U"}
    sender = {"id": 41, "is_bot": False, "first_name": "U"}
    bad = [
        fake_telegram.inject_update(
            ALICE.token, {"message": {"message_id": 1, "date": 0, "text": "SECRET-no-chat"}}
        ),
        fake_telegram.inject_update(
            ALICE.token,
            {
                "message": {
                    "message_id": 2,
                    "date": "yesterday",
                    "chat": chat,
                    "from": sender,
                    "text": "SECRET-bad-date",
                }
            },
        ),
        fake_telegram.inject_update(ALICE.token, {"message": "SECRET-garbage"}),
    ]
    good = fake_telegram.inject_message(ALICE.token, chat_id=41, text="after the poison")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=41, timeout=30)
    await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
    assert await bridge.stop() == 0
    assert reply.text.endswith("] after the poison")
    assert fake_telegram.confirmed_offset(ALICE.token) > good
    logs = bridge.logs()
    for update_id in bad:
        assert f"update {update_id} skipped" in logs
    assert "SECRET" not in logs


async def test_a_stranger_notice_never_holds_up_allowed_users(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm, [ALICE])
    config["channels"]["telegram_bots"][0]["allow_from"] = ["42"]
    bridge = BridgeProcess.write(tmp_path, config)
    await bridge.start_polling(fake_telegram, ALICE.token)
    held = fake_telegram.hold_next(ALICE.token, "sendMessage")  # the stranger notice hangs
    fake_telegram.inject_message(ALICE.token, chat_id=9001, text="let me in")
    await asyncio.wait_for(held.wait(), 30)
    fake_telegram.inject_message(ALICE.token, chat_id=42, text="hello")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=42, timeout=10)
    assert await bridge.stop() == 0
    assert reply.text.endswith("] hello")
    assert "stranger 9001" in bridge.logs()
