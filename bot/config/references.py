"""Checks that span sections: every reference resolves, nothing is defined twice.

Run after shape validation; each finding is a ``ConfigProblem`` so all are reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bot.config.schema import CONSOLE_CHANNEL, BridgeConfig, ChainSpec, TelegramBot
from bot.errors import ConfigProblem

_ROLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_references(config: BridgeConfig) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    models = [m.model_name for m in config.model_list]
    problems += _duplicates("model_list", "model_name", models)
    problems += _check_roles(config, set(models))
    problems += _check_agents(config, set(models))
    problems += _check_channels(config)
    problems += _check_webhooks(config)
    problems += _check_budgets(config)
    problems += _check_usage_budgets(config)
    return problems


def _check_usage_budgets(config: BridgeConfig) -> list[ConfigProblem]:
    agent_ids = [a.id for a in config.agents.list]
    return [
        ConfigProblem(
            f"budgets[{index}].agent",
            f"unknown agent {rule.agent!r}",
            f'use one of: {", ".join(agent_ids)}, or "*"',
        )
        for index, rule in enumerate(config.budgets)
        if rule.agent != "*" and rule.agent not in agent_ids
    ]


def _check_budgets(config: BridgeConfig) -> list[ConfigProblem]:
    session = config.session
    if session.compact_at_tokens <= session.context_window_tokens:
        return []
    return [
        ConfigProblem(
            "session.compact_at_tokens",
            f"{session.compact_at_tokens} is above session.context_window_tokens "
            f"({session.context_window_tokens}), so the context overflows before compaction runs",
            "set it below the context window (e.g. a third of it)",
        )
    ]


def _duplicates(section: str, key: str, values: Iterable[str]) -> list[ConfigProblem]:
    seen: dict[str, int] = {}
    problems = []
    for index, value in enumerate(values):
        if value in seen:
            problems.append(
                ConfigProblem(
                    f"{section}[{index}].{key}",
                    f"duplicate {key} {value!r} (also at {section}[{seen[value]}])",
                    f"give each entry its own {key}",
                )
            )
        else:
            seen[value] = index
    return problems


def _check_chain(path: str, chain: ChainSpec, models: set[str]) -> list[ConfigProblem]:
    problems = []
    for index, name in enumerate(chain.names):
        if name not in models:
            where = f"{path}.primary" if index == 0 else f"{path}.fallbacks[{index - 1}]"
            problems.append(
                ConfigProblem(
                    where,
                    f"model {name!r} is not in model_list",
                    f"use one of: {', '.join(sorted(models))}",
                )
            )
    if len(set(chain.names)) != len(chain.names):
        problems.append(
            ConfigProblem(path, "a model appears twice in the chain", "list each model once")
        )
    return problems


def _check_roles(config: BridgeConfig, models: set[str]) -> list[ConfigProblem]:
    problems = []
    if "compaction" not in config.roles:
        problems.append(
            ConfigProblem(
                "roles.compaction",
                "required role is missing",
                'add "compaction": {"primary": "<a cheap model_name>"}; to summarise with '
                "an agent's own model, name that model here",
            )
        )
    for role, chain in config.roles.items():
        if not _ROLE_NAME.fullmatch(role):
            problems.append(
                ConfigProblem(
                    f"roles.{role}" if role.strip() else 'roles[""]',
                    f"invalid role name {role!r}" if role.strip() else "empty role name",
                    "use 1-64 letters, digits, '_', '.' or '-'",
                )
            )
        problems += _check_chain(f"roles.{role}", chain, models)
    problems += _check_transcription(config, models)
    return problems


def _check_transcription(config: BridgeConfig, models: set[str]) -> list[ConfigProblem]:
    """Speech to text is the OpenAI ``/audio/transcriptions`` shape (SPEC §11)."""
    chain = config.roles.get("transcription")
    if chain is None:
        return []
    return [
        ConfigProblem(
            "roles.transcription",
            f"model {name!r} uses protocol {config.model_entry(name).protocol!r}, "
            "which cannot transcribe",
            "use an openai-protocol entry (OpenAI, Groq or a local whisper server)",
        )
        for name in dict.fromkeys(chain.names)
        if name in models and config.model_entry(name).protocol != "openai"
    ]


def _check_agents(config: BridgeConfig, models: set[str]) -> list[ConfigProblem]:
    agent_ids = [a.id for a in config.agents.list]
    problems = _duplicates("agents.list", "id", agent_ids)
    if config.agents.defaults.model is not None:
        problems += _check_chain("agents.defaults.model", config.agents.defaults.model, models)
    for index, agent in enumerate(config.agents.list):
        path = f"agents.list[{index}]"
        if agent.model is not None:
            problems += _check_chain(f"{path}.model", agent.model, models)
        elif config.agents.defaults.model is None:
            problems.append(
                ConfigProblem(
                    f"{path}.model",
                    f"agent {agent.id!r} has no model chain",
                    "set its model or agents.defaults.model",
                )
            )
        if agent.persona is not None and agent.persona_file is not None:
            problems.append(
                ConfigProblem(
                    f"{path}.persona_file",
                    "both persona and persona_file are set",
                    "keep one of them",
                )
            )
        for i, target in enumerate(agent.allow_agents or ()):
            if target != "*" and target not in agent_ids:
                problems.append(
                    ConfigProblem(
                        f"{path}.allow_agents[{i}]",
                        f"unknown agent {target!r}",
                        f'use one of: {", ".join(agent_ids)}, or "*"',
                    )
                )
    return problems


def _check_channels(config: BridgeConfig) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    # No bot at all is valid: `chat` serves console bindings; `run` refuses with one line.
    bots = config.channels.bots()
    problems += _duplicates(
        "channels.telegram_bots", "id", [b.id for b in config.channels.telegram_bots]
    )
    problems += _duplicate_tokens(config)
    agent_ids = {a.id for a in config.agents.list}
    channels = {b.channel for b in bots} | {CONSOLE_CHANNEL}
    bound: set[str] = set()
    for index, binding in enumerate(config.bindings):
        path = f"bindings[{index}]"
        if binding.agent_id not in agent_ids:
            problems.append(
                ConfigProblem(
                    f"{path}.agent_id",
                    f"unknown agent {binding.agent_id!r}",
                    f"use one of: {', '.join(sorted(agent_ids))}",
                )
            )
        if binding.match.channel not in channels:
            problems.append(
                ConfigProblem(
                    f"{path}.match.channel",
                    f"unknown channel {binding.match.channel!r}",
                    f"use one of: {', '.join(sorted(channels))}",
                )
            )
        bound.add(binding.match.channel)
    for bot_path, bot in bot_paths(config):
        if bot.channel not in bound:
            problems.append(
                ConfigProblem(
                    bot_path,
                    f"channel {bot.channel!r} has no binding",
                    f'add {{"agent_id": "...", "match": {{"channel": "{bot.channel}"}}}} '
                    "to bindings, or remove the bot",
                )
            )
    return problems


def bot_paths(config: BridgeConfig) -> list[tuple[str, TelegramBot]]:
    paths: list[tuple[str, TelegramBot]] = []
    bots = config.channels.bots()
    offset = 0
    if config.channels.telegram is not None:
        paths.append(("channels.telegram", bots[0]))
        offset = 1
    paths += [(f"channels.telegram_bots[{i}]", b) for i, b in enumerate(bots[offset:])]
    return paths


def _duplicate_tokens(config: BridgeConfig) -> list[ConfigProblem]:
    seen: dict[str, str] = {}
    problems = []
    for path, bot in bot_paths(config):
        token = bot.token.get_secret_value()
        if token in seen:
            problems.append(
                ConfigProblem(
                    f"{path}.token",
                    f"same token as {seen[token]}",
                    "each bot needs its own token from @BotFather",
                )
            )
        else:
            seen[token] = path
    return problems


def _check_webhooks(config: BridgeConfig) -> list[ConfigProblem]:
    """A webhook bot needs its secret and the server it is delivered to (SPEC §14)."""
    problems = []
    webhook_bots = [(path, bot) for path, bot in bot_paths(config) if bot.updates == "webhook"]
    for path, bot in webhook_bots:
        if bot.webhook_secret is None:
            problems.append(
                ConfigProblem(
                    f"{path}.webhook_secret",
                    'is required when updates is "webhook"',
                    'add "webhook_secret": "${TG_WEBHOOK_SECRET}" (1-256 characters of '
                    "A-Z, a-z, 0-9, _ and -; e.g. `openssl rand -hex 32`)",
                )
            )
    if webhook_bots and config.webhook is None:
        first = webhook_bots[0][0]
        problems.append(
            ConfigProblem(
                "webhook",
                f'is required because {first}.updates is "webhook"',
                'add "webhook": {"host": "127.0.0.1", "port": 8081, '
                '"public_url": "https://bot.example.org/telegram"} (or set updates to "polling")',
            )
        )
    return problems
