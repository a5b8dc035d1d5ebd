"""Server-sent event lines off a streamed httpx response, in batches of one network read.

Why not ``aiter_lines``: a model writing at a human pace sends each token in its own TCP
segment, and taking them as they come costs an event-loop wake-up plus httpcore's per-read
work (a cancel scope, the socket read) for every token: 250 to 450 ms of CPU for a
1,000-token reply against 20 ms unstreamed. So after a chunk the stream had to wait for, it
pauses ``GATHER_S`` while the next tokens pile up in the socket buffer, and one read then
takes them all: four reads a second at most, whatever the model's pace. Nobody sees the
pause: previews update at most every stream_interval_s (1 s, 0.3 s at least). Chunks one
read already brought are passed on at once, the first chunk is never delayed, and no pause
follows the stream's terminator.

Lines end at CRLF, LF or CR (the SSE spec), never at the other characters
``str.splitlines`` knows: U+2028 may sit raw inside a JSON string.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator, Callable

import httpx

# Pause after a chunk the stream waited for: about 4 network reads a second at most. Each
# read costs a round of the event loop and httpcore's per-read work; at 0.1 s a paced
# 1,000-token reply cost 115 ms of CPU, at 0.25 s 77 ms (bench/streaming.py). Previews
# update at most every 0.3 s (stream_interval_s), so none shows the difference.
GATHER_S = 0.25
# A chunk that took longer than this came from the network, not from what one read left.
WAITED_S = 0.001


class SseLines:
    """Bytes in, complete lines out; a line cut by a read boundary waits for its end."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._rest = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._rest + self._decoder.decode(data)
        hold = ""
        if text.endswith("\r"):  # maybe the first half of CRLF: decide with the next read
            text, hold = text[:-1], "\r"
        lines = _split(text)
        self._rest = lines.pop() + hold
        return lines

    def flush(self) -> list[str]:
        """The last line when the stream ended without a line break."""
        text, self._rest = self._rest + self._decoder.decode(b"", True), ""
        lines = _split(text)
        if lines[-1] == "":
            lines.pop()
        return lines


def _split(text: str) -> list[str]:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


async def sse_batches(
    response: httpx.Response, finished: Callable[[], bool], gather_s: float = GATHER_S
) -> AsyncIterator[list[str]]:
    """The response's lines, a body chunk's worth at a time. After a chunk the stream had
    to wait for, it pauses ``gather_s`` unless ``finished()`` says the terminator arrived
    (asked after the batch was used): chunks that were already there come at once."""
    lines = SseLines()
    loop = asyncio.get_running_loop()
    chunks = response.aiter_bytes()
    while True:
        asked = loop.time()
        try:
            data = await anext(chunks)
        except StopAsyncIteration:
            break
        waited = loop.time() - asked > WAITED_S
        batch = lines.feed(data)
        if batch:
            yield batch
        if waited and not finished():
            await asyncio.sleep(gather_s)
    batch = lines.flush()
    if batch:
        yield batch
