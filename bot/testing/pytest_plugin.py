"""pytest fixtures for the fakes: ``pytest_plugins = ["bot.testing.pytest_plugin"]``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from bot.testing.fake_llm import FakeLLM
from bot.testing.fake_telegram import FakeTelegram


@pytest_asyncio.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest_asyncio.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as fake:
        yield fake
