"""Several bridge processes on one PostgreSQL database (SPEC §14, issue 16), through the
real bridge: every message answered exactly once, per-chat order kept across processes,
one poller per bot, and kill -9 of either process survived within the lease."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pexpect
import pytest

from bot.testing import BridgeProcess, Echo, FakeLLM, FakeTelegram, Hang, RecordedRequest, Slow
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan

BOTS = [
    BotPlan(
        name,
        f"{7100001 + i}:{name}-hosts-token-{'H' * 26}",
        name,
        f"You are {name.title()}.",
        f"{name}-model",
    )
    for i, name in enumerate(["alice", "bob", "carol"])
]
LEASE_S = 3.0
SOAK = os.environ.get("PERSONA_BRIDGE_SOAK_ROUNDS")


def config_for(fake_telegram: FakeTelegram, fake_llm: FakeLLM, dsn: str) -> dict[str, Any]:
    for plan in BOTS:
        fake_telegram.add_bot(plan.token, f"{plan.bot_id}_bot")
    config = make_config(
        telegram_base=fake_telegram.base_url, llm_base=fake_llm.openai_base, bots=BOTS
    )
    config["session"] = {"database": dsn, "claim_lease_s": LEASE_S}
    return config


def two_processes(tmp_path: Path, config: dict[str, Any]) -> list[BridgeProcess]:
    """The same config, twice (each with its own log file)."""
    bridges = []
    for name in ("p1", "p2"):
        (tmp_path / name).mkdir()
        bridges.append(BridgeProcess.write(tmp_path / name, config))
    return bridges


async def wait_for_every_answer(fake: FakeTelegram, texts: dict[str, str], within_s: float) -> None:
    for plan in BOTS:
        expected = sum(1 for channel in texts.values() if channel == plan.bot_id)
        await fake.wait_for_sent(plan.token, expected, timeout=within_s)


async def running(bridge: BridgeProcess, since: int) -> None:
    """Wait until the start whose log begins at offset ``since`` got as far as serving
    (from then on it handles SIGTERM)."""
    async with asyncio.timeout(30):
        while "service: gateway listening on" not in bridge.logs()[since:]:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def first_answers(fake: FakeTelegram, chat: tuple[BotPlan, int]) -> list[str]:
    """The chat's answers in the order Telegram got them, a resent chunk counted once."""
    seen: list[str] = []
    for message in fake.sent(chat[0].token, chat[1]):
        text = message.text.rsplit("] ", 1)[-1]
        if text not in seen:
            seen.append(text)
    return seen


