"""Markdown → Telegram HTML chunks, every chunk checked by the fake Bot API's HTML parser."""

from __future__ import annotations

import gc
import re
import threading

import pytest

from bot.channels import telegram_send
from bot.channels.telegram_render import (
    TELEGRAM_LIMIT,
    RenderedChunk,
    render_markdown,
    visible_length,
)
from bot.channels.telegram_split import escape_attr
from bot.testing.telegram_html import parse_html

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india")


def checked(markdown: str, limit: int = TELEGRAM_LIMIT) -> list[RenderedChunk]:
    """Render, and hold every chunk to what Telegram would accept and the user would read."""
    return valid(render_markdown(markdown, limit), limit)


def valid(chunks: list[RenderedChunk], limit: int = TELEGRAM_LIMIT) -> list[RenderedChunk]:
    assert chunks, "never an empty list"
    for chunk in chunks:
        parsed = parse_html(chunk.html)  # raises HtmlParseError on anything Telegram rejects
        assert parsed.text == chunk.plain
        assert visible_length(chunk.plain) <= limit
        assert chunk.plain.strip(), "never an empty (or blank) chunk"
        assert chunk.plain == chunk.plain.rstrip(), "no trailing whitespace"
        assert not re.search(r"[ \t]\n", chunk.plain), "no trailing spaces on a line"
    return chunks


def html(markdown: str) -> str:
    chunks = checked(markdown)
    assert len(chunks) == 1
    return chunks[0].html


def words(text: str) -> list[str]:
    return text.split()


# -- constructs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
        ("*it* and _it_", "<i>it</i> and <i>it</i>"),
        ("~~gone~~", "<s>gone</s>"),
        ("***both***", "<i><b>both</b></i>"),
        ("use `x()` here", "use <code>x()</code> here"),
        ("# Title\nbody", "<b>Title</b>\n\nbody"),
        ("intro\n\n## Sub **x**\n\nbody", "intro\n\n<b>Sub x</b>\n\nbody"),
        ("one\ntwo", "one\ntwo"),  # soft break
        ("one  \ntwo\\\nthree", "one\ntwo\nthree"),  # hard breaks
        ("para one\n\n\n\npara two", "para one\n\npara two"),
        ("- a\n- b\n\nafter", "• a\n• b\n\nafter"),
        ("- a\n  - b\n    - c\n- d", "• a\n  • b\n    • c\n• d"),
        ("1. x\n2. y\n3. z", "1. x\n2. y\n3. z"),
        ("3. x\n4. y", "3. x\n4. y"),
        ("1. x\n   - inner\n2. y", "1. x\n  • inner\n2. y"),
        ("> quoted **b**\n>\n> more", "<blockquote>quoted <b>b</b>\n\nmore</blockquote>"),
        ("> outer\n> > inner", "<blockquote>outer\n\ninner</blockquote>"),  # never nested
        ("before\n\n> q\n\nafter", "before\n\n<blockquote>q</blockquote>\n\nafter"),
        ("```python\nprint(1)\n```", '<pre><code class="language-python">print(1)</code></pre>'),
        ("```\nplain\n```", "<pre><code>plain</code></pre>"),
        ("    indented\n    code", "<pre><code>indented\ncode</code></pre>"),
        ("```go\n  a\n    b\n```", '<pre><code class="language-go">  a\n    b</code></pre>'),
        ("a\n\n---\n\nb", "a\n\n———\n\nb"),
        ("[site](https://example.com)", '<a href="https://example.com">site</a>'),
        ("[**bold** link](http://x.io)", '<a href="http://x.io"><b>bold</b> link</a>'),
        ("[chat](tg://resolve?domain=x)", '<a href="tg://resolve?domain=x">chat</a>'),
        ("<mail@example.com>", '<a href="mailto:mail@example.com">mail@example.com</a>'),
        ("<https://auto.link>", '<a href="https://auto.link">https://auto.link</a>'),
        ("[](https://empty.io)", '<a href="https://empty.io">https://empty.io</a>'),
        ("[rel](docs/page.html)", "rel"),
        ("![a cat](https://img.io/c.png)", '<a href="https://img.io/c.png">a cat</a>'),
        ("![x](data:image/png;base64,AAA)", "x"),
        ("[![pic](https://i.io/p.png)](https://l.io)", '<a href="https://l.io">pic</a>'),
        ("**a `code` b**", "<b>a </b><code>code</code><b> b</b>"),
        ("> `q`", "<blockquote><code>q</code></blockquote>"),
        ("[`api()`](https://d.io)", '<a href="https://d.io">api()</a>'),
    ],
)
def test_constructs_render_as_telegram_html(markdown: str, expected: str) -> None:
    assert html(markdown) == expected


