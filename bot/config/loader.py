"""Read a config file into an immutable ``LoadedConfig``, or raise one ``ConfigError``.

Every problem is collected before failing — JSON syntax, ``${VAR}`` lookups, shapes,
cross references — so a person fixes the file in one pass, not one error per restart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.config.advice import advise
from bot.config.filesystem import database_path, read_personas
from bot.config.jsontext import JsonTextError, parse
from bot.config.overrides import Loc, apply_overrides, model_at, source_of
from bot.config.references import check_references
from bot.config.schema import BridgeConfig
from bot.config.secrets_file import sources_for
from bot.config.substitution import expand
from bot.errors import ConfigError, ConfigProblem

CONFIG_ENV = "PERSONA_BRIDGE_CONFIG"
DEFAULT_PATH = Path("config.json")
MAX_CONFIG_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration plus what was resolved against the file's location."""

    config: BridgeConfig
    path: Path
    personas: Mapping[str, str]
    database: Path
    warnings: tuple[ConfigProblem, ...] = ()  # valid, but probably not what was meant

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def resolve_path(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """``--config`` first, then ``$PERSONA_BRIDGE_CONFIG``, then ``./config.json``."""
    return Path(cli_value or environ.get(CONFIG_ENV) or DEFAULT_PATH)


def load_config(path: Path) -> LoadedConfig:
    """The only exception this raises is ``ConfigError``: callers (reload) rely on it."""
    try:
        return _load(path)
    except ConfigError:
        raise
    except Exception as exc:  # a check we missed must still not kill a running bridge
        raise ConfigError(
            [
                ConfigProblem(
                    str(path),
                    f"cannot be loaded ({type(exc).__name__})",
                    "please report this; check the file by hand meanwhile",
                )
            ]
        ) from exc


def _load(path: Path) -> LoadedConfig:
    raw = _read_json(path)
    problems: list[ConfigProblem] = []
    expanded = expand(raw, sources_for(path, os.environ, problems), problems)
    merged, sources = apply_overrides(expanded, os.environ, problems)
    try:
        # Strict: a config's types are JSON's ("yes" is no bool, true is no number).
        config = BridgeConfig.model_validate(_lists_as_tuples(merged), strict=True)
    except ValidationError as exc:
        reported = {p.path for p in problems}
        problems += [p for p in _translate(exc, sources) if p.path not in reported]
        raise ConfigError(problems) from None
    base_dir = path.resolve().parent
    problems += check_references(config)
    personas = read_personas(config, base_dir, problems)
    database = database_path(config.session.database, base_dir, problems)
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(
        config=config,
        path=path.resolve(),
        personas=personas,
        database=database,
        warnings=tuple(advise(config)),
    )


def _lists_as_tuples(tree: Any) -> Any:
    """Strict validation takes only tuples for the schema's (immutable) sequences."""
    if isinstance(tree, dict):
        return {key: _lists_as_tuples(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return tuple(_lists_as_tuples(value) for value in tree)
    return tree


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:  # bounded: /dev/zero or a log file given by mistake
            data = file.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(
                [ConfigProblem(str(path), "larger than 10 MiB", "is this the config file?")]
            )
        text = data.decode("utf-8-sig")  # -sig: a BOM some editors add is fine
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
    except IsADirectoryError:
        raise ConfigError(
            [ConfigProblem(str(path), "is a directory", "name the config file inside it")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    str(path),
                    f"not UTF-8 text (byte {exc.start})",
                    "save the file as UTF-8",
                )
            ]
        ) from None
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            [ConfigProblem(str(path), f"cannot read the file ({why})", "check the path")]
        ) from None
    try:
        tree, duplicates = parse(text)
    except JsonTextError as exc:
        where = exc.problem
        at = f"{path}:{where.line}:{where.column}" if where.line else str(path)
        raise ConfigError([ConfigProblem(at, f"invalid JSON: {where.reason}", where.fix)]) from None
    if not isinstance(tree, dict):
        raise ConfigError(
            [ConfigProblem(str(path), "the top level is not an object", "wrap it in { … }")]
        )
    if duplicates:
        raise ConfigError(
            [
                ConfigProblem(
                    key,
                    "key appears twice in one object (JSON would silently keep the last)",
                    "keep one of them",
                )
                for key in duplicates
            ]
        )
    return tree


# --- pydantic errors → ConfigProblem -------------------------------------------------


def _translate(exc: ValidationError, sources: Mapping[Loc, str]) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
        path = _dotted(loc)
        problem, fix = _explain(error["type"], error["msg"], loc)
        env_name = source_of(tuple(str(p) for p in loc), sources)
        if env_name is not None:
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
    if kind in _TYPE_FIXES:
        return _json_words(message), _TYPE_FIXES[kind]
    return _json_words(message), "fix the value (see config.example.json)"


_TYPE_FIXES = {
    "bool_type": "write true or false, without quotes",
    "int_type": "write a whole number without quotes, e.g. 30",
    "float_type": "write a number without quotes, e.g. 2.5",
    "string_type": "put the value in double quotes",
}


def _json_words(message: str) -> str:
    """Pydantic speaks Python; people editing JSON read lists and objects."""
    for python, json_word in (
        ("Input should be", "must be"),
        ("a valid tuple", "a list"),
        ("a valid list", "a list"),
        ("a valid array", "a list"),
        ("a valid dictionary", "an object"),
        ("a valid string", "a string"),
    ):
        message = message.replace(python, json_word)
    return message


def _suggest(loc: tuple[int | str, ...]) -> str:
    import difflib  # only a config with a mistake needs it

    key = str(loc[-1]) if loc else ""
    close = difflib.get_close_matches(key, _field_names_at(loc[:-1]), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}remove it or correct the spelling (unknown keys are not ignored)"


def _field_names_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed in the section at ``loc``: the candidates for a misspelt key."""
    model = model_at(loc)
    return list(model.model_fields) if model is not None else []
