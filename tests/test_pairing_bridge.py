"""Pairing through the real bridge (SPEC §13): a stranger's code, an admin's /approve in
another bot, the CLI, restarts, expiry; and the access log lines an operator needs."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from bot.testing import BridgeProcess, FakeLLM, FakeTelegram, bridge_config
from bot.testing.bridge import BotPlan

ALICE = BotPlan("alice", "5000001:alice-token-" + "P" * 30, "alice", "You are Alice.", "a-model")
BOB = BotPlan("bob", "5000002:bob-token-" + "Q" * 30, "bob", "You are Bob.", "b-model")
ADMIN = 42
MEMBER = 43  # talks to bob, but is no admin
STRANGER = 777
CODE = re.compile(r"\b([A-HJ-NP-Z2-9]{6})\b")


def pairing_config(
    telegram: FakeTelegram, llm: FakeLLM, ttl_s: float | None = None
) -> dict[str, Any]:
    for bot in (ALICE, BOB):
        telegram.add_bot(bot.token, f"{bot.bot_id}_bot")
    config = bridge_config(
        telegram_base=telegram.base_url,
        llm_base=llm.openai_base,
        bots=[ALICE, BOB],
        extra={"admins": [str(ADMIN)]},
    )
    alice, bob = config["channels"]["telegram_bots"]
    alice["allow_from"] = []
    alice["pairing"] = True
    if ttl_s is not None:
        alice["pairing_code_ttl_s"] = ttl_s
    bob["allow_from"] = [str(ADMIN), str(MEMBER)]
    return config


async def pairing_cli(config: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "pairing",
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def code_for_stranger(telegram: FakeTelegram, text: str, already: int = 0) -> str:
    telegram.inject_message(ALICE.token, chat_id=STRANGER, text=text, username="newbie")
    replies = await telegram.wait_for_sent(ALICE.token, already + 1, chat_id=STRANGER, timeout=30)
    notice = replies[-1].text
    assert f"Your Telegram id is {STRANGER}" in notice
    match = CODE.search(notice)
    assert match is not None, notice
    return match.group(1)


async def say_to_bob(telegram: FakeTelegram, user: int, text: str, already: int) -> str:
    telegram.inject_message(BOB.token, chat_id=user, text=text)
    replies = await telegram.wait_for_sent(BOB.token, already + 1, chat_id=user, timeout=30)
    return replies[-1].text


async def test_stranger_paired_by_an_admin_in_another_bot_until_revoked(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = BridgeProcess.write(tmp_path, pairing_config(fake_telegram, fake_llm))
    await bridge.start_polling(fake_telegram, ALICE.token, BOB.token)

    code = await code_for_stranger(fake_telegram, "hello?")
    await bridge.wait_for_log(rf"stranger {STRANGER} \(@newbie\) asked to pair; code {code}")
    rc, listing, _ = await pairing_cli(bridge.config_path, "list")
    assert rc == 0
    assert re.search(rf"{code}\s+telegram-alice\s+{STRANGER} \(@newbie\)", listing), listing

    # Someone bob admits, but no admin: refused, and the code stays open.
    refusal = await say_to_bob(fake_telegram, MEMBER, f"/approve {code}", 0)
    assert refusal == "Only an admin of this bridge can approve pairing codes."
    assert code in (await pairing_cli(bridge.config_path, "list"))[1]

    approved = await say_to_bob(fake_telegram, ADMIN, f"/approve {code.lower()}", 0)
    assert approved.startswith(
        f"Approved: user {STRANGER} (@newbie) may now talk to telegram-alice"
    )

    fake_telegram.inject_message(ALICE.token, chat_id=STRANGER, text="let me in", username="newbie")
    replies = await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=STRANGER, timeout=30)
    assert replies[-1].text.endswith("] let me in")
    assert [r.last_user_text for r in fake_llm.requests] == ["let me in"]

    # Approvals live in the store: a restarted bridge still admits them.
    assert await bridge.stop() == 0
    await bridge.start_polling(fake_telegram, ALICE.token, BOB.token)
    fake_telegram.inject_message(ALICE.token, chat_id=STRANGER, text="back again")
    replies = await fake_telegram.wait_for_sent(ALICE.token, 3, chat_id=STRANGER, timeout=30)
    assert replies[-1].text.endswith("] back again")

    # Revoked from the CLI while the bridge runs: the next message is refused again.
    rc, out, _ = await pairing_cli(bridge.config_path, "revoke", str(STRANGER))
    assert (rc, out) == (0, f"revoked: user {STRANGER}\n")
    new_code = await code_for_stranger(fake_telegram, "still me", already=3)
    assert new_code != code
    assert await bridge.stop() == 0
    assert [r.last_user_text for r in fake_llm.requests] == ["let me in", "back again"]
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        stored = {row[0] for row in db.execute("SELECT content FROM messages")}
    assert not {"hello?", "still me", f"/approve {code}"} & stored  # strangers: nothing kept


async def test_cli_approval_reaches_the_running_bridge_and_expired_codes_are_refused(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = BridgeProcess.write(tmp_path, pairing_config(fake_telegram, fake_llm, ttl_s=1.0))
    await bridge.start_polling(fake_telegram, ALICE.token, BOB.token)
    code = await code_for_stranger(fake_telegram, "hello?")
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        [(expires_at,)] = db.execute("SELECT expires_at FROM pairing_codes").fetchall()
    # Not synchronisation: the code's lifetime (1 s here) has to pass on the wall clock.
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.05)
    answer = await say_to_bob(fake_telegram, ADMIN, f"/approve {code}", 0)
    assert answer.startswith(f"No open pairing code '{code}': it is unknown, used or expired")
    rc, _, err = await pairing_cli(bridge.config_path, "approve", code)
    assert rc == 1
    assert "no open code" in err

    # A fresh code, approved from the CLI: the bridge notices at the next message.
    second = await code_for_stranger(fake_telegram, "again", already=1)
    assert second != code
    rc, out, _ = await pairing_cli(bridge.config_path, "approve", second)
    assert (rc, out) == (0, f"approved: user {STRANGER} (@newbie) on telegram-alice\n")
    fake_telegram.inject_message(ALICE.token, chat_id=STRANGER, text="now?")
    replies = await fake_telegram.wait_for_sent(ALICE.token, 3, chat_id=STRANGER, timeout=30)
    assert replies[-1].text.endswith("] now?")
    rc, listing, _ = await pairing_cli(bridge.config_path, "list")
    assert "Open codes: none" in listing
    assert re.search(rf"telegram-alice\s+{STRANGER} \(@newbie\)\s+\S+ \S+\s+cli", listing)
    assert await bridge.stop() == 0


async def test_operator_log_names_strangers_and_users_admitted_only_by_username(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    config = bridge_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE]
    )
    config["channels"]["telegram_bots"][0]["allow_from"] = ["@friend", "42"]
    bridge = BridgeProcess.write(tmp_path, config)
    await bridge.start_polling(fake_telegram, ALICE.token)
    for text in ("one", "two"):
        fake_telegram.inject_message(ALICE.token, chat_id=555, text=text, username="Friend")
    fake_telegram.inject_message(ALICE.token, chat_id=42, text="pinned", username="friend")
    fake_telegram.inject_message(ALICE.token, chat_id=999, text="who are you")
    await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=555, timeout=30)
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=42, timeout=30)
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=999, timeout=30)
    assert await bridge.stop() == 0
    logs = bridge.logs()
    pin = 'user 555 is admitted only as @Friend, .*; pin it: put "555" in allow_from'
    assert len(re.findall(pin, logs)) == 1  # once, not per message
    assert "user 42 is admitted only" not in logs  # admitted by id
    assert "refused a message from stranger 999" in logs
