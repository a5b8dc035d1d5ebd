"""Telegram's ``parse_mode="HTML"``, parsed the way the Bot API server does it.

The fake Telegram server uses this to reject exactly the markup real Telegram rejects, so a
formatting bug (an unescaped ``<``, a tag Telegram does not know, an unclosed ``<b>``) fails a
test instead of a production reply. The parser mirrors tdlib's ``parse_html``: it is a small
hand-written scanner rather than :class:`html.parser.HTMLParser`, because Telegram's error
messages name UTF-8 byte offsets and Telegram's idea of a tag is much narrower than HTML's.

One deliberate difference: tdlib keeps an ``&`` that does not start a known entity as a literal
character; the Bot API documentation says every such ``&`` must be escaped, and this parser
enforces the documentation so sloppy escaping is caught before Telegram starts to care.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["HtmlParseError", "ParsedText", "parse_html", "utf16_len"]

_ALLOWED_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "code",
        "pre",
        "span",
        "tg-spoiler",
        "tg-emoji",
        "blockquote",
    }
)
_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
    "a": "text_link",
    "tg-emoji": "custom_emoji",
    "blockquote": "blockquote",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_SPACES = frozenset(" \t\r\n\f\v")


class HtmlParseError(ValueError):
    """The text is not valid Telegram HTML; ``str()`` is Telegram's reason wording."""


