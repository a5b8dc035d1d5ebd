"""Read a config file into an immutable ``LoadedConfig``, or raise one ``ConfigError``.

Every problem is collected before failing — JSON syntax, ``${VAR}`` lookups, shapes,
cross references — so a person fixes the file in one pass, not one error per restart.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from bot.config.references import check_references
from bot.config.schema import BridgeConfig
from bot.config.substitution import expand
from bot.errors import ConfigError, ConfigProblem

CONFIG_ENV = "PERSONA_BRIDGE_CONFIG"
ENV_PREFIX = "PERSONA_BRIDGE_"
DEFAULT_PATH = Path("config.json")


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration plus what was resolved against the file's location."""

    config: BridgeConfig
    path: Path
    personas: Mapping[str, str]
    database: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def resolve_path(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """``--config`` first, then ``$PERSONA_BRIDGE_CONFIG``, then ``./config.json``."""
    return Path(cli_value or environ.get(CONFIG_ENV) or DEFAULT_PATH)


def load_config(path: Path) -> LoadedConfig:
    raw = _read_json(path)
    problems: list[ConfigProblem] = []
    expanded = expand(raw, os.environ, problems)
    try:
        config = BridgeConfig(**expanded)
    except ValidationError as exc:
        reported = {p.path for p in problems}
        problems += [p for p in _translate(exc) if p.path not in reported]
        raise ConfigError(problems) from None
    base_dir = path.resolve().parent
    problems += check_references(config, base_dir)
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(
        config=config,
        path=path.resolve(),
        personas=_read_personas(config, base_dir),
        database=_database_path(config.session.database, base_dir),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [
                ConfigProblem(
                    str(path),
                    "config file not found",
                    f"pass --config PATH, set ${CONFIG_ENV}, or create ./config.json",
                )
            ]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [ConfigProblem(str(path), f"cannot read the file ({exc})", "check the path")]
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    f"{path}:{exc.lineno}:{exc.colno}",
                    f"invalid JSON ({exc.msg})",
                    f"fix the syntax at line {exc.lineno}, column {exc.colno}",
                )
            ]
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigProblem(str(path), "the top level is not an object", "wrap it in { … }")]
        )
    return data


def _read_personas(config: BridgeConfig, base_dir: Path) -> dict[str, str]:
    personas = {}
    for agent in config.agents.list:
        if agent.persona_file is not None:
            text = (base_dir / agent.persona_file).read_text(encoding="utf-8").strip()
        else:
            text = agent.persona or f"You are {agent.display_name}."
        personas[agent.id] = text
    return personas


def _database_path(value: str, base_dir: Path) -> Path:
    if value == ":memory:":
        return Path(value)
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


# --- pydantic errors → ConfigProblem -------------------------------------------------


def _translate(exc: ValidationError) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
        path = _dotted(loc)
        problem, fix = _explain(error["type"], error["msg"], loc)
        env_name = ENV_PREFIX + "__".join(str(p).upper() for p in loc)
        if env_name in os.environ:
            problem += f" (from ${env_name})"
        problems.append(ConfigProblem(path or "(root)", problem, fix))
    return problems


def _dotted(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _explain(kind: str, message: str, loc: tuple[int | str, ...]) -> tuple[str, str]:
    if kind == "extra_forbidden":
        return "unknown key", _suggest(loc)
    if kind == "missing":
        return "required field is missing", "add it (see config.example.json)"
    if kind == "too_short":
        return "must not be empty", "add at least one entry"
    if kind == "string_pattern_mismatch":
        return "invalid identifier", "use 1-64 letters, digits, '_', '.' or '-'"
    if kind == "value_error":
        text = message.removeprefix("Value error, ")
        problem, _, fix = text.partition("; ")
        return problem, fix or "see config.example.json"
    if kind == "literal_error":
        return _json_words(message), "use one of the listed values"
    return _json_words(message), "fix the value (see config.example.json)"


def _json_words(message: str) -> str:
    """Pydantic speaks Python; people editing JSON read lists and objects."""
    for python, json_word in (
        ("Input should be", "must be"),
        ("a valid tuple", "a list"),
        ("a valid list", "a list"),
        ("a valid dictionary", "an object"),
        ("a valid string", "a string"),
    ):
        message = message.replace(python, json_word)
    return message


def _suggest(loc: tuple[int | str, ...]) -> str:
    key = str(loc[-1]) if loc else ""
    close = difflib.get_close_matches(key, _field_names_at(loc[:-1]), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}remove it or correct the spelling (unknown keys are not ignored)"


def _field_names_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed in the section at ``loc``: the candidates for a misspelt key."""
    model: type[BaseModel] | None = BridgeConfig
    pending_key = False  # the next part is a dict key (e.g. a role name), not a field
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int) or pending_key:
            pending_key = False
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model, pending_key = _model_inside(field.annotation)
    return list(model.model_fields) if model is not None else []


def _model_inside(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    is_dict = get_origin(annotation) is dict
    args = get_args(annotation)
    for arg in reversed(args) if is_dict else args:
        model, _ = _model_inside(arg)
        if model is not None:
            return model, is_dict
    return None, False
