"""Test doubles that ship with the package, as httpx ships ``MockTransport``.

``FakeTelegram`` is a fake Bot API server and ``FakeLLM`` a scripted model server, both
real HTTP servers on 127.0.0.1. Tests, benchmarks and the offline demo share them.
They run on aiohttp, a runtime dependency (the health and webhook servers use it too).
"""

from bot.testing.bridge import BridgeProcess, bridge_config
from bot.testing.fake_llm import (
    Echo,
    EmptyChoices,
    FakeLLM,
    Fault,
    GarbageUsage,
    Hang,
    Malformed,
    RecordedRequest,
    Reply,
    Slow,
    Streamed,
    ToolCall,
    Truncated,
    Unterminated,
)
from bot.testing.fake_telegram import FakeBot, FakeTelegram, SentMessage

__all__ = [
    "BridgeProcess",
    "Echo",
    "EmptyChoices",
    "FakeBot",
    "FakeLLM",
    "FakeTelegram",
    "Fault",
    "GarbageUsage",
    "Hang",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "SentMessage",
    "Slow",
    "Streamed",
    "ToolCall",
    "Truncated",
    "Unterminated",
    "bridge_config",
]