@dataclass(frozen=True)
class ParsedText:
    """Visible text plus Bot API ``MessageEntity`` dicts (offsets in UTF-16 code units)."""

    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _OpenTag:
    name: str
    argument: str
    offset: int  # UTF-16 offset in the visible text where the tag's content starts


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji outside the BMP counts 2)."""
    # surrogatepass: a lone surrogate is one code unit, not a crash of the fake server.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _byte_offset(source: str, index: int) -> int:
    return len(source[:index].encode("utf-8", "surrogatepass"))


def _decode_entity(source: str, pos: int) -> tuple[str, int] | None:
    """Decode the character reference starting at ``source[pos] == "&"``.

    Returns the character and the index after the reference, or None when it is not one of
    the references Telegram understands (``&lt; &gt; &amp; &quot; &#NN; &#xNN;``).
    """
    end = pos + 1
    if source.startswith("#", end):
        end += 1
        base, digits = 10, "0123456789"
        if end < len(source) and source[end] in "xX":
            end += 1
            base, digits = 16, "0123456789abcdefABCDEF"
        start = end
        while end < len(source) and source[end] in digits:
            end += 1
        if start == end or end - start > 8:  # longer than any code point; int() would balk
            return None
        code = int(source[start:end], base)
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return None
        char = chr(code)
    else:
        start = end
        while end < len(source) and source[end].isascii() and source[end].isalpha():
            end += 1
        named = _NAMED_ENTITIES.get(source[start:end])
        if named is None:
            return None
        char = named
    if source.startswith(";", end):
        end += 1
    return char, end


class _Scanner:
    """One pass over the source; raises :class:`HtmlParseError` at the first problem."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.n = len(source)
        self.pos = 0
        self.out: list[str] = []
        self.utf16 = 0
        self.stack: list[_OpenTag] = []
        self.entities: list[dict[str, Any]] = []

    def fail(self, reason: str, index: int | None = None) -> HtmlParseError:
        if index is None:
            return HtmlParseError(reason)
        return HtmlParseError(f"{reason} at byte offset {_byte_offset(self.src, index)}")

    def emit(self, text: str) -> None:
        self.out.append(text)
        self.utf16 += utf16_len(text)

    def skip_spaces(self) -> None:
        while self.pos < self.n and self.src[self.pos] in _SPACES:
            self.pos += 1

    def run(self) -> ParsedText:
        while self.pos < self.n:
            char = self.src[self.pos]
            if char == "&":
                decoded = _decode_entity(self.src, self.pos)
                if decoded is None:
                    raise self.fail('Unescaped "&" (use "&amp;")', self.pos)
                self.emit(decoded[0])
                self.pos = decoded[1]
            elif char != "<":
                self.emit(char)
                self.pos += 1
            elif self.src.startswith("</", self.pos):
                self.end_tag()
            else:
                self.start_tag()
        if self.stack:
            name = self.stack[-1].name
            raise self.fail(f'Can\'t find end tag corresponding to start tag "{name}"')
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        for entity in self.entities:
            entity.pop("_language", None)
        return ParsedText("".join(self.out), self.entities)

    def start_tag(self) -> None:
        begin = self.pos
        self.pos += 1
        while self.pos < self.n and self.src[self.pos] not in _SPACES and self.src[self.pos] != ">":
            self.pos += 1
        if self.pos >= self.n:
            raise self.fail("Unclosed start tag", begin)
        name = self.src[begin + 1 : self.pos].lower()
        if name not in _ALLOWED_TAGS:
            raise self.fail(f'Unsupported start tag "{name}"', begin)
        argument = ""
        while True:
            self.skip_spaces()
            if self.pos >= self.n:
                raise self.fail(f'Unclosed start tag "{name}"', begin)
            if self.src[self.pos] == ">":
                break
            attribute, value = self.attribute(name, begin)
            if name == "a" and attribute == "href":
                argument = value
            elif name == "code" and attribute == "class" and value.startswith("language-"):
                argument = value.removeprefix("language-")
            elif name == "span" and attribute == "class" and value.startswith("tg-"):
                argument = value.removeprefix("tg-")
            elif name == "tg-emoji" and attribute == "emoji-id":
                argument = value
            elif name == "blockquote" and attribute == "expandable":
                argument = "expandable"
        self.pos += 1
        if name == "span" and argument != "spoiler":
            raise self.fail('Tag "span" must have class "tg-spoiler"', begin)
        if name == "tg-emoji" and not argument.isdigit():
            raise self.fail("Invalid custom emoji identifier specified", begin)
        self.stack.append(_OpenTag(name, argument, self.utf16))

    def attribute(self, tag: str, begin: int) -> tuple[str, str]:
        """Parse ``name=value`` (value quoted or a bare name token) inside a start tag."""
        start = self.pos
        while (
            self.pos < self.n
            and self.src[self.pos] not in _SPACES
            and self.src[self.pos] not in "=>"
        ):
            self.pos += 1
        attribute = self.src[start : self.pos].lower()
        if not attribute:
            raise self.fail(f'Empty attribute name in the tag "{tag}"', begin)
        self.skip_spaces()
        if self.pos >= self.n:
            raise self.fail(f'Unclosed start tag "{tag}"', begin)
        if self.src[self.pos] != "=":
            if tag == "blockquote" and attribute == "expandable":
                return attribute, ""
            raise self.fail(
                f'Expected equal sign in declaration of an attribute of the tag "{tag}"', begin
            )
        self.pos += 1
        self.skip_spaces()
        if self.pos >= self.n:
            raise self.fail(f'Unclosed start tag "{tag}"', begin)
        quote = self.src[self.pos]
        if quote not in "'\"":
            start = self.pos
            while self.pos < self.n and (
                (self.src[self.pos].isascii() and self.src[self.pos].isalnum())
                or self.src[self.pos] in ".-"
            ):
                self.pos += 1
            if self.pos >= self.n or (
                self.src[self.pos] not in _SPACES and self.src[self.pos] != ">"
            ):
                raise self.fail("Unexpected end of name token", start)
            return attribute, self.src[start : self.pos].lower()
        self.pos += 1
        value: list[str] = []
        while self.pos < self.n and self.src[self.pos] != quote:
            decoded = _decode_entity(self.src, self.pos) if self.src[self.pos] == "&" else None
            if decoded is not None:
                value.append(decoded[0])
                self.pos = decoded[1]
            else:
                value.append(self.src[self.pos])
                self.pos += 1
        if self.pos >= self.n:
            raise self.fail(f'Unclosed start tag "{tag}"', begin)
        self.pos += 1
        return attribute, "".join(value)

    def end_tag(self) -> None:
        begin = self.pos
        if not self.stack:
            raise self.fail("Unexpected end tag", begin)
        self.pos += 2
        start = self.pos
        while self.pos < self.n and self.src[self.pos] not in _SPACES and self.src[self.pos] != ">":
            self.pos += 1
        end_name = self.src[start : self.pos].lower()
        self.skip_spaces()
        if self.pos >= self.n or self.src[self.pos] != ">":
            raise self.fail("Unclosed end tag", begin)
        self.pos += 1
        tag = self.stack.pop()
        if end_name and end_name != tag.name:
            raise self.fail(
                f"Unmatched end tag at byte offset {_byte_offset(self.src, begin)}, "
                f'expected "</{tag.name}>", found "</{end_name}>"'
            )
        self.close_entity(tag)

    def close_entity(self, tag: _OpenTag) -> None:
        length = self.utf16 - tag.offset
        if length <= 0:
            return  # Telegram drops empty entities
        entity: dict[str, Any] = {"type": _ENTITY_TYPES[tag.name], "offset": tag.offset}
        entity["length"] = length
        if tag.name == "a":
            if not tag.argument:
                return
            entity["url"] = tag.argument
        elif tag.name == "code" and tag.argument:
            entity["_language"] = tag.argument
        elif tag.name == "tg-emoji":
            entity["custom_emoji_id"] = tag.argument
        elif tag.name == "blockquote" and tag.argument:
            entity["type"] = "expandable_blockquote"
        elif tag.name == "pre":
            # <pre><code class="language-x">...</code></pre> is one pre entity with a language.
            inner = self.entities[-1] if self.entities else None
            if (
                inner is not None
                and inner["type"] == "code"
                and (inner["offset"], inner["length"]) == (tag.offset, length)
            ):
                self.entities.pop()
                if inner.get("_language"):
                    entity["language"] = inner["_language"]
        self.entities.append(entity)


def parse_html(source: str) -> ParsedText:
    """Parse Telegram HTML into visible text and entities, or raise :class:`HtmlParseError`.

    The error message is Telegram's reason (``'Unsupported start tag "foo" at byte offset 3'``);
    the Bot API prefixes it with ``"Bad Request: can't parse entities: "``.
    """
    return _Scanner(source).run()
