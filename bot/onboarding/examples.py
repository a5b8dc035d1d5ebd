"""Where the example configs are: inside the installed package, or in a source checkout."""

from __future__ import annotations

from pathlib import Path

MINIMAL = "config.example.json"
FULL = "config.full.example.json"
_PACKAGE = Path(__file__).resolve().parent.parent


def example_path(name: str = MINIMAL) -> Path | None:
    """The wheel puts the examples in ``bot/examples/``; a checkout has them at its root."""
    for candidate in (_PACKAGE / "examples" / name, _PACKAGE.parent / name):
        if candidate.is_file():
            return candidate
    return None


def where_examples_are(problems_text: str) -> str | None:
    """One line for errors that say "see config.example.json": where that file is."""
    if MINIMAL not in problems_text:
        return None
    minimal, full = example_path(MINIMAL), example_path(FULL)
    if minimal is None:
        return None
    # Shaped like the problems above it ("where: what — fix"), as scripts expect.
    every = f"; every option: {full}" if full else ""
    return f"{MINIMAL}: the example is installed — see {minimal}{every}"
