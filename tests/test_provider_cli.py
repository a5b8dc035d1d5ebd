"""CLI providers against stand-in executables: stdin-only prompts, flags, env, kills, errors."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.config.schema import ModelEntry
from bot.errors import InvalidResponse, ProviderUnavailable
from bot.providers.cli import CHILD_ENV_ALLOW, CliProvider
from bot.types import ChatMessage, ChatRequest, ToolCall, ToolSpec

SECRET = "sk-test-cli-secret-0123456789"
OPAQUE_KEY = "opaque-key-no-known-shape-7f3a9c"  # caught only because it is the entry's key
WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
REQUEST = ChatRequest(
    system="You are Zed, a pirate. SYSTEM-MARKER-7f3a",
    messages=(ChatMessage(role="user", content="USER-MARKER-91b2 how is the weather?"),),
    tools=(WEATHER,),
)

CODEX_FLAGS = ["exec", "--json", "--skip-git-repo-check"]
# protocol, executable, sentinel model id, env var for the key, expected flags after argv[0]
FLAVOURS = [
    ("claude-cli", "claude", "claude-code", "ANTHROPIC_API_KEY", ["-p", "--output-format", "json"]),
    ("codex-cli", "codex", "codex", "OPENAI_API_KEY", [*CODEX_FLAGS, "-"]),
    ("gemini-cli", "gemini", "gemini-cli", "GEMINI_API_KEY", ["--output-format", "json"]),
]
EXPECTED_USAGE = {"claude": (15, 7), "codex": (21, 8), "gemini": (13, 5)}

# Records argv, stdin, env and cwd, then answers with answer.txt in the CLI's own format.
RECORDER = """
record = Path(RECORD)
(record / "argv.json").write_text(json.dumps(sys.argv))
(record / "stdin.txt").write_text(sys.stdin.read())
keys = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY")
seen = {k: os.environ.get(k) for k in keys}
seen["bridge_vars"] = [k for k in os.environ if k.startswith("PERSONA_BRIDGE_")]
seen["cwd"] = os.getcwd()
(record / "env.json").write_text(json.dumps(seen))
(record / "environ.json").write_text(json.dumps(dict(os.environ)))
answer = (record / "answer.txt").read_text()
if STYLE == "claude":
    usage = {"input_tokens": 11, "cache_read_input_tokens": 4, "output_tokens": 7}
    print(json.dumps({"type": "result", "is_error": False, "result": answer, "usage": usage}))
elif STYLE == "gemini":
    stats = {"models": {"gemini-x": {"tokens": {"prompt": 13, "candidates": 5}}}}
    print(json.dumps({"response": answer, "stats": stats}, indent=2))
else:
    print(json.dumps({"type": "thread.started", "thread_id": "t1"}))
    print(json.dumps({"type": "item.completed", "item": {"type": "reasoning", "text": "hmm"}}))
    print(json.dumps({"type": "item.completed", "item": {"type": "agent_message", "text": answer}}))
    usage = {"input_tokens": 21, "cached_input_tokens": 0, "output_tokens": 8}
    print(json.dumps({"type": "turn.completed", "usage": usage}))
