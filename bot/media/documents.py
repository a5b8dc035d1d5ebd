"""Documents as text for the model: text-like files by a charset guess, PDFs by their
text layer (pypdf). Anything else is refused before it is downloaded."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath

log = logging.getLogger(__name__)

SUPPORTED = "plain text, Markdown, CSV, JSON, source code and PDF files"
TEXT_SUFFIXES = frozenset(
    {
        ".txt",
        ".text",
        ".md",
        ".markdown",
        ".rst",
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
        ".ndjson",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".conf",
        ".log",
        ".xml",
        ".html",
        ".htm",
        ".css",
        ".py",
        ".pyi",
        ".js",
        ".mjs",
        ".ts",
        ".tsx",
        ".jsx",
        ".java",
        ".kt",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".cs",
        ".go",
        ".rs",
        ".rb",
        ".php",
        ".pl",
        ".swift",
        ".scala",
        ".sh",
        ".bash",
        ".zsh",
        ".sql",
        ".r",
        ".lua",
        ".tex",
        ".srt",
        ".vtt",
        ".env",
        ".diff",
        ".patch",
        ".gitignore",
        ".dockerfile",
    }
)
TEXT_MIMES = frozenset(
    {"application/json", "application/xml", "application/x-yaml", "application/yaml"}
    | {"application/javascript", "application/x-sh", "application/sql", "application/toml"}
    | {"application/x-python", "application/x-ndjson"}
)
PDF_MIME = "application/pdf"


class DocumentUnreadable(ValueError):
    """The file claims a supported type but holds no text we can read."""


@dataclass(frozen=True)
class DocumentText:
    text: str
    truncated: bool  # cut at the bound


def is_pdf(name: str, mime: str) -> bool:
    return mime == PDF_MIME or PurePosixPath(name.lower()).suffix == ".pdf"


def is_text_like(name: str, mime: str) -> bool:
    if mime.startswith("text/") or mime in TEXT_MIMES or mime.endswith(("+json", "+xml")):
        return True
    return PurePosixPath(name.lower()).suffix in TEXT_SUFFIXES


def supported(name: str, mime: str) -> bool:
    """Decided from the name and MIME type alone, so nothing else is downloaded."""
    return is_pdf(name, mime) or is_text_like(name, mime)


def extract(name: str, mime: str, data: bytes, max_chars: int) -> DocumentText:
    """The document's text, at most ``max_chars`` characters; CPU-bound for PDFs (run it
    in a thread). Raises ``DocumentUnreadable``."""
    text = _pdf_text(data, max_chars) if is_pdf(name, mime) else decode_text(data)
    text = text.strip()
    if not text:
        raise DocumentUnreadable("it holds no text")
    return DocumentText(text[:max_chars], len(text) > max_chars)


_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def decode_text(data: bytes) -> str:
    """A charset guess with the standard library: a byte-order mark, else UTF-8, else
    Windows-1252 (what most non-UTF-8 text files are); NUL bytes mean it is not text."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    if b"\x00" in data[:8192]:
        raise DocumentUnreadable("it looks binary, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _pdf_text(data: bytes, max_chars: int) -> str:
    # pypdf: pure Python, maintained, reads the text layer; scanned pages have none.
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentUnreadable("the PDF is encrypted")
        pages: list[str] = []
        total = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            pages.append(text)
            total += len(text)
            if total > max_chars:  # enough: the rest would be cut anyway
                pages.append("…")
                break
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, DocumentUnreadable):
            raise
        log.info("PDF not readable: %s", type(exc).__name__)
        raise DocumentUnreadable("the PDF could not be read") from exc
    return "\n\n".join(pages)
