"""The terminal as a Channel, for ``persona-bridge chat AGENT_ID``.

Lines typed on stdin become messages of the chat ``console/local``; replies are printed.
The rest — router, sessions, model chains, commands — is exactly what Telegram uses.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from bot.channels.base import Channel, DeliveryLog, InboundMessage, MessageHandler

CHANNEL = "console"
CHAT_ID = "local"
QUIT = ("/quit", "/exit")


class ConsoleChannel(Channel):
    name = CHANNEL

    def __init__(self, agent_name: str, *, out: TextIO = sys.stdout) -> None:
        self._agent_name = agent_name
        self._out = out
        self._reader: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()  # set on end of input or /quit
        self._waiting = 0

    async def start(self, handler: MessageHandler) -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self._write(f"Talking to {self._agent_name}. /new starts over, /quit leaves.\n")
        self._prompt()
        self._reader = asyncio.create_task(self._read(reader, handler), name="console input")

    async def _read(self, reader: asyncio.StreamReader, handler: MessageHandler) -> None:
        try:
            while line := await reader.readline():
                text = line.decode(errors="replace").strip()
                if text in QUIT:
                    break
                if not text:
                    self._prompt()
                    continue
                self._waiting += 1
                await handler(
                    InboundMessage(channel=CHANNEL, chat_id=CHAT_ID, sender_id="console", text=text)
                )
        finally:
            self.finished.set()

    async def send(
        self,
        chat_id: str,
        text: str,
        *,
        topic_id: str | None = None,
        delivery: DeliveryLog | None = None,
    ) -> None:
        self._write(f"{self._agent_name}> {text}\n")
        self._waiting = max(0, self._waiting - 1)
        if not self.finished.is_set() and self._waiting == 0:
            self._prompt()

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def _prompt(self) -> None:
        self._write("you> ")

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()