"""


def write_script(path: Path, body: str, **constants: str) -> Path:
    header = f"#!{sys.executable}\nimport json, os, signal, subprocess, sys, time\n"
    header += "from pathlib import Path\n"
    header += "".join(f"{name} = {value!r}\n" for name, value in constants.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def entry(model: str, **kwargs: Any) -> ModelEntry:
    return ModelEntry(model_name="cli-test", model=model, **kwargs)


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory first on PATH, no executable overrides from the outer environment, and
    the providers' private working directories under ``tmp_path`` so none outlive the test."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("PATH", f"{path}{os.pathsep}{os.environ.get('PATH', '')}")
    for name in list(os.environ):
        if name.startswith("PERSONA_BRIDGE_"):
            monkeypatch.delenv(name)
    return path


@pytest.fixture
def record(tmp_path: Path) -> Path:
    path = tmp_path / "record"
    path.mkdir()
    (path / "answer.txt").write_text("Arr, fair winds today.")
    return path


def recorder(bin_dir: Path, record: Path, executable: str) -> Path:
    return write_script(bin_dir / executable, RECORDER, RECORD=str(record), STYLE=executable)


def recorded(record: Path) -> tuple[list[str], str, dict[str, Any]]:
    argv = json.loads((record / "argv.json").read_text())
    env = json.loads((record / "env.json").read_text())
    return argv, (record / "stdin.txt").read_text(), env


@pytest.mark.parametrize(("protocol", "executable", "sentinel", "key_env", "flags"), FLAVOURS)
async def test_happy_path_prompt_on_stdin_never_in_argv(
    bin_dir: Path,
    record: Path,
    protocol: str,
    executable: str,
    sentinel: str,
    key_env: str,
    flags: list[str],
) -> None:
    recorder(bin_dir, record, executable)
    async with CliProvider(entry(f"{protocol}/{sentinel}", api_key=SECRET)) as provider:
        response = await provider.chat(REQUEST)
    argv, stdin, env = recorded(record)

    assert response.text == "Arr, fair winds today."
    assert response.tool_calls == ()
    assert response.model_name == "cli-test"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (
        EXPECTED_USAGE[executable]
    )
    assert argv[1:] == flags  # the sentinel model id means: no --model flag
    assert "SYSTEM-MARKER-7f3a" in stdin
    assert "USER-MARKER-91b2" in stdin
    assert "get_weather" in stdin
    assert '"city"' in stdin  # the tool's schema
    joined = " ".join(argv)
    for secret_or_text in ("SYSTEM-MARKER", "USER-MARKER", "pirate", SECRET):
        assert secret_or_text not in joined
    assert env[key_env] == SECRET


@pytest.mark.parametrize(("protocol", "executable", "sentinel", "key_env", "flags"), FLAVOURS)
async def test_other_model_id_is_passed_with_model_flag(
    bin_dir: Path,
    record: Path,
    protocol: str,
    executable: str,
    sentinel: str,
    key_env: str,
    flags: list[str],
) -> None:
    recorder(bin_dir, record, executable)
    await CliProvider(entry(f"{protocol}/some-model-2")).chat(REQUEST)
    argv, _, env = recorded(record)
    index = argv.index("--model")
    assert argv[index + 1] == "some-model-2"
    assert argv.count("--model") == 1
    assert env[key_env] is None or env[key_env] != SECRET
    if protocol == "codex-cli":
        assert argv[-1] == "-"  # the stdin marker stays the last positional


async def test_tool_call_recovered_from_the_text_answer(bin_dir: Path, record: Path) -> None:
    recorder(bin_dir, record, "claude")
    (record / "answer.txt").write_text(
        'Let me look.\n```json\n{"tool": "get_weather", "arguments": {"city": "Rome"}}\n```'
    )
    response = await CliProvider(entry("claude-cli/claude-code")).chat(REQUEST)
    assert response.tool_calls == (
        ToolCall(id="cli_call_1", name="get_weather", arguments={"city": "Rome"}),
    )
    assert response.text == "Let me look."


async def test_transcript_renders_tool_calls_and_results(bin_dir: Path, record: Path) -> None:
    recorder(bin_dir, record, "gemini")
    call = ToolCall(id="cli_call_1", name="get_weather", arguments={"city": "Rome"})
    request = ChatRequest(
        system="sys",
        messages=(
            ChatMessage(role="user", content="weather in Rome?"),
            ChatMessage(role="assistant", content=None, tool_calls=(call,)),
            ChatMessage(role="tool", content="RESULT-22C-sunny", tool_call_id="cli_call_1"),
        ),
        tools=(WEATHER,),
    )
    await CliProvider(entry("gemini-cli/gemini-cli")).chat(request)
    _, stdin, _ = recorded(record)
    conversation = stdin.split("# Conversation", 1)[1]
    user_at = conversation.index("[user]\nweather in Rome?")
    call_at = conversation.index('{"tool": "get_weather", "arguments": {"city": "Rome"}}')
    result_at = conversation.index("[tool result: get_weather, call cli_call_1]\nRESULT-22C-sunny")
    assert user_at < call_at < result_at


async def test_child_env_and_working_directory(
    bin_dir: Path, record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSONA_BRIDGE_CHANNELS__TELEGRAM__TOKEN", "1:bot-token")
    monkeypatch.setenv("UNRELATED_VAR", "kept")
    recorder(bin_dir, record, "claude")
    provider = CliProvider(entry("claude-cli/claude-code"))
    await provider.chat(REQUEST)
    _, _, env = recorded(record)
    assert env["bridge_vars"] == []  # bot tokens in our own variables stay with us
    workdir = Path(env["cwd"])
    assert workdir.name.startswith("persona-bridge-cli-")
    assert workdir != Path(os.getcwd())
    assert _listing(workdir) == []  # exists, and empty
    await provider.aclose()
    assert _listing(workdir) is None


# Secrets a bridge process may hold in its environment; none may reach an agent CLI.
BRIDGE_SECRETS = {
    "TG_ALICE_TOKEN": "5550001:AAbot-token-in-the-bridge-env-0123456789",
    "PERSONA_BRIDGE_CHANNELS__TELEGRAM__TOKEN": "5550002:AAanother-bot-token-0123456789",
    "ANTHROPIC_API_KEY": "bridge-env-anthropic-key-1",  # e.g. for an HTTP anthropic entry
    "OPENAI_API_KEY": "bridge-env-openai-key-2",
    "GEMINI_API_KEY": "bridge-env-gemini-key-3",
    "ANTHROPIC_AUTH_TOKEN": "bridge-env-anthropic-token-4",
    "AWS_SECRET_ACCESS_KEY": "bridge-env-aws-secret-5",
    "NODE_AUTH_TOKEN": "bridge-env-npm-token-6",
    "CREDENTIALS_DIRECTORY": "/run/credentials/persona-bridge.service",
}
ALLOWED_HERE = {
    "LANG": "C.UTF-8",
    "LC_TIME": "C",
    "TZ": "Europe/Rome",
    "XDG_CONFIG_HOME": "/tmp/xdg-config",
    "NODE_OPTIONS": "--max-old-space-size=512",
}
OWN_SETTING = {"claude": "CLAUDE_CONFIG_DIR", "codex": "CODEX_HOME", "gemini": "GEMINI_CLI_HOME"}
BASE_URL_ENV = {
    "claude": "ANTHROPIC_BASE_URL",
    "codex": "OPENAI_BASE_URL",
    "gemini": "GOOGLE_GEMINI_BASE_URL",
}


@pytest.mark.parametrize(("protocol", "executable", "sentinel", "key_env", "flags"), FLAVOURS)
async def test_child_env_is_an_allowlist_plus_its_own_key(
    bin_dir: Path,
    record: Path,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
    executable: str,
    sentinel: str,
    key_env: str,
    flags: list[str],
) -> None:
    for name, value in {**BRIDGE_SECRETS, **ALLOWED_HERE}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(OWN_SETTING[executable], "/srv/cli-state")
    for other in set(OWN_SETTING.values()) - {OWN_SETTING[executable]}:
        monkeypatch.setenv(other, "/srv/another-clis-state")
    recorder(bin_dir, record, executable)
    own = entry(f"{protocol}/{sentinel}", api_key=SECRET, api_base="https://llm.example/v1")
    async with CliProvider(own) as provider:
        await provider.chat(REQUEST)
    environ = json.loads((record / "environ.json").read_text())

    leaked = [v for v in BRIDGE_SECRETS.values() if any(v in seen for seen in environ.values())]
    assert leaked == []
    assert "CREDENTIALS_DIRECTORY" not in environ
    assert not [name for name in environ if name.startswith("PERSONA_BRIDGE_")]
    assert environ[key_env] == SECRET  # its own entry's key, under the name the CLI reads
    assert environ[BASE_URL_ENV[executable]] == "https://llm.example/v1"
    for name, value in {**ALLOWED_HERE, OWN_SETTING[executable]: "/srv/cli-state"}.items():
        assert environ[name] == value
    assert environ["PATH"] == os.environ["PATH"]
    assert not CHILD_ENV_ALLOW & set(BRIDGE_SECRETS)
    expected = CHILD_ENV_ALLOW | {
        "NO_COLOR", OWN_SETTING[executable], key_env, BASE_URL_ENV[executable],
        "LC_CTYPE",  # Python's UTF-8 coercion may set it in the child itself
    }  # fmt: skip
    unexpected = {
        name for name in environ if name not in expected and not name.startswith(("LC_", "XDG_"))
    }
    assert unexpected == set()


async def test_child_env_without_a_key_has_no_key_at_all(
    bin_dir: Path, record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CLI entry without api_key uses the CLI's own login, never a key of ours."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", BRIDGE_SECRETS["ANTHROPIC_API_KEY"])
    recorder(bin_dir, record, "claude")
    await CliProvider(entry("claude-cli/claude-code")).chat(REQUEST)
    environ = json.loads((record / "environ.json").read_text())
    assert "ANTHROPIC_API_KEY" not in environ
    assert "ANTHROPIC_BASE_URL" not in environ


def _listing(path: Path) -> list[str] | None:
    return sorted(os.listdir(path)) if path.is_dir() else None


async def test_executable_override_env(
    tmp_path: Path, bin_dir: Path, record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = write_script(
        tmp_path / "elsewhere" / "my-claude", RECORDER, RECORD=str(record), STYLE="claude"
    )
    monkeypatch.setenv("PERSONA_BRIDGE_CLAUDE_CLI_BIN", str(script))
    response = await CliProvider(entry("claude-cli/claude-code")).chat(REQUEST)
    argv, _, _ = recorded(record)
    assert argv[0] == str(script)
    assert response.text == "Arr, fair winds today."


async def test_codex_plain_text_output_is_the_answer(bin_dir: Path) -> None:
    write_script(bin_dir / "codex", "sys.stdin.read()\nprint('Plain answer, no JSON.')\n")
    response = await CliProvider(entry("codex-cli/codex")).chat(REQUEST)
    assert response.text == "Plain answer, no JSON."


async def test_nonzero_exit_reports_stderr_and_stdout_without_the_key(bin_dir: Path) -> None:
    write_script(
        bin_dir / "claude",
        """
        sys.stdin.read()
        print("STDOUT-SNIPPET partial answer")
        print("x" * 2000 + " STDERR-SNIPPET bad key " + KEY, file=sys.stderr)
        sys.exit(3)
        """,
        KEY=SECRET,
    )
    with pytest.raises(ProviderUnavailable) as caught:
        await CliProvider(entry("claude-cli/claude-code", api_key=SECRET)).chat(REQUEST)
    message = str(caught.value)
    assert "exited with 3" in message
    assert "STDERR-SNIPPET bad key [redacted]" in message
    assert "STDOUT-SNIPPET partial answer" in message
    assert SECRET not in message
    assert len(message) < 1300  # only the tails of the streams
    assert caught.value.model_name == "cli-test"


async def test_key_cut_by_the_tail_is_still_redacted(bin_dir: Path) -> None:
    """The key sits where the 500-character tail starts: masking must come before cutting."""
    write_script(
        bin_dir / "claude",
        """
        sys.stdin.read()
        print("bad key " + KEY + " " + "y" * 480, file=sys.stderr)
        sys.exit(1)
        """,
        KEY=OPAQUE_KEY,
    )
    with pytest.raises(ProviderUnavailable) as caught:
        await CliProvider(entry("claude-cli/claude-code", api_key=OPAQUE_KEY)).chat(REQUEST)
    assert OPAQUE_KEY[-12:] not in str(caught.value)


async def test_stderr_quoting_a_bot_token_it_read_somewhere_is_redacted(bin_dir: Path) -> None:
    token = "7000001:AAsomeone-elses-bot-token-0123456789"
    write_script(
        bin_dir / "gemini",
        "sys.stdin.read()\nprint('found ' + TOKEN, file=sys.stderr)\nsys.exit(2)\n",
        TOKEN=token,
    )
    with pytest.raises(ProviderUnavailable) as caught:
        await CliProvider(entry("gemini-cli/gemini-cli")).chat(REQUEST)
    assert token not in str(caught.value)
    assert "found [redacted]" in str(caught.value)


def _alive(pid: int) -> bool:
    """False once ``pid`` has exited. A zombie has exited too: when PID 1 (as in some
    containers) does not reap orphans, a killed grandchild stays a zombie forever."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


