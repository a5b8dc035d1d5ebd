"""Configuration: the bad-config corpus, substitution, overrides, legacy bot, the example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import EX_CONFIG, main
from bot.config import load_config
from bot.errors import ConfigError

DATA = Path(__file__).parent / "data"
BAD = DATA / "bad_configs"
EXPECTED: dict[str, str] = json.loads((BAD / "expected.json").read_text())
ROOT = Path(__file__).parent.parent

TEST_ENV = {
    "TEST_OPENAI_KEY": "sk-test-openai-0123456789",
    "TEST_ANTHROPIC_KEY": "sk-ant-test-0123456789",
    "TEST_TG_ALICE": "1111111:alice-secret-token-AAAAAAAAAAAAAAAAAAAA",
    "TEST_TG_BOB": "2222222:bob-secret-token-BBBBBBBBBBBBBBBBBBBBBB",
    "TEST_TG_LEGACY": "3333333:legacy-secret-token-CCCCCCCCCCCCCCCCC",
}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    for name in list(os.environ):
        if name.startswith("PERSONA_BRIDGE_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def test_corpus_is_large_and_every_file_has_an_expectation() -> None:
    files = {p.stem for p in BAD.glob("*.json")} - {"expected"}
    assert files == set(EXPECTED)
    assert len(files) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_config_exits_78_naming_the_field(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check-config", "--config", str(BAD / f"{name}.json")])
    out, err = capsys.readouterr()
    assert code == EX_CONFIG
    assert EXPECTED[name] in err, err
    assert out == ""
    for line in err.splitlines():
        # Every problem is one line: "dotted.path: what is wrong — how to fix it".
        assert ": " in line, line
        assert " — " in line, line
    for secret in TEST_ENV.values():
        assert secret not in err


def test_real_process_prints_no_traceback_and_exits_78() -> None:
    env = {**os.environ, **TEST_ENV}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "check-config",
            "--config",
            str(BAD / "duplicate_token.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == EX_CONFIG
    assert "Traceback" not in result.stderr
    assert "channels.telegram_bots[1].token: same token" in result.stderr
    assert TEST_ENV["TEST_TG_ALICE"] not in result.stderr + result.stdout


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    config = json.loads((DATA / "valid_config.json").read_text())
    config["gatway"] = {}
    config["roles"] = {}
    config["bindings"][0]["agent_id"] = "carol"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    paths = {p.path for p in caught.value.problems}
    # Shape errors stop before reference checks, so only the unknown key shows here...
    assert "gatway" in paths
    config.pop("gatway")
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    # ...and once the shape is right, every reference problem comes in one report.
    assert {p.path for p in caught.value.problems} >= {"roles.compaction", "bindings[0].agent_id"}


def test_substitution_and_env_override_beat_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = json.loads((DATA / "valid_config.json").read_text())
    config["gateway"] = {"port": 1234, "host": "127.0.0.1"}
    config["agents"]["list"][0]["persona"] = "Costs $${HOME} and ${TEST_OPENAI_KEY}x"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("PERSONA_BRIDGE_GATEWAY__PORT", "9999")
    loaded = load_config(path)
    assert loaded.config.gateway.port == 9999
    assert loaded.config.gateway.host == "127.0.0.1"
    assert loaded.personas["alice"] == f"Costs ${{HOME}} and {TEST_ENV['TEST_OPENAI_KEY']}x"
    token = loaded.config.channels.bots()[0].token
    assert token.get_secret_value() == TEST_ENV["TEST_TG_ALICE"]
    assert TEST_ENV["TEST_TG_ALICE"] not in repr(loaded.config)


def test_bad_env_override_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PERSONA_BRIDGE_GATEWAY__PORT", "lots")
    assert main(["check-config", "--config", str(DATA / "valid_config.json")]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "gateway.port: " in err
    assert "(from $PERSONA_BRIDGE_GATEWAY__PORT)" in err


def test_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "TG_ALICE").write_text("4444444:from-systemd-credential-DDDDDDDDDDDD\n")
    config = json.loads((DATA / "valid_config.json").read_text())
    config["channels"]["telegram_bots"][0]["token"] = "${cred:TG_ALICE}"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    loaded = load_config(path)
    bot = loaded.config.channels.bots()[0]
    assert bot.token.get_secret_value() == "4444444:from-systemd-credential-DDDDDDDDDDDD"
    (creds / "TG_ALICE").unlink()
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems[0].path == "channels.telegram_bots[0].token"
    assert "cannot be read" in caught.value.problems[0].problem


def test_legacy_single_bot_becomes_channel_telegram(tmp_path: Path) -> None:
    config = json.loads((DATA / "valid_config.json").read_text())
    config["channels"]["telegram"] = {"token": "${TEST_TG_LEGACY}", "allow_from": [42]}
    config["bindings"].append({"agent_id": "bob", "match": {"channel": "telegram"}})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    loaded = load_config(path)
    legacy = loaded.config.channels.bots()[0]
    assert (legacy.id, legacy.channel, legacy.allow_from) == ("default", "telegram", ("42",))


def test_config_path_falls_back_to_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check-config"]) == EX_CONFIG
    assert "config.json: config file not found" in capsys.readouterr().err
    monkeypatch.setenv("PERSONA_BRIDGE_CONFIG", str(DATA / "valid_config.json"))
    assert main(["check-config"]) == 0
    (tmp_path / "config.json").write_text((DATA / "valid_config.json").read_text())
    monkeypatch.delenv("PERSONA_BRIDGE_CONFIG")
    assert main(["check-config"]) == 0


def test_check_config_prints_routes_roles_and_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(DATA / "valid_config.json")]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert ["telegram-alice", "*", "alice", "gpt"] in lines
    assert ["telegram-bob", "*", "bob", "gpt"] in lines
    assert ["compaction", "haiku"] in lines
    assert TEST_ENV["TEST_OPENAI_KEY"] not in out


def test_example_config_passes_check_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for index, name in enumerate(
        ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "TG_ALICE_TOKEN", "TG_BOB_TOKEN")
    ):
        monkeypatch.setenv(name, f"555555{index}:example-value-EEEEEEEEEEEEEEEEEEEE")
    assert main(["check-config", "--config", str(ROOT / "config.full.example.json")]) == 0
    out = capsys.readouterr().out
    assert "telegram-alice" in out
    assert "telegram-bob" in out
