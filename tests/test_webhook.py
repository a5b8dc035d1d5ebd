"""Webhook mode through the real bridge (SPEC §14): FakeTelegram POSTs updates with the
secret header to the bridge's webhook server (through ``route_webhooks``, the stand-in for
the TLS reverse proxy), retrying what is not answered with a 2xx."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from bot.testing import BridgeProcess, FakeLLM, FakeTelegram
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan
from bot.testing.fake_llm import Echo, Hang, Slow

ALICE = BotPlan(
    "alice", "7100001:alice-token-" + "H" * 30, "alice", "You are Alice.", "alice-model"
)
BOB = BotPlan("bob", "7100002:bob-token-" + "K" * 32, "bob", "You are Bob.", "bob-model")
SECRET = "hook-secret_" + "s" * 20
PUBLIC = "https://bridge.example.test/tg"
HEADER = "X-Telegram-Bot-Api-Secret-Token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest_asyncio.fixture(autouse=True)
async def no_bridge_left_behind(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    started: list[BridgeProcess] = []
    original = BridgeProcess.start

    async def start(self: BridgeProcess) -> None:
        started.append(self)
        await original(self)

    monkeypatch.setattr(BridgeProcess, "start", start)
    yield
    for bridge in started:
        await bridge.kill()


class Setup:
    """A bridge config with ALICE by webhook (BOB, when asked, by polling)."""

    def __init__(
        self, tmp_path: Path, telegram: FakeTelegram, llm: FakeLLM, bots: list[BotPlan]
    ) -> None:
        for bot in bots:
            telegram.add_bot(bot.token, f"{bot.bot_id}_bot")
        self.tmp_path, self.telegram = tmp_path, telegram
        self.port = free_port()
        self.local = f"http://127.0.0.1:{self.port}"
        telegram.route_webhooks(PUBLIC, self.local)
        self.config = make_config(
            telegram_base=telegram.base_url, llm_base=llm.openai_base, bots=bots
        )
        self.config["channels"]["telegram_bots"][0] |= {
            "updates": "webhook",
            "webhook_secret": SECRET,
        }
        self.config["webhook"] = {"host": "127.0.0.1", "port": self.port, "public_url": PUBLIC}

    def bridge(self) -> BridgeProcess:
        return BridgeProcess.write(self.tmp_path, self.config)

    async def started(self) -> BridgeProcess:
        bridge = self.bridge()
        await bridge.start()
        await until(lambda: self.telegram.webhook_url(ALICE.token) == f"{PUBLIC}/alice", bridge)
        await bridge.wait_for_log("persona-bridge ready")
        return bridge

    def inbox_rows(self) -> int:
        with sqlite3.connect(self.tmp_path / "sessions.db") as db:
            row = db.execute("SELECT count(*) FROM inbox WHERE channel = 'telegram-alice'")
            return int(row.fetchone()[0])


async def until(
    condition: Callable[[], bool], bridge: BridgeProcess, within_s: float = 30.0
) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met:\n{bridge.logs()[-2000:]}")
        await asyncio.sleep(0.02)


def update(update_id: int, chat_id: int, text: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "U"},
            "from": {"id": chat_id, "is_bot": False, "first_name": "U"},
            "text": text,
        },
    }


async def test_a_webhook_bot_registers_answers_and_never_polls(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    setup = Setup(tmp_path, fake_telegram, fake_llm, [ALICE, BOB])
    bridge = await setup.started()
    await fake_telegram.wait_for_poll(BOB.token)  # the polling bot beside it still polls
    fake_telegram.inject_message(ALICE.token, chat_id=11, text="hello by webhook")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=11, timeout=30)
    gateway = await bridge.wait_for_log(r"gateway listening on (http://127\.0\.0\.1:\d+)")
    async with httpx.AsyncClient(base_url=gateway.group(1)) as http:
        ready = (await http.get("/readyz")).json()
    assert await bridge.stop() == 0

    assert reply.text.endswith("] hello by webhook")
    [registered] = fake_telegram.calls_to("setWebhook", ALICE.token)
    assert registered.params["url"] == f"{PUBLIC}/alice"
    assert registered.params["secret_token"] == SECRET
    assert registered.params["allowed_updates"] == ["message"]
    assert fake_telegram.calls_to("getUpdates", ALICE.token) == []  # it would delete the hook
    assert fake_telegram.calls_to("deleteWebhook", ALICE.token) == []
    assert fake_telegram.webhook_url(ALICE.token) == f"{PUBLIC}/alice"  # stays set at stop
    assert fake_telegram.webhook_deliveries(ALICE.token) == [(1, 200)]
    assert ready["ready"] is True
    assert ready["bots"]["telegram-alice"]["mode"] == "webhook"
    assert ready["bots"]["telegram-bob"]["mode"] == "polling"
    assert SECRET not in bridge.logs()


async def test_requests_without_the_secret_are_refused_and_nothing_is_stored(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    setup = Setup(tmp_path, fake_telegram, fake_llm, [ALICE])
    bridge = await setup.started()
    body = update(500, 12, "let me in")
    async with httpx.AsyncClient(base_url=setup.local) as http:
        missing = await http.post("/alice", json=body)
        wrong = await http.post("/alice", json=body, headers={HEADER: SECRET[:-1] + "x"})
        unknown = await http.post("/nobody", json=body, headers={HEADER: SECRET})
        too_large = await http.post(
            "/alice", content=b"{" + b" " * 400_000 + b"}", headers={HEADER: SECRET}
        )
        get = await http.get("/alice", headers={HEADER: SECRET})
    rows = setup.inbox_rows()
    sent = fake_telegram.sent(ALICE.token)
    assert await bridge.stop() == 0

    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert unknown.status_code == 404
    assert too_large.status_code == 413
    assert get.status_code == 405
    assert rows == 0
    assert sent == []
    assert "without the right secret token refused" in bridge.logs()


async def test_an_update_delivered_twice_is_answered_once(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    setup = Setup(tmp_path, fake_telegram, fake_llm, [ALICE])
    bridge = await setup.started()
    body = update(700, 13, "only once please")
    async with httpx.AsyncClient(base_url=setup.local) as http:
        first = await http.post("/alice", json=body, headers={HEADER: SECRET})
        await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=13, timeout=30)
        again = await http.post("/alice", json=body, headers={HEADER: SECRET})
    # A later update of the same chat is answered: the duplicate went before it, unanswered.
    fake_telegram.inject_message(ALICE.token, chat_id=13, text="and then this")
    sent = await fake_telegram.wait_for_sent(ALICE.token, 2, chat_id=13, timeout=30)
    rows = setup.inbox_rows()
    assert await bridge.stop() == 0

    assert (first.status_code, again.status_code) == (200, 200)
    assert [m.text.split("] ")[-1] for m in sent] == ["only once please", "and then this"]
    assert rows == 2


async def test_a_malformed_update_is_skipped_and_later_ones_are_answered(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    setup = Setup(tmp_path, fake_telegram, fake_llm, [ALICE])
    bridge = await setup.started()
    poison = fake_telegram.inject_update(ALICE.token, {"message": {"chat": "no chat at all"}})
    async with httpx.AsyncClient(base_url=setup.local) as http:
        not_json = await http.post("/alice", content=b"{not json", headers={HEADER: SECRET})
    fake_telegram.inject_message(ALICE.token, chat_id=14, text="still here?")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=14, timeout=30)
    assert await bridge.stop() == 0

    assert not_json.status_code == 200  # a retry would never help
    assert fake_telegram.webhook_deliveries(ALICE.token)[0] == (poison, 200)
    assert reply.text.endswith("] still here?")
    logs = bridge.logs()
    assert f"update {poison} skipped" in logs
    assert "not an update skipped" in logs
    assert "no chat at all" not in logs  # never the content


async def test_updates_are_acknowledged_before_their_turns_and_answered_in_order(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    setup = Setup(tmp_path, fake_telegram, fake_llm, [ALICE])
    fake_llm.script(ALICE.model, Slow(4.0, Echo()))  # the first turn is slow; the rest echo
    bridge = await setup.started()
    texts = [f"message {n}" for n in range(6)]
    for text in texts:
        fake_telegram.inject_message(ALICE.token, chat_id=15, text=text)
    fake_telegram.inject_message(ALICE.token, chat_id=16, text="other chat")
    # Every update is stored and acknowledged while the first turn is still running.
    await fake_telegram.wait_for_deliveries(ALICE.token, 7, timeout=30)
    acknowledged_before_any_reply = fake_telegram.sent(ALICE.token, chat_id=15) == []
    sent = await fake_telegram.wait_for_sent(ALICE.token, 6, chat_id=15, timeout=30)
    await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=16, timeout=30)
    assert await bridge.stop() == 0

    assert acknowledged_before_any_reply
    assert {status for _, status in fake_telegram.webhook_deliveries(ALICE.token)} == {200}
    assert [m.text.split("] ")[-1] for m in sent] == texts


async def test_switching_back_to_polling_deletes_the_webhook(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    setup = Setup(tmp_path, fake_telegram, fake_llm, [ALICE])
    bridge = await setup.started()
    polling = setup.config["channels"]["telegram_bots"][0]
    polling["updates"] = "polling"
    del polling["webhook_secret"]
    bridge.config_path.write_text(json.dumps(setup.config))
    assert bridge.process is not None
    bridge.process.send_signal(signal.SIGHUP)
    await fake_telegram.wait_for_poll(ALICE.token, timeout=30)
    fake_telegram.inject_message(ALICE.token, chat_id=17, text="polled again")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=17, timeout=30)
    assert await bridge.stop() == 0

    assert fake_telegram.webhook_url(ALICE.token) == ""
    assert len(fake_telegram.calls_to("deleteWebhook", ALICE.token)) == 1
    assert reply.text.endswith("] polled again")
    assert fake_telegram.webhook_deliveries(ALICE.token) == []


async def test_webhook_port_taken_exits_78_naming_webhook_port(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    setup = Setup(tmp_path, fake_telegram, fake_llm, [ALICE])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        setup.config["webhook"]["port"] = taken.getsockname()[1]
        bridge = setup.bridge()
        await bridge.start()
        assert bridge.process is not None
        code = await asyncio.wait_for(bridge.process.wait(), 20)
    assert code == 78
    logs = bridge.logs()
    assert "webhook.port" in logs
    assert "Traceback" not in logs
    assert fake_telegram.calls_to("setWebhook") == []


async def test_a_reload_can_turn_a_polling_bot_into_a_webhook_bot(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    """The webhook section may arrive with a reload: the server starts then, before the bot
    registers its webhook; the bot stops polling."""
    setup = Setup(tmp_path, fake_telegram, fake_llm, [ALICE])
    webhook_config = json.loads(json.dumps(setup.config))
    polling = setup.config
    del polling["webhook"]
    polling["channels"]["telegram_bots"][0]["updates"] = "polling"
    del polling["channels"]["telegram_bots"][0]["webhook_secret"]
    bridge = setup.bridge()
    await bridge.start_polling(fake_telegram, ALICE.token)
    await bridge.wait_for_log("persona-bridge ready")
    bridge.config_path.write_text(json.dumps(webhook_config))
    assert bridge.process is not None
    bridge.process.send_signal(signal.SIGHUP)
    await until(lambda: fake_telegram.webhook_url(ALICE.token) == f"{PUBLIC}/alice", bridge)
    polls = len(fake_telegram.calls_to("getUpdates", ALICE.token))
    fake_telegram.inject_message(ALICE.token, chat_id=18, text="pushed now")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=18, timeout=30)
    assert await bridge.stop() == 0

    assert reply.text.endswith("] pushed now")
    assert fake_telegram.webhook_deliveries(ALICE.token) == [(1, 200)]
    assert len(fake_telegram.calls_to("getUpdates", ALICE.token)) == polls  # no poll since
    assert "webhook server listening" in bridge.logs()


async def test_an_acknowledged_update_survives_kill_9(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    """The 200 comes after the durable insert: a crash right after it loses nothing."""
    setup = Setup(tmp_path, fake_telegram, fake_llm, [ALICE])
    fake_llm.script(ALICE.model, Hang(), Echo())  # the first turn never finishes
    bridge = await setup.started()
    async with httpx.AsyncClient(base_url=setup.local) as http:
        acknowledged = await http.post(
            "/alice", json=update(900, 19, "keep me"), headers={HEADER: SECRET}
        )
        rows_at_ack = setup.inbox_rows()
    await fake_llm.wait_for_requests(1, model=ALICE.model)  # its turn is running, never finishing
    await bridge.kill()
    assert fake_telegram.sent(ALICE.token) == []
    restarted = await setup.started()
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=19, timeout=30)
    assert await restarted.stop() == 0

    assert acknowledged.status_code == 200
    assert rows_at_ack == 1
    assert reply.text.endswith("] keep me")


async def test_a_failed_set_webhook_is_retried_and_readiness_waits_for_it(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    setup = Setup(tmp_path, fake_telegram, fake_llm, [ALICE])
    fake_telegram.fail_next(
        ALICE.token, "setWebhook", status=502, description="Bad Gateway", times=2
    )
    bridge = setup.bridge()
    await bridge.start()
    gateway = await bridge.wait_for_log(r"gateway listening on (http://127\.0\.0\.1:\d+)")
    await bridge.wait_for_log(r"telegram-alice.*retry")
    async with httpx.AsyncClient(base_url=gateway.group(1)) as http:
        early = (await http.get("/readyz")).json()
        await until(lambda: fake_telegram.webhook_url(ALICE.token) != "", bridge)
        await bridge.wait_for_log("persona-bridge ready")
        late = (await http.get("/readyz")).json()
    fake_telegram.inject_message(ALICE.token, chat_id=20, text="after the retries")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=20, timeout=30)
    assert await bridge.stop() == 0

    assert early["ready"] is False
    assert early["bots"]["telegram-alice"]["mode"] == "webhook"
    assert "Bad Gateway" in str(early["bots"]["telegram-alice"].get("error"))
    assert late["ready"] is True
    assert len(fake_telegram.calls_to("setWebhook", ALICE.token)) == 3
    assert fake_telegram.calls_to("getUpdates", ALICE.token) == []
    assert reply.text.endswith("] after the retries")


async def test_a_reload_with_another_public_url_registers_it(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    setup = Setup(tmp_path, fake_telegram, fake_llm, [ALICE])
    bridge = await setup.started()
    moved = "https://moved.example.test"
    fake_telegram.route_webhooks(moved, setup.local)
    setup.config["webhook"]["public_url"] = moved
    bridge.config_path.write_text(json.dumps(setup.config))
    assert bridge.process is not None
    bridge.process.send_signal(signal.SIGHUP)
    await until(lambda: fake_telegram.webhook_url(ALICE.token) == f"{moved}/alice", bridge)
    fake_telegram.inject_message(ALICE.token, chat_id=21, text="via the new address")
    [reply] = await fake_telegram.wait_for_sent(ALICE.token, 1, chat_id=21, timeout=30)
    assert await bridge.stop() == 0
    assert reply.text.endswith("] via the new address")
    assert fake_telegram.calls_to("getUpdates", ALICE.token) == []


async def test_two_processes_behind_one_round_robin_webhook_keep_each_chats_order(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM, pg_dsn: str
) -> None:
    """Two bridges on one PostgreSQL database behind one public URL, the fake spreading its
    POSTs over both in turn (a load balancer).

    Why this fails if per-chat order across processes broke: each process answers 200 as
    soon as the update is stored, and the fake then sends the chat's next update (to the
    other process, or whichever is next in turn) while the first one's turn is still
    running (turns take up to 0.15 s). So both processes hold pending rows of one chat at
    once, and both are woken for them; only the claim rule (a chat is claimed by one live
    process at a time, oldest row first) keeps them from running that chat's turns side by
    side, where turns of random length would be answered out of order."""
    rng = random.Random(16)
    fake_llm.set_default(None, lambda request: Slow(rng.uniform(0.0, 0.15)))
    fake_telegram.add_bot(ALICE.token, "alice_bot")
    ports = [free_port(), free_port()]
    locals_ = [f"http://127.0.0.1:{port}" for port in ports]
    fake_telegram.route_webhooks(PUBLIC, *locals_)
    bridges = []
    for name, port in zip(("p1", "p2"), ports, strict=True):
        config = make_config(
            telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=[ALICE]
        )
        config["channels"]["telegram_bots"][0] |= {"updates": "webhook", "webhook_secret": SECRET}
        config["webhook"] = {"host": "127.0.0.1", "port": port, "public_url": PUBLIC}
        config["session"] = {"database": pg_dsn}
        (tmp_path / name).mkdir()
        bridges.append(BridgeProcess.write(tmp_path / name, config))
    await asyncio.gather(*(bridge.start() for bridge in bridges))
    for bridge in bridges:
        await bridge.wait_for_log("persona-bridge ready")
    assert fake_telegram.webhook_url(ALICE.token) == f"{PUBLIC}/alice"

    chats = [31, 32, 33, 34]
    order: dict[int, list[str]] = {chat: [] for chat in chats}
    for n in range(6):  # injected at once, interleaved: every chat has a backlog
        for chat in chats:
            text = f"chat {chat} message {n}"
            fake_telegram.inject_message(ALICE.token, chat_id=chat, text=text)
            order[chat].append(text)
    total = sum(len(texts) for texts in order.values())
    for chat, texts in order.items():
        await fake_telegram.wait_for_sent(ALICE.token, len(texts), chat_id=chat, timeout=15)
    async with httpx.AsyncClient() as http:
        wrong = [
            await http.post(
                f"{local}/alice",
                json=update(990, 35, "forged"),
                headers={HEADER: SECRET[:-1] + "x"},
            )
            for local in locals_
        ]
    for bridge in bridges:
        assert await bridge.stop() == 0

    answered = Counter(m.text.rsplit("] ", 1)[-1] for m in fake_telegram.sent(ALICE.token))
    assert answered == Counter(text for texts in order.values() for text in texts)  # once each
    for chat, texts in order.items():
        sent = [m.text.rsplit("] ", 1)[-1] for m in fake_telegram.sent(ALICE.token, chat)]
        assert sent == texts  # per-chat order, across both processes
    log = fake_telegram.webhook_delivery_log(ALICE.token)
    assert sorted(u for u, status, _ in log if status == 200) == list(range(1, total + 1))
    assert {base for _, status, base in log if status == 200} == set(locals_)  # both served
    assert [r.status_code for r in wrong] == [401, 401]
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT status, outcome FROM inbox")
    finally:
        await conn.close()
    assert Counter((r["status"], r["outcome"]) for r in rows) == {("done", "delivered"): total}
