"""``PERSONA_BRIDGE_<SECTION>__<FIELD>`` environment overrides, merged into the raw tree.

Done here rather than by pydantic-settings so that an override is validated exactly like the
file (strict JSON types) and every mistake in one becomes a problem naming the variable: a
value is JSON where the field wants a number, flag, list or object, and plain text where it
wants a string.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr

from bot.config.jsontext import JsonTextError, parse
from bot.config.schema import BridgeConfig
from bot.errors import ConfigProblem

ENV_PREFIX = "PERSONA_BRIDGE_"

Loc = tuple[int | str, ...]


def apply_overrides(
    tree: dict[str, Any], environ: Mapping[str, str], problems: list[ConfigProblem]
) -> tuple[dict[str, Any], dict[Loc, str]]:
    """The tree with every override applied, and which variable set each overridden path."""
    sources: dict[Loc, str] = {}
    for loc, name in sorted(_overrides(environ), key=lambda item: (len(item[0]), item[1])):
        value = _decode(environ[name], loc, name, problems)
        if value is not _FAILED and _assign(tree, loc, value, name, problems):
            sources[loc] = name
    return tree, sources


def source_of(loc: Loc, sources: Mapping[Loc, str]) -> str | None:
    """The variable that set ``loc``, a section above it, or a key below it, if any."""
    for length in range(len(loc), 0, -1):
        if loc[:length] in sources:
            return sources[loc[:length]]
    below = [name for where, name in sources.items() if where[: len(loc)] == loc]
    return below[0] if below else None


def _overrides(environ: Mapping[str, str]) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        loc = tuple(part.lower() for part in upper.removeprefix(ENV_PREFIX).split("__"))
        # Only names that start with a section are overrides; PERSONA_BRIDGE_CONFIG is not.
        if loc[0] in BridgeConfig.model_fields:
            found.append((loc, name))
    return found


_FAILED = object()


def _decode(raw: str, loc: Loc, name: str, problems: list[ConfigProblem]) -> Any:
    annotation = annotation_at(loc)
    if annotation is not None and _is_text(annotation):
        return raw
    try:
        value, duplicates = parse(raw)
    except JsonTextError as exc:
        if annotation is not None and _is_structure(annotation):
            problems.append(
                ConfigProblem(
                    _dotted(loc),
                    f"${name} is not valid JSON ({exc.problem.reason})",
                    'set it to a JSON value, e.g. \'{"port": 9000}\' or \'["a", "b"]\'',
                )
            )
            return _FAILED
        return raw  # validation then says what the field wants, naming the variable
    for key in duplicates:
        problems.append(
            ConfigProblem(f"{_dotted(loc)}.{key}", f"key repeated in ${name}", "keep one")
        )
    return value


def _assign(
    tree: dict[str, Any], loc: Loc, value: Any, name: str, problems: list[ConfigProblem]
) -> bool:
    node: Any = tree
    for depth, part in enumerate(loc[:-1]):
        if not isinstance(node, dict):
            problems.append(
                ConfigProblem(
                    _dotted(loc[: depth + 1]),
                    f"${name} reaches inside a value that is not an object",
                    f"override {_dotted(loc[:depth])} as a whole instead",
                )
            )
            return False
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        problems.append(
            ConfigProblem(
                _dotted(loc),
                f"${name} reaches inside a value that is not an object",
                f"override {_dotted(loc[:-1])} as a whole instead",
            )
        )
        return False
    key = loc[-1]
    current = node.get(key)
    node[key] = _merge(current, value) if isinstance(current, dict) else value
    return True


def _merge(base: dict[str, Any], update: Any) -> Any:
    if not isinstance(update, dict):
        return update
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        merged[key] = _merge(current, value) if isinstance(current, dict) else value
    return merged


def _dotted(loc: Loc) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


# --- the schema's type at a path ----------------------------------------------------


def annotation_at(loc: Loc) -> Any:
    """The type the value at ``loc`` must have, or None where the schema has no such key."""
    annotation: Any = BridgeConfig
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    return annotation


def _step(annotation: Any, part: int | str) -> Any:
    for candidate in _alternatives(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            field = candidate.model_fields.get(str(part))
            if field is not None:
                return field.annotation
        origin = get_origin(candidate)
        if origin is dict:
            return get_args(candidate)[1]
        if origin is tuple:
            return get_args(candidate)[0]
    return None


def _alternatives(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for arg in get_args(annotation) for a in _alternatives(arg)]
    return [annotation]


def model_at(loc: Loc) -> type[BaseModel] | None:
    for candidate in _alternatives(annotation_at(loc)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_text(annotation: Any) -> bool:
    return any(a in (str, SecretStr) or get_origin(a) is Literal for a in _alternatives(annotation))


def _is_structure(annotation: Any) -> bool:
    return any(
        get_origin(a) in (dict, tuple, list) or (isinstance(a, type) and issubclass(a, BaseModel))
        for a in _alternatives(annotation)
    )
