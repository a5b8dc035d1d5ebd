"""The terminal as a Channel, for ``persona-bridge chat AGENT_ID``.

Lines typed become messages of the chat ``console/local``; replies are printed token by
token as the model writes them (the final answer then prints only what is left). The rest —
router, sessions, model chains, commands — is exactly what Telegram uses.

Line editing and history come from the stdlib ``readline``. It blocks, and only on the main
thread does Ctrl-C reach it as KeyboardInterrupt with the terminal restored, so the
terminal keeps the main thread and the bridge's event loop runs in a second thread: typed
lines cross over with ``run_coroutine_threadsafe``, answers come back through ``send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TextIO

from bot.channels.base import Channel, DeliveryLog, InboundMessage, MessageHandler
from bot.channels.console_files import parse_attach, read_local
from bot.config.schema import CONSOLE_CHANNEL
from bot.streaming.preview import KeepPreview, Preview
from bot.types import Attachment

CHANNEL = CONSOLE_CHANNEL
CHAT_ID = "local"
PROMPT = "you> "
QUIT = ("/quit", "/exit")
QUIT_HELP = (
    "/attach PATH [caption] — send a file (image, voice note, document)\n"
    "/quit — leave (Ctrl-D and Ctrl-C leave too)"
)
HISTORY_LINES = 1000
# After /quit or Ctrl-D a running spawned task may finish; after Ctrl-C nothing waits.
QUIT_GRACE_S = 5.0
CLEAR_LINE = "\r\x1b[K"

Start = Callable[[], Awaitable[None]]
Stop = Callable[[float], Awaitable[None]]


def state_dir() -> Path:
    """Where chat keeps its history and log: ``$XDG_STATE_HOME/persona-bridge``."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "persona-bridge"


def _load_readline() -> ModuleType | None:
    try:
        return importlib.import_module("readline")
    except ImportError:  # not built on every platform; input() then reads plain lines
        return None


