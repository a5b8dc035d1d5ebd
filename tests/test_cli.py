"""The command line itself: where --config goes, usage text, fresh installs, pipes, no bots."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.cli import EX_CONFIG, _parser, main
from bot.sessions.store import SessionKey, SqliteSessionStore
from bot.testing.bridge import console_config
from bot.types import ChatMessage


def console_only_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(console_config(llm_base="http://127.0.0.1:9/v1")))
    return path


def test_config_is_accepted_before_and_after_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = console_only_config(tmp_path)
    assert main(["--config", str(path), "check-config"]) == 0
    assert main(["check-config", "--config", str(path)]) == 0
    # After the subcommand wins: it is the one closer to what the user typed last.
    later = ["--config", str(tmp_path / "nope.json"), "check-config", "--config", str(path)]
    assert main(later) == 0
    assert main(["--config", str(path), "sessions", "list"]) == 0
    assert f"{path}: OK" in capsys.readouterr().out
    # The onboarding commands read it from before the subcommand as well.
    missing = tmp_path / "missing.json"
    assert main(["--config", str(missing), "doctor"]) == 1
    assert f"{missing}: config file not found" in capsys.readouterr().out


def test_console_only_config_is_valid_and_run_says_there_is_no_bot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = console_only_config(tmp_path)
    assert main(["check-config", "--config", str(path)]) == 0
    assert ["console", "*", "alice", "m"] in [
        x.split() for x in capsys.readouterr().out.split("\n")
    ]
    run = [sys.executable, "-m", "bot", "run", "--config", str(path)]
    result = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == EX_CONFIG
    err = result.stderr
    assert err.count("\n") == 1
    assert err.startswith("channels.telegram_bots: no Telegram bot is configured")
    assert "persona-bridge chat AGENT_ID" in err
    assert not (tmp_path / "sessions.db").exists()  # refused before anything started


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                found[f"{prefix}{name}"] = (helps.get(name), sub)
                found.update(_subcommands(sub, f"{prefix}{name} "))
    return found


def test_every_subcommand_has_help_and_usage_shows_no_internal_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands = _subcommands(_parser())
    assert {"run", "check-config", "models check", "chat", "sessions list", "doctor"} <= set(
        commands
    )
    for name, (help_text, sub) in commands.items():
        assert help_text, name
        assert sub.description, name
        usage = sub.format_help()
        assert "_command" not in usage, usage
        assert "config_before" not in usage, usage
    for argv in (["models"], ["sessions"], []):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "_command" not in err, err
        assert "required: command" not in err, err


def test_sessions_on_a_fresh_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = console_only_config(tmp_path)
    assert main(["sessions", "list", "--config", str(path)]) == 0
    assert capsys.readouterr().out == "no sessions yet\n"
    assert main(["sessions", "export", "--all", "--config", str(path)]) == 0
    assert capsys.readouterr().out == ""  # JSON Lines only, and there are none
    assert main(["sessions", "show", "1", "--config", str(path)]) == 1
    assert "no sessions yet" in capsys.readouterr().err
    assert not (tmp_path / "sessions.db").exists()  # looking does not create it


def test_sessions_list_on_an_empty_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = console_only_config(tmp_path)

    async def create() -> None:
        async with SqliteSessionStore(tmp_path / "sessions.db"):
            pass

    asyncio.run(create())
    assert main(["sessions", "list", "--config", str(path)]) == 0
    assert capsys.readouterr().out == "no sessions yet\n"


async def test_export_into_a_closed_pipe_ends_without_a_traceback(tmp_path: Path) -> None:
    path = console_only_config(tmp_path)
    async with SqliteSessionStore(tmp_path / "sessions.db") as store:
        session = await store.active_session(SessionKey("console", "local", None, "alice"))
        for n in range(400):  # ~200 KB of JSON Lines: far more than a pipe buffer holds
            await store.append(session, ChatMessage("user", f"line {n} " + "x" * 500))
    shell = f"{sys.executable} -m bot sessions export --all --config {path} | head -n 1"
    result = await asyncio.to_thread(
        subprocess.run, ["bash", "-o", "pipefail", "-c", shell], capture_output=True, timeout=60
    )
    assert json.loads(result.stdout)["content"].startswith("line 0 ")
    assert result.stderr == b""
    assert result.returncode == 1