async def _until(condition: Callable[[], bool]) -> None:
    """Poll a condition, bounded: a broken kill fails the test instead of hanging it."""
    for _ in range(1000):  # 10 s
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 10 s")


async def test_timeout_kills_the_whole_process_group(tmp_path: Path, bin_dir: Path) -> None:
    pids = tmp_path / "pids"
    write_script(
        bin_dir / "claude",
        """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited: SIGKILL must follow
        child = subprocess.Popen(["sleep", "60"])
        Path(PIDS + ".tmp").write_text(f"{os.getpid()} {child.pid}")
        os.replace(PIDS + ".tmp", PIDS)
        time.sleep(60)
        """,
        PIDS=str(pids),
    )
    provider = CliProvider(entry("claude-cli/claude-code", timeout_s=0.5))
    task = asyncio.create_task(provider.chat(REQUEST))
    await _until(lambda: pids.exists() or task.done())
    assert not task.done(), "the stand-in did not start before the timeout"
    leader, grandchild = (int(p) for p in pids.read_text().split())
    assert _alive(grandchild)

    with pytest.raises(ProviderUnavailable, match=r"timed out after 0\.5s"):
        await task
    await _until(lambda: not _alive(grandchild))
    assert not _alive(leader)  # reaped by asyncio, so it is gone entirely
    with pytest.raises(ProcessLookupError):
        os.kill(leader, 0)


