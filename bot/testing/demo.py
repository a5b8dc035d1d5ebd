"""``persona-bridge demo``: two personas on two bots, talkable, with no network and no keys.

Starts the fake Bot API and the fake LLM on 127.0.0.1, runs the real bridge against them
as a child process, shows each bot answering through its own agent and model (routing),
then reads lines from the terminal and sends them as a Telegram user would. ``/break``
makes Alice's cloud model fail so the next answer comes from her fallback. The fake
LLM answers deterministically: it echoes the model id and persona it was sent.
Run: ``persona-bridge demo`` (or ``python -m bot.testing.demo``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
from pathlib import Path

from bot.testing.bridge import BotPlan, BridgeProcess, bridge_config
from bot.testing.fake_llm import Echo, FakeLLM, Fault
from bot.testing.fake_telegram import FakeTelegram

CLOUD, LOCAL = "strong-cloud-model", "small-local-model"
PLANS = [
    BotPlan(
        "alice",
        "1111111:demo-alice-token-AAAAAAAAAAAAAAAAAAAA",
        "alice",
        "You are Alice, a travel planner.",
        CLOUD,
    ),
    BotPlan(
        "bob",
        "2222222:demo-bob-token-BBBBBBBBBBBBBBBBBBBBBB",
        "bob",
        "You are Bob, a patient cook.",
        LOCAL,
    ),
]
MESSAGES = {"alice": "Three days in Lisbon?", "bob": "How long do I boil an egg?"}
REPLY_WAIT_S = 30.0
HELP = """\
Type a message and press Enter: it goes to the bot named in the prompt.
  /to alice, /to bob   talk to the other bot (or start a line with @bob_bot)
  /break               Alice's cloud model starts failing: watch her fall back to Bob's model
  /heal                the cloud model works again (after its cooldown)
  /status, /new        go to the bot, as in Telegram
  /demo                this help;  /quit, Ctrl-D or Ctrl-C to leave"""


class TerminalLines:
    """Lines from stdin without blocking the loop, and without a thread that holds a lock.

    A daemon thread reads fd 0 with ``os.read`` (no ``sys.stdin`` buffer lock, so leaving on
    Ctrl-C never waits for it); ``None`` means end of input.
    """

    def __init__(self, fd: int = 0) -> None:
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        threading.Thread(target=self._pump, name="demo-stdin", daemon=True).start()

    async def next(self) -> str | None:
        return await self._queue.get()

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                if pending:
                    self._put(pending.decode("utf-8", "replace"))
                self._put(None)
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if not self._put(line.decode("utf-8", "replace").rstrip("\r")):
                    return

    def _put(self, line: str | None) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, line)
        except RuntimeError:  # the loop is gone: the demo has ended
            return False
        return True


class DemoChat:
    """The conversation: which bot is addressed, and what each message brought back."""

    def __init__(self, telegram: FakeTelegram, llm: FakeLLM) -> None:
        self.telegram, self.llm = telegram, llm
        self.target = PLANS[0]

    async def send(self, plan: BotPlan, text: str) -> None:
        chat_id = PLANS.index(plan) + 1
        before = len(self.telegram.sent(plan.token, chat_id))
        self.telegram.inject_message(plan.token, chat_id=chat_id, text=text, user_id=chat_id)
        replies = await self.telegram.wait_for_sent(
            plan.token, before + 1, chat_id=chat_id, timeout=REPLY_WAIT_S
        )
        for reply in replies[before:]:
            print(f"@{plan.bot_id}_bot → you: {reply.text}\n", flush=True)

    async def handle(self, line: str) -> bool:
        """One line from the user; False when the user wants to leave."""
        text = line.strip()
        if not text:
            return True
        if text in ("/quit", "/exit"):
            return False
        if text == "/demo":
            print(HELP)
        elif text.startswith("/to"):
            self._switch(text.removeprefix("/to").strip())
        elif text == "/break":
            self.llm.set_default(CLOUD, Fault(503, "the demo broke the cloud model"))
            print("Alice's cloud model now answers 503. Her chain falls back to Bob's model.")
        elif text == "/heal":
            self.llm.set_default(CLOUD, Echo())
            print("The cloud model works again; it is tried once its cooldown ends.")
        elif text.startswith("@"):
            handle, _, rest = text.partition(" ")
            if self._switch(handle.lstrip("@").removesuffix("_bot")) and rest.strip():
                await self.send(self.target, rest.strip())
        else:
            await self.send(self.target, text)
        return True

    def _switch(self, name: str) -> bool:
        for plan in PLANS:
            if plan.bot_id == name.lower():
                self.target = plan
                return True
        print(f"no bot {name!r}: use {', '.join(p.bot_id for p in PLANS)}")
        return False

    def prompt(self) -> None:
        print(f"you → @{self.target.bot_id}_bot> ", end="", flush=True)


def demo_config(telegram: FakeTelegram, llm: FakeLLM) -> dict[str, object]:
    config = bridge_config(telegram_base=telegram.base_url, llm_base=llm.openai_base, bots=PLANS)
    # Alice: cloud first, Bob's local model as her fallback: what /break shows.
    alice = config["agents"]["list"][0]
    alice["model"] = {"primary": "m-alice", "fallbacks": ["m-bob"]}
    return config


async def demo() -> None:
    print("persona-bridge demo: a fake Telegram and a fake LLM on this machine, the real bridge.")
    async with FakeTelegram() as telegram, FakeLLM() as llm:
        for plan in PLANS:
            telegram.add_bot(plan.token, f"{plan.bot_id}_bot")
        with tempfile.TemporaryDirectory() as tmp:
            bridge = BridgeProcess.write(
                Path(tmp), demo_config(telegram, llm), args=("--log-level", "INFO")
            )
            async with bridge:
                for plan in PLANS:
                    await telegram.wait_for_poll(plan.token, timeout=REPLY_WAIT_S)
                print(
                    "@alice_bot → agent alice (cloud model, falls back to the local one); "
                    "@bob_bot → agent bob (local model).\n"
                    "The fake LLM echoes the model id and persona it was sent.\n"
                )
                chat = DemoChat(telegram, llm)
                for plan in PLANS:
                    print(f"you → @{plan.bot_id}_bot: {MESSAGES[plan.bot_id]}")
                    await chat.send(plan, MESSAGES[plan.bot_id])
                print("Each bot reached its own agent's model.\n")
                await _converse(chat)


async def _converse(chat: DemoChat) -> None:
    print(HELP)
    lines = TerminalLines()
    echo = not os.isatty(0)  # piped input: show it, so the transcript reads as a dialogue
    while True:
        chat.prompt()
        line = await lines.next()
        if line is None:
            print()
            return
        if echo:
            print(line)
        if not await chat.handle(line):
            return


def main() -> int:
    """Run the demo; Ctrl-C and end of input both leave quietly with exit code 0."""
    try:
        asyncio.run(demo())
    except KeyboardInterrupt:
        print()
    except TimeoutError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
