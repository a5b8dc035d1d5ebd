"""The one redaction for everything the bridge writes, shows or serves.

Logs, ``/readyz``, ``models check``, chat text and provider error messages all pass through a
``Redactor``: it masks the secrets it was told about (the config's bot tokens and API keys, the
key a request carried) and, as a fallback for secrets nobody told it about, anything shaped like
a Telegram bot token, an ``sk-…`` key, a Google API key or a bearer credential. Some provider
servers quote the key they were sent in their error text, so text from outside is redacted
where it enters the bridge and again where the bridge shows it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bot.config.schema import BridgeConfig
from bot.sessions.dsn import dsn_password

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4  # shorter "secrets" (placeholders like "x") would mangle every line

BOT_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]{30,}|\d{5,}:[A-Za-z0-9_-]{20,}")
# Masked whole: an OpenAI/Anthropic/OpenRouter style "sk-" key, a Google "AIza" key.
_KEY_SHAPES = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}|\bAIza[0-9A-Za-z_-]{30,}")
# Masked after the label, which stays readable: "Bearer …", "x-api-key: …", "api_key=…".
_LABELLED = re.compile(
    r"(?i)(\bbearer\s+|\b(?:x-api-key|x-goog-api-key|api[-_]?key)[\"']?\s*[:=]\s*[\"']?)"
    r"[A-Za-z0-9._~+/=-]{8,}"
)


class Redactor:
    """Masks known secrets and secret-shaped text; ``add`` learns more (after a reload)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Old secrets stay masked too: a reload must not unmask what logs already hide."""
        known = set(self._secrets) | {s for s in secrets if len(s) >= MIN_SECRET_CHARS}
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = tuple(sorted(known, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = BOT_TOKEN.sub(REDACTED, text)
        text = _KEY_SHAPES.sub(REDACTED, text)
        return _LABELLED.sub(lambda m: m.group(1) + REDACTED, text)


def secrets_of(config: BridgeConfig) -> list[str]:
    """Every secret a config holds: each bot's token and webhook secret, each model entry's
    API key."""
    found = [bot.token.get_secret_value() for bot in config.channels.bots()]
    found += [
        b.webhook_secret.get_secret_value() for b in config.channels.bots() if b.webhook_secret
    ]
    found += [m.api_key.get_secret_value() for m in config.model_list if m.api_key]
    password = dsn_password(config.session.database)  # a postgresql:// URL's password
    return [*found, password] if password else found
