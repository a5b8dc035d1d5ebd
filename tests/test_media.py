"""Media end to end (SPEC §11): the real bridge, the fake Bot API serving files, the fake LLM
recording image parts and transcription uploads."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from media_files import OGG, image, pdf_with_text

from bot.config.loader import load_config
from bot.errors import ConfigError
from bot.testing import BridgeProcess, FakeLLM, FakeTelegram, Fault, Reply, Slow
from bot.testing import bridge_config as make_config
from bot.testing.bridge import BotPlan

SEER = BotPlan("seer", "3100001:seer-token-" + "S" * 30, "seer", "You are Seer.", "seer-model")
PLAIN = BotPlan(
    "plain", "3100002:plain-token-" + "P" * 30, "plain", "You are Plain.", "plain-model"
)
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
        usage = set(db.execute("SELECT agent_id, model_name, purpose FROM usage"))
    assert stored < 1000  # references, never the bytes
    assert ("plain", "eye", "vision") in usage  # charged to the turn that needed it


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


async def test_voice_note_is_transcribed_with_failover_and_answered_as_text(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(
        fake_telegram,
        fake_llm,
        transcription=["ear-one", "ear-two"],
        bot_settings={"echo_transcript": True},
    )
    fake_llm.script("ear-one", Fault(503))
    fake_llm.script("ear-two", Reply("remind me to buy milk"))
    bridge = await running(tmp_path, fake_telegram, config)
    fake_telegram.inject_voice(PLAIN.token, 51, OGG)
    [reply] = await fake_telegram.wait_for_sent(PLAIN.token, 1, timeout=30)

    [failed] = fake_llm.requests_for("ear-one")
    [upload] = fake_llm.requests_for("ear-two")
    assert failed.audio == OGG
    assert upload.audio == OGG  # sent as it came: no conversion
    assert upload.audio_type == "audio/ogg"
    assert upload.path == "/v1/audio/transcriptions"
    [turn] = chat_requests(fake_llm, PLAIN.model)
    assert turn.last_user_text == "[voice note, transcribed:]\nremind me to buy milk"
    assert reply.text.startswith("🎤 remind me to buy milk")  # echoed first
    assert reply.text.endswith("remind me to buy milk")  # the echo model's answer
    fake_telegram.inject_message(PLAIN.token, 51, "/status")
    status = (await fake_telegram.wait_for_sent(PLAIN.token, 2, timeout=30))[-1].text
    assert "Voice transcribed by: ear-one (cooling" in status
    assert "→ ear-two" in status
    assert "Images described by: eye" in status
    assert await bridge.stop() == 0
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        usage = list(db.execute("SELECT agent_id, user_id, model_name, purpose FROM usage"))
    assert ("plain", "51", "ear-two", "transcription") in usage
    assert ("plain", "51", "m-plain", "turn") in usage


async def test_without_transcription_a_voice_note_gets_one_sentence_and_no_model(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = await running(tmp_path, fake_telegram, config_for(fake_telegram, fake_llm))
    fake_telegram.inject_voice(PLAIN.token, 61, OGG)
    [reply] = await fake_telegram.wait_for_sent(PLAIN.token, 1, timeout=30)
    assert reply.text == "Voice messages are not set up for me; please type your message instead."
    assert fake_llm.requests == []
    assert fake_telegram.downloads(PLAIN.token) == []
    assert await bridge.stop() == 0


async def test_group_voice_notes_under_mention(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    """Replying to the bot admits a voice note; otherwise its transcript must name the bot
    (the cost: one transcription per voice note of an allowed sender in such a group)."""
    config = config_for(fake_telegram, fake_llm, transcription=["ear"])
    fake_llm.script("ear", Reply("just chatting"), Reply("hey plain bot, what time is it"))
    bridge = await running(tmp_path, fake_telegram, config)
    group = {"chat_type": "group", "user_id": 77}
    fake_telegram.inject_message(PLAIN.token, -700, "@plain_bot hi", **group)
    [hello] = await fake_telegram.wait_for_sent(PLAIN.token, 1, chat_id=-700, timeout=30)
    fake_telegram.inject_voice(PLAIN.token, -700, OGG, **group)  # not for the bot
    fake_telegram.inject_voice(PLAIN.token, -700, OGG, **group)  # names it
    fake_telegram.inject_voice(
        PLAIN.token, -700, OGG, reply_to_bot_message=hello.message_id, **group
    )
    await fake_telegram.wait_for_sent(PLAIN.token, 3, chat_id=-700, timeout=30)
    await fake_llm.wait_for_requests(3, model="ear", timeout=30)
    turns = [r.last_user_text for r in chat_requests(fake_llm, PLAIN.model)]
    assert turns == [
        "hi",
        "[voice note, transcribed:]\nhey plain bot, what time is it",
        f"[voice note, transcribed:]\n[transcribed by ear] {len(OGG)} bytes",
    ]
    assert await bridge.stop() == 0


async def test_strangers_media_cause_no_download_and_no_model_call(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm, transcription=["ear"])
    config["channels"]["telegram_bots"][1]["allow_from"] = ["1"]
    bridge = await running(tmp_path, fake_telegram, config)
    fake_telegram.inject_photo(PLAIN.token, 81, image(8), caption="look")
    fake_telegram.inject_voice(PLAIN.token, 81, OGG)
    fake_telegram.inject_voice(PLAIN.token, -800, OGG, chat_type="group", user_id=82)
    fake_telegram.inject_document(PLAIN.token, 81, b"# hi", "a.md", "text/markdown")
    fake_telegram.inject_message(PLAIN.token, 1, "hello")  # the one allowed user
    await fake_telegram.wait_for_sent(PLAIN.token, 2, timeout=30)
    sent = fake_telegram.sent(PLAIN.token)
    assert [m.chat_id for m in sent] == [81, 1]  # the stranger heard once that they are one
    assert "only talk to people on my list" in sent[0].text
    assert fake_telegram.downloads(PLAIN.token) == []
    assert fake_telegram.calls_to("getFile") == []
    assert [r.model for r in fake_llm.requests] == [PLAIN.model]
    assert await bridge.stop() == 0


async def test_documents_reach_the_model_as_text_with_their_names(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm, bot_settings={"max_file_mb": 1})
    bridge = await running(tmp_path, fake_telegram, config)
    token = PLAIN.token
    notes = b"# Shopping\n- milk\n- bread\n"
    fake_telegram.inject_document(token, 91, notes, "notes.md", "text/markdown", "summarise")
    fake_telegram.inject_document(
        token,
        91,
        pdf_with_text("Quarterly revenue grew 12 percent"),
        "report.pdf",
        "application/pdf",
    )
    fake_telegram.inject_document(
        token, 91, b"MZ\x90\x00" * 64, "setup.exe", "application/x-msdownload"
    )
    big = b"a" * (6 * 1024 * 1024)
    fake_telegram.inject_document(token, 91, big, "big.txt", "text/plain")  # size declared
    fake_telegram.inject_document(token, 91, big, "quiet.txt", "text/plain", declared_size=None)
    fake_telegram.inject_sticker(token, 91, "👍")
    fake_telegram.inject_update(
        token,
        {
            "message": {
                "message_id": 900,
                "date": 0,
                "chat": {"id": 91, "type": "private", "first_name": "U"},
                "from": {"id": 91, "is_bot": False, "first_name": "U"},
                "location": {"latitude": 1.0, "longitude": 2.0},
            }
        },
    )
    replies = await fake_telegram.wait_for_sent(token, 7, timeout=30)
    turns = [r.last_user_text for r in chat_requests(fake_llm, PLAIN.model)]
    assert turns[0] == "[document notes.md]\n# Shopping\n- milk\n- bread\n\nsummarise"
    assert turns[1] == "[document report.pdf]\nQuarterly revenue grew 12 percent"
    assert turns[2] == "[sticker 👍]"
    assert len(turns) == 3
    texts = [r.text for r in replies]
    assert texts[2].startswith("I can read plain text, Markdown, CSV, JSON, source code and PDF")
    assert texts[3] == texts[4] == "That file is too large for me; the limit is 1 MB."
    assert texts[6].startswith("I cannot handle location messages")
    downloads = fake_telegram.downloads(token)
    # notes.md, report.pdf, then quiet.txt cut off at the bound; big.txt and setup.exe never
    assert len(downloads) == 3
    assert downloads[2].size == len(big)
    assert not downloads[2].complete
    assert downloads[2].sent < len(big) // 2  # stopped near the bound, not at the end
    assert await bridge.stop() == 0


async def test_an_album_interrupted_by_a_crash_is_answered_once_as_one_turn(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    fake_llm.set_default(SEER.model, Slow(600))
    bridge = await running(tmp_path, fake_telegram, config_for(fake_telegram, fake_llm))
    photos = [image(n) for n in (7, 8, 9)]
    fake_telegram.inject_album(SEER.token, 42, photos, caption="before the crash")
    await fake_llm.wait_for_requests(1, model=SEER.model, timeout=30)
    await bridge.kill()

    fake_llm.set_default(SEER.model, Reply("three photos"))
    restarted = BridgeProcess(bridge.config_path)
    await restarted.start_polling(fake_telegram, *(b.token for b in BOTS))
    [reply] = await fake_telegram.wait_for_sent(SEER.token, 1, timeout=30)
    assert reply.text == "three photos"
    _, replayed = fake_llm.requests_for(SEER.model)
    assert replayed.images == tuple(photos)
    assert replayed.last_user_text == "before the crash"
    assert await restarted.stop() == 0
    assert len(fake_telegram.sent(SEER.token)) == 1
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        statuses = [s for (s,) in db.execute("SELECT status FROM inbox")]
        [(users,)] = db.execute("SELECT count(*) FROM messages WHERE role = 'user'")
    assert len(statuses) == 3
    assert "pending" not in statuses
    assert users == 1


async def test_chat_attaches_a_local_file(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    config = config_for(fake_telegram, fake_llm)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    (tmp_path / "cat.png").write_bytes(image(10))
    (tmp_path / "notes.md").write_text("# Plan\nship it\n")
    lines = (
        f"/attach {tmp_path / 'cat.png'} whose cat?\n"
        f"/attach {tmp_path / 'notes.md'}\n"
        f"/attach {tmp_path / 'missing.txt'}\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "chat", "seer", "--config", str(path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(child.communicate(lines.encode()), 60)
    assert child.returncode == 0, out.decode()
    photo, notes = fake_llm.requests_for(SEER.model)
    assert photo.images == (image(10),)
    assert photo.last_user_text == "whose cat?"
    assert notes.last_user_text == "[document notes.md]\n# Plan\nship it"
    assert f"no such file: {tmp_path / 'missing.txt'}" in out.decode()


def test_transcription_role_must_speak_the_openai_shape(tmp_path: Path) -> None:
    config = make_config(
        telegram_base="http://127.0.0.1:1", llm_base="http://127.0.0.1:2/v1", bots=[SEER]
    )
    config["model_list"].append({"model_name": "claude", "model": "anthropic/claude-x"})
    config["roles"]["transcription"] = {"primary": "cheap", "fallbacks": ["claude"]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.path == "roles.transcription"
    assert "'claude' uses protocol 'anthropic'" in problem.problem


async def test_group_voice_notes_without_transcription_stay_silent(
    tmp_path: Path, fake_telegram: FakeTelegram, fake_llm: FakeLLM
) -> None:
    bridge = await running(tmp_path, fake_telegram, config_for(fake_telegram, fake_llm))
    group = {"chat_type": "group", "user_id": 78}
    fake_telegram.inject_voice(PLAIN.token, -710, OGG, **group)  # not a reply: not for us
    fake_telegram.inject_message(PLAIN.token, -710, "@plain_bot hi", **group)
    [hello] = await fake_telegram.wait_for_sent(PLAIN.token, 1, chat_id=-710, timeout=30)
    assert hello.text.endswith("] hi")
    fake_telegram.inject_voice(
        PLAIN.token, -710, OGG, reply_to_bot_message=hello.message_id, **group
    )
    replies = await fake_telegram.wait_for_sent(PLAIN.token, 2, chat_id=-710, timeout=30)
    assert replies[1].text.startswith("Voice messages are not set up for me")
    assert fake_telegram.downloads(PLAIN.token) == []
    assert len(fake_llm.requests) == 1
    assert await bridge.stop() == 0
