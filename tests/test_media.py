"""Media end to end (SPEC §11): the real bridge, the fake Bot API serving files, the fake LLM
recording image parts and transcription uploads."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from bot.testing import BridgeProcess, FakeLLM, FakeTelegram, Fault, Reply
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan
from media_files import OGG, image, pdf_with_text

SEER = BotPlan("seer", "3100001:seer-token-" + "S" * 30, "seer", "You are Seer.", "seer-model")
PLAIN = BotPlan("plain", "3100002:plain-token-" + "P" * 30, "plain", "You are Plain.", "plain-model")
BOTS = [SEER, PLAIN]


def config_for(
    telegram: FakeTelegram,
    llm: FakeLLM,
    *,
    vision_role: bool = True,
    transcription: list[str] | None = None,
    bot_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Seer's model has vision, Plain's has not; roles.vision and roles.transcription are on
    the fake LLM too (``transcription``: the entries' model ids, in chain order)."""
    for bot in BOTS:
        telegram.add_bot(bot.token, f"{bot.bot_id}_bot")
    config = make_config(telegram_base=telegram.base_url, llm_base=llm.openai_base, bots=BOTS)
    models = config["model_list"]
    models[0]["vision"] = True
    if vision_role:
        models.append(
            {"model_name": "eye", "model": "openai/eye-model", "api_base": llm.openai_base}
        )
        models[-1]["vision"] = True
        config["roles"]["vision"] = "eye"
    if transcription:
        for model_id in transcription:
            entry = {"model_name": model_id, "model": f"openai/{model_id}"}
            models.append(entry | {"api_base": llm.openai_base})
        config["roles"]["transcription"] = {
            "primary": transcription[0],
            "fallbacks": transcription[1:],
        }
    for bot in config["channels"]["telegram_bots"]:
        bot.update(bot_settings or {})
    return config


async def running(tmp_path: Path, telegram: FakeTelegram, config: dict[str, Any]) -> BridgeProcess:
    bridge = BridgeProcess.write(tmp_path, config)
    await bridge.start_polling(telegram, *(b.token for b in BOTS))
    return bridge


def chat_requests(llm: FakeLLM, model: str) -> list[Any]:
    return [r for r in llm.requests_for(model) if r.audio is None]


async def test_photo_reaches_a_vision_model_as_an_image_part_and_others_as_text(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.script("eye-model", Reply("a red bicycle leaning on a wall"))
    bridge = await running(tmp_path, fake_telegram, config_for(fake_telegram, fake_llm))
    photo = image(1)
    fake_telegram.inject_photo(SEER.token, 11, photo, caption="what is this?")
    fake_telegram.inject_photo(PLAIN.token, 12, photo, caption="and this?")
    await fake_telegram.wait_for_sent(SEER.token, 1, timeout=30)
    await fake_telegram.wait_for_sent(PLAIN.token, 1, timeout=30)

    [seen] = fake_llm.requests_for(SEER.model)
    assert seen.images == (photo,)  # the largest size, bytes intact
    assert seen.last_user_text == "what is this?"
    [described] = fake_llm.requests_for("eye-model")
    assert described.images == (photo,)
    [plain] = fake_llm.requests_for(PLAIN.model)
    assert plain.images == ()
    assert "[image, described by a vision model: a red bicycle leaning on a wall]" in (
        plain.last_user_text
    )
    assert "and this?" in plain.last_user_text

    # A later turn: no image bytes, no download, the description stands in for the photo.
    downloads = len(fake_telegram.downloads(PLAIN.token))
    fake_telegram.inject_message(PLAIN.token, 12, "what colour was it?")
    await fake_telegram.wait_for_sent(PLAIN.token, 2, timeout=30)
    later = fake_llm.requests_for(PLAIN.model)[-1]
    assert later.images == ()
    assert len(fake_telegram.downloads(PLAIN.token)) == downloads
    assert len(fake_llm.requests_for("eye-model")) == 1  # described once, then stored
    history = str(later.body["messages"])
    assert "a red bicycle" in history
    assert "base64" not in history
    fake_telegram.inject_message(SEER.token, 11, "again?")
    await fake_telegram.wait_for_sent(SEER.token, 2, timeout=30)
    seer_later = fake_llm.requests_for(SEER.model)[-1]
    assert seer_later.images == ()
    assert "[image sent earlier; not shown again]" in str(seer_later.body["messages"])
    assert await bridge.stop() == 0
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        [(stored,)] = db.execute("SELECT max(length(extras)) FROM messages")
    assert stored < 1000  # references, never the bytes


async def test_without_any_vision_the_model_is_told_it_cannot_see_the_image(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm, vision_role=False)
    bridge = await running(tmp_path, fake_telegram, config)
    fake_telegram.inject_photo(PLAIN.token, 21, image(2), caption="nice?")
    await fake_telegram.wait_for_sent(PLAIN.token, 1, timeout=30)
    [seen] = fake_llm.requests_for(PLAIN.model)
    assert seen.images == ()
    assert "cannot be shown to you" in seen.last_user_text
    assert "nice?" in seen.last_user_text
    assert await bridge.stop() == 0


async def test_failover_from_a_vision_model_to_a_text_only_one_drops_the_image(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm)
    config["agents"]["list"][0]["model"] = {"primary": "m-seer", "fallbacks": ["m-plain"]}
    fake_llm.script(SEER.model, Fault(503))
    fake_llm.script("eye-model", Reply("a cat"))
    bridge = await running(tmp_path, fake_telegram, config)
    fake_telegram.inject_photo(SEER.token, 31, image(3), caption="who?")
    await fake_telegram.wait_for_sent(SEER.token, 1, timeout=30)
    [first] = fake_llm.requests_for(SEER.model)
    [second] = fake_llm.requests_for(PLAIN.model)
    assert first.images == (image(3),)
    assert second.images == ()
    assert "described by a vision model: a cat" in second.last_user_text
    assert await bridge.stop() == 0


async def test_an_album_is_one_turn_with_every_image(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = await running(tmp_path, fake_telegram, config_for(fake_telegram, fake_llm))
    photos = [image(n) for n in (4, 5, 6)]
    fake_telegram.inject_album(SEER.token, 41, photos, caption="our trip")
    await fake_telegram.wait_for_sent(SEER.token, 1, timeout=30)
    fake_telegram.inject_message(SEER.token, 41, "and?")
    await fake_telegram.wait_for_sent(SEER.token, 2, timeout=30)
    first, _ = fake_llm.requests_for(SEER.model)
    assert first.images == tuple(photos)
    assert first.last_user_text == "our trip"
    assert await bridge.stop() == 0
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        statuses = [s for (s,) in db.execute("SELECT status FROM inbox ORDER BY update_id")]
    assert len(statuses) == 4
    assert "pending" not in statuses
