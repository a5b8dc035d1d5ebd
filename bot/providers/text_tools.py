"""Recover tool calls that a model wrote as JSON inside its plain-text answer.

CLI agents (claude, codex, gemini) have no function-calling channel we can use, so the
prompt asks them to answer a tool call as ``{"tool": "<name>", "arguments": {...}}`` in a
```json fence. Models follow that loosely: they drop the fence or its language tag,
pretty-print the JSON inside prose, send ``arguments`` as a JSON *string*, fall back to
OpenAI shapes (``{"name", "arguments"}``, ``{"function": {...}}``, ``{"tool_calls": [...]}``)
or send a list of calls. This module accepts all of those.

JSON is found with ``json.JSONDecoder.raw_decode`` at every ``{``/``[`` rather than with a
regex, because regexes cannot balance nested braces or braces inside strings. A decoded
value that is not a call to one of ``tool_names`` stays prose, untouched, so an answer
that merely *shows* JSON is not mistaken for a call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from bot.types import JSONObject, ToolCall

ID_PREFIX = "cli_call_"

# Keys a call object may carry; anything else (e.g. "description") means it is not a call,
# which keeps an echoed tool *spec* from being run.
_NAME_KEYS = ("tool", "name")
_ARGUMENT_KEYS = ("arguments", "args", "parameters", "input")
_ALLOWED_KEYS = frozenset({*_NAME_KEYS, *_ARGUMENT_KEYS, "id", "type", "function"})
_DECODER = json.JSONDecoder()
_LANGUAGE_TAG = re.compile(r"[A-Za-z0-9_+-]*")
# A call the model meant to make but whose JSON is broken: we still want to tell it so.
_BROKEN_CALL_HEAD = re.compile(r'\{\s*"(?:tool|name)"\s*:\s*"([^"\\]+)"')

# One parsed call before it gets its id: (name, arguments, arguments_error).
_Call = tuple[str, JSONObject, str | None]


def parse_tool_calls(text: str, tool_names: Collection[str]) -> tuple[str, tuple[ToolCall, ...]]:
    """Split ``text`` into (prose without the consumed JSON, tool calls in order).

    Only calls naming one of ``tool_names`` are taken. Calls get ids ``cli_call_1``,
    ``cli_call_2``, … in the order they appear, so the same text always yields the same ids.
    """
    names = frozenset(tool_names)
    if not names:
        return text.strip(), ()
    found: list[_Call] = []
    spans: list[tuple[int, int]] = []
    i = 0
    while (i := _next_json_start(text, i)) != -1:
        try:
            value, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            broken = _broken_call(text, i, names, exc)
            if broken is None:
                i += 1
                continue
            call, end = broken
            found.append(call)
            spans.append((i, end))
            i = end
            continue
        calls = _calls_in(value, names)
        if calls:
            found += calls
            spans.append((i, end))
        i = end  # skip the whole value: nested objects are its arguments, not calls
    calls_out = tuple(
        ToolCall(id=f"{ID_PREFIX}{n}", name=name, arguments=args, arguments_error=error)
        for n, (name, args, error) in enumerate(found, start=1)
    )
    return _remove_spans(text, spans), calls_out


def _next_json_start(text: str, start: int) -> int:
    brace, bracket = text.find("{", start), text.find("[", start)
    if brace == -1 or bracket == -1:
        return max(brace, bracket)
    return min(brace, bracket)


def _calls_in(value: Any, names: frozenset[str]) -> list[_Call]:
    """The calls a decoded value stands for; a list counts only if every item is a call."""
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        value = value["tool_calls"]
    if isinstance(value, list):
        calls = [_call(item, names) for item in value]
        if calls and all(c is not None for c in calls):
            return [c for c in calls if c is not None]
        return []
    call = _call(value, names)
    return [call] if call is not None else []


def _call(value: Any, names: frozenset[str]) -> _Call | None:
    if not isinstance(value, dict) or not value or not set(value) <= _ALLOWED_KEYS:
        return None
    function = value.get("function")
    if isinstance(function, dict):  # OpenAI: {"type": "function", "function": {...}}
        return _call(function, names)
    name = next((value[k] for k in _NAME_KEYS if isinstance(value.get(k), str)), None)
    if name not in names:
        return None
    raw = next((value[k] for k in _ARGUMENT_KEYS if k in value), None)
    arguments, error = _arguments(raw)
    return name, arguments, error


def _arguments(raw: Any) -> tuple[JSONObject, str | None]:
    if raw is None:
        return {}, None
    if isinstance(raw, dict):
        return raw, None
    if isinstance(raw, str):
        if not raw.strip():
            return {}, None
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            return {}, f"arguments are not valid JSON: {exc.msg} at position {exc.pos}"
        if isinstance(parsed, dict):
            return parsed, None
    return {}, "arguments are not a JSON object"


def _broken_call(
    text: str, start: int, names: frozenset[str], exc: json.JSONDecodeError
) -> tuple[_Call, int] | None:
    """A call-looking object whose JSON does not parse: report it rather than drop it."""
    head = _BROKEN_CALL_HEAD.match(text, start)
    if head is None or head.group(1) not in names:
        return None
    end = _balanced_end(text, start)
    if end is None:
        return None
    error = f"tool call is not valid JSON: {exc.msg} at offset {exc.pos - start}"
    return (head.group(1), {}, error), end


def _balanced_end(text: str, start: int) -> int | None:
    """Index after the brace that closes ``text[start]``, ignoring braces inside strings."""
    depth, in_string, escaped = 0, False, False
    for j in range(start, len(text)):
        ch = text[j]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return j + 1
    return None


def _remove_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """Cut the consumed JSON out, with the code fence around it when it sat in one."""
    merged: list[tuple[int, int]] = []
    for start, end in spans:  # calls separated only by whitespace share one fence
        if merged and not text[merged[-1][1] : start].strip():
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    pieces: list[str] = []
    cursor = 0
    for start, end in merged:
        start, end = _widen_to_fence(text, start, end)
        pieces.append(text[cursor:start])
        cursor = end
    pieces.append(text[cursor:])
    prose = "".join(pieces)
    prose = re.sub(r"[ \t]+\n", "\n", prose)
    return re.sub(r"\n{3,}", "\n\n", prose).strip()


def _widen_to_fence(text: str, start: int, end: int) -> tuple[int, int]:
    before = len(text[:start].rstrip())
    opener = text.rfind("```", 0, before)
    after = len(text) - len(text[end:].lstrip())
    if (
        opener != -1
        and text.count("```", 0, opener) % 2 == 0  # an opening fence, not a closing one
        and _LANGUAGE_TAG.fullmatch(text[opener + 3 : before])
        and text.startswith("```", after)
    ):
        return opener, after + 3
    return start, end
