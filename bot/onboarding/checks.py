"""Live checks shared by ``init`` and ``doctor``: one line each, with a fix when red."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bot.config.schema import ModelEntry
from bot.errors import (
    ChannelAuthError,
    ChannelError,
    ChannelUnavailable,
    ModelNotFound,
    ProviderAuthError,
    ProviderError,
    ProviderUnavailable,
)
from bot.onboarding.telegram_probe import BotInfo, TelegramProbe
from bot.providers.dispatcher import ProviderDispatcher
from bot.providers.health_check import PROBE

OK, FAILED = "✓", "✗"
MODEL_PROBE_LIMIT_S = 30.0  # a doctor run must end; a model slower than this is a finding


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, what was seen, and how to fix it when it failed."""

    subject: str
    ok: bool
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"{OK} {self.subject}: {self.detail}"
        return f"{FAILED} {self.subject}: {self.detail} — {self.fix}"


async def check_token(
    subject: str, token: str, api_base: str, secret_name: str
) -> tuple[Check, BotInfo | None]:
    """getMe: is the token accepted, and which bot is it?"""
    async with TelegramProbe(token, api_base) as probe:
        try:
            info = await probe.get_me()
        except ChannelError as exc:
            return _token_failure(subject, exc, api_base, secret_name), None
    return Check(subject, True, f"token accepted: @{info.username} ({info.first_name})"), info


def _token_failure(subject: str, exc: ChannelError, api_base: str, secret_name: str) -> Check:
    if isinstance(exc, ChannelAuthError):
        return Check(
            subject,
            False,
            "Telegram rejected the token (revoked, or copied wrongly)",
            f"copy the current token from @BotFather (/mybots → API Token) into {secret_name}",
        )
    if isinstance(exc, ChannelUnavailable):
        return Check(
            subject,
            False,
            f"{api_base} cannot be reached ({exc})",
            "check this machine's internet access, proxy and firewall",
        )
    return Check(subject, False, str(exc), "see the Telegram message above")


async def check_webhook(
    subject: str, token: str, api_base: str, expected: str | None = None
) -> Check:
    """getWebhookInfo against what the config wants: for a polling bot (``expected`` None)
    a webhook left set makes every getUpdates fail with 409; a webhook bot's must be
    ``expected`` (``{public_url}/{bot id}``), or Telegram delivers elsewhere."""
    async with TelegramProbe(token, api_base) as probe:
        try:
            url = await probe.webhook_url()
        except ChannelError as exc:
            return Check(subject, False, f"getWebhookInfo failed ({exc})", "see the getMe line")
    if expected is not None:
        return _webhook_bot(subject, url, expected)
    if not url:
        return Check(subject, True, "no webhook set; polling receives updates")
    return Check(
        subject,
        False,
        f"a webhook is set ({_origin(url)}); while it is, polling receives nothing",
        "stop whatever else serves this bot by webhook; `persona-bridge run` deletes the "
        "webhook when it starts (or call the Bot API's deleteWebhook yourself)",
    )


def _webhook_bot(subject: str, url: str, expected: str) -> Check:
    if url == expected:
        return Check(subject, True, f"webhook set to {expected} as configured")
    if not url:
        return Check(subject, True, f"no webhook set yet; `persona-bridge run` sets {expected}")
    actual = _origin(url)  # only the origin: another deployment's path may be a secret
    if actual == _origin(expected):
        actual += " with another path"
    return Check(
        subject,
        False,
        f"the webhook points to {actual}, expected {expected}",
        "`persona-bridge run` sets it at start; if it is running, something else changed "
        "it: stop that, then restart the bridge (or check webhook.public_url)",
    )


async def check_model(dispatcher: ProviderDispatcher, entry: ModelEntry) -> Check:
    """One tiny request through the project's own provider for ``entry``."""
    subject = f"model {entry.model_name} ({entry.model})"
    started = time.perf_counter()
    try:
        provider = await dispatcher.get(entry.model_name)
        async with asyncio.timeout(min(entry.timeout_s, MODEL_PROBE_LIMIT_S)):
            response = await provider.chat(PROBE)
    except TimeoutError:
        return Check(
            subject,
            False,
            f"no answer within {MODEL_PROBE_LIMIT_S:g} s",
            f"check that {entry.base_url or 'the model'} is up and not overloaded",
        )
    except ProviderError as exc:
        return Check(subject, False, str(exc), _model_fix(exc, entry))
    millis = (time.perf_counter() - started) * 1000
    reply = " ".join(response.text.split())[:40]
    return Check(subject, True, f"answered {reply!r} in {millis:.0f} ms")


def _model_fix(exc: ProviderError, entry: ModelEntry) -> str:
    if isinstance(exc, ProviderAuthError):
        return "the key was refused: check api_key (and that the account has credit)"
    if isinstance(exc, ModelNotFound):
        return f"the server does not know {entry.model_id!r}: check the model id in 'model'"
    if isinstance(exc, ProviderUnavailable):
        where = entry.base_url or "the model's server"
        return f"check that {where} is running and reachable from this machine (api_base)"
    return "run `persona-bridge models check` and read the model's answer"


def _origin(url: str) -> str:
    """Scheme and host only: a webhook path often carries a secret."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.split('/', 1)[0]}" if sep else "?"
