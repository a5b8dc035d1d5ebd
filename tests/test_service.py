"""Running as a service (SPEC §9): notify, reload, graceful stop, health and metrics."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.testing import BridgeProcess, FakeLLM, FakeTelegram, Fault, Slow
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan

BACKLOG = ("persona_bridge_inbox_backlog", ())
ALICE = BotPlan(
    "alice", "6000001:alice-token-" + "R" * 30, "alice", "You are Alice.", "alice-model"
)
BOB = BotPlan("bob", "6000002:bob-token-" + "S" * 32, "bob", "You are Bob.", "bob-model")


def base_config(
    fake_telegram: FakeTelegram, fake_llm: FakeLLM, bots: list[BotPlan]
) -> dict[str, Any]:
    for plan in (ALICE, BOB):
        fake_telegram.add_bot(plan.token, f"{plan.bot_id}_bot")
    return make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=bots
    )


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def count(self, field: str) -> int:
        return sum(field in m.split("\n") for m in self.messages)

    async def wait_for(self, field: str, times: int = 1) -> None:
        """Until ``field`` (e.g. "READY=1") has arrived ``times`` times; 30 s at most."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(30):
            while self.count(field) < times:
                data = await loop.sock_recv(self.sock, 4096)
                self.messages.append(data.decode())


async def test_notify_ready_watchdog_reload_and_stopping(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    cfg = base_config(fake_telegram, fake_llm, [ALICE])
    bridge = BridgeProcess.write(
        tmp_path, cfg, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    )
    await bridge.start()
    await notify.wait_for("READY=1")
    await notify.wait_for("WATCHDOG=1")
    bridge.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    await notify.wait_for("RELOADING=1")
    await notify.wait_for("READY=1", times=2)  # ready again after the reload
    assert await bridge.stop() == 0
    await notify.wait_for("STOPPING=1")
    notify.sock.close()
    first_ready = next(m for m in notify.messages if "READY=1" in m.split("\n"))
    assert "STATUS=1/1 bots polling" in first_ready
    reloading = next(m for m in notify.messages if "RELOADING=1" in m.split("\n"))
    assert re.search(r"^MONOTONIC_USEC=\d+$", reloading, re.M)
    order = [
        f
        for m in notify.messages
        for f in m.split("\n")
        if f in ("READY=1", "RELOADING=1", "STOPPING=1")
    ]
    assert order == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]


async def test_reload_adds_a_bot_and_rebinds_a_channel(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    cfg = base_config(fake_telegram, fake_llm, [ALICE])
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start()
    await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
    fake_telegram.inject_message(ALICE.token, chat_id=1, text="before")
    [before] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=1, timeout=30)

    new = make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE, BOB]
    )
    new["bindings"][0]["agent_id"] = "bob"  # telegram-alice is now answered by Bob
    bridge.config_path.write_text(json.dumps(new))
    bridge.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    await bridge.wait_for_log(r"reloaded .*: 2 bot\(s\)")
    await fake_telegram.wait_for_poll(BOB.token, timeout=30)
    fake_telegram.inject_message(ALICE.token, chat_id=1, text="after")
    fake_telegram.inject_message(BOB.token, chat_id=2, text="new bot")
    replies = await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=1, timeout=30)
    [from_bob_bot] = await fake_telegram.wait_for_sent(BOB.token, 1, chat_id=2, timeout=30)
    assert await bridge.stop() == 0
    assert before.text.startswith("[model=alice-model] [system=You are Alice.]")
    assert replies[1].text == "[model=bob-model] [system=You are Bob.] after"
    assert from_bob_bot.text == "[model=bob-model] [system=You are Bob.] new bot"


async def test_invalid_reload_keeps_the_old_config_serving(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    cfg = base_config(fake_telegram, fake_llm, [ALICE])
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start()
    await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
    broken = dict(cfg, roles={})
    bridge.config_path.write_text(json.dumps(broken))
    bridge.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    await bridge.wait_for_log(r"reload refused, old config still running: roles\.compaction")
    fake_telegram.inject_message(ALICE.token, chat_id=3, text="still there?")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=3, timeout=30)
    assert await bridge.stop() == 0
    assert reply.text == "[model=alice-model] [system=You are Alice.] still there?"