async def run_with_kills(
    tmp_path: Path,
    fake_telegram: FakeTelegram,
    fake_llm: FakeLLM,
    dsn: str,
    rounds: int,
    messages: int = 500,
) -> None:
    rng = random.Random(20261130)
    fake_llm.set_default(None, lambda r: Slow(rng.uniform(0, 0.02)))
    bridges = two_processes(tmp_path, config_for(fake_telegram, fake_llm, dsn))
    chats = [(BOTS[c % len(BOTS)], 100 + c) for c in range(10)]
    texts: dict[str, str] = {}  # text → bot id
    ids: dict[tuple[str, int], str] = {}  # (channel, update id) → text
    order: dict[tuple[str, int], list[str]] = {(p.bot_id, c): [] for p, c in chats}
    for bridge in bridges:
        await bridge.start()
    since = {id(bridge): 0 for bridge in bridges}  # where each one's latest start logs from
    for plan in BOTS:
        await fake_telegram.wait_for_poll(plan.token, timeout=30)
    n = 0
    kills = 0
    per_round = messages // rounds + 1
    for round_no in range(rounds):
        for _ in range(per_round):
            plan, chat = chats[n % len(chats)]
            text = f"{plan.bot_id}-{chat}-m{n}"
            update_id = fake_telegram.inject_message(plan.token, chat_id=chat, text=text)
            texts[text] = plan.bot_id
            ids[(f"telegram-{plan.bot_id}", update_id)] = text
            order[(plan.bot_id, chat)].append(text)
            n += 1
        if round_no == 0:
            # No kill yet: the first round is shared cleanly, and nobody polled twice.
            await wait_for_every_answer(fake_telegram, texts, within_s=60)
            assert fake_telegram.poll_conflicts == {}
            continue
        # The chaos itself, not synchronisation: sometimes before the last victim's lease
        # lapsed (its rows still held), sometimes after (taken over, or mid-takeover).
        await asyncio.sleep(rng.uniform(0.05, 1.5 * LEASE_S))
        victim = bridges[rng.randrange(2)]
        await victim.kill()
        kills += 1
        since[id(victim)] = len(victim.logs())
        await victim.start()  # back at once: it stands by or takes bots over
    # Everything is answered: rows of a killed process were taken over within the lease.
    await wait_for_every_answer(fake_telegram, texts, within_s=60 + kills * LEASE_S)
    for bridge in bridges:
        await running(bridge, since[id(bridge)])  # one restarted last may still be starting
        assert await bridge.stop() == 0
    logs = "\n".join(b.logs() for b in bridges)

    answered = Counter(
        m.text.rsplit("] ", 1)[-1] for plan in BOTS for m in fake_telegram.sent(plan.token)
    )
    assert n >= messages
    assert [t for t in texts if answered[t] == 0] == []  # nothing lost
    # A chunk in flight at a kill may arrive twice; the bridge says so. Nothing else may.
    flagged = {
        ids[(channel, int(update))]
        for channel, update in re.findall(r"channel=(\S+) update=(\d+): chunk \d+ was being", logs)
    }
    assert {t for t, k in answered.items() if k > 1} <= flagged
    for (bot_id, chat), sent_in_order in order.items():
        plan = next(p for p in BOTS if p.bot_id == bot_id)
        assert first_answers(fake_telegram, (plan, chat)) == sent_in_order  # per-chat order
    assert fake_telegram.poll_conflicts == {}  # never two live pollers of one bot
    if kills:
        assert "took over" in logs or "polls it" in logs
    # Every update stored once, answered once, by one process.
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT status, outcome FROM inbox")
        users = await conn.fetch(
            "SELECT content, count(*) FROM messages WHERE role = 'user' GROUP BY content"
        )
    finally:
        await conn.close()
    assert len(rows) == n
    assert Counter((r["status"], r["outcome"]) for r in rows) == {("done", "delivered"): n}
    assert {r["content"] for r in users} == set(texts)
    assert [r["content"] for r in users if r["count"] > 1] == []


async def test_two_processes_share_500_messages_through_kill_9(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM, pg_dsn: str
) -> None:
    await run_with_kills(tmp_path, fake_telegram, fake_llm, pg_dsn, rounds=5)


