"""Image parts and transcription on the wire, as the fake servers received them."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.config.schema import ModelEntry
from bot.errors import RateLimited
from bot.media.documents import DocumentUnreadable, decode_text, extract
from bot.providers.anthropic import AnthropicProvider
from bot.providers.openai import OpenAIProvider
from bot.testing import FakeLLM, Fault, Reply
from bot.types import AudioClip, ChatMessage, ChatRequest, ImagePart

PNG = ImagePart("image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
MEDIA_REF = {"media": [{"kind": "photo", "file_id": "f1", "mime": "image/jpeg"}]}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def entry(fake: FakeLLM, protocol: str = "openai") -> ModelEntry:
    base = fake.openai_base if protocol == "openai" else fake.anthropic_base
    return ModelEntry(
        model_name="m", model=f"{protocol}/eyes", api_base=base, api_key="sk-test-key-000000"
    )


def photo_request(caption: str) -> ChatRequest:
    message = ChatMessage("user", caption, extras=MEDIA_REF, images=(PNG,))
    return ChatRequest(system="You see.", messages=(message,))


async def test_openai_sends_a_data_url_part_and_never_the_media_reference(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    provider = OpenAIProvider(entry(fake_llm), client)
    await provider.chat(photo_request("what is it?"))
    await provider.chat(photo_request(""))
    captioned, bare = fake_llm.requests
    assert captioned.images == bare.images == (PNG.data,)
    parts = captioned.body["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": "what is it?"}
    url = parts[1]["image_url"]["url"]
    assert url == "data:image/png;base64," + base64.b64encode(PNG.data).decode()
    assert [p["type"] for p in bare.body["messages"][1]["content"]] == ["image_url"]
    assert "media" not in captioned.body["messages"][1]


async def test_anthropic_sends_a_base64_image_block(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    provider = AnthropicProvider(entry(fake_llm, "anthropic"), client)
    await provider.chat(photo_request("what is it?"))
    [seen] = fake_llm.requests
    assert seen.images == (PNG.data,)
    image, text = seen.body["messages"][0]["content"]
    assert image["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(PNG.data).decode(),
    }
    assert text == {"type": "text", "text": "what is it?"}


async def test_transcription_is_a_multipart_upload_with_the_key(
    fake_llm: FakeLLM, client: httpx.AsyncClient
) -> None:
    fake_llm.script("eyes", Fault(429, retry_after=3), Reply("  hello there  "))
    provider = OpenAIProvider(entry(fake_llm), client)
    clip = AudioClip(b"OggS" + bytes(range(256)), "voice.ogg", "audio/ogg")
    with pytest.raises(RateLimited):
        await provider.transcribe(clip)
    assert await provider.transcribe(clip) == "hello there"
    seen = fake_llm.requests[-1]
    assert seen.audio == clip.data
    assert (seen.audio_name, seen.audio_type, seen.model) == ("voice.ogg", "audio/ogg", "eyes")
    assert seen.headers["authorization"] == "Bearer sk-test-key-000000"


def test_text_decoding_guesses_the_charset_and_refuses_binary() -> None:
    assert decode_text("naïve café".encode("utf-16")) == "naïve café"
    assert decode_text("naïve café".encode("cp1252")) == "naïve café"
    assert decode_text(b"\xef\xbb\xbfplain") == "plain"
    with pytest.raises(DocumentUnreadable):
        decode_text(b"ELF\x00\x01\x02")
    cut = extract("a.csv", "text/csv", b"x," * 500, 100)
    assert (len(cut.text), cut.truncated) == (100, True)
    with pytest.raises(DocumentUnreadable):
        extract("broken.pdf", "application/pdf", b"%PDF-1.4 nothing here", 100)
