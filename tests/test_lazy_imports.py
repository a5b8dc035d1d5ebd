"""What an idle `persona-bridge run` keeps out of memory until it is needed (issue 18).

aiohttp (~9.5 MiB resident) serves only webhooks, markdown-it-py and its parsers (~1.7 MiB)
only replies, difflib only a config with a mistake. The modules `run` imports up to READY
are loaded in a fresh interpreter, as the bridge does, and must not pull them in.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest

RUN_IMPORTS = (
    "bot.cli",
    "bot.app",
    "bot.ops.service",
    "bot.ops.gateway",
    "bot.channels.telegram",
    "bot.channels.telegram_webhook",
    "bot.config.loader",
)


@functools.cache
def modules_after_run_imports() -> frozenset[str]:
    code = (
        f"import sys\nfor name in {RUN_IMPORTS!r}:\n    __import__(name)\n"
        "print('\\n'.join(sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return frozenset(done.stdout.split())


@pytest.mark.parametrize("module", ["aiohttp", "markdown_it", "difflib"])
def test_run_does_not_import_what_an_idle_bridge_does_not_use(module: str) -> None:
    loaded = modules_after_run_imports()
    assert "bot.app" in loaded  # the check itself worked
    assert module not in loaded
