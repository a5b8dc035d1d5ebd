"""``persona-bridge sessions list/show/export`` on a database the real bridge wrote."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from bot.testing import BridgeProcess, FakeLLM, FakeTelegram, bridge_config
from bot.testing.bridge import BotPlan

ALICE = BotPlan("alice", "4000001:alice-token-" + "W" * 30, "alice", "You are Alice.", "a-model")
ANSWER = "[model=a-model] [system=You are Alice.] second life"


async def cli(config: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "sessions",
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


async def test_list_show_and_export(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    config = bridge_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE]
    )
    async with BridgeProcess.write(tmp_path, config) as bridge:
        await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
        for n, text in enumerate(["first words", "/new", "second life"], start=1):
            fake_telegram.inject_message(ALICE.token, chat_id=21, text=text)
            await fake_telegram.wait_for_sent(ALICE.token, n, chat_id=21, timeout=30)
        assert await bridge.stop() == 0

    code, listing = await cli(bridge.config_path, "list")
    assert code == 0
    rows = [line.split() for line in listing.splitlines()[1:]]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("telegram-alice:21:alice", "archived", "2"),
        ("telegram-alice:21:alice", "active", "2"),
    ]
    code, shown = await cli(bridge.config_path, "show", rows[0][0])
    assert code == 0
    assert "user: first words" in shown
    assert "assistant [m-alice]: [model=a-model]" in shown

    code, exported = await cli(bridge.config_path, "export", "--all")
    lines = [json.loads(line) for line in exported.splitlines()]
    assert code == 0
    assert [(x["role"], x["archived"]) for x in lines] == [
        ("user", True),
        ("assistant", True),
        ("user", False),
        ("assistant", False),
    ]
    assert lines[3]["model_name"] == "m-alice"
    code, one = await cli(bridge.config_path, "export", rows[1][0])
    assert [json.loads(x)["content"] for x in one.splitlines()] == ["second life", ANSWER]
