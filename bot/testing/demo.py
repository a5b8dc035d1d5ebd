"""Offline demo: two personas on two bots, with no network and no keys.

Starts the fake Bot API and the fake LLM on 127.0.0.1, runs the real bridge against them,
sends each bot a message as a user would, and prints what each bot answered.
Run: python -m bot.testing.demo
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from bot.testing.bridge import BotPlan, BridgeProcess, bridge_config
from bot.testing.fake_llm import FakeLLM
from bot.testing.fake_telegram import FakeTelegram

PLANS = [
    BotPlan(
        "alice",
        "1111111:demo-alice-token-AAAAAAAAAAAAAAAAAAAA",
        "alice",
        "You are Alice, a travel planner.",
        "strong-cloud-model",
    ),
    BotPlan(
        "bob",
        "2222222:demo-bob-token-BBBBBBBBBBBBBBBBBBBBBB",
        "bob",
        "You are Bob, a patient cook.",
        "small-local-model",
    ),
]
MESSAGES = {"alice": "Three days in Lisbon?", "bob": "How long do I boil an egg?"}


async def demo() -> None:
    async with FakeTelegram() as telegram, FakeLLM() as llm:
        for plan in PLANS:
            telegram.add_bot(plan.token, f"{plan.bot_id}_bot")
        with tempfile.TemporaryDirectory() as tmp:
            config = bridge_config(
                telegram_base=telegram.base_url, llm_base=llm.openai_base, bots=PLANS
            )
            bridge = BridgeProcess.write(Path(tmp), config, args=("--log-level", "INFO"))
            async with bridge:
                for plan in PLANS:
                    await telegram.wait_for_poll(plan.token, timeout=30)
                for chat_id, plan in enumerate(PLANS, start=1):
                    print(f"you → @{plan.bot_id}_bot: {MESSAGES[plan.bot_id]}")
                    telegram.inject_message(plan.token, chat_id=chat_id, text=MESSAGES[plan.bot_id])
                    [reply] = await telegram.wait_for_sent(
                        plan.token, 1, chat_id=chat_id, timeout=30
                    )
                    print(f"@{plan.bot_id}_bot → you: {reply.text}\n")
            print(
                "The fake LLM echoes the model id and persona it was sent: each bot reached "
                "its own agent's model."
            )


if __name__ == "__main__":
    asyncio.run(demo())
