"""Tool calls written as JSON in a model's text answer: the shapes CLI agents really send."""

from __future__ import annotations

import pytest

from bot.providers.text_tools import parse_tool_calls
from bot.types import ToolCall

TOOLS = ("get_weather", "search")


def test_json_fence_with_language_tag() -> None:
    text = (
        "Let me check.\n"
        "```json\n"
        '{"tool": "get_weather", "arguments": {"city": "Rome"}}\n'
        "```\n"
        "One moment."
    )
    prose, calls = parse_tool_calls(text, TOOLS)
    assert calls == (ToolCall(id="cli_call_1", name="get_weather", arguments={"city": "Rome"}),)
    assert prose == "Let me check.\n\nOne moment."


def test_fence_without_language_tag() -> None:
    text = '```\n{"tool": "search", "arguments": {"query": "cats"}}\n```'
    prose, calls = parse_tool_calls(text, TOOLS)
    assert [(c.name, c.arguments) for c in calls] == [("search", {"query": "cats"})]
    assert prose == ""


def test_pretty_printed_json_in_prose_without_fence() -> None:
    text = (
        "Sure, I will look that up:\n"
        "{\n"
        '  "tool": "get_weather",\n'
        '  "arguments": {\n'
        '    "city": "Rome",\n'
        '    "units": {"temp": "C"}\n'
        "  }\n"
        "}\n"
        "and report back."
    )
    prose, calls = parse_tool_calls(text, TOOLS)
    assert calls[0].arguments == {"city": "Rome", "units": {"temp": "C"}}
    assert len(calls) == 1
    assert prose == "Sure, I will look that up:\n\nand report back."
    assert "{" not in prose


def test_arguments_as_a_json_string() -> None:
    text = '```json\n{"tool": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}\n```'
    _, calls = parse_tool_calls(text, TOOLS)
    assert calls[0].arguments == {"city": "Rome"}
    assert calls[0].arguments_error is None


def test_openai_name_arguments_shape() -> None:
    _, calls = parse_tool_calls('{"name": "search", "arguments": {"query": "x"}}', TOOLS)
    assert [(c.name, c.arguments) for c in calls] == [("search", {"query": "x"})]


def test_openai_function_shape_with_string_arguments() -> None:
    text = (
        '{"id": "call_9", "type": "function", '
        '"function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}}'
    )
    _, calls = parse_tool_calls(text, TOOLS)
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("cli_call_1", "get_weather", {"city": "Oslo"})
    ]


def test_list_of_several_calls_gets_stable_ids() -> None:
    text = (
        "Both at once:\n```json\n"
        '[{"tool": "get_weather", "arguments": {"city": "Rome"}},\n'
        ' {"name": "search", "arguments": {"query": "Rome"}}]\n```'
    )
    prose, calls = parse_tool_calls(text, TOOLS)
    assert [(c.id, c.name) for c in calls] == [
        ("cli_call_1", "get_weather"),
        ("cli_call_2", "search"),
    ]
    assert prose == "Both at once:"
    assert parse_tool_calls(text, TOOLS) == (prose, calls)


def test_tool_calls_wrapper_object() -> None:
    text = '{"tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {}}}]}'
    _, calls = parse_tool_calls(text, TOOLS)
    assert [(c.name, c.arguments) for c in calls] == [("search", {})]


def test_several_fenced_blocks_in_order() -> None:
    text = (
        "```json\n"
        '{"tool": "search", "arguments": {"query": "a"}}\n'
        "```\n"
        "```json\n"
        '{"tool": "search", "arguments": {"query": "b"}}\n'
        '{"tool": "get_weather", "arguments": {"city": "c"}}\n'
        "```"
    )
    prose, calls = parse_tool_calls(text, TOOLS)
    assert [c.arguments for c in calls] == [{"query": "a"}, {"query": "b"}, {"city": "c"}]
    assert [c.id for c in calls] == ["cli_call_1", "cli_call_2", "cli_call_3"]
    assert prose == ""


def test_prose_without_json_has_no_calls() -> None:
    text = "It is sunny in Rome [citation needed] and {probably} warm."
    assert parse_tool_calls(text, TOOLS) == (text, ())


def test_json_that_is_not_a_known_tool_stays_prose() -> None:
    text = 'Here is the data:\n```json\n{"tool": "rm_rf", "arguments": {"path": "/"}}\n```'
    assert parse_tool_calls(text, TOOLS) == (text, ())


def test_plain_data_json_stays_prose() -> None:
    text = 'The config is {"name": "Bob", "age": 3} and [1, 2, 3].'
    assert parse_tool_calls(text, TOOLS) == (text, ())


def test_echoed_tool_spec_is_not_a_call() -> None:
    text = '{"name": "search", "description": "Search the web", "parameters": {"type": "object"}}'
    assert parse_tool_calls(text, TOOLS) == (text, ())


def test_mixed_list_is_not_taken_apart() -> None:
    text = '[{"tool": "search", "arguments": {}}, {"note": "not a call"}]'
    assert parse_tool_calls(text, TOOLS) == (text, ())


def test_no_tools_offered_means_no_calls() -> None:
    text = '{"tool": "search", "arguments": {}}'
    assert parse_tool_calls(text, ()) == (text, ())


def test_other_code_fences_survive() -> None:
    text = (
        "Example:\n```python\nprint({'a': 1})\n```\n"
        '```json\n{"tool": "search", "arguments": {"query": "q"}}\n```'
    )
    prose, calls = parse_tool_calls(text, TOOLS)
    assert len(calls) == 1
    assert prose == "Example:\n```python\nprint({'a': 1})\n```"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ('"{city: Rome}"', "not valid JSON"),
        ('"[1, 2]"', "not a JSON object"),
        ("42", "not a JSON object"),
    ],
)
def test_broken_arguments_give_a_call_with_an_error(arguments: str, error: str) -> None:
    _, calls = parse_tool_calls(f'{{"tool": "get_weather", "arguments": {arguments}}}', TOOLS)
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert calls[0].arguments == {}
    assert calls[0].arguments_error is not None
    assert error in calls[0].arguments_error


def test_broken_call_json_is_reported_not_dropped() -> None:
    text = 'Calling:\n```json\n{"tool": "get_weather", "arguments": {city: "Rome"}}\n```\nDone.'
    prose, calls = parse_tool_calls(text, TOOLS)
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {})]
    assert calls[0].arguments_error is not None
    assert "not valid JSON" in calls[0].arguments_error
    assert prose == "Calling:\n\nDone."


def test_missing_arguments_mean_no_arguments() -> None:
    _, calls = parse_tool_calls('{"tool": "search"}', TOOLS)
    assert [(c.name, c.arguments, c.arguments_error) for c in calls] == [("search", {}, None)]
