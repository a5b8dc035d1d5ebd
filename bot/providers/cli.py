"""Agent CLIs as providers (protocols claude-cli, codex-cli, gemini-cli).

Each call runs the CLI once. The whole prompt (system prompt, tool descriptions, transcript)
goes in as one text document on **stdin**, never in argv: argv is visible to every local user
through ``ps``/``/proc`` and long argvs hit ``ARG_MAX``. An ``api_key`` travels in the child's
environment for the same reason. The child gets its own session (``start_new_session``) so a
timeout can kill the whole process *group*: agent CLIs spawn helpers (node workers, shells)
that would otherwise outlive the kill and hold the pipes open. The child runs in an empty
private directory.

An agent CLI runs shell tools on chat text, so one prompt injection reads its whole
environment. The child therefore gets an *allowlisted* environment (``CHILD_ENV_ALLOW``,
``CHILD_ENV_ALLOW_PREFIXES`` and the flavour's own ``env_allow``) plus its own entry's
``api_key`` under the name that CLI reads, and ``api_base`` as its base-URL variable: never a
bot token, another entry's key, ``$CREDENTIALS_DIRECTORY`` or our ``PERSONA_BRIDGE_*``
variables, and not even a same-named key from our environment (it may be another entry's).
Whatever the CLI prints on failure is redacted before it becomes an error message.

These CLIs offer no function-calling channel we can drive, so tools are described in the
prompt and calls come back as JSON in the answer text (``text_tools.parse_tool_calls``).

Assumptions about the real CLIs (the contract above matters more than exact flags):

* ``claude -p --output-format json`` reads the prompt from stdin when ``-p`` has no argument
  and prints one JSON object: ``result``, ``is_error``, ``usage`` (``input_tokens``,
  ``cache_*_input_tokens``, ``output_tokens``). Key: ANTHROPIC_API_KEY; base URL:
  ANTHROPIC_BASE_URL.
* ``codex exec --json --skip-git-repo-check -`` reads stdin (``-``) and prints JSON lines; the
  answer is the last ``item.completed`` with ``item.type == agent_message`` (``item.text``;
  older builds: ``msg.type == agent_message``, ``msg.message``), usage in ``turn.completed``,
  failures as ``turn.failed``/``error``. Stdout without JSON lines is the answer as plain
  text. Key: OPENAI_API_KEY; base URL: OPENAI_BASE_URL.
* ``gemini --output-format json`` runs non-interactively when stdin is not a terminal and
  prints one JSON object: ``response``, ``stats.models.<id>.tokens.{prompt,candidates}``, or
  ``error.message``. Key: GEMINI_API_KEY; base URL: GOOGLE_GEMINI_BASE_URL.

Model ids ``claude-code``/``codex``/``gemini-cli`` mean "the CLI's own default": no ``--model``
flag then. ``max_tokens`` is not passed: none of the CLIs takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.config.schema import ModelEntry
from bot.errors import InvalidResponse, ProviderError, ProviderUnavailable
from bot.providers import wire_values
from bot.providers.base import Provider
from bot.providers.text_tools import parse_tool_calls
from bot.redaction import Redactor
from bot.types import ChatMessage, ChatRequest, ChatResponse, ToolSpec, Usage

KILL_GRACE_S = 1.0  # between SIGTERM and SIGKILL on timeout
TAIL_CHARS = 500  # how much of stderr/stdout an error message quotes
# What every agent CLI child may inherit from our environment; nothing else passes.
CHILD_ENV_ALLOW = frozenset(
    {
        *("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "TZ", "TMPDIR"),
        # The CLI must reach its API through the same egress and CAs as the bridge.
        *("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"),
        *("SSL_CERT_FILE", "SSL_CERT_DIR"),
        # The CLIs are Node programs; NODE_AUTH_TOKEN and friends are *not* allowed.
        *("NODE_OPTIONS", "NODE_EXTRA_CA_CERTS", "NODE_PATH"),
    }
)
CHILD_ENV_ALLOW_PREFIXES = ("LC_", "XDG_")  # locale categories; XDG base directories
_DECODER = json.JSONDecoder()
TOOL_INSTRUCTIONS = """# Tools

