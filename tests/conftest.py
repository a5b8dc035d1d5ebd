from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from bot.ops.logs import BOT_TOKEN, quiet_chatty_libraries

pytest_plugins = ["bot.testing.pytest_plugin"]


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="session", autouse=True)
def no_bot_token_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every log line of the whole suite — in-process and every bridge child's log file —
    is checked for anything shaped like a bot token when the session ends."""
    capture = _Everything()
    root = logging.getLogger()
    root.addHandler(capture)
    previous = root.level
    root.setLevel(logging.DEBUG)
    quiet_chatty_libraries()  # what the product does in ops.logs.configure
    yield
    root.removeHandler(capture)
    root.setLevel(previous)
    texts = {"in-process log": "\n".join(capture.lines)}
    for path in tmp_path_factory.getbasetemp().rglob("*.log"):
        texts[str(path)] = path.read_text(errors="replace")
    leaks = [
        f"{where}: {m.group(0)[:12]}…"
        for where, text in texts.items()
        for m in BOT_TOKEN.finditer(text)
    ]
    assert not leaks, f"bot tokens in logs: {leaks[:5]}"
