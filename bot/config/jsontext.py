"""Strict JSON for config text: duplicate keys, depth and syntax mistakes said in words.

``json.loads`` lets the last of two equal keys win silently, accepts ``NaN``, recurses until
Python gives up, and reports a trailing comma as "Expecting property name enclosed in double
quotes". A person editing a config deserves better, so this module wraps it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 32  # a real config is about 6 levels deep; anything near this is a mistake


@dataclass(frozen=True)
class JsonSyntaxProblem:
    """Why the text is not usable JSON; ``line``/``column`` are 1-based, 0 when unknown."""

    line: int
    column: int
    reason: str
    fix: str


class JsonTextError(Exception):
    def __init__(self, problem: JsonSyntaxProblem) -> None:
        super().__init__(problem.reason)
        self.problem = problem


class _Object(dict[str, Any]):
    """A JSON object that remembers which of its keys were written more than once."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    result = _Object()
    duplicates = []
    for key, value in pairs:
        if key in result and key not in duplicates:
            duplicates.append(key)
        result[key] = value
    result.duplicates = tuple(duplicates)
    return result


def _no_constants(name: str) -> Any:
    raise JsonTextError(
        JsonSyntaxProblem(0, 0, f"{name} is not a JSON value", "write a plain number")
    )


def parse(text: str) -> tuple[Any, list[str]]:
    """The value, plus the dotted path of every key that appears twice in one object."""
    if not text.strip():
        raise JsonTextError(JsonSyntaxProblem(1, 1, "the file is empty", "write a JSON object"))
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise JsonTextError(_explain(text, exc)) from None
    except RecursionError:
        raise JsonTextError(_too_deep()) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python will convert
        raise JsonTextError(
            JsonSyntaxProblem(0, 0, f"a value cannot be read ({exc})", "shorten the number")
        ) from None
    return value, _check_tree(value)


def _too_deep() -> JsonSyntaxProblem:
    return JsonSyntaxProblem(
        0, 0, f"nested more than {MAX_DEPTH} levels deep", "remove the extra brackets"
    )


def _check_tree(value: Any) -> list[str]:
    """Walk without recursion: the depth limit is what keeps recursion safe elsewhere."""
    duplicates: list[str] = []
    pending: list[tuple[Any, str, int]] = [(value, "", 1)]
    while pending:
        node, path, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise JsonTextError(_too_deep())
        if isinstance(node, _Object):
            duplicates += [_join(path, key) for key in node.duplicates]
            pending += [(v, _join(path, k), depth + 1) for k, v in node.items()]
        elif isinstance(node, list):
            pending += [(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node)]
    return sorted(duplicates)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _explain(text: str, exc: json.JSONDecodeError) -> JsonSyntaxProblem:
    """Turn the decoder's complaint into the mistake a person most likely made."""
    pos = exc.pos
    rest = text[pos:]
    before = text[:pos].rstrip()
    if rest.startswith(("//", "/*")) or (rest.startswith("#")):
        return _at(text, pos, "comments are not allowed in JSON", "delete the comment")
    if before.endswith(",") and rest.lstrip()[:1] in ("}", "]"):
        comma = len(before) - 1
        closer = rest.lstrip()[0]
        return _at(
            text, comma, f"trailing comma before '{closer}' (JSON allows none)", "delete the comma"
        )
    if rest.startswith("'"):
        return _at(
            text,
            pos,
            "single quotes are not JSON",
            'put keys and strings in double quotes ("…")',
        )
    if "property name" in exc.msg and rest[:1].isalpha():
        return _at(text, pos, "a key without double quotes", 'write it as "key"')
    if "Extra data" in exc.msg:
        return _at(
            text,
            pos,
            "more text after the end of the JSON value",
            "keep one top-level { … } and delete what follows it",
        )
    if "Unterminated string" in exc.msg:
        return _at(text, pos, "a string is never closed", 'add the closing "')
    if "Invalid control character" in exc.msg:
        return _at(
            text, pos, "a line break or tab inside a string", r"write it as \n or \t instead"
        )
    if not rest.strip():
        return _at(text, pos, "the text ends early (unclosed bracket?)", "close every { and [")
    if "delimiter" in exc.msg:
        return _at(
            text, pos, "a comma or colon is missing here", "separate items with ',' and keys ':'"
        )
    if exc.msg.startswith("Expecting value") and rest[:1].isalpha():
        return _at(
            text,
            pos,
            "a bare word is not a JSON value",
            'quote strings ("…"); the only bare words are true, false and null',
        )
    return _at(text, pos, exc.msg.lower(), "fix the syntax there")


def _at(text: str, pos: int, reason: str, fix: str) -> JsonSyntaxProblem:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return JsonSyntaxProblem(line, column, reason, fix)
