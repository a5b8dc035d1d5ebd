"""`persona-bridge doctor` (issue 12): one line per check, one red line per fault, with a fix."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.testing import FakeLLM, FakeTelegram, bridge_config
from bot.testing.bridge import BotPlan

ALICE = BotPlan("alice", "3000001:doctor-alice-token-AAAAAAAAAAAAAAAA", "alice", "A.", "a-model")
BOB = BotPlan("bob", "3000002:doctor-bob-token-BBBBBBBBBBBBBBBBBBBB", "bob", "B.", "b-model")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(tmp_path: Path, telegram: FakeTelegram, llm: FakeLLM, **changes: Any) -> Path:
    config = bridge_config(
        telegram_base=telegram.base_url, llm_base=llm.openai_base, bots=[ALICE, BOB]
    )
    config["gateway"] = {"host": "127.0.0.1", "port": changes.pop("port", free_port())}
    config["session"] = {"database": changes.pop("database", "sessions.db")}
    for entry in config["model_list"]:
        entry.update(changes.pop(entry["model_name"], {}))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


async def doctor(path: Path) -> tuple[int, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "doctor",
        "--config",
        str(path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines()


def red(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("✗")]


async def test_doctor_all_green_against_the_fakes(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    fake_telegram.add_bot(BOB.token, "bob_bot")

    code, lines = await doctor(write_config(tmp_path, fake_telegram, fake_llm))

    assert code == 0, lines
    assert red(lines) == []
    assert "✓ bot alice: token accepted: @alice_bot (alice_bot)" in lines
    assert "✓ bot bob: no webhook set; polling receives updates" in lines
    assert any(line.startswith("✓ model m-alice (openai/a-model): answered") for line in lines)
    assert any(line.startswith("✓ session.database ") for line in lines)
    assert any(line.startswith("✓ gateway 127.0.0.1:") for line in lines)
    assert lines[-1] == "All checks passed."
    assert ALICE.token not in "\n".join(lines)
    assert not any(line.startswith("!") for line in lines)


async def test_doctor_one_red_line_per_fault_each_with_its_fix(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM, busy_port: int
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    fake_telegram.add_bot(BOB.token, "bob_bot")
    fake_telegram.revoke(ALICE.token)
    fake_telegram.set_webhook(BOB.token, "https://elsewhere.example/hook/secret-path")
    path = write_config(
        tmp_path,
        fake_telegram,
        fake_llm,
        port=busy_port,
        **{"m-alice": {"api_base": "http://127.0.0.1:9/v1"}},
    )

    code, lines = await doctor(path)

    assert code == 1
    failures = red(lines)
    assert len(failures) == 4, lines
    revoked, webhook, model, port = failures
    assert revoked.startswith("✗ bot alice: Telegram rejected the token")
    assert "@BotFather" in revoked
    assert webhook.startswith("✗ bot bob: a webhook is set (https://elsewhere.example)")
    assert "deleteWebhook" in webhook
    assert "secret-path" not in webhook
    assert model.startswith("✗ model m-alice (openai/a-model):")
    assert "check that http://127.0.0.1:9/v1 is running and reachable" in model
    assert port.startswith(f"✗ gateway 127.0.0.1:{busy_port}: the port is in use")
    assert "change gateway.port" in port
    assert fake_telegram.webhook_url(BOB.token)  # doctor only looks; it changes nothing


async def test_doctor_unusable_database_directory_is_one_red_line(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    # Tests run as root, for whom a read-only directory is still writable: a path whose
    # parent is a plain file is unusable for everyone.
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    fake_telegram.add_bot(BOB.token, "bob_bot")
    (tmp_path / "blocker").write_text("not a directory")
    path = write_config(tmp_path, fake_telegram, fake_llm, database="blocker/sessions.db")

    code, lines = await doctor(path)

    assert code == 1
    [failure] = red(lines)
    assert "session.database" in failure
    assert "blocker" in failure
    assert " — " in failure


async def test_doctor_names_missing_systemd_credentials(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    fake_telegram.add_bot(BOB.token, "bob_bot")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "ALICE_TOKEN").write_text(ALICE.token)
    path = write_config(tmp_path, fake_telegram, fake_llm)
    config = json.loads(path.read_text())
    config["channels"]["telegram_bots"][0]["token"] = "${cred:ALICE_TOKEN}"
    config["channels"]["telegram_bots"][1]["token"] = "${cred:BOB_TOKEN}"
    path.write_text(json.dumps(config))

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "doctor",
        "--config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"CREDENTIALS_DIRECTORY": str(credentials), "PATH": "/usr/bin:/bin"},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    lines = out.decode().splitlines()

    assert process.returncode == 1
    assert f"✓ credential ALICE_TOKEN: present in {credentials}" in lines
    [failure] = red(lines)
    assert failure.startswith(f"✗ credential BOB_TOKEN: missing in {credentials}")
    assert "LoadCredential=BOB_TOKEN:" in failure


async def test_doctor_compares_each_webhook_bots_webhook_with_the_expected_url(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    fake_telegram.add_bot(BOB.token, "bob_bot")
    path = write_config(tmp_path, fake_telegram, fake_llm)
    config = json.loads(path.read_text())
    for bot in config["channels"]["telegram_bots"]:
        bot |= {"updates": "webhook", "webhook_secret": "doctor_secret-1234"}
    port = free_port()
    config["webhook"] = {"port": port, "public_url": "https://hooks.example.org/tg"}
    path.write_text(json.dumps(config))
    fake_telegram.set_webhook(ALICE.token, "https://hooks.example.org/tg/alice")
    fake_telegram.set_webhook(BOB.token, "https://hooks.example.org/other/secret-path")

    code, lines = await doctor(path)

    assert code == 1
    assert "✓ bot alice: webhook set to https://hooks.example.org/tg/alice as configured" in lines
    [bob] = red(lines)
    assert bob.startswith(
        "✗ bot bob: the webhook points to https://hooks.example.org with another path, "
        "expected https://hooks.example.org/tg/bob"
    )
    assert "secret-path" not in bob
    assert f"✓ webhook server 127.0.0.1:{port}: port free" in lines
    assert "doctor_secret-1234" not in "\n".join(lines)
    assert fake_telegram.webhook_url(BOB.token).endswith("secret-path")  # only looked


async def test_doctor_checks_a_postgresql_database_and_never_shows_its_password(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM, pg_dsn: str
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    fake_telegram.add_bot(BOB.token, "bob_bot")
    # The throwaway server trusts its socket, so any password works: it must be masked.
    working = pg_dsn.replace("postgres:@", "postgres:Doctor-pw-1234@")
    code, lines = await doctor(write_config(tmp_path, fake_telegram, fake_llm, database=working))
    assert code == 0, lines
    [line] = [x for x in lines if x.startswith("✓ session.database ")]
    assert "connects; schema up to date" in line
    assert "Doctor-pw-1234" not in "\n".join(lines)

    broken = f"postgresql://bridge:Doctor-pw-1234@127.0.0.1:{free_port()}/nowhere"
    code, lines = await doctor(write_config(tmp_path, fake_telegram, fake_llm, database=broken))
    assert code == 1
    [failure] = red(lines)
    assert failure.startswith("✗ session.database postgresql://bridge:***@127.0.0.1:")
    assert "Doctor-pw-1234" not in "\n".join(lines)
