"""The floor: the least a bot can do per message on the same fakes, as a child process.

For every bot: long-poll getUpdates, and for each message one model POST (OpenAI shape)
and one sendMessage, over httpx — the same HTTP client library the bridge uses. Nothing
else: no store, no typing action, no rendering, no routing. Replies in a chat keep their
order (each waits for the previous one in its chat), as the bridge's do.

``bench/message_path.py`` runs it in the same run as the bridge and divides the bridge's
CPU per message by this one's. Run by hand:
    python bench/floor.py TELEGRAM_BASE LLM_BASE TOKEN=MODEL=PERSONA ...
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import httpx

SLOTS = asyncio.Semaphore(32)


async def answer(
    client: httpx.AsyncClient,
    model_client: httpx.AsyncClient,
    telegram: str,
    llm: str,
    token: str,
    model: str,
    persona: str,
    message: dict[str, Any],
    before: asyncio.Task[None] | None,
) -> None:
    if before is not None:
        await before  # the chat's earlier message first, as the bridge's lanes do
    async with SLOTS:  # the bridge's lanes run at most 32 turns at once
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": persona},
                {"role": "user", "content": message["text"]},
            ],
        }
        response = await model_client.post(f"{llm}/chat/completions", json=body)
        text = response.json()["choices"][0]["message"]["content"]
        params = {"chat_id": message["chat"]["id"], "text": text}
        await client.post(f"{telegram}/bot{token}/sendMessage", json=params)


async def poll(model_client: httpx.AsyncClient, telegram: str, llm: str, bot: str) -> None:
    token, model, persona = bot.split("=", 2)
    # The bridge's pools: 16 connections per bot for sends, one for the long poll, and
    # one model pool shared by all bots; at most 32 turns at once (httpcore's pool does work
    # per queued request per connection, so an unbounded queue would cost more than the turn).
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with (
        httpx.AsyncClient(timeout=60, limits=limits) as client,
        httpx.AsyncClient(timeout=60) as poller,
    ):
        await poll_with(client, poller, model_client, telegram, llm, token, model, persona)


async def poll_with(
    client: httpx.AsyncClient,
    poller: httpx.AsyncClient,
    model_client: httpx.AsyncClient,
    telegram: str,
    llm: str,
    token: str,
    model: str,
    persona: str,
) -> None:
    offset = 0
    last_in_chat: dict[int, asyncio.Task[None]] = {}
    url = f"{telegram}/bot{token}/getUpdates"
    while True:
        response = await poller.post(url, json={"offset": offset, "timeout": 30})
        for update in response.json()["result"]:
            offset = update["update_id"] + 1
            message = update.get("message")
            if message is None or "text" not in message:
                continue
            chat = message["chat"]["id"]
            before = last_in_chat.get(chat)
            last_in_chat[chat] = asyncio.create_task(
                answer(client, model_client, telegram, llm, token, model, persona, message, before)
            )
        for chat, task in list(last_in_chat.items()):
            if task.done():
                del last_in_chat[chat]


async def main(telegram: str, llm: str, bots: list[str]) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        polls = [asyncio.create_task(poll(client, telegram, llm, bot)) for bot in bots]
        await stop.wait()
        for task in polls:
            task.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
