"""How ``init`` asks: at a terminal, or not at all (``--non-interactive``)."""

from __future__ import annotations

import getpass
from typing import Protocol

from bot.errors import ConfigError, ConfigProblem


def missing(flag: str) -> ConfigError:
    """``--non-interactive`` and a question had no flag answering it."""
    return ConfigError(
        [
            ConfigProblem(
                flag, "required with --non-interactive", "pass it, or run init at a terminal"
            )
        ]
    )


class Questions(Protocol):
    def ask(self, question: str, default: str = "", *, flag: str = "") -> str: ...
    def secret(self, question: str, *, flag: str = "") -> str: ...
    def confirm(self, question: str, default: bool, *, flag: str = "") -> bool: ...


class TerminalQuestions:
    """``input()`` for answers, ``getpass`` for secrets so they are never echoed."""

    def ask(self, question: str, default: str = "", *, flag: str = "") -> str:
        suffix = f" [{default}]" if default else ""
        return input(f"{question}{suffix}: ").strip() or default

    def secret(self, question: str, *, flag: str = "") -> str:
        return getpass.getpass(f"{question} (input hidden): ").strip()

    def confirm(self, question: str, default: bool, *, flag: str = "") -> bool:
        choices = "Y/n" if default else "y/N"
        answer = input(f"{question} [{choices}]: ").strip().lower()
        return default if not answer else answer.startswith("y")


class NoQuestions:
    """Every unanswered question is an error naming the flag that answers it."""

    def ask(self, question: str, default: str = "", *, flag: str = "") -> str:
        if default:
            return default
        raise missing(flag or question)

    def secret(self, question: str, *, flag: str = "") -> str:
        raise missing(flag or question)

    def confirm(self, question: str, default: bool, *, flag: str = "") -> bool:
        if flag:
            raise missing(flag)
        return default
