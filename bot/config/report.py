"""What ``check-config`` prints: routes (channel → agent → model chain) and models."""

from __future__ import annotations

from collections.abc import Sequence

from bot.config.schema import BridgeConfig


def render(config: BridgeConfig) -> str:
    routes = [("channel", "chat", "agent", "model chain")]
    for binding in config.bindings:
        agent = config.agent(binding.agent_id)
        chain = " → ".join(config.chain_for(agent).names)
        routes.append((binding.match.channel, binding.match.chat_id or "*", agent.id, chain))
    roles = [("role", "model chain")]
    roles += [(name, " → ".join(chain.names)) for name, chain in sorted(config.roles.items())]
    models = [("model_name", "model", "api base", "key")]
    for entry in config.model_list:
        key = "set" if entry.api_key is not None else "-"
        models.append((entry.model_name, entry.model, entry.base_url or "(cli)", key))
    return "\n\n".join(_table(t) for t in (routes, roles, models))


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