class ConsoleChannel(Channel):
    name = CHANNEL

    def __init__(
        self, agent_name: str, *, out: TextIO = sys.stdout, history: Path | None = None
    ) -> None:
        self._agent_name = agent_name
        self._out = out
        self._history = history
        # Escape sequences only for a person at a terminal, not for a pipe or a file.
        self._live = out.isatty()
        self._readline = _load_readline()
        self._handler: MessageHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # the two threads write to one terminal
        self._pending = 0
        self._answered = threading.Event()
        self._at_prompt = False
        self._history_loaded = False
        self._printed: str | None = None  # the streamed text already on the terminal

    # --- the Channel seam, called on the bridge's event loop ---------------------------

    async def start(self, handler: MessageHandler) -> None:
        self._handler = handler
        self._loop = asyncio.get_running_loop()

    async def send(
        self,
        chat_id: str,
        text: str,
        *,
        topic_id: str | None = None,
        delivery: DeliveryLog | None = None,
        replace: str | None = None,
    ) -> None:
        with self._lock:
            printed, self._printed = self._printed, None
            if replace is not None and printed is not None:
                # Streamed: finish the line, or print the whole answer if its end differs.
                rest = text[len(printed) :] if text.startswith(printed) else None
                self._write(f"{rest}\n" if rest is not None else f"\n{self._agent_name}> {text}\n")
            else:
                if self._at_prompt:  # e.g. a spawned task's result while the person types
                    self._write(CLEAR_LINE if self._live else "\n")
                self._write(f"{self._agent_name}> {text}\n")
                if self._at_prompt:
                    self._write(PROMPT + self._line_buffer())
            self._pending = max(0, self._pending - 1)
            if self._pending == 0:
                self._answered.set()

    async def download(self, attachment: Attachment, max_bytes: int) -> bytes:
        return await read_local(attachment, max_bytes)

    def preview(
        self,
        chat_id: str,
        topic_id: str | None,
        chat_type: str,
        *,
        message_id: str | None = None,
        keep: KeepPreview | None = None,
    ) -> Preview | None:
        return _TokenPrinter(self)

    def print_tokens(self, text: str) -> None:
        """The answer so far: print what is new since the last call."""
        with self._lock:
            if self._printed is None:
                self._write(f"{CLEAR_LINE if self._live else ''}{self._agent_name}> ")
                self._printed = ""
            if not text.startswith(self._printed):  # a new model round after a tool call
                self._write("\n")
                self._printed = ""
            self._write(text[len(self._printed) :])
            self._printed = text

    async def stop(self) -> None:
        """Nothing to stop here: reading ends in ``converse`` on the main thread."""

    @contextlib.asynccontextmanager
    async def typing(self, chat_id: str, topic_id: str | None = None) -> AsyncIterator[None]:
        if not self._live:
            yield
            return
        with self._lock:
            self._write(f"{self._agent_name} is thinking…")
        try:
            yield
        finally:
            with self._lock:
                if self._printed is None:  # streamed tokens replaced the line already
                    self._write(CLEAR_LINE)

    # --- the terminal, on the main thread ----------------------------------------------

    def converse(self, start: Start, stop: Stop, *, logs: str) -> None:
        """Talk until /quit, Ctrl-D or Ctrl-C; the bridge runs meanwhile in a second thread.

        Raises what ``start`` raised (the store cannot open, …) after stopping the thread.
        """
        bridge = _BridgeThread(start, stop)
        grace = QUIT_GRACE_S
        try:
            bridge.begin()
            self._load_history()
            self._write(
                f"Talking to {self._agent_name}. /help lists commands, /quit or Ctrl-D leaves."
                f"\nLogs: {logs}\n"
            )
            self._read_lines()
        except KeyboardInterrupt:
            self._write("\n")
            grace = 0.0
        finally:
            with _interrupts_ignored():
                bridge.end(grace)
                self._save_history()

    def _read_lines(self) -> None:
        while True:
            try:
                self._at_prompt = True
                line = input(PROMPT)
            except EOFError:  # Ctrl-D, or the end of piped input
                self._write("\n")
                return
            finally:
                self._at_prompt = False
            text = line.strip()
            if text.lower() in QUIT:
                return
            if text:
                self._submit(text)
                if text.split()[0].lower() in ("/help", "/start"):
                    self._write(QUIT_HELP + "\n")

    def _submit(self, text: str) -> None:
        """Hand one line to the bridge and wait (interruptibly) until it is answered."""
        handler = self._handler
        if handler is None or self._loop is None:
            raise RuntimeError("converse() before the bridge started the console channel")
        base = InboundMessage(channel=CHANNEL, chat_id=CHAT_ID, sender_id="console", text=text)
        message = parse_attach(text, base)  # /attach PATH [caption]
        if isinstance(message, str):
            self._write(f"{message}\n")
            return
        with self._lock:
            self._pending += 1
            self._answered.clear()

        async def deliver() -> None:
            await handler(message)

        asyncio.run_coroutine_threadsafe(deliver(), self._loop).result()
        self._answered.wait()

    def _load_history(self) -> None:
        if self._readline is None or self._history is None:
            return
        self._history_loaded = True
        self._readline.set_history_length(HISTORY_LINES)
        with contextlib.suppress(OSError):  # none yet, or unreadable: start without
            self._readline.read_history_file(self._history)

    def _save_history(self) -> None:
        # Not loaded (the bridge failed to start): writing would empty the file.
        if self._readline is None or self._history is None or not self._history_loaded:
            return
        try:
            self._readline.write_history_file(self._history)
            self._history.chmod(0o600)  # what a person typed is theirs alone
        except OSError:
            pass  # history is a convenience; losing it must not spoil leaving

    def _line_buffer(self) -> str:
        return str(self._readline.get_line_buffer()) if self._readline is not None else ""

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


class _BridgeThread:
    """The bridge's event loop in a second thread, started and ended from the main one."""

    def __init__(self, start: Start, stop: Stop) -> None:
        self._start, self._stop = start, stop
        self._started = threading.Event()
        self._leave = threading.Event()  # a threading one: set from the main thread any time
        self._failure: BaseException | None = None
        self._grace = 0.0
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve()), name="bridge", daemon=True
        )

    def begin(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    def end(self, grace_s: float) -> None:
        self._grace = grace_s
        self._leave.set()
        self._thread.join()

    async def _serve(self) -> None:
        try:
            await self._start()
        except BaseException as exc:  # start() closed what it opened; report the cause
            self._failure = exc
            return
        finally:
            self._started.set()
        await asyncio.to_thread(self._leave.wait)
        await self._stop(self._grace)


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """While leaving, a second Ctrl-C must not turn a clean exit into a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _TokenPrinter(Preview):
    """Prints each delta as it arrives; the final answer then completes the line."""

    def __init__(self, console: ConsoleChannel) -> None:
        self._console = console
        self._used = False

    def show(self, text: str, note: str | None = None) -> None:
        if text:
            self._used = True
            self._console.print_tokens(text)

    async def finish(self) -> None:
        return None

    @property
    def message_id(self) -> str | None:
        return "console" if self._used else None