async def test_missing_executable_is_named(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(bin_dir))  # empty: no claude anywhere
    with pytest.raises(ProviderUnavailable, match=r"'claude' not found") as caught:
        await CliProvider(entry("claude-cli/claude-code")).chat(REQUEST)
    assert "PERSONA_BRIDGE_CLAUDE_CLI_BIN" in str(caught.value)

    monkeypatch.setenv("PERSONA_BRIDGE_GEMINI_CLI_BIN", "/nonexistent/gemini-x")
    with pytest.raises(ProviderUnavailable, match="/nonexistent/gemini-x"):
        await CliProvider(entry("gemini-cli/gemini-cli")).chat(REQUEST)


@pytest.mark.parametrize(
    ("protocol", "executable", "output"),
    [
        ("claude-cli/claude-code", "claude", "<html>502 Bad Gateway</html>"),
        ("gemini-cli/gemini-cli", "gemini", "Loaded cached credentials.\nnot json {"),
        ("claude-cli/claude-code", "claude", ""),
        ("claude-cli/claude-code", "claude", json.dumps({"result": "  ", "is_error": False})),
        ("gemini-cli/gemini-cli", "gemini", json.dumps(["response", "list"])),
        ("codex-cli/codex", "codex", json.dumps({"type": "turn.completed", "usage": {}})),
    ],
)
async def test_garbage_or_empty_output_is_invalid_response(
    bin_dir: Path, protocol: str, executable: str, output: str
) -> None:
    write_script(bin_dir / executable, "sys.stdin.read()\nprint(OUTPUT)\n", OUTPUT=output)
    with pytest.raises(InvalidResponse):
        await CliProvider(entry(protocol)).chat(REQUEST)


@pytest.mark.parametrize(
    ("protocol", "executable", "output"),
    [
        ("claude-cli/claude-code", "claude", {"is_error": True, "result": "Credit balance low"}),
        ("gemini-cli/gemini-cli", "gemini", {"error": {"message": "Credit balance low"}}),
        ("codex-cli/codex", "codex", {"type": "turn.failed", "error": {"message": "Credit bal"}}),
    ],
)
async def test_error_reported_in_json_is_unavailable(
    bin_dir: Path, protocol: str, executable: str, output: dict[str, Any]
) -> None:
    body = "sys.stdin.read()\nprint(OUTPUT)\n"
    write_script(bin_dir / executable, body, OUTPUT=json.dumps(output))
    with pytest.raises(ProviderUnavailable, match="Credit bal"):
        await CliProvider(entry(protocol)).chat(REQUEST)


def test_non_cli_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="not a CLI protocol"):
        CliProvider(entry("openai/gpt-4.1"))
