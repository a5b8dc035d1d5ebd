"""`persona-bridge demo` (issue 12): talkable, offline, routing and fallback, clean exits."""

from __future__ import annotations

import asyncio
import sys

import pexpect

DEMO = [sys.executable, "-m", "bot", "demo"]


async def test_demo_reads_the_users_lines_and_shows_routing_and_fallback() -> None:
    process = await asyncio.create_subprocess_exec(
        *DEMO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    script = "Where to in May?\n/break\nAnd in June?\n@bob_bot Soft eggs?\n"
    out, err = await asyncio.wait_for(process.communicate(script.encode()), 90)
    text = out.decode()

    assert process.returncode == 0, err.decode()
    assert "Traceback" not in text + err.decode()
    alice, bob = (
        "[system=You are Alice, a travel planner.]",
        "[system=You are Bob, a patient cook.]",
    )
    assert f"@alice_bot → you: [model=strong-cloud-model] {alice} Where to in May?" in text
    # After /break, Alice's chain falls back to the local model, still as Alice.
    assert f"@alice_bot → you: [model=small-local-model] {alice} And in June?" in text
    assert f"@bob_bot → you: [model=small-local-model] {bob} Soft eggs?" in text


async def test_demo_in_a_terminal_leaves_on_ctrl_c_and_on_ctrl_d() -> None:
    for leave in ("ctrl-c", "ctrl-d"):
        child = pexpect.spawn(DEMO[0], DEMO[1:], encoding="utf-8", timeout=60)
        try:
            await child.expect_exact("you → @alice_bot> ", async_=True)
            child.sendline("Hello there")
            await child.expect_exact(
                "[system=You are Alice, a travel planner.] Hello there", async_=True
            )
            await child.expect_exact("you → @alice_bot> ", async_=True)
            if leave == "ctrl-c":
                child.sendintr()
            else:
                child.sendeof()
            await child.expect(pexpect.EOF, async_=True)
            rest = child.before or ""
        finally:
            child.close()
        assert child.exitstatus == 0, (leave, rest)
        assert "Traceback" not in rest, rest
