"""Configs that used to escape as tracebacks or pass check-config although they cannot work.

The bad-config corpus (tests/data/bad_configs) covers what fits in one file; this covers what
needs the environment, the disk or a running bridge.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.cli import EX_CONFIG, main
from bot.config import load_config
from bot.errors import ConfigError
from bot.testing import BridgeProcess, FakeLLM, FakeTelegram
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan

DATA = Path(__file__).parent / "data"
TOKENS = {
    "TEST_OPENAI_KEY": "sk-test-openai-0123456789",
    "TEST_ANTHROPIC_KEY": "sk-ant-test-0123456789",
    "TEST_TG_ALICE": "1111111:alice-secret-token-AAAAAAAAAAAAAAAAAAAA",
    "TEST_TG_BOB": "2222222:bob-secret-token-BBBBBBBBBBBBBBBBBBBBBB",
}
ALICE = BotPlan(
    "alice", "6100001:alice-token-" + "G" * 30, "alice", "You are Alice.", "alice-model"
)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    for name in list(os.environ):
        if name.startswith("PERSONA_BRIDGE_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def valid() -> dict[str, Any]:
    config: dict[str, Any] = json.loads((DATA / "valid_config.json").read_text())
    return config


def write(directory: Path, config: dict[str, Any] | str) -> Path:
    path = directory / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["check-config", "--config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


# --- everything is a ConfigError naming the field, never a traceback ------------------


def _persona_file(name: str) -> Callable[[Path], dict[str, Any]]:
    def make(tmp_path: Path) -> dict[str, Any]:
        config = valid()
        del config["agents"]["list"][1]["persona"]
        config["agents"]["list"][1]["persona_file"] = name
        return config

    return make


def _database(value: str) -> Callable[[Path], dict[str, Any]]:
    def make(tmp_path: Path) -> dict[str, Any]:
        return dict(valid(), session={"database": value})

    return make


def _persona_not_utf8(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "bob.md").write_bytes(b"\xff\xfeB\x00o\x00b\x00")  # UTF-16, as some editors save
    return _persona_file("bob.md")(tmp_path)


def _huge_number(tmp_path: Path) -> str:
    return json.dumps(valid())[:-1] + ', "gateway": {"port": ' + "9" * 5000 + "}}"


def _too_deep_to_recurse(tmp_path: Path) -> str:
    return '{"gateway": ' + "[" * 100_000 + "]" * 100_000 + "}"


def _deep_but_parseable(tmp_path: Path) -> str:
    return '{"gateway": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}"


def _huge_file(tmp_path: Path) -> str:
    return " " * (11 * 1024 * 1024) + json.dumps(valid())


def _pace(value: object) -> Callable[[Path], dict[str, Any]]:
    def make(tmp_path: Path) -> dict[str, Any]:
        config = valid()
        config["channels"]["telegram_bots"][0]["messages_per_second"] = value
        return config

    return make


CASES: dict[str, tuple[Callable[[Path], dict[str, Any] | str], str]] = {
    "no message calls a second": (_pace(0), "telegram_bots[0].messages_per_second"),
    "more than paid broadcasts": (_pace(5000), "telegram_bots[0].messages_per_second"),
    "persona not UTF-8": (_persona_not_utf8, "agents.list[1].persona_file"),
    "database is ~nobody": (_database("~no-such-user-xyz/s.db"), "session.database"),
    "database with NUL": (_database("s\x00.db"), "session.database"),
    "number too long": (_huge_number, "config.json"),
    "file over 10 MiB": (_huge_file, "config.json"),
    "nesting beyond recursion": (_too_deep_to_recurse, "config.json"),
    "nesting beyond 32": (_deep_but_parseable, "config.json"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_config_raises_only_config_error_naming_the_field(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, field = CASES[case]
    made = make(tmp_path)
    path = tmp_path / "config.json"
    if isinstance(made, str):
        path.write_bytes(made.encode("utf-8", "surrogateescape"))
    else:
        write(tmp_path, made)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert field in problem.path, problem
    assert "please report" not in problem.fix  # a real check, not the last-resort net
    code, out, err = check(path, capsys)
    assert (code, out) == (EX_CONFIG, "")
    assert "Traceback" not in err


def test_config_path_that_is_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = check(tmp_path, capsys)
    assert code == EX_CONFIG
    assert f"{tmp_path}: is a directory — " in err


def test_credential_that_is_not_utf8_or_is_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "TG_ALICE").write_bytes(b"1111111:\xe9t\xe9-token")
    (creds / "OPENAI").mkdir()
    config = valid()
    config["channels"]["telegram_bots"][0]["token"] = "${cred:TG_ALICE}"
    config["model_list"][0]["api_key"] = "${cred:OPENAI}"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    code, _, err = check(write(tmp_path, config), capsys)
    assert code == EX_CONFIG
    assert "channels.telegram_bots[0].token: credential TG_ALICE is not UTF-8 text" in err
    assert "model_list[0].api_key: credential OPENAI cannot be read" in err


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PERSONA_BRIDGE_GATEWAY", "{bad", "gateway: $PERSONA_BRIDGE_GATEWAY is not valid JSON"),
        ("PERSONA_BRIDGE_MODEL_LIST", "[[[", "model_list: $PERSONA_BRIDGE_MODEL_LIST is not"),
        ("PERSONA_BRIDGE_GATEWAY__PORT__X", "1", "gateway.port: must be a valid integer"),
        ("PERSONA_BRIDGE_GATEWAY", '{"port": 1, "port": 2}', "gateway.port: key repeated"),
        ("PERSONA_BRIDGE_GATEWAY", "[" * 50_000, "gateway: $PERSONA_BRIDGE_GATEWAY is not valid"),
    ],
)
def test_bad_env_override_is_a_config_error_naming_the_variable(
    name: str,
    value: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(name, value)
    code, out, err = check(DATA / "valid_config.json", capsys)
    assert (code, out) == (EX_CONFIG, "")
    assert expected in err
    assert name in err
    assert "Traceback" not in err


# --- the disk -------------------------------------------------------------------------


def test_database_in_a_read_only_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root passes every permission check: answer as a service user would
        real_access = os.access

        def access(path: Any, mode: int, **kwargs: Any) -> bool:
            if Path(path) == locked and mode & os.W_OK:
                return False
            return real_access(path, mode, **kwargs)

        monkeypatch.setattr("bot.config.filesystem.os.access", access)
    config = dict(valid(), session={"database": "locked/s.db"})
    try:
        code, _, err = check(write(tmp_path, config), capsys)
    finally:
        locked.chmod(0o755)
    assert code == EX_CONFIG
    assert f"session.database: directory '{locked}' is not writable" in err
    # A server URL is for a future store: nothing on disk to check.
    config = dict(valid(), session={"database": "postgresql://bridge@db.internal/bridge"})
    code, _, err = check(write(tmp_path, config), capsys)
    assert code == 0, err


def test_byte_order_mark_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(valid()).encode())
    code, _, err = check(path, capsys)
    assert code == 0, err


# --- warnings -------------------------------------------------------------------------


def test_username_and_empty_allow_from_are_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = valid()
    config["channels"]["telegram_bots"][0]["allow_from"] = ["123456789", "@Friend_1"]
    config["channels"]["telegram_bots"][1]["allow_from"] = []
    code, out, err = check(write(tmp_path, config), capsys)
    assert code == 0, err
    assert out.rstrip().endswith(": OK")
    warnings = err.splitlines()
    assert (
        "warning: channels.telegram_bots[0].allow_from[1]: @Friend_1 admits whoever holds that "
        "username today"
    ) in err
    assert "warning: channels.telegram_bots[1].allow_from: empty, so this bot admits nobody" in err
    assert len(warnings) == 2
    assert all(" — " in line for line in warnings)
    code, _, err = check(DATA / "valid_config.json", capsys)  # ids and "*": nothing to say
    assert (code, err) == (0, "")


# --- a running bridge survives a bad reload -------------------------------------------


async def test_bridge_survives_sighup_with_configs_that_used_to_crash_it(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    cfg = make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE]
    )
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start_polling(fake_telegram, ALICE.token)
    persona = tmp_path / "alice.md"
    persona.write_bytes(b"Tu es Am\xe9lie.\n")  # Latin-1, not UTF-8
    broken = json.loads(json.dumps(cfg))
    del broken["agents"]["list"][0]["persona"]
    broken["agents"]["list"][0]["persona_file"] = "alice.md"
    attempts = [
        (json.dumps(broken), r"reload refused, old config still running: agents\.list\[0\]"),
        ('{"gateway": ' + "[" * 100_000, r"reload refused, .*nested more than"),
        (json.dumps(cfg)[:-1] + ', "roles": {}}', r"reload refused, .*roles: key appears twice"),
    ]
    for number, (text, refusal) in enumerate(attempts):
        bridge.config_path.write_text(text)
        assert bridge.process is not None
        bridge.process.send_signal(signal.SIGHUP)
        await bridge.wait_for_log(refusal)
        fake_telegram.inject_message(ALICE.token, chat_id=7, text=f"still there {number}?")
        replies = await fake_telegram.wait_for_sent(ALICE.token, number + 1, chat_id=7, timeout=30)
        assert (
            replies[-1].text == f"[model=alice-model] [system=You are Alice.] still there {number}?"
        )
    assert "Traceback" not in bridge.logs()
    assert await bridge.stop() == 0
