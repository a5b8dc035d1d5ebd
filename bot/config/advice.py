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
        if not bot.allow_from:
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
    return warnings
