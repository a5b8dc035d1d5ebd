"""``persona-bridge models check`` as a real process against the fake LLM."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from bot.testing import FakeLLM, Fault, bridge_config
from bot.testing.bridge import BotPlan

BOT = BotPlan(
    "alice", "1000001:alice-token-AAAAAAAAAAAAAAAAAAAAAAAA", "alice", "You are A.", "alice-model"
)


async def test_models_check_prints_every_entry_and_fails_on_a_broken_one(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    config = bridge_config(
        telegram_base="http://127.0.0.1:9", llm_base=fake_llm.openai_base, bots=[BOT]
    )
    config["model_list"].append(
        {
            "model_name": "claude",
            "model": "anthropic/claude-x",
            "api_key": "sk-ant-abcdef123456",
            "api_base": fake_llm.anthropic_base,
        }
    )
    config["model_list"].append(
        {"model_name": "broken", "model": "openai/broken-model", "api_base": fake_llm.openai_base}
    )
    fake_llm.set_default("broken-model", Fault(401, "Incorrect API key provided"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "models",
        "check",
        "--config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    out = stdout.decode()
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert process.returncode == 1
    assert set(rows) == {"m-alice", "cheap", "claude", "broken"}
    assert " ok " in rows["m-alice"]
    assert " ok " in rows["claude"]
    assert "FAIL" in rows["broken"]
    assert "ProviderAuthError" in rows["broken"]
    assert " ms " in rows["cheap"]
    assert "sk-ant-abcdef123456" not in out + stderr.decode()
    assert sorted(r.model for r in fake_llm.requests) == [
        "alice-model",
        "broken-model",
        "cheap-summary",
        "claude-x",
    ]