def test_table_becomes_an_aligned_pre_block() -> None:
    table = "| name | qty |\n|------|----:|\n| **apple** | 3 |\n| kiwi fruit | 12 |\n\nafter"
    assert html(table) == (
        "<pre>name       | qty\n-----------+----\napple      | 3\nkiwi fruit | 12</pre>\n\nafter"
    )


def test_loose_list_keeps_blank_lines() -> None:
    assert html("- a\n\n- b") == "• a\n\n• b"


def test_text_is_escaped_everywhere() -> None:
    assert html("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"
    assert html("`<b>&amp;</b>`") == "<code>&lt;b&gt;&amp;amp;&lt;/b&gt;</code>"
    assert html("```\nif a < b && c > d:\n```") == (
        "<pre><code>if a &lt; b &amp;&amp; c &gt; d:</code></pre>"
    )
    assert html("[a < b & c](https://x.io)") == '<a href="https://x.io">a &lt; b &amp; c</a>'
    assert html("&amp; &lt;") == "&amp; &lt;"  # Markdown entities decode, then re-escape
    assert html('[q](https://x.io/?a=1&b="2")') == (
        '<a href="https://x.io/?a=1&amp;b=%222%22">q</a>'
    )


def test_quotes_in_href() -> None:
    # markdown-it percent-encodes " in a destination; the attribute escaper is the backstop
    assert html("[x](<https://x.io/'a'>)") == "<a href=\"https://x.io/'a'\">x</a>"
    assert escape_attr('https://x.io/?q="<&>"') == "https://x.io/?q=&quot;&lt;&amp;&gt;&quot;"
    href = escape_attr('"&"')
    assert parse_html(f'<a href="{href}">x</a>').entities[0]["url"] == '"&"'


def test_raw_html_is_text_never_markup() -> None:
    assert html("<b>hi</b> <script>alert(1)</script>") == (
        "&lt;b&gt;hi&lt;/b&gt; &lt;script&gt;alert(1)&lt;/script&gt;"
    )
    assert html("<div>\nblock\n</div>") == "&lt;div&gt;\nblock\n&lt;/div&gt;"


@pytest.mark.parametrize(
    "markdown",
    [
        "[click](javascript:alert(1))",
        "[click](JavaScript:alert(1))",
        "[click](vbscript:x)",
        "[click](file:///etc/passwd)",
        "[click](data:text/html,<b>x</b>)",
    ],
)
def test_unsafe_links_are_only_text(markdown: str) -> None:
    out = html(markdown)
    assert "<a" not in out
    assert out == "click"


def test_code_language_is_sanitised() -> None:
    assert html('```c++ extra "info"\nx\n```') == '<pre><code class="language-c++">x</code></pre>'
    assert html('```"><b>\nx\n```') == "<pre><code>x</code></pre>"


def test_output_is_stable() -> None:
    source = "# T\n\n- a **b**\n\n```js\nx < 1\n```\n\n> q\n\n" + "word " * 3000
    assert render_markdown(source, 500) == render_markdown(source, 500)


# -- splitting -----------------------------------------------------------------------------


def long_reply() -> tuple[str, list[str]]:
    """~10,000 characters of prose and code fences full of < > &, plus its expected words."""
    parts: list[str] = []
    expected: list[str] = []
    n = 0
    while sum(len(p) + 2 for p in parts) < 10_000:
        n += 1
        prose = " ".join(f"{WORDS[(n + i) % len(WORDS)]}{n}" for i in range(60))
        prose += f" where a<b && c>d ({n})"
        parts.append(prose)
        expected += words(prose)
        if n % 3 == 0:
            code = f"if (x{n} < 10 && y > 2) {{\n    return a & b;\n}}"
            parts.append(f"```c\n{code}\n```")
            expected += words(code)
    return "\n\n".join(parts), expected


def test_long_reply_splits_into_valid_chunks_keeping_every_word() -> None:
    source, expected = long_reply()
    assert len(source) >= 10_000
    chunks = checked(source)
    assert len(chunks) >= 3
    joined = " ".join(chunk.plain for chunk in chunks)
    assert words(joined) == expected
    assert "&lt;" in chunks[0].html
    assert "&amp;&amp;" in chunks[0].html
    # a chunk never ends inside a code block when a blank line was available
    assert all(c.html.count("<pre>") == c.html.count("</pre>") for c in chunks)


def test_split_prefers_paragraph_boundaries() -> None:
    first, second = "a" * 2500, "b" * 2500
    chunks = checked(f"{first} x\n\n{second} y")
    assert [c.plain for c in chunks] == [f"{first} x", f"{second} y"]


def test_split_at_line_then_space_then_hard() -> None:
    lines = "\n".join(f"line {i:04d} " + "z" * 80 for i in range(60))  # one paragraph
    chunks = checked(lines, 1000)
    assert len(chunks) > 1
    for chunk in chunks:  # every chunk is whole lines
        assert all(re.fullmatch(r"line \d{4} z{80}", line) for line in chunk.plain.split("\n"))

    prose = " ".join(f"word{i}" for i in range(1000))
    chunks = checked(prose, 500)
    assert words(" ".join(c.plain for c in chunks)) == words(prose)  # no word cut in half
    assert all(visible_length(c.plain) > 250 for c in chunks[:-1])  # no tiny chunks

    blob = "x" * 10_000
    chunks = checked(blob)
    assert [visible_length(c.plain) for c in chunks] == [4096, 4096, 1808]


def test_code_block_longer_than_limit_is_reopened_in_each_chunk() -> None:
    code = "\n".join(f"    value_{i} = compute({i}) < limit & mask" for i in range(400))
    chunks = checked(f"Here:\n\n```python\n{code}\n```\n\nDone.", 2000)
    code_chunks = [c for c in chunks if "value_" in c.plain]
    assert len(code_chunks) >= 3
    for chunk in code_chunks:
        body = chunk.html.removeprefix("Here:\n\n")
        body = body.removesuffix("\n\nDone.")
        assert body.startswith('<pre><code class="language-python">')
        assert body.endswith("</code></pre>")
        assert body.count("<pre>") == 1
    lines = "\n".join(c.plain for c in code_chunks).removeprefix("Here:\n\n")
    assert lines.removesuffix("\n\nDone.") == code  # indentation kept across the cuts


def test_bold_across_a_split_is_closed_and_reopened() -> None:
    text = " ".join(WORDS * 14)
    chunks = checked(f"start **{text}** end", 200)
    assert len(chunks) >= 3
    assert chunks[0].html.startswith("start <b>")
    for chunk in chunks:
        assert chunk.html.endswith("</b>") or chunk.html.endswith("</b> end")
    for chunk in chunks[1:]:
        assert chunk.html.startswith("<b>")


def test_link_and_nested_formatting_reopen_with_same_attributes() -> None:
    text = " ".join(WORDS * 9)
    chunks = checked(f"> [*{text}*](https://x.io/?a=1&b=2)", 150)
    assert len(chunks) >= 3
    opening = '<blockquote><a href="https://x.io/?a=1&amp;b=2"><i>'
    closing = "</i></a></blockquote>"
    assert all(c.html.startswith(opening) and c.html.endswith(closing) for c in chunks)


def test_emoji_are_never_cut_in_half() -> None:
    emoji = "😀" * 2100
    assert visible_length(emoji) == 4200
    chunks = checked(emoji)
    assert len(chunks) == 2
    assert [visible_length(c.plain) for c in chunks] == [4096, 104]
    for chunk in chunks:
        chunk.plain.encode("utf-16-le")  # strict: raises on a lone surrogate
        assert set(chunk.plain) == {"😀"}
    assert "".join(c.plain for c in chunks) == emoji


def test_odd_limit_with_emoji_stays_under_it() -> None:
    chunks = checked("a" + "👍🏽" * 50, 7)  # thumbs up + skin tone: 4 units, kept together
    assert "".join(c.plain for c in chunks) == "a" + "👍🏽" * 50
    assert all(c.plain.count("👍") == c.plain.count("🏽") for c in chunks)


def test_limit_must_fit_an_emoji() -> None:
    with pytest.raises(ValueError, match="limit"):
        render_markdown("x", 1)


@pytest.mark.parametrize("markdown", ["", "   ", "\n\n\t\n", "\x00\x01", "\r\n\r\n"])
def test_blank_input_gives_one_placeholder_chunk(markdown: str) -> None:
    assert checked(markdown) == [RenderedChunk("…", "…")]


def test_visible_length_counts_utf16_units() -> None:
    assert visible_length("abc") == 3
    assert visible_length("😀") == 2
    assert visible_length("é") == 1
    assert visible_length("\ud800") == 1  # lone surrogate: counted, not an exception


# -- hostile input -------------------------------------------------------------------------


def test_control_characters_and_lone_surrogates() -> None:
    chunks = checked("bell\x07 nul\x00 esc\x1b[31m **bold\ud800** \ud83d\ude00 del\x7f\r\nend")
    assert chunks[0].plain == "bell nul esc[31m bold\ufffd 😀 del\nend"
    assert chunks[0].html.count("<b>") == 1


@pytest.mark.parametrize("size", [10_000_000, 1_000_000])  # plain-text fallback, parsed
def test_megabytes_of_hostile_text(size: int) -> None:
    unit = "Hostile <b>&amp; \x00\x07\ud800 text **b** `c` [l](javascript:x) 😀 ~~s\n\n"
    source = unit * (size // len(unit))
    chunks = render_markdown(source)
    # The input repeats, so a sample of chunks through the fake Bot API's parser covers it.
    valid(chunks[:40] + chunks[len(chunks) // 2 : len(chunks) // 2 + 40] + chunks[-40:])
    assert all(visible_length(c.plain) <= TELEGRAM_LIMIT for c in chunks)
    assert len(chunks) > size // 8000
    assert all("\x00" not in c.plain and "\ud800" not in c.plain for c in chunks)
    assert all("<a" not in c.html and "<b>&amp;" not in c.html for c in chunks)


def test_one_megabyte_of_markdown_renders_completely() -> None:
    sentence = (
        "The quick brown fox jumps over the **lazy dog** and `x < y && z > w`; "
        "see [docs](https://example.com/a?b=1&c=2) for *details*. "
    )
    block = (
        "## Section\n\n"
        + sentence * 3
        + "\n\n```python\nfor i in range(10):\n    print(i < 5 & True)\n```\n\n"
        + "- item one\n- item *two*\n  - nested\n\n> a quote\n\n"
    )
    source = block * (1_000_000 // len(block) + 1)
    assert len(source) >= 1_000_000
    chunks = render_markdown(source)  # how fast: bench/render.py
    visible = sum(visible_length(c.plain) for c in chunks)
    assert visible > 700_000
    assert len(chunks) >= visible // TELEGRAM_LIMIT
    assert all(visible_length(c.plain) <= TELEGRAM_LIMIT for c in chunks)
    assert chunks[0].html.startswith("<b>Section</b>\n\nThe quick brown fox jumps over the <b>")
    for chunk in chunks[:: max(1, len(chunks) // 20)]:  # spot-check with the slow checker
        assert parse_html(chunk.html).text == chunk.plain


def test_deep_nesting() -> None:
    depth = 100
    emphasis = "*" * depth + "deep" + "*" * depth
    assert "deep" in checked(emphasis)[0].plain
    quotes = checked(">" * depth + " deep quote\n\nafter")
    assert quotes[0].html == "<blockquote>deep quote</blockquote>\n\nafter"
    lists = "".join("  " * i + f"- level{i}\n" for i in range(depth)) + "\nafter"
    plain = "\n".join(c.plain for c in checked(lists))
    assert "  " * 99 + "• level99" in plain
    assert plain.endswith("after")
    mixed = checked("> - " * depth + "inside\n\nafter")
    assert "inside" in mixed[0].plain
    assert mixed[-1].plain.endswith("after")


def test_nesting_past_the_parser_limit_keeps_every_word() -> None:
    source = "- " * 300 + "bottom\n\nafter the list"
    plain = " ".join(c.plain for c in checked(source))
    assert "bottom" in plain
    assert "after the list" in plain


@pytest.mark.parametrize(
    "source",
    ["[" * 200_000, "![\n" * 100_000, "a*" * 200_000, "<a " * 100_000, "|a" * 100_000],
)
def test_pathological_markup_is_bounded(source: str) -> None:
    chunks = render_markdown(source)
    assert sum(len(c.plain) for c in chunks) >= len(source) // 2  # the text is all there
    assert all(visible_length(c.plain) <= TELEGRAM_LIMIT for c in chunks)
    for chunk in chunks[:3]:
        assert parse_html(chunk.html).text == chunk.plain


def test_unterminated_fence_runs_to_the_end() -> None:
    assert html("text\n\n```js\nlet a = 1 < 2;\n\nstill code") == (
        'text\n\n<pre><code class="language-js">let a = 1 &lt; 2;\n\nstill code</code></pre>'
    )
    assert html("```") == "…"  # an empty code block is nothing to send


async def test_a_long_reply_renders_off_the_event_loop_and_a_short_one_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pathological long reply takes about a second to render: on the loop, every other
    # chat would wait for it.
    seen: list[tuple[int, bool]] = []

    def recording(text: str) -> list[RenderedChunk]:
        seen.append((threading.get_ident(), gc.isenabled()))
        return render_markdown(text)

    monkeypatch.setattr(telegram_send, "render_markdown", recording)
    loop_thread = threading.get_ident()
    short = await telegram_send.render_reply("short *answer*")
    long = await telegram_send.render_reply("a*" * 5_000)
    assert [c.plain for c in short] == ["short answer"]
    assert "".join(c.plain for c in long) == "".join(c.plain for c in render_markdown("a*" * 5_000))
    assert seen[0] == (loop_thread, True)
    assert seen[1][0] != loop_thread
    assert seen[1][1] is False  # no full collection holds the GIL while it renders
    assert gc.isenabled()
