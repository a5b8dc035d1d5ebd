"""`persona-bridge init` (issue 12): live checks, a config that runs, secrets kept out of it."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from pathlib import Path

import pexpect
import pytest

from bot.config.loader import load_config
from bot.errors import ConfigError
from bot.testing import BridgeProcess, FakeLLM, FakeTelegram

TOKEN = "1234567:init-token-AAAAAAAAAAAAAAAAAAAAAAAAAA"
KEY = "sk-init-secret-key-0123456789abcdef"


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def init_args(config: Path, telegram: FakeTelegram, llm: FakeLLM, *extra: str) -> list[str]:
    return [
        "init",
        "--config",
        str(config),
        "--token",
        TOKEN,
        "--model-url",
        llm.openai_base,
        "--key",
        KEY,
        "--model",
        "init-model",
        "--telegram-api-base",
        telegram.base_url,
        "--non-interactive",
        *extra,
    ]


async def test_non_interactive_init_writes_a_config_that_check_config_accepts_and_run_serves(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(TOKEN, "helper_bot", "Helper")
    config = tmp_path / "config.json"

    code, out, err = await run_cli(
        *init_args(config, fake_telegram, fake_llm, "--allow", "4242", "--allow", "@friend")
    )

    assert code == 0, err
    assert "✓ token 1: token accepted: @helper_bot (Helper)" in out
    assert "✓ model main (openai/init-model): answered" in out
    assert f"{sys.executable} -m bot run --config {config}" in out
    assert TOKEN not in out + err
    assert KEY not in out + err
    text = config.read_text()
    assert TOKEN not in text
    assert KEY not in text
    assert "${TELEGRAM_BOT_TOKEN}" in text
    assert "${OPENAI_API_KEY}" in text
    secrets = tmp_path / "config.secrets.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert f"TELEGRAM_BOT_TOKEN={TOKEN}" in secrets.read_text()
    [bot] = json.loads(text)["channels"]["telegram_bots"]
    assert bot["allow_from"] == ["4242", "@friend"]

    code, out, err = await run_cli("check-config", "--config", str(config))
    assert code == 0, err

    bridge = BridgeProcess(config, env={"PERSONA_BRIDGE_GATEWAY__PORT": "0"})
    async with bridge:
        await fake_telegram.wait_for_poll(TOKEN, timeout=30)
        fake_telegram.inject_message(TOKEN, chat_id=4242, user_id=4242, text="hello, bridge")
        [reply] = await fake_telegram.wait_for_sent(TOKEN, 1, chat_id=4242, timeout=30)
    assert reply.text == "[model=init-model] [system=You are Helper, a friendly assistant.] " + (
        "hello, bridge"
    )
    assert fake_llm.requests[-1].headers["authorization"] == f"Bearer {KEY}"


async def test_init_names_who_wrote_during_setup_and_leaves_their_message_unconfirmed(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(TOKEN, "helper_bot", "Helper")
    fake_telegram.inject_message(TOKEN, chat_id=777, user_id=777, username="owner", text="hi?")
    config = tmp_path / "config.json"

    code, out, err = await run_cli(*init_args(config, fake_telegram, fake_llm))

    assert code == 0, err
    assert "Wrote to it during setup: 777 (@owner)" in out
    assert fake_telegram.pending_updates(TOKEN) == 1  # the bridge will still see it
    [bot] = json.loads(config.read_text())["channels"]["telegram_bots"]
    assert bot["allow_from"] == []  # closed until someone is named
    assert "Nobody may talk to @helper_bot yet" in out


async def test_init_refuses_a_rejected_token_and_writes_nothing(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = tmp_path / "config.json"
    code, _, err = await run_cli(*init_args(config, fake_telegram, fake_llm, "--allow", "1"))
    assert code == 1
    assert "--token: Telegram rejected the token" in err
    assert "@BotFather" in err
    assert TOKEN not in err
    assert not config.exists()
    assert not (tmp_path / "config.secrets.env").exists()


async def test_init_refuses_an_unreachable_model(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(TOKEN, "helper_bot")
    config = tmp_path / "config.json"
    args = init_args(config, fake_telegram, fake_llm, "--allow", "1")
    args[args.index("--model-url") + 1] = "http://127.0.0.1:9/v1"
    code, _, err = await run_cli(*args)
    assert code == 1
    assert "--model-url:" in err
    assert "http://127.0.0.1:9/v1 is running and reachable" in err
    assert not config.exists()


async def test_init_at_a_terminal_asks_hides_secrets_and_offers_whoever_wrote(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(TOKEN, "helper_bot", "Helper")
    fake_telegram.inject_message(TOKEN, chat_id=555, user_id=555, username="owner", text="me")
    config = tmp_path / "config.json"
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "bot",
            "init",
            "--config",
            str(config),
            "--telegram-api-base",
            fake_telegram.base_url,
        ],
        encoding="utf-8",
        timeout=30,
    )
    try:
        for prompt, answer in [
            ("Bot token", TOKEN),
            ("Another bot token", ""),
            ("Endpoint URL", fake_llm.openai_base),
            ("API key", KEY),
            ("Model id", "init-model"),
            ("any message from your Telegram account", ""),
            (r"Allow 555 \(@owner\)\?", ""),
            ("Other user ids", "@friend 12 bob smith"),
            ("Persona for @helper_bot", "You are Helper, terse."),
        ]:
            await child.expect(prompt, async_=True)
            child.sendline(answer)
        await child.expect(pexpect.EOF, async_=True)
        transcript = child.before or ""
    finally:
        child.close()
    assert child.exitstatus == 0, transcript
    assert TOKEN not in transcript
    assert KEY not in transcript
    loaded = json.loads(config.read_text())
    assert loaded["channels"]["telegram_bots"][0]["allow_from"] == ["555", "@friend", "12"]
    assert loaded["agents"]["list"][0]["persona"] == "You are Helper, terse."


def test_secrets_file_is_read_beside_the_config_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "bridge.json"
    config.write_text(
        json.dumps(
            {
                "model_list": [{"model_name": "m", "model": "openai/x", "api_key": "${KEY_A}"}],
                "roles": {"compaction": {"primary": "m"}},
                "agents": {"defaults": {"model": "m"}, "list": [{"id": "a", "name": "A"}]},
                "bindings": [{"agent_id": "a", "match": {"channel": "telegram-a"}}],
                "channels": {"telegram_bots": [{"id": "a", "token": "${TOK}"}]},
            }
        )
    )
    secrets = tmp_path / "bridge.secrets.env"
    secrets.write_text(f"# comment\nTOK={TOKEN}\nKEY_A='from-file'\n")
    secrets.chmod(0o600)
    monkeypatch.delenv("TOK", raising=False)
    monkeypatch.setenv("KEY_A", "from-environment")

    loaded = load_config(config)

    assert loaded.config.channels.bots()[0].token.get_secret_value() == TOKEN
    assert loaded.config.model_list[0].api_key is not None
    assert loaded.config.model_list[0].api_key.get_secret_value() == "from-environment"

    secrets.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value.problems[0]) == (
        f"{secrets}: the secrets file can be read by other users — chmod 600 {secrets}"
    )
