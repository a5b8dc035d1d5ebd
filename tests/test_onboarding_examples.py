"""The shipped example configs (issue 12): both pass check-config; the minimal one is closed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bot.cli import main
from bot.onboarding.examples import FULL, MINIMAL, example_path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "5555550:example-value-EEEEEEEEEEEEEEEEEEEE"


def references(path: Path) -> set[str]:
    return set(re.findall(r"\$\{(?:cred:)?([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text()))


def test_minimal_example_needs_two_secrets_and_admits_nobody_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ROOT / MINIMAL
    assert references(path) == {"TELEGRAM_BOT_TOKEN", "OPENAI_API_KEY"}
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-example")

    assert main(["check-config", "--config", str(path)]) == 0

    out, err = capsys.readouterr()
    assert "telegram-assistant" in out
    assert "allow_from: empty, so this bot admits nobody" in err  # check-config explains
    [bot] = json.loads(path.read_text())["channels"]["telegram_bots"]
    assert bot["allow_from"] == []


def test_minimal_example_reads_its_secrets_from_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same ${NAME} works from a shell and under LoadCredential=NAME:… in the unit.
    (tmp_path / "TELEGRAM_BOT_TOKEN").write_text(TOKEN + "\n")
    (tmp_path / "OPENAI_API_KEY").write_text("sk-from-credential")
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))

    assert main(["check-config", "--config", str(ROOT / MINIMAL)]) == 0


def test_full_example_passes_check_config(monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROOT / FULL
    for index, name in enumerate(sorted(references(path))):
        monkeypatch.setenv(name, f"555555{index}:example-value-EEEEEEEEEEEEEEEEEEEE")
    assert main(["check-config", "--config", str(path)]) == 0
    assert "*" not in json.dumps(json.loads(path.read_text())["channels"])


def test_config_errors_say_where_the_example_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"roles": {}}))

    assert main(["check-config", "--config", str(path)]) == 78

    err = capsys.readouterr().err
    assert "see config.example.json" in err
    assert f"config.example.json: the example is installed — see {example_path(MINIMAL)}" in err
    assert example_path(MINIMAL) is not None
