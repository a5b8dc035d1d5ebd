"""Markdown, as LLMs write it, to Telegram HTML (``parse_mode="HTML"``) in sendable chunks.

The Markdown is parsed by markdown-it-py (CommonMark plus ``~~strike~~`` and GFM tables) and
the token stream is turned into *pieces* — visible text plus the tags around it — which
:mod:`bot.channels.telegram_split` cuts into messages of at most ``limit`` UTF-16 units.

Telegram knows no lists, headings or tables, so: headings are bold lines; bullet items are
``• item`` lines and ordered items ``1. item`` lines, indented two spaces per nesting level;
tables become a ``<pre>`` block of aligned columns (cells as plain text, since a monospaced
grid is the only layout Telegram keeps); ``---`` is a ``———`` line; an image is a link to
itself labelled with its alt text. Raw HTML from the model is shown as text. Only http(s),
tg and mailto links become links. Blockquotes are not nested (Telegram forbids it): an inner
quote is part of the outer one. Inline code is never inside bold/italic/strike (Telegram does
not allow code inside other entities); inside a link it is shown as plain link text.

Hostile input is bounded: lone surrogates become U+FFFD, control characters are dropped, and
input markdown-it-py would mangle or take too long on is sent as plain text: more than
``MAX_MARKDOWN_CHARS`` characters or ``MAX_MARKDOWN_LINES`` lines (table cells count as
lines), or nesting deeper than its limit (it silently drops what lies below). Inline parsing
has a fixed work budget (markup characters, brackets weighted: link labels are its slowest
path); paragraphs past the budget are shown literally. The limits count characters, not
time, so the output for a given input is always the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from itertools import count
from typing import TYPE_CHECKING, Any

from bot.channels.telegram_split import Style, Tag, escape_attr, shared_prefix, split_pieces

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

__all__ = ["TELEGRAM_LIMIT", "RenderedChunk", "render_markdown", "visible_length"]

TELEGRAM_LIMIT = 4096  # UTF-16 code units of *visible* text per message
MAX_MARKDOWN_CHARS = 1 << 20  # longer input is sent as plain text, unparsed …
MAX_MARKDOWN_LINES = 200_000  # … and so is input with more lines + table cells than this
INLINE_WORK_BUDGET = 200_000  # ≈ 3 s of markdown-it-py at its slowest per unit
EMPTY_REPLY = "…"
_BLOCK_NESTING = 256  # lists use two levels each: 100-deep lists still parse
_MARKUP = str.maketrans("", "", "\n!#$%&*+-:<=>@[\\]^_`{}~")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_TRAILING_SPACE = re.compile("[ \t]+(?=\n)")
_SAFE_HREF = re.compile("(?:https?|tg|mailto):", re.IGNORECASE)
_LANGUAGE = re.compile(r"[\w+#.-]{1,32}")


@cache
def _parsers() -> tuple[MarkdownIt, MarkdownIt]:
    """The block and the inline parser, built at the first reply: markdown-it-py and its
    two parsers are ~1.7 MiB that an idle bridge does not need."""
    from markdown_it import MarkdownIt

    class Parser(MarkdownIt):
        def validateLink(self, url: str) -> bool:
            """Accept every destination: ``_SAFE_HREF`` decides, so a bad one keeps its text."""
            return True

    block = Parser("commonmark", {"html": False, "maxNesting": _BLOCK_NESTING})
    block.enable(["strikethrough", "table"]).disable(["inline", "text_join", "html_block"])
    inline = Parser("commonmark", {"html": False}).enable("strikethrough").disable("html_inline")
    return block, inline


@dataclass(frozen=True)
class RenderedChunk:
    html: str  # valid Telegram HTML, every tag closed
    plain: str  # the same chunk as plain text (for the "can't parse entities" resend)


def visible_length(text: str) -> int:
    """Telegram's length of visible text: UTF-16 code units (an emoji may count 2)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2  # a lone surrogate counts 1


