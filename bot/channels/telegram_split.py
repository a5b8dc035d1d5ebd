"""Cut styled text into Telegram-sized messages and write each one as Telegram HTML.

:mod:`bot.channels.telegram_render` turns Markdown into *pieces*: runs of visible text, each
with the stack of tags it sits in (outermost first). Because a tag only exists as part of a
piece's style, no cut can ever land inside a tag: every chunk is written on its own, opening
the tags its first piece needs and closing whatever is still open at its end — so formatting
(and a ``<pre><code class="language-x">`` block) that spans a cut is closed and reopened with
the same attributes. Lengths are Telegram's: UTF-16 code units of the visible text.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import NamedTuple

__all__ = [
    "Piece",
    "Style",
    "Tag",
    "escape_attr",
    "escape_text",
    "shared_prefix",
    "split_pieces",
]

_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_ZWJ = "\u200d"
_MAX_CLUSTER_BACKOFF = 32  # a hard cut steps back at most this far to keep an emoji whole


class Tag(NamedTuple):
    """One Telegram HTML tag; ``attrs`` is already escaped (``' href="…"'``).

    A tuple, so that comparing two styles (tuples of tags) stays in C.
    """

    name: str
    attrs: str = ""
    key: int = 0  # tells two separate blocks apart, so adjacent ones are never merged

    def open(self) -> str:
        return f"<{self.name}{self.attrs}>"

    def close(self) -> str:
        return f"</{self.name}>"


Style = tuple[Tag, ...]
Piece = tuple[str, Style]


def shared_prefix(first: Style, second: Style) -> Style:
    """The outer tags two styles have in common."""
    size = 0
    for mine, theirs in zip(first, second, strict=False):
        if mine != theirs:
            break
        size += 1
    return first[:size]


def escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_attr(text: str) -> str:
    return escape_text(text).replace('"', "&quot;")


class _Units:
    """UTF-16 length of any slice of one string in O(log n): code points + astral chars."""

    def __init__(self, text: str) -> None:
        self.astral = [m.start() for m in _ASTRAL.finditer(text)]

    def between(self, start: int, stop: int) -> int:
        return stop - start + bisect_left(self.astral, stop) - bisect_left(self.astral, start)

    def fit(self, start: int, stop: int, limit: int) -> int:
        """The largest ``end <= stop`` with ``between(start, end) <= limit``."""
        high = min(stop, start + limit)
        if self.between(start, high) <= limit:
            return high
        low = start  # invariant: between(start, low) <= limit < between(start, high)
        while high - low > 1:
            mid = (low + high) // 2
            if self.between(start, mid) <= limit:
                low = mid
            else:
                high = mid
        return low


def _clings(char: str) -> bool:
    """True if ``char`` belongs to the grapheme before it (ZWJ, variation selector, …)."""
    code = ord(char)
    return (
        char in "\u200d\ufe0e\ufe0f"
        or 0x1F3FB <= code <= 0x1F3FF  # skin tones
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences
        or unicodedata.combining(char) != 0
    )


def _cut(text: str, start: int, end: int) -> tuple[int, int]:
    """Where to end a chunk that may not reach past ``end``, and where the next one starts.

    A blank line (block boundary) beats a line break, which beats a space; only a candidate
    in the second half of the window counts, so a cut never leaves a tiny chunk behind.
    Failing all three, cut hard — never between a character and what clings to it.
    """
    floor = start + max(1, (end - start) // 2)
    for sep in ("\n\n", "\n", " "):
        pos = text.rfind(sep, floor, end + len(sep))
        if pos >= floor:
            resume = pos + len(sep)
            if sep == " ":
                while resume < len(text) and text[resume] == " ":
                    resume += 1
            return pos, resume
    cut = end
    for _ in range(_MAX_CLUSTER_BACKOFF):
        if cut - 1 <= start or not (_clings(text[cut]) or text[cut - 1] == _ZWJ):
            break
        cut -= 1
    return cut, cut


def chunk_ranges(text: str, limit: int) -> list[tuple[int, int]]:
    """Split ``text`` into ``[start, stop)`` ranges of at most ``limit`` UTF-16 units each.

    Ranges never start with a line break nor end in whitespace, and are never empty.
    """
    units = _Units(text)
    size = len(text)
    ranges: list[tuple[int, int]] = []
    start = 0
    while start < size:
        while start < size and text[start] == "\n":
            start += 1
        if start >= size:
            break
        end = units.fit(start, size, limit)
        if end <= start:  # limit < 2 and an astral char: it cannot fit, send it alone
            end = start + 1
        stop, resume = (size, size) if end >= size else _cut(text, start, end)
        while stop > start and text[stop - 1].isspace():
            stop -= 1
        if stop > start:
            ranges.append((start, stop))
        start = resume
    return ranges


def _write(pieces: list[Piece], starts: list[int], start: int, stop: int) -> str:
    """Telegram HTML for the visible text ``[start, stop)``; every tag opened is closed."""
    out: list[str] = []
    open_tags: Style = ()
    index = bisect_right(starts, start) - 1
    while index < len(pieces) and starts[index] < stop:
        text, style = pieces[index]
        offset = starts[index]
        index += 1
        segment = text[max(start - offset, 0) : stop - offset]
        if not segment:
            continue
        if style != open_tags:
            keep = len(shared_prefix(open_tags, style))
            out.extend(tag.close() for tag in reversed(open_tags[keep:]))
            out.extend(tag.open() for tag in style[keep:])
            open_tags = style
        out.append(escape_text(segment))
    out.extend(tag.close() for tag in reversed(open_tags))
    return "".join(out)


def split_pieces(pieces: list[Piece], limit: int) -> list[tuple[str, str]]:
    """``(html, plain)`` for each chunk of at most ``limit`` UTF-16 units of visible text."""
    starts = list(accumulate((len(text) for text, _ in pieces), initial=0))
    text = "".join(text for text, _ in pieces)
    return [
        (_write(pieces, starts, start, stop), text[start:stop])
        for start, stop in chunk_ranges(text, limit)
    ]