You can call the tools below (and no others). To call one, answer with a JSON object in a
```json fence; for several calls, write one fenced block per call:

```json
{"tool": "<name>", "arguments": {<arguments matching the schema>}}
```

Then stop: the results come back in the conversation as [tool result] messages."""


@dataclass(frozen=True)
class CliOutput:
    """What a CLI printed, reduced to the answer text, usage, or its own error report."""

    text: str
    usage: Usage = field(default_factory=Usage)
    error: str | None = None


@dataclass(frozen=True)
class CliFlavour:
    """How to drive one agent CLI; ``parse`` raises ValueError on output it cannot use."""

    protocol: str
    executable: str
    base_args: tuple[str, ...]
    json_args: tuple[str, ...]
    default_model: str
    api_key_env: str
    parse: Callable[[str], CliOutput]
    trailing_args: tuple[str, ...] = ()
    base_url_env: str = ""  # set from the entry's api_base, never inherited
    env_allow: tuple[str, ...] = ()  # the CLI's own non-secret settings it may inherit

    @property
    def override_env(self) -> str:
        """E.g. PERSONA_BRIDGE_CLAUDE_CLI_BIN: a name or path used instead of ``executable``."""
        return f"PERSONA_BRIDGE_{self.protocol.upper().replace('-', '_')}_BIN"

    def argv(self, executable: str, model_id: str) -> list[str]:
        model = [] if model_id == self.default_model else ["--model", model_id]
        return [executable, *self.base_args, *self.json_args, *model, *self.trailing_args]


def _parse_claude(stdout: str) -> CliOutput:
    data = _json_object(stdout)
    text = _text(data.get("result"))
    if data.get("is_error"):
        return CliOutput(text, error=text or str(data.get("subtype") or "is_error"))
    usage = _dict(data.get("usage"))
    prompt = sum(
        _int(usage.get(k))
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return CliOutput(text, Usage(prompt, _int(usage.get("output_tokens"))))


def _parse_gemini(stdout: str) -> CliOutput:
    data = _json_object(stdout)
    if data.get("error"):
        error = data["error"]
        return CliOutput("", error=str(_dict(error).get("message") or error))
    response = data.get("response")
    models = _dict(_dict(data.get("stats")).get("models")).values()
    tokens = [_dict(_dict(m).get("tokens")) for m in models]
    usage = Usage(
        sum(_int(t.get("prompt")) for t in tokens), sum(_int(t.get("candidates")) for t in tokens)
    )
    return CliOutput(_text(response), usage)


def _parse_codex(stdout: str) -> CliOutput:
    text, usage, error, saw_json = "", Usage(), None, False
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        saw_json = True
        item, msg = _dict(event.get("item")), _dict(event.get("msg"))
        if event.get("type") == "item.completed" and item.get("type") == "agent_message":
            text = _text(item.get("text"))
        elif msg.get("type") == "agent_message":
            text = _text(msg.get("message"))
        elif event.get("type") == "turn.completed":
            used = _dict(event.get("usage"))
            usage = Usage(_int(used.get("input_tokens")), _int(used.get("output_tokens")))
        elif event.get("type") in ("turn.failed", "error"):
            error = str(_dict(event.get("error")).get("message") or event.get("message") or event)
    if not saw_json:  # plain-text mode: the answer is all of stdout
        return CliOutput(stdout.strip())
    return CliOutput(text, usage, None if text else error)


_JSON_OUTPUT = ("--output-format", "json")
# fmt: off
FLAVOURS = {
    f.protocol: f
    for f in (
        # protocol, executable, base_args, json_args, default_model, api_key_env, parse
        CliFlavour("claude-cli", "claude", ("-p",), _JSON_OUTPUT, "claude-code",
                   "ANTHROPIC_API_KEY", _parse_claude, base_url_env="ANTHROPIC_BASE_URL",
                   env_allow=("CLAUDE_CONFIG_DIR", "DISABLE_TELEMETRY", "DISABLE_AUTOUPDATER",
                              "DISABLE_ERROR_REPORTING",
                              "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")),
        CliFlavour("codex-cli", "codex", ("exec",), ("--json", "--skip-git-repo-check"), "codex",
                   "OPENAI_API_KEY", _parse_codex, trailing_args=("-",),  # "-": prompt on stdin
                   base_url_env="OPENAI_BASE_URL", env_allow=("CODEX_HOME",)),
        CliFlavour("gemini-cli", "gemini", (), _JSON_OUTPUT, "gemini-cli",
                   "GEMINI_API_KEY", _parse_gemini, base_url_env="GOOGLE_GEMINI_BASE_URL",
                   env_allow=("GEMINI_CLI_HOME", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION")),
    )
}
# fmt: on


class CliProvider(Provider):
    """One model_list entry served by a locally installed agent CLI, one process per call."""

    def __init__(self, entry: ModelEntry) -> None:
        if entry.protocol not in FLAVOURS:
            raise ValueError(f"{entry.protocol!r} is not a CLI protocol")
        self._entry = entry
        self._flavour = FLAVOURS[entry.protocol]
        self._workdir: str | None = None
        # The child knows no secret but its own key; shapes catch what it read elsewhere.
        self._redactor = Redactor([entry.api_key.get_secret_value()] if entry.api_key else [])

    async def chat(self, request: ChatRequest) -> ChatResponse:
        flavour = self._flavour
        executable = os.environ.get(flavour.override_env) or flavour.executable
        path = shutil.which(executable)
        if path is None:
            raise self._error(
                ProviderUnavailable,
                f"executable {executable!r} not found on PATH (set {flavour.override_env})",
            )
        argv = flavour.argv(path, self._entry.model_id)
        stdout = await self._run(argv, render_prompt(request).encode())
        try:
            output = flavour.parse(stdout)
        except ValueError as exc:
            raise self._error(
                InvalidResponse,
                f"{executable} printed no usable answer ({exc}): {self._tail(stdout)}",
            ) from exc
        if output.error is not None:
            raise self._error(ProviderUnavailable, f"{executable} failed: {output.error}")
        text, calls = parse_tool_calls(output.text, [t.name for t in request.tools])
        if not text and not calls:
            raise self._error(InvalidResponse, f"{executable} gave an empty answer")
        return ChatResponse(
            text=text, tool_calls=calls, usage=output.usage, model_name=self._entry.model_name
        )

    async def aclose(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def _run(self, argv: list[str], prompt: bytes) -> str:
        """Run the CLI to completion and return its stdout; stderr only matters on failure."""
        name = os.path.basename(argv[0])
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._child_env(),
                cwd=self._cwd(),
                start_new_session=True,
            )
        except OSError as exc:  # e.g. removed or made non-executable since which() saw it
            raise self._error(ProviderUnavailable, f"cannot start {argv[0]!r}: {exc}") from exc
        timeout = self._entry.timeout_s
        try:
            out, err = await asyncio.wait_for(proc.communicate(prompt), timeout)
        except TimeoutError as exc:
            await _kill_group(proc)
            raise self._error(ProviderUnavailable, f"{name} timed out after {timeout:g}s") from exc
        except BaseException:  # cancelled: never leave an agent running behind us
            _signal_group(proc.pid, signal.SIGKILL)
            raise
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        code = proc.returncode
        if code != 0:
            how = f"was killed by signal {-code}" if code and code < 0 else f"exited with {code}"
            raise self._error(
                ProviderUnavailable,
                f"{name} {how}; stderr: {self._tail(stderr)}; stdout: {self._tail(stdout)}",
            )
        return stdout

    def _child_env(self) -> dict[str, str]:
        """Only the allowlisted part of our environment, plus this entry's own settings."""
        allowed = CHILD_ENV_ALLOW.union(self._flavour.env_allow)
        env = {
            name: value
            for name, value in os.environ.items()
            if name in allowed or name.startswith(CHILD_ENV_ALLOW_PREFIXES)
        }
        env["NO_COLOR"] = "1"
        if self._entry.api_key is not None:
            env[self._flavour.api_key_env] = self._entry.api_key.get_secret_value()
        if self._entry.api_base is not None and self._flavour.base_url_env:
            env[self._flavour.base_url_env] = self._entry.api_base
        return env

    def _tail(self, text: str) -> str:
        """Redacted first: cutting could leave half a key that no longer matches."""
        return _tail(self._redactor.redact(text))

    def _cwd(self) -> str:
        if self._workdir is None or not os.path.isdir(self._workdir):  # tmp cleaners exist
            self._workdir = tempfile.mkdtemp(prefix="persona-bridge-cli-")
        return self._workdir

    def _error(self, cls: type[ProviderError], message: str) -> ProviderError:
        return cls(self._redactor.redact(message), model_name=self._entry.model_name)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the group, give it a moment, SIGKILL whatever is left, reap the leader.

    Both waits are bounded: before Python 3.12 ``wait()`` also waits for the pipes to close,
    and a helper that left the group (its own setsid) could hold them open for ever.
    """
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
    finally:  # even if the leader exited, its children may still be in the group
        _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_GRACE_S)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pgid, sig)


def render_prompt(request: ChatRequest) -> str:
    """The stdin document; public so tests and ``models check`` can inspect it."""
    parts = []
    if request.system.strip():
        parts.append(f"# Instructions\n\n{request.system.strip()}")
    if request.tools:
        parts.append(_render_tools(request.tools))
    names: dict[str, str] = {}
    transcript = [_render_message(m, names) for m in request.messages]
    parts.append("# Conversation\n\n" + "\n\n".join(transcript))
    turn = "# Your turn\n\nWrite the assistant's next message"
    turn += ": plain text, or tool calls as described above." if request.tools else "."
    parts.append(turn)
    return "\n\n".join(parts) + "\n"


def _render_tools(tools: tuple[ToolSpec, ...]) -> str:
    lines = [TOOL_INSTRUCTIONS]
    for tool in tools:
        schema = json.dumps(tool.parameters, ensure_ascii=False)
        lines += ["", f"## {tool.name}", tool.description, f"Arguments (JSON schema): {schema}"]
    return "\n".join(lines)


def _render_message(message: ChatMessage, names: dict[str, str]) -> str:
    content = (message.content or "").strip()
    if message.role == "tool":
        call_id = message.tool_call_id or "?"
        return f"[tool result: {names.get(call_id, 'tool')}, call {call_id}]\n{content}"
    blocks = [content] if content else []
    for call in message.tool_calls:
        names[call.id] = call.name
        body = json.dumps({"tool": call.name, "arguments": call.arguments}, ensure_ascii=False)
        blocks.append(f"(tool call {call.id})\n```json\n{body}\n```")
    return f"[{message.role}]\n" + "\n".join(blocks)


def _json_object(stdout: str) -> dict[str, Any]:
    """The JSON object a CLI printed last; tolerates log lines before it, pretty-printed or not."""
    text = stdout.strip()
    starts = [i for i, ch in enumerate(text) if ch == "{" and (i == 0 or text[i - 1] == "\n")]
    for start in starts:
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and not text[end:].strip():
            return value
    raise ValueError("output is not a JSON object" if text else "output is empty")


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= TAIL_CHARS else "…" + text[-TAIL_CHARS:]


def _text(value: Any) -> str:
    """An answer field: text or absent; anything else means we misread the output."""
    if value is None or isinstance(value, str):
        return value or ""
    raise ValueError("the answer field is not text")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    """A token count; anything unusable (see ``wire_values.token_count``) counts 0."""
    return wire_values.token_count(value) or 0