def render_markdown(markdown: str, limit: int = TELEGRAM_LIMIT) -> list[RenderedChunk]:
    """Render ``markdown`` as Telegram HTML chunks of at most ``limit`` visible UTF-16 units.

    Never empty: blank input gives a single ``…`` chunk.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2 UTF-16 units (one emoji)")
    builder = _Builder()
    builder.render(_sanitize(markdown))
    chunks = [RenderedChunk(html, plain) for html, plain in split_pieces(builder.pieces, limit)]
    return chunks or [RenderedChunk(EMPTY_REPLY, EMPTY_REPLY)]


def _sanitize(text: str) -> str:
    if _SURROGATE.search(text):  # re-pair what pairs, U+FFFD for what does not
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _inline_work(src: str) -> int:
    return len(src) - len(src.translate(_MARKUP)) + 4 * src.count("[")


def _plain(tokens: list[Token]) -> str:
    """The visible text of inline tokens, without formatting (table cells, image alt)."""
    parts: list[str] = []
    for tok in tokens:
        if tok.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif tok.type == "image":
            parts.append(_plain(tok.children or []))
        else:
            parts.append(tok.content)
    return "".join(parts)


def _href(tok: Token, name: str) -> str | None:
    value = tok.attrGet(name)
    return value if isinstance(value, str) and _SAFE_HREF.match(value) else None


class _Builder:
    """Walks markdown-it tokens and collects pieces: ``(visible text, enclosing tags)``."""

    def __init__(self) -> None:
        self.pieces: list[tuple[str, Style]] = []
        self.stack: list[Tag | None] = []  # None: a tag already open further out
        self.style: Style = ()
        self.pending = ""  # the separator owed before the next visible text
        self.lists: list[int | None] = []  # per open list: next number, None for bullets
        self.quotes = 0
        self.links: list[tuple[str, int] | None] = []  # per open <a>: href, pieces before
        self.keys = count(1)
        self.env: dict[str, Any] = {}
        self.budget = INLINE_WORK_BUDGET

    # -- pieces -------------------------------------------------------------------------

    def gap(self, separator: str) -> None:
        if len(separator) > len(self.pending):
            self.pending = separator

    def text(self, text: str, style: Style | None = None) -> None:
        if not text:
            return
        style = self.style if style is None else style
        if self.pending:
            if self.pieces:  # the separator belongs to the containers both sides share
                self._add(self.pending, shared_prefix(self.pieces[-1][1], style))
            self.pending = ""
        self._add(text, style)

    def _add(self, text: str, style: Style) -> None:
        if "\n" in text:
            text = _TRAILING_SPACE.sub("", text)
            if text[0] == "\n":
                self._rstrip(" \t")
        self.pieces.append((text, style))

    def _rstrip(self, chars: str) -> None:
        while self.pieces:
            text, style = self.pieces[-1]
            stripped = text.rstrip(chars)
            if stripped:
                self.pieces[-1] = (stripped, style)
                return
            self.pieces.pop()

    def push(self, tag: Tag) -> None:
        if tag.key == 0 and any(mine.name == tag.name for mine in self.style):  # <b> in <b>
            self.stack.append(None)
        else:
            self.stack.append(tag)
            self.style = (*self.style, tag)

    def pop(self) -> None:
        if self.stack.pop() is not None:
            self.style = self.style[:-1]

    # -- blocks -------------------------------------------------------------------------

    def render(self, source: str) -> None:
        lines = source.count("\n") + source.count("|")  # what markdown-it's block pass pays for
        if len(source) > MAX_MARKDOWN_CHARS or lines > MAX_MARKDOWN_LINES:
            self.text(source)
        else:
            try:
                tokens: list[Token] | None = _parsers()[0].parse(source, self.env)
            except RecursionError:
                tokens = None
            if tokens is None or max((t.level for t in tokens), default=0) >= _BLOCK_NESTING - 1:
                self.text(source)  # markdown-it gave up somewhere: keep every word instead
            else:
                self.blocks(tokens)
        self._rstrip(" \t\n")

    def blocks(self, tokens: list[Token]) -> None:
        index = 0
        while index < len(tokens):
            tok = tokens[index]
            index += 1
            kind = tok.type
            if kind == "inline":
                self.inline(tok.content)
            elif kind == "paragraph_close":
                self.gap("\n" if tok.hidden else "\n\n")
            elif kind == "heading_open":
                self.push(Tag("b", key=next(self.keys)))
            elif kind == "heading_close":
                self.pop()
                self.gap("\n\n")
            elif kind == "blockquote_open":
                if self.quotes == 0:
                    self.push(Tag("blockquote", key=next(self.keys)))
                self.quotes += 1
            elif kind == "blockquote_close":
                self.quotes -= 1
                if self.quotes == 0:
                    self.pop()
                self.gap("\n\n")
            elif kind in ("bullet_list_open", "ordered_list_open"):
                start = tok.attrGet("start")
                ordered = kind == "ordered_list_open"
                self.lists.append((start if isinstance(start, int) else 1) if ordered else None)
            elif kind in ("bullet_list_close", "ordered_list_close"):
                self.lists.pop()
                self.gap("\n" if self.lists else "\n\n")
            elif kind == "list_item_open":
                self.list_item()
            elif kind == "list_item_close":
                self.gap("\n")
            elif kind in ("fence", "code_block"):
                self.code(tok.content, tok.info if kind == "fence" else "")
            elif kind == "hr":
                self.text("———")
                self.gap("\n\n")
            elif kind == "table_open":
                index = self.table(tokens, index)

    def list_item(self) -> None:
        number = self.lists[-1]
        if number is not None:
            marker = f"{number}."
            self.lists[-1] = number + 1
        else:
            marker = "•"
        self.text("  " * (len(self.lists) - 1) + marker + " ")

    def code(self, content: str, info: str) -> None:
        language = _LANGUAGE.match(info.strip())
        attrs = f' class="language-{escape_attr(language.group())}"' if language else ""
        key = next(self.keys)
        self.push(Tag("pre", key=key))
        self.push(Tag("code", attrs, key))
        self.text(content.rstrip().lstrip("\n"))
        self.pop()
        self.pop()
        self.gap("\n\n")

    def table(self, tokens: list[Token], index: int) -> int:
        rows: list[list[str]] = []
        while index < len(tokens) and tokens[index].type != "table_close":
            tok = tokens[index]
            index += 1
            if tok.type == "tr_open":
                rows.append([])
            elif tok.type == "inline" and rows:
                parsed = self.parse_inline(tok.content)
                cell = tok.content if parsed is None else _plain(parsed)
                rows[-1].append(" ".join(cell.split()))
        columns = max((len(row) for row in rows), default=0)
        widths = [max(len(row[c]) if c < len(row) else 0 for row in rows) for c in range(columns)]
        lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
        if len(lines) > 1:
            lines.insert(1, "-+-".join("-" * w for w in widths))
        key = next(self.keys)
        self.push(Tag("pre", key=key))
        self.text("\n".join(line.rstrip() for line in lines))
        self.pop()
        self.gap("\n\n")
        return index + 1

    # -- inline -------------------------------------------------------------------------

    def parse_inline(self, source: str) -> list[Token] | None:
        """Inline tokens of ``source``; None if it is plain text or past the work budget."""
        work = _inline_work(source)
        if work == 0 or work > self.budget:  # no markup character: nothing to parse
            return None
        self.budget -= work
        tokens: list[Token] = []
        parser = _parsers()[1]
        parser.inline.parse(source, parser, self.env, tokens)
        return tokens

    def inline(self, source: str) -> None:
        tokens = self.parse_inline(source)
        if tokens is None:
            self.text(source)
            return
        depth, links = len(self.stack), len(self.links)
        for tok in tokens:
            kind = tok.type
            if kind in ("text", "text_special", "html_inline"):
                self.text(tok.content)
            elif kind in ("softbreak", "hardbreak"):
                self.text("\n")
            elif kind == "code_inline":
                if self.links:
                    self.text(tok.content)
                else:
                    quote = tuple(tag for tag in self.style if tag.name == "blockquote")
                    self.text(tok.content, (*quote, Tag("code")))
            elif kind in _INLINE_TAGS:
                self.push(Tag(_INLINE_TAGS[kind]))
            elif kind in ("strong_close", "em_close", "s_close"):
                self.pop()
            elif kind == "link_open":
                self.link_open(tok)
            elif kind == "link_close" and self.links:
                self.link_close()
            elif kind == "image":
                self.image(tok)
        del self.links[links:]
        del self.stack[depth:]
        self.style = tuple(tag for tag in self.stack if tag is not None)

    def link_open(self, tok: Token) -> None:
        href = _href(tok, "href")
        if href is None or self.links:
            self.links.append(None)  # not a link we may send: its text only
            return
        self.links.append((href, len(self.pieces)))
        self.push(Tag("a", f' href="{escape_attr(href)}"'))

    def link_close(self) -> None:
        link = self.links.pop()
        if link is not None:
            if len(self.pieces) == link[1]:  # [](https://x): show the address itself
                self.text(link[0])
            self.pop()

    def image(self, tok: Token) -> None:
        alt = _plain(tok.children or [])
        src = _href(tok, "src")
        if src is None or self.links:
            self.text(alt)
            return
        self.push(Tag("a", f' href="{escape_attr(src)}"'))
        self.text(alt or src)
        self.pop()


_INLINE_TAGS = {"strong_open": "b", "em_open": "i", "s_open": "s"}
