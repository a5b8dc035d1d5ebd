"""Config for pairing: top-level ``admins`` validated like allow_from, and the warnings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.cli import EX_CONFIG, main
from bot.testing import bridge_config
from bot.testing.bridge import BotPlan

BOT = BotPlan("alice", "6200001:alice-token-" + "H" * 30, "alice", "You are Alice.", "a-model")


def config(**extra: Any) -> dict[str, Any]:
    made = bridge_config(
        telegram_base="http://127.0.0.1:9", llm_base="http://127.0.0.1:9/v1", bots=[BOT]
    )
    made.update(extra)
    return made


def check(
    tmp_path: Path, data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    code = main(["check-config", "--config", str(path)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("*", '"*" would make everyone an admin'),
        ("@", "can never match"),
        ("boss", "write '@boss' for a username"),
        ("", "can never match"),
    ],
)
def test_admins_entries_are_checked_like_allow_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, says: str
) -> None:
    code, err = check(tmp_path, config(admins=["42", entry]), capsys)
    assert code == EX_CONFIG
    assert "admins[1]" in err
    assert says in err


def test_pairing_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = config()
    data["channels"]["telegram_bots"][0] |= {"pairing": True, "allow_from": []}
    code, err = check(tmp_path, data, capsys)
    assert code == 0
    assert "channels.telegram_bots[0].pairing: on, but no top-level admins" in err
    assert "admits nobody" not in err  # approved users get in
    data["admins"] = [42, "@Boss"]
    code, err = check(tmp_path, data, capsys)
    assert code == 0
    assert err.splitlines() == [
        "warning: admins[1]: @Boss makes whoever holds that username today an admin "
        "— pin the numeric user id instead"
    ]


def test_pairing_cli_on_a_fresh_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config()))
    assert main(["--config", str(path), "pairing", "list"]) == 0
    assert capsys.readouterr().out == "Open codes: none\n\nApproved users: none\n"
    assert main(["pairing", "approve", "abc234", "--config", str(path)]) == 1
    assert "no open code 'abc234'" in capsys.readouterr().err
    assert main(["pairing", "revoke", "@someone", "--config", str(path)]) == 2
    assert "not a numeric user id" in capsys.readouterr().err
    assert main(["pairing", "revoke", "7", "--bot", "nobody", "--config", str(path)]) == 2
    assert "no bot 'nobody'; bots: alice" in capsys.readouterr().err
    assert not (tmp_path / "sessions.db").exists()  # looking created nothing
