"""The one Redactor, and provider error text redacted where it enters the bridge."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from bot.app import App
from bot.config.loader import load_config
from bot.errors import ProviderAuthError, ProviderError
from bot.ops.gateway import cooling_models
from bot.ops.logs import RedactingFilter
from bot.providers import http_errors
from bot.providers.cooldown import CooldownBook
from bot.redaction import REDACTED, Redactor, secrets_of
from bot.testing import bridge_config
from bot.testing.bridge import BotPlan

OPAQUE = "opaque-key-with-no-known-shape-91c2"  # only masked because it was named


def test_known_secrets_are_masked_longest_first_and_kept_after_add() -> None:
    redactor = Redactor([OPAQUE, "short-xyz"])
    redactor.add([OPAQUE + "-longer"])
    text = f"a {OPAQUE}-longer b {OPAQUE} c short-xyz d"
    assert redactor.redact(text) == f"a {REDACTED} b {REDACTED} c {REDACTED} d"
    assert Redactor(["abc"]).redact("abc") == "abc"  # too short to be a secret


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token 123456789:AAHk2-abcdefghijklmnopqrstuvwxyz0123 ok", f"token {REDACTED} ok"),
        ("key sk-proj-AbCdEf0123456789xyz rejected", f"key {REDACTED} rejected"),
        ("key sk-ant-api03-AbCdEf0123456789 rejected", f"key {REDACTED} rejected"),
        ("?key=AIzaSyA1234567890abcdefghijklmnopqrstu", f"?key={REDACTED}"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", f"Authorization: Bearer {REDACTED}"),
        ('{"x-api-key": "abcdefgh12345678"}', f'{{"x-api-key": "{REDACTED}"}}'),
        ("api_key=abcdefgh12345678&x=1", f"api_key={REDACTED}&x=1"),
    ],
)
def test_secret_shapes_are_masked_without_being_named(text: str, expected: str) -> None:
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "at 12:30:45 the task-list was 3 items",
        "the risk-assessment-framework-document is long",
        "Bearer tokens are described in RFC 6750",
        "HTTP 401: invalid_request_error: invalid_api_key: Incorrect API key provided",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor().redact(text) == text


def test_log_filter_and_surfaces_share_one_redactor(caplog: pytest.LogCaptureFixture) -> None:
    redactor = Redactor()
    log_filter = RedactingFilter(redactor=redactor)
    log_filter.add([OPAQUE])  # what a reload does: the surfaces learn it too
    assert redactor.redact(OPAQUE) == REDACTED
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "model said %s", (OPAQUE,), None)
    log_filter.filter(record)
    assert record.getMessage() == f"model said {REDACTED}"


def _answer(status: int, message: str, headers: dict[str, str]) -> httpx.Response:
    request = httpx.Request("POST", "https://llm.example/v1/messages", headers=headers)
    return httpx.Response(status, json={"error": {"message": message}}, request=request)


@pytest.mark.parametrize(
    "headers",
    [{"x-api-key": OPAQUE}, {"authorization": f"Bearer {OPAQUE}"}, {"api-key": OPAQUE}],
)
def test_error_text_quoting_the_sent_key_is_redacted_on_entry(headers: dict[str, str]) -> None:
    error = http_errors.from_response(_answer(401, f"key {OPAQUE} is not valid", headers), "m")
    assert isinstance(error, ProviderAuthError)
    assert OPAQUE not in str(error)
    assert str(error) == f"HTTP 401: key {REDACTED} is not valid"


def test_a_key_where_the_detail_is_cut_is_redacted_before_the_cut() -> None:
    message = "x" * 280 + " " + OPAQUE
    error = http_errors.from_response(_answer(500, message, {"x-api-key": OPAQUE}), "m")
    assert OPAQUE[:10] not in str(error)


def test_cooldown_reasons_are_redacted_when_recorded() -> None:
    book = CooldownBook(redactor=Redactor([OPAQUE]))
    book.record_failure("m", ProviderError(f"server said {OPAQUE}", model_name="m"))
    assert book.reason("m") == f"ProviderError: server said {REDACTED}"
    shapes_only = CooldownBook()
    shapes_only.record_failure("m", ProviderError("Bearer abcdefgh12345678", model_name="m"))
    assert "abcdefgh12345678" not in shapes_only.reason("m")


async def test_the_apps_redactor_holds_the_configs_secrets_and_learns_on_reload(
    tmp_path: Path,
) -> None:
    """/readyz reasons are masked with the config's own secrets, not only by shape."""
    bot = BotPlan("alice", "6200001:alice-token-" + "R" * 30, "alice", "You are A.", "a-model")
    config = bridge_config(
        telegram_base="http://127.0.0.1:9", llm_base="http://127.0.0.1:9/v1", bots=[bot]
    )
    config["model_list"][0]["api_key"] = OPAQUE
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    app = App(load_config(path), channels=lambda _loaded, _inbox: [])
    try:
        app.cooldowns.record_failure("m-alice", ProviderError(f"got {OPAQUE}"))
        assert (
            cooling_models(app.cooldowns)["m-alice"]["reason"] == f"ProviderError: got {REDACTED}"
        )

        rotated = OPAQUE + "-rotated"
        config["model_list"][0]["api_key"] = rotated
        path.write_text(json.dumps(config))
        assert await app.reload(path)
        app.cooldowns.record_failure("m-alice", ProviderError(f"got {rotated} after {OPAQUE}"))
        reason = cooling_models(app.cooldowns)["m-alice"]["reason"]
        assert reason == f"ProviderError: got {REDACTED} after {REDACTED}"
    finally:
        await app.generation.close_now()


def test_webhook_secrets_are_among_the_configs_secrets(tmp_path: Path) -> None:
    """The webhook secret is a credential: masked in logs and everything served."""
    bot = BotPlan("alice", "6200002:alice-token-" + "T" * 30, "alice", "You are A.", "a-model")
    config = bridge_config(
        telegram_base="http://127.0.0.1:9", llm_base="http://127.0.0.1:9/v1", bots=[bot]
    )
    secret = "webhook-secret_0123456789"
    config["channels"]["telegram_bots"][0] |= {"updates": "webhook", "webhook_secret": secret}
    config["webhook"] = {"port": 8081, "public_url": "https://bot.example.org"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    loaded = load_config(path)
    assert secret in secrets_of(loaded.config)
    assert secret not in repr(loaded.config)
    assert Redactor(secrets_of(loaded.config)).redact(f"token {secret}!") == f"token {REDACTED}!"
