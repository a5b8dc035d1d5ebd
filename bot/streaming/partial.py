"""Markdown cut mid-stream, made to render the same way from one preview to the next.

CommonMark already shows an unclosed ``**`` or `` ` `` as literal text and closes an open
code fence at the end of the input, so most of a half-written answer renders stably. What
flickers is the very end: a lone ``*`` that will become ``**``, the first backticks of a
closing fence shown inside the code block, a half-typed ``[link](http``. Those trailing
markers are held back until the next delta says what they are; the final answer is always
rendered from the whole text.
"""

from __future__ import annotations

import re

# Markup characters at the very end (after any text), and a last line that is only the
# beginning of a closing code fence.
_TRAILING_MARKUP = re.compile(r"[*_~`\[\]()!<>#|-]+\s*$")
_FENCE_START = re.compile(r"\n\s{0,3}`{1,3}[\w+#.-]*\s*$")
_OPEN_LINK = re.compile(r"\[[^\]\n]*\]\([^)\s]*$")


def stable_markdown(text: str) -> str:
    """``text`` without the markup its last delta may not have finished."""
    text = _FENCE_START.sub("\n", text)
    text = _OPEN_LINK.sub("", text)
    return _TRAILING_MARKUP.sub("", text)
