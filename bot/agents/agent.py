"""An agent: persona, display name and its own model chain, resolved from config."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config.loader import LoadedConfig
from bot.config.schema import ChainSpec


@dataclass(frozen=True)
class Agent:
    id: str
    display_name: str
    persona: str
    chain: ChainSpec
    allow_agents: tuple[str, ...] | None
    max_tool_iterations: int


def agents_from(loaded: LoadedConfig) -> dict[str, Agent]:
    config = loaded.config
    return {
        spec.id: Agent(
            id=spec.id,
            display_name=spec.display_name,
            persona=loaded.personas[spec.id],
            chain=config.chain_for(spec),
            allow_agents=spec.allow_agents,
            max_tool_iterations=spec.max_tool_iterations
            or config.agents.defaults.max_tool_iterations,
        )
        for spec in config.agents.list
    }
