"""Tools an agent's model may call: each a small class with a JSON schema and ``run()``.

A tool's failure is a *result* the model reads ("error: …") so it can correct itself;
it never ends the turn.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from bot.agents.agent import Agent
from bot.routing import Route
from bot.types import JSONObject, ToolCall, ToolSpec

log = logging.getLogger(__name__)

_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


class ToolError(Exception):
    """A tool refused or failed; the message is shown to the model as the tool result."""


@dataclass(frozen=True)
class ToolContext:
    """Who is calling: the agent, where its turn came from, and how deep in sub-agents."""

    agent: Agent
    route: Route
    session_id: int
    depth: int = 0


class Tool(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[JSONObject]

    @abstractmethod
    async def run(self, arguments: JSONObject, context: ToolContext) -> str:
        """Do the work; raise ``ToolError`` with a sentence the model can act on."""

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools = {tool.name: tool for tool in tools}

    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(tool.spec() for tool in self._tools.values())

    async def run(self, call: ToolCall, context: ToolContext) -> str:
        """The tool's result, or an ``error: …`` line explaining what to fix."""
        tool = self._tools.get(call.name)
        if tool is None:
            return f"error: there is no tool {call.name!r}; available: {', '.join(self._tools)}"
        if call.arguments_error is not None:
            return f"error: {call.arguments_error}; send the arguments as a JSON object"
        problem = _check_arguments(call.arguments, tool.parameters)
        if problem is not None:
            return f"error: {problem}"
        try:
            return await tool.run(call.arguments, context)
        except ToolError as exc:
            return f"error: {exc}"
        except Exception:
            log.exception("tool %s crashed", call.name)
            return f"error: the tool {call.name} failed unexpectedly"


def _check_arguments(arguments: JSONObject, schema: JSONObject) -> str | None:
    """Required keys and top-level types: enough to give the model a precise correction."""
    properties = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in arguments:
            return f"missing required argument {name!r}"
    for name, value in arguments.items():
        if name not in properties:
            if schema.get("additionalProperties") is False:
                return f"unknown argument {name!r}; expected {', '.join(properties)}"
            continue
        expected = properties[name].get("type")
        python = _JSON_TYPES.get(expected) if isinstance(expected, str) else None
        if python is not None and (
            not isinstance(value, python) or (isinstance(value, bool) and expected != "boolean")
        ):
            return f"argument {name!r} must be a {expected}, got {json.dumps(value)[:40]}"
    return None