async def test_a_turn_held_by_a_killed_process_is_taken_over_within_the_lease(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM, pg_dsn: str
) -> None:
    stuck: list[RecordedRequest] = []

    def first_one_hangs(request: RecordedRequest) -> Hang | Echo:
        if request.last_user_text == "stuck" and not stuck:
            stuck.append(request)  # the process that claimed it is mid-turn now
            return Hang()
        return Echo()

    fake_llm.set_default(None, first_one_hangs)
    bridges = two_processes(tmp_path, config_for(fake_telegram, fake_llm, pg_dsn))
    for bridge in bridges:
        await bridge.start()
    plan = BOTS[0]
    await fake_telegram.wait_for_poll(plan.token, timeout=30)
    fake_telegram.inject_message(plan.token, chat_id=500, text="stuck")
    async with asyncio.timeout(30):
        while not stuck:  # noqa: ASYNC110 - the fake LLM records; nothing to await on
            await asyncio.sleep(0.02)
    conn = await asyncpg.connect(pg_dsn)
    try:
        owner = await conn.fetchval("SELECT claimed_by FROM inbox WHERE status = 'pending'")
    finally:
        await conn.close()
    [holder] = [b for b in bridges if owner.startswith(f"{b.pid}-")]
    [survivor] = [b for b in bridges if b is not holder]

    await holder.kill()
    killed_at = asyncio.get_running_loop().time()
    [reply] = await fake_telegram.wait_for_sent(plan.token, 1, chat_id=500, timeout=30)
    took = asyncio.get_running_loop().time() - killed_at
    assert reply.text.endswith("stuck")
    # The lease lapses at most LEASE_S after the last renewal; the survivor looks every
    # third of it. A little slack for the turn itself on a busy machine.
    assert took <= LEASE_S + LEASE_S / 3 + 2.5
    await survivor.wait_for_log(r"took over 1 unfinished row\(s\) of process\(es\) " + owner)
    # /readyz of the survivor: it polls every bot now, and says what it took over.
    port = (await survivor.wait_for_log(r"gateway listening on http://127\.0\.0\.1:(\d+)"))[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        async with asyncio.timeout(15):
            while len((state := (await http.get("/readyz")).json())["store"]["polls"]) < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # the standby wins each bot's election within ~1 s
        metrics = (await http.get("/metrics")).text
    assert state["ready"] is True
    assert state["store"]["lease_takeovers"] == 1
    assert state["store"]["claims_held"] == 0
    assert "persona_bridge_lease_takeovers_total 1.0" in metrics
    assert await survivor.stop() == 0


@pytest.mark.soak
async def test_soak_two_processes_many_kills(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM, pg_dsn: str
) -> None:
    """Longer: PERSONA_BRIDGE_SOAK_ROUNDS kill rounds of 100 messages each (CI runs this
    short form: 8 rounds)."""
    rounds = int(SOAK or 8)
    await run_with_kills(
        tmp_path, fake_telegram, fake_llm, pg_dsn, rounds=rounds, messages=100 * rounds
    )


async def test_the_terminal_chat_works_on_a_postgresql_store(
    tmp_path: Path, fake_llm: FakeLLM, pg_dsn: str
) -> None:
    """Its messages are not durable updates: they go straight to a lane, not to a claim."""
    config = make_config(
        telegram_base="http://127.0.0.1:9", llm_base=fake_llm.openai_base, bots=BOTS[:1]
    )
    config["session"] = {"database": pg_dsn}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    child = pexpect.spawn(
        sys.executable, ["-m", "bot", "chat", "alice", "--config", str(path)], timeout=30
    )
    try:
        await child.expect("you> ", async_=True)
        child.sendline("Hello over PostgreSQL")
        await child.expect(r"Alice> .*Hello over PostgreSQL", async_=True)
        child.sendline("/quit")
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 0
    conn = await asyncpg.connect(pg_dsn)
    try:
        keys = await conn.fetch("SELECT channel, chat_id, agent_id FROM sessions")
    finally:
        await conn.close()
    assert [tuple(k) for k in keys] == [("console", "local", "alice")]


async def test_an_album_is_one_turn_on_two_processes(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM, pg_dsn: str
) -> None:
    """Its parts are stored one by one; no process claims the chat before it is complete."""
    from media_files import image
    from test_media import BOTS as MEDIA_BOTS
    from test_media import SEER
    from test_media import config_for as media_config

    config = media_config(fake_telegram, fake_llm)
    config["session"] = {"database": pg_dsn, "claim_lease_s": LEASE_S}
    bridges = two_processes(tmp_path, config)
    for bridge in bridges:
        await bridge.start()
    for plan in MEDIA_BOTS:
        await fake_telegram.wait_for_poll(plan.token, timeout=30)
    photos = [image(n) for n in (4, 5, 6)]
    for n, photo in enumerate(photos):  # the parts come apart, each in its own poll
        media = fake_telegram.photo_media(SEER.token, photo, "album-trip")
        fake_telegram.inject_message(SEER.token, 41, "" if n else "our trip", media=media)
        await asyncio.sleep(0.4)  # traffic shaping, not synchronisation: < album.GATHER_S
    await fake_telegram.wait_for_sent(SEER.token, 1, timeout=30)
    fake_telegram.inject_message(SEER.token, 41, "and?")
    await fake_telegram.wait_for_sent(SEER.token, 2, timeout=30)
    first, second = [r for r in fake_llm.requests_for(SEER.model) if r.audio is None]
    assert first.images == tuple(photos)
    assert first.last_user_text == "our trip"
    assert second.last_user_text == "and?"
    for bridge in bridges:
        assert await bridge.stop() == 0
    conn = await asyncpg.connect(pg_dsn)
    try:
        statuses = [r[0] for r in await conn.fetch("SELECT status FROM inbox")]
    finally:
        await conn.close()
    assert sorted(statuses) == ["done"] * 4
