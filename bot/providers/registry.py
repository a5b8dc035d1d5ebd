"""Which Provider class serves which protocol."""

from __future__ import annotations

import httpx

from bot.config.schema import ModelEntry
from bot.errors import ConfigError, ConfigProblem
from bot.providers.anthropic import AnthropicProvider
from bot.providers.base import Provider
from bot.providers.cli import FLAVOURS, CliProvider
from bot.providers.openai import OpenAIProvider

OPENAI_COMPATIBLE = ("openai", "openrouter", "ollama")


def provider_for(entry: ModelEntry, client: httpx.AsyncClient) -> Provider:
    if entry.protocol in OPENAI_COMPATIBLE:
        return OpenAIProvider(entry, client)
    if entry.protocol == "anthropic":
        return AnthropicProvider(entry, client)
    if entry.protocol in FLAVOURS:
        return CliProvider(entry)
    raise ConfigError(
        [
            ConfigProblem(
                f"model_list[{entry.model_name}].model",
                f"protocol {entry.protocol!r} is not available in this build yet",
                "use an openai-compatible entry",
            )
        ]
    )
