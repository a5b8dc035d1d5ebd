"""One turn's stream: model deltas to the preview, tool rounds as a progress line, /stop.

``TurnStream`` sits between the fallback chain (which sends it every delta) and the
channel's ``Preview``. It keeps the text the current model round has written: that is what
the person has seen, so it is what is stored when they ``/stop`` the turn, or when the model
fails after its text reached the chat (no other model is asked then; the answer ends with a
short note instead).

``/stop`` must not wait in the chat's lane behind the very turn it stops: ``RunningTurns``
finds the running turn by chat key the moment the command arrives and cancels the task
generating it. The cancellation closes the model's HTTP stream (no more tokens billed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Hashable, Iterable, Iterator
from typing import Any, TypeVar

from bot.streaming.preview import Preview
from bot.types import TextDelta, ToolCallDelta

T = TypeVar("T")

STOPPED_NOTE = "_(stopped)_"
BROKEN_NOTE = "_(the answer broke off here: the model failed mid-reply)_"


def progress_line(tool_names: Iterable[str]) -> str:
    names = ", ".join(dict.fromkeys(tool_names)) or "a tool"
    return f"⏳ working: {names}…"


def _with_note(text: str, note: str) -> str:
    if text.count("```") % 2:  # a code block the cut left open: close it before the note
        text += "\n```"
    return f"{text}\n\n{note}" if text.strip() else note


def mark_stopped(text: str) -> str:
    return _with_note(text, STOPPED_NOTE)


def mark_broken(text: str) -> str:
    return _with_note(text, BROKEN_NOTE)


class TurnStream:
    def __init__(self, preview: Preview | None = None) -> None:
        self._preview = preview
        # Models stream only when someone watches; /stop works either way.
        self.streams = preview is not None
        self.text = ""  # what the current model round has written so far
        self.note: str | None = None
        self.stopped = False
        self._task: asyncio.Task[Any] | None = None

    async def on_event(self, event: TextDelta | ToolCallDelta) -> None:
        """The chain's stream sink."""
        if isinstance(event, TextDelta):
            self.text += event.text
            self.note = None
        elif event.name:
            self.note = progress_line([event.name])
        else:
            return  # argument fragments change nothing visible
        self._show()

    def new_round(self) -> None:
        """A new model call starts: what the last round wrote led to tool calls."""
        self.text = ""

    def tools_running(self, names: Iterable[str]) -> None:
        self.note = progress_line(names)
        self._show()

    def _show(self) -> None:
        if self._preview is not None:
            self._preview.show(self.text, self.note)

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run the turn's work as its own task, so ``stop`` can cancel just that."""
        task: asyncio.Task[T] = asyncio.create_task(work)
        self._task = task
        try:
            return await task
        finally:
            self._task = None

    def stop(self) -> bool:
        """Cancel the running work; False when nothing runs."""
        if self._task is None or self._task.done():
            return False
        self.stopped = True
        self._task.cancel()
        return True


class RunningTurns:
    """The turns generating right now, by chat key."""

    def __init__(self) -> None:
        self._turns: dict[Hashable, TurnStream] = {}

    @contextlib.contextmanager
    def running(self, key: Hashable, stream: TurnStream) -> Iterator[TurnStream]:
        self._turns[key] = stream
        try:
            yield stream
        finally:
            if self._turns.get(key) is stream:
                del self._turns[key]

    def stop(self, key: Hashable) -> bool:
        """Stop the chat's running turn; False when it has none."""
        stream = self._turns.get(key)
        return stream is not None and stream.stop()
