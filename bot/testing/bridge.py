"""Run the real ``persona-bridge`` as a child process against the fakes.

Used by end-to-end tests, benchmarks and the demo: the bridge under test is the same
program users run, talking real HTTP to ``FakeTelegram`` and ``FakeLLM``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bot.testing.fake_telegram import FakeTelegram


@dataclass(frozen=True)
class BotPlan:
    """One bot of a generated config: its token, the agent bound to it and its persona."""

    bot_id: str
    token: str
    agent_id: str
    persona: str
    model: str  # the model id the fake LLM will see


def bridge_config(
    *,
    telegram_base: str,
    llm_base: str,
    bots: Sequence[BotPlan],
    database: str = "sessions.db",
    extra: Mapping[str, Any] | None = None,
    streaming: str | None = "off",
    bot_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete, valid config: one agent and one model entry per bot, all on the fakes.

    ``streaming`` is each bot's mode; "off" unless asked, so a test that counts messages
    sees one send per answer. None leaves the key out (the product default, "edit").
    ``bot_extra``: more keys for every bot (the benches lift ``messages_per_second``)."""
    models = [
        {"model_name": f"m-{b.agent_id}", "model": f"openai/{b.model}", "api_base": llm_base}
        for b in bots
    ]
    models.append({"model_name": "cheap", "model": "openai/cheap-summary", "api_base": llm_base})
    config: dict[str, Any] = {
        "model_list": models,
        "roles": {"compaction": {"primary": "cheap"}},
        "agents": {
            "list": [
                {
                    "id": b.agent_id,
                    "name": b.agent_id.title(),
                    "persona": b.persona,
                    "model": f"m-{b.agent_id}",
                }
                for b in bots
            ]
        },
        "bindings": [
            {"agent_id": b.agent_id, "match": {"channel": f"telegram-{b.bot_id}"}} for b in bots
        ],
        "channels": {
            "telegram_bots": [
                {"id": b.bot_id, "token": b.token, "allow_from": ["*"], "api_base": telegram_base}
                | ({} if streaming is None else {"streaming": streaming})
                | dict(bot_extra or {})
                for b in bots
            ]
        },
        "session": {"database": database},
        "gateway": {"port": 0},
    }
    for key, value in (extra or {}).items():
        config[key] = value
    return config


def console_config(*, llm_base: str, database: str = "sessions.db") -> dict[str, Any]:
    """A config with no Telegram bot at all: agent ``alice`` bound to the terminal."""
    return {
        "model_list": [{"model_name": "m", "model": "openai/m-id", "api_base": llm_base}],
        "roles": {"compaction": {"primary": "m"}},
        "agents": {
            "defaults": {"model": "m"},
            "list": [{"id": "alice", "name": "Alice", "persona": "You are Alice."}],
        },
        "bindings": [{"agent_id": "alice", "match": {"channel": "console"}}],
        "session": {"database": database},
        "gateway": {"port": 0},
    }


class BridgeProcess:
    """``python -m bot run --config PATH`` as a child; stderr goes to ``log_path``."""

    #: Children started by this test process: the pytest plugin kills any still running
    #: after each test, so a failed test cannot leave a bridge behind to load the next ones.
    started: ClassVar[list[int]] = []

    def __init__(
        self,
        config_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = ("--log-level", "DEBUG"),
    ) -> None:
        self.config_path = config_path
        self.log_path = config_path.with_suffix(".log")
        self._env = {**os.environ, **(env or {})}
        self._args = list(args)
        self.process: asyncio.subprocess.Process | None = None

    @classmethod
    def write(cls, directory: Path, config: Mapping[str, Any], **kwargs: Any) -> BridgeProcess:
        path = directory / "config.json"
        path.write_text(json.dumps(config, indent=2))
        return cls(path, **kwargs)

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                "--config",
                str(self.config_path),
                *self._args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env,
                start_new_session=True,
            )
        BridgeProcess.started.append(self.process.pid)

    async def start_polling(self, telegram: FakeTelegram, *tokens: str) -> None:
        """Start, then wait until every bot named by ``tokens`` has a long poll open."""
        await self.start()
        for token in tokens:
            await telegram.wait_for_poll(token, timeout=30)

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    async def stop(self, sig: signal.Signals = signal.SIGTERM, within_s: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit code; SIGKILL if it does not exit in time."""
        process = self.process
        if process is None or process.returncode is not None:
            return process.returncode if process and process.returncode is not None else 0
        process.send_signal(sig)
        try:
            return await asyncio.wait_for(process.wait(), within_s)
        except TimeoutError:
            process.kill()
            return await process.wait()

    async def kill(self) -> None:
        """``kill -9``: the crash case the durable inbox exists for."""
        await self.stop(signal.SIGKILL)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_for_log(self, pattern: str, within_s: float = 30.0) -> re.Match[str]:
        """The first log match of ``pattern``; TimeoutError with the log tail if none comes."""
        try:
            async with asyncio.timeout(within_s):
                # A file gives no change notification: look again shortly.
                while (match := re.search(pattern, self.logs())) is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise TimeoutError(
                f"no log line matching {pattern!r}:\n{self.logs()[-2000:]}"
            ) from None
        return match

    async def __aenter__(self) -> BridgeProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
