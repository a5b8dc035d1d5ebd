"""Warnings: settings that are valid but probably not what the operator meant.

``check-config`` prints them after the routes; they never stop a start or a reload.
"""

from __future__ import annotations

from bot.config.references import bot_paths
from bot.config.schema import BridgeConfig
from bot.errors import ConfigProblem


def advise(config: BridgeConfig) -> list[ConfigProblem]:
    warnings = []
    for path, bot in bot_paths(config):
        if bot.pairing and not config.admins:
            warnings.append(
                ConfigProblem(
                    f"{path}.pairing",
                    "on, but no top-level admins, so codes can only be approved with "
                    "`persona-bridge pairing approve CODE`",
                    'add "admins": ["<your user id>"] to approve with /approve in any bot',
                )
            )
        if not bot.allow_from and not bot.pairing:
            warnings.append(
                ConfigProblem(
                    f"{path}.allow_from",
                    "empty, so this bot admits nobody (everyone gets the stranger reply)",
                    'add user ids, @usernames, or "*" for everyone',
                )
            )
        for index, entry in enumerate(bot.allow_from):
            if entry.startswith("@"):
                warnings.append(
                    ConfigProblem(
                        f"{path}.allow_from[{index}]",
                        f"{entry} admits whoever holds that username today "
                        "(usernames can be changed and taken over)",
                        "pin the numeric user id instead (the bot tells a stranger their id)",
                    )
                )
    for index, entry in enumerate(config.admins):
        if entry.startswith("@"):
            warnings.append(
                ConfigProblem(
                    f"admins[{index}]",
                    f"{entry} makes whoever holds that username today an admin",
                    "pin the numeric user id instead",
                )
            )
    return warnings