async def test_sigterm_during_a_slow_reply_delivers_it_and_exits_0(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.set_default("alice-model", Slow(2.0))
    cfg = base_config(fake_telegram, fake_llm, [ALICE])
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start()
    await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
    fake_telegram.inject_message(ALICE.token, chat_id=4, text="take your time")
    await fake_llm.wait_for_requests(1, timeout=30)  # the model is working on it
    stopping = asyncio.create_task(bridge.stop(signal.SIGTERM))
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=4, timeout=30)
    assert await stopping == 0
    assert reply.text.endswith("] take your time")
    assert "stopping: finishing in-flight turns" in bridge.logs()


async def test_health_and_metrics_move_with_traffic(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    cfg = base_config(fake_telegram, fake_llm, [ALICE])
    cfg["model_list"].append(
        {"model_name": "flaky", "model": "openai/flaky-model", "api_base": fake_llm.openai_base}
    )
    cfg["agents"]["list"][0]["model"] = {"primary": "flaky", "fallbacks": ["m-alice"]}
    fake_llm.script("flaky-model", Fault(503))
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start()
    port = int(
        (await bridge.wait_for_log(r"gateway listening on http://127\.0\.0\.1:(\d+)")).group(1)
    )
    await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).status_code == 200
        before = await metric_values(http)
        for n in range(3):
            fake_telegram.inject_message(ALICE.token, chat_id=5, text=f"m{n}")
        await fake_telegram.wait_for_sent(ALICE.token, 3, chat_id=5, timeout=30)
        # The inbox row is marked done just after the reply went out: poll the metric
        # (over HTTP there is nothing to wait on) until it shows that.
        async with asyncio.timeout(10):
            while (after := await metric_values(http))[BACKLOG] != 0:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        ready = (await http.get("/readyz")).json()
    assert await bridge.stop() == 0

    key_in = ("persona_bridge_messages_in_total", (("bot", "telegram-alice"),))
    key_out = ("persona_bridge_messages_out_total", (("bot", "telegram-alice"),))
    assert after[key_in] - before.get(key_in, 0) == 3
    assert after[key_out] - before.get(key_out, 0) == 3
    assert (
        after[
            (
                "persona_bridge_model_requests_total",
                (("model", "flaky"), ("outcome", "unavailable")),
            )
        ]
        == 1
    )
    assert (
        after[
            ("persona_bridge_fallbacks_total", (("from_model", "flaky"), ("to_model", "m-alice")))
        ]
        == 1
    )
    assert after[("persona_bridge_turn_seconds_count", (("agent", "alice"),))] == 3
    assert ready["ready"] is True
    assert ready["bots"]["telegram-alice"] == {
        "polling": True,
        "username": "alice_bot",
        "mode": "polling",
    }
    assert ready["models"]["flaky"]["cooling_down_s"] > 0
    assert ALICE.token not in json.dumps(ready)


async def metric_values(
    http: httpx.AsyncClient,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_persona_file_is_reread_on_reload(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    cfg = base_config(fake_telegram, fake_llm, [ALICE])
    persona = tmp_path / "alice.md"
    persona.write_text("You are Alice, version one.\n")
    del cfg["agents"]["list"][0]["persona"]
    cfg["agents"]["list"][0]["persona_file"] = "alice.md"  # relative to the config file
    bridge = BridgeProcess.write(tmp_path, cfg)
    await bridge.start()
    await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
    fake_telegram.inject_message(ALICE.token, chat_id=6, text="who are you?")
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=6, timeout=30)
    persona.write_text("You are Alice, version two.\n")
    bridge.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    await bridge.wait_for_log(r"reloaded ")
    fake_telegram.inject_message(ALICE.token, chat_id=6, text="and now?")
    replies = await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=6, timeout=30)
    assert await bridge.stop() == 0
    assert "[system=You are Alice, version one.]" in replies[0].text
    assert "[system=You are Alice, version two.]" in replies[1].text
