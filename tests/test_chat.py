"""``persona-bridge chat`` in a pseudo-terminal: line editing, history, the thinking line,
logs kept out of the conversation, and leaving with Ctrl-C or Ctrl-D (SPEC §13)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path

import pexpect

from bot.testing import FakeLLM, Fault, Hang, Reply, Streamed
from bot.testing.bridge import console_config

LEFT, UP, BACKSPACE, CTRL_C, CTRL_D = "\x1b[D", "\x1b[A", "\x7f", "\x03", "\x04"


def spawn(tmp_path: Path, fake_llm: FakeLLM) -> pexpect.spawn:
    """The real command on a console-only config (no Telegram bot anywhere)."""
    path = tmp_path / "config.json"
    if not path.exists():
        path.write_text(json.dumps(console_config(llm_base=fake_llm.openai_base)))
    env = {**os.environ, "TERM": "xterm-256color", "XDG_STATE_HOME": str(tmp_path / "state")}
    return pexpect.spawn(
        sys.executable,
        ["-m", "bot", "chat", "alice", "--config", str(path)],
        encoding="utf-8",
        timeout=30,
        env=env,
        dimensions=(24, 200),
    )


async def leave(child: pexpect.spawn, keys: str) -> str:
    """Send ``keys``, wait for the process to end; returns everything it printed."""
    child.send(keys)
    await child.expect(pexpect.EOF, async_=True)
    child.close()
    return str(child.before)


def stored_user_texts(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        rows = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    return [content for role, content in rows if role == "user"]


async def test_arrow_keys_edit_the_line_and_history_survives_a_restart(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    child = spawn(tmp_path, fake_llm)
    await child.expect("you> ", async_=True)
    child.send("Hello wrld" + LEFT * 3 + "o\r")
    await child.expect(r"Alice> \[model=m-id\] \[system=You are Alice.\] Hello world", async_=True)
    await child.expect("you> ", async_=True)
    child.send(UP + BACKSPACE * 5 + "there\r")  # the previous line, edited
    await child.expect(r"\] Hello there", async_=True)
    await child.expect("you> ", async_=True)
    output = await leave(child, CTRL_D)
    assert child.exitstatus == 0
    assert "Traceback" not in output
    assert [r.last_user_text for r in fake_llm.requests] == ["Hello world", "Hello there"]
    assert stored_user_texts(tmp_path) == ["Hello world", "Hello there"]

    # The next chat remembers what was typed before.
    child = spawn(tmp_path, fake_llm)
    await child.expect("you> ", async_=True)
    child.send(UP + "\r")
    await child.expect(r"\] Hello there", async_=True)
    await child.expect("you> ", async_=True)
    await leave(child, CTRL_D)
    assert child.exitstatus == 0
    assert stored_user_texts(tmp_path)[-1] == "Hello there"
    assert "\x1b" not in "".join(stored_user_texts(tmp_path))


async def test_ctrl_c_at_the_prompt_leaves_cleanly(tmp_path: Path, fake_llm: FakeLLM) -> None:
    child = spawn(tmp_path, fake_llm)
    await child.expect("you> ", async_=True)
    child.send("half a thou")
    output = await leave(child, CTRL_C)
    assert child.exitstatus == 0
    assert "Traceback" not in output
    assert "KeyboardInterrupt" not in output
    assert fake_llm.requests == []


async def test_thinking_line_then_ctrl_c_while_the_model_works(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.set_default("m-id", Hang())
    child = spawn(tmp_path, fake_llm)
    await child.expect("you> ", async_=True)
    child.send("take your time\r")
    await child.expect("Alice is thinking…", async_=True)
    await fake_llm.wait_for_requests(1, timeout=30)
    output = await leave(child, CTRL_C)
    assert child.exitstatus == 0
    assert "Traceback" not in output
    assert "Error" not in output


async def test_logs_go_to_a_file_and_help_lists_quit(tmp_path: Path, fake_llm: FakeLLM) -> None:
    fake_llm.script("m-id", Fault(500, "upstream exploded"), Reply("fine now"))
    child = spawn(tmp_path, fake_llm)
    log_file = tmp_path / "state" / "persona-bridge" / "chat.log"
    await child.expect(f"Logs: {log_file}", async_=True)
    await child.expect("you> ", async_=True)
    child.send("anyone there?\r")
    await child.expect("All models are unavailable right now; try again in 30 s.", async_=True)
    conversation = str(child.before)
    await child.expect("you> ", async_=True)
    child.send("/help\r")
    await child.expect("/quit — leave", async_=True)
    await child.expect("you> ", async_=True)
    output = await leave(child, "/quit\r")
    assert child.exitstatus == 0
    for text in (conversation, output):
        assert "upstream exploded" not in text
        assert "WARNING" not in text
        assert "ERROR" not in text
    assert "model m failed" in log_file.read_text()


async def test_tokens_are_printed_as_they_arrive(tmp_path: Path, fake_llm: FakeLLM) -> None:
    words = " ".join(f"w{n}" for n in range(40))
    fake_llm.set_default("m-id", Streamed(words, seconds=3.0))
    child = spawn(tmp_path, fake_llm)
    await child.expect("you> ", async_=True)
    child.send("stream please\r")
    loop = asyncio.get_running_loop()
    await child.expect("Alice> w0 w1 w2", async_=True)
    first_words_at = loop.time()
    await child.expect("w38 w39\r\n", async_=True)
    assert loop.time() - first_words_at >= 1.5  # the start was shown long before the end
    assert "\n" not in str(child.before)  # one answer line: the final only completed it
    await child.expect("you> ", async_=True)
    await leave(child, CTRL_D)
    assert child.exitstatus == 0
