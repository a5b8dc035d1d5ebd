"""The floor of a streamed reply: httpx reading the same SSE stream and nothing else.

One child process: for each user text given, a streamed OpenAI-shaped POST to the fake LLM,
the body read as ``bot.providers.sse`` reads it (after a chunk the stream waited for, a
``GATHER_S`` pause while tokens pile up) and each ``data:`` line decoded with one
``json.loads`` to take its text — the least any bridge that streams through httpx must do.
No preview, no rendering, no store. Prints the CPU milliseconds of each reply (utime +
stime of this process around it) as one JSON list.

``bench/streaming.py`` runs it beside the bridge on the same fakes. Run by hand:
    python bench/stream_floor.py LLM_BASE TEXT ...
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys

import httpx

from bot.providers.sse import GATHER_S, WAITED_S


def cpu_ms() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return (used.ru_utime + used.ru_stime) * 1000


async def one(client: httpx.AsyncClient, llm: str, text: str) -> str:
    body = {"model": "floor", "messages": [{"role": "user", "content": text}], "stream": True}
    loop = asyncio.get_running_loop()
    answer, rest = [], b""
    async with client.stream("POST", f"{llm}/chat/completions", json=body) as response:
        chunks = response.aiter_bytes()
        while True:
            asked = loop.time()
            try:
                data = await anext(chunks)
            except StopAsyncIteration:
                break
            waited = loop.time() - asked > WAITED_S
            *lines, rest = (rest + data).split(b"\n")
            for line in lines:
                if line.startswith(b"data: {"):
                    for choice in json.loads(line[6:])["choices"]:
                        answer.append(choice["delta"].get("content") or "")
            if waited and not data.endswith(b"[DONE]\n\n"):
                await asyncio.sleep(GATHER_S)
    return "".join(answer)


async def main(llm: str, texts: list[str]) -> None:
    async with httpx.AsyncClient(timeout=60.0) as client:
        costs = []
        for text in texts:
            before = cpu_ms()
            await one(client, llm, text)
            costs.append(cpu_ms() - before)
    print(json.dumps(costs))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
