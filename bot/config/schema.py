"""The configuration schema (SPEC §4): immutable pydantic models, unknown keys rejected.

Shape checks live here; checks that span sections (references, duplicates) live in
``references.py`` so every problem can be reported at once.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

HTTP_PROTOCOLS = ("openai", "anthropic", "openrouter", "ollama")
CLI_PROTOCOLS = ("claude-cli", "codex-cli", "gemini-cli")
PROTOCOLS = HTTP_PROTOCOLS + CLI_PROTOCOLS

DEFAULT_API_BASES = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "openrouter": "https://openrouter.ai/api/v1",
    "ollama": "http://127.0.0.1:11434/v1",
}
DEFAULT_TELEGRAM_API_BASE = "https://api.telegram.org"
LEGACY_BOT_ID = "default"
# The terminal (`persona-bridge chat`): a channel that needs no configuration of its own.
CONSOLE_CHANNEL = "console"

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def _as_str(value: Any) -> Any:
    # Telegram ids are numbers, but people write them either way; compare them as text.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


IdText = Annotated[str, BeforeValidator(_as_str)]

_TOKEN = re.compile(r"[0-9]+:[A-Za-z0-9_-]+")
_USER_ID = re.compile(r"[0-9]+")
_USERNAME = re.compile(r"@[A-Za-z0-9_]{1,32}")
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
# Telegram delivers webhooks to these ports only (SPEC §14); TLS ends at the reverse proxy.
WEBHOOK_PUBLIC_PORTS = (443, 80, 88, 8443)


def http_url(value: str) -> str:
    """An http(s) URL with a host; the trailing slash dropped so paths join cleanly."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("not a valid URL; write e.g. http://127.0.0.1:8080/v1") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("not an HTTP URL; start it with http:// or https://")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("the URL contains spaces or control characters; remove them")
    if not parts.hostname:
        raise ValueError("the URL has no host; write e.g. http://127.0.0.1:8080/v1")
    return value.rstrip("/")


def _allow_entry(value: str) -> str:
    if value == "*" or _USER_ID.fullmatch(value) or _USERNAME.fullmatch(value):
        return value
    if value.strip() != value:
        raise ValueError(f"{value!r} has spaces around it and can never match; remove them")
    if value.lstrip("-").isdigit():
        raise ValueError(
            f"{value!r} can never match a user; allow_from lists user ids, "
            "a group's id goes in a binding's match.chat_id"
        )
    if re.fullmatch(r"[A-Za-z0-9_]{1,32}", value):
        raise ValueError(f"{value!r} can never match; write '@{value}' for a username")
    raise ValueError(
        f"{value!r} can never match; use a numeric user id, '@username' (letters, digits, _) "
        'or "*" for everyone'
    )


AllowEntry = Annotated[IdText, AfterValidator(_allow_entry)]


def _admin_entry(value: str) -> str:
    if value == "*":
        raise ValueError('"*" would make everyone an admin; list user ids or @usernames')
    return _allow_entry(value)


AdminEntry = Annotated[IdText, AfterValidator(_admin_entry)]


class Section(BaseModel):
    # The loader validates with strict=True on JSON: "yes" is no bool and true no number.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPrice(Section):
    """What one entry costs, in USD per million tokens (SPEC §12)."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class ModelEntry(Section):
    """One model_list entry: how to reach one model. The dispatcher keys providers on it."""

    model_name: Identifier
    model: str
    api_key: SecretStr | None = None
    api_base: str | None = None
    strict_compat: bool = False
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    price: ModelPrice | None = None
    # The model accepts image parts (SPEC §11); without it images reach it as text.
    vision: bool = False

    @field_validator("model")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        protocol, sep, model_id = value.partition("/")
        if not sep or not model_id:
            raise ValueError("must be 'protocol/model-id'; write e.g. 'openai/gpt-4.1'")
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
        if not model_id.strip() or any(c.isspace() or not c.isprintable() for c in model_id):
            raise ValueError(
                "the model id is blank or contains spaces; write e.g. 'openai/gpt-4.1'"
            )
        return value

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value) if value is not None else None

    @property
    def protocol(self) -> str:
        return self.model.partition("/")[0]

    @property
    def model_id(self) -> str:
        return self.model.partition("/")[2]

    @property
    def base_url(self) -> str | None:
        """The API base actually used: the configured one or the protocol's default."""
        return self.api_base or DEFAULT_API_BASES.get(self.protocol)


class ChainSpec(Section):
    """An ordered model chain: the primary, then fallbacks, tried for the current turn only."""

    primary: str
    fallbacks: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.primary, *self.fallbacks)


def _chain_from_str(value: Any) -> Any:
    return {"primary": value} if isinstance(value, str) else value


Chain = Annotated[ChainSpec, BeforeValidator(_chain_from_str)]


class AgentDefaults(Section):
    model: Chain | None = None
    max_tool_iterations: int = Field(default=8, ge=1, le=100)


class AgentSpec(Section):
    id: Identifier
    name: str | None = None
    persona: str | None = None
    persona_file: str | None = None
    model: Chain | None = None
    allow_agents: tuple[str, ...] | None = None
    max_tool_iterations: int | None = Field(default=None, ge=1, le=100)

    @property
    def display_name(self) -> str:
        return self.name or self.id


class Agents(Section):
    defaults: AgentDefaults = AgentDefaults()
    list: tuple[AgentSpec, ...] = Field(min_length=1)


class BindingMatch(Section):
    channel: str
    chat_id: IdText | None = None


class Binding(Section):
    agent_id: str
    match: BindingMatch


class TelegramBotBase(Section):
    token: SecretStr
    allow_from: tuple[AllowEntry, ...] = ()
    group_policy: Literal["mention", "all", "off"] = "mention"
    allow_bots: bool = False
    api_base: str = DEFAULT_TELEGRAM_API_BASE
    # One turn never floods a chat: a longer answer is cut, and the last message says so.
    max_reply_messages: int = Field(default=10, ge=1, le=100)
    # A stranger in a private chat gets a code that an admin approves (SPEC §13).
    pairing: bool = False
    # How long a pairing code stays valid; small values are for tests.
    pairing_code_ttl_s: float = Field(default=3600.0, ge=1.0, le=86400.0)
    # How updates arrive (SPEC §14): long polling, or Telegram POSTing them to our webhook
    # server. A webhook bot needs ``webhook_secret`` and the top-level ``webhook`` section
    # (references.py checks both, naming the field).
    updates: Literal["polling", "webhook"] = "polling"
    webhook_secret: SecretStr | None = None
    # Media (SPEC §11): files over this are refused before and while downloading (20 MB is
    # the Bot API's own download cap); a voice note's transcript can be shown first; a
    # document reaches the model as at most this many characters.
    max_file_mb: float = Field(default=20.0, gt=0, le=2000)
    echo_transcript: bool = False
    max_document_chars: int = Field(default=20_000, ge=100, le=1_000_000)
    # SPEC §10: "edit" grows one message as the model writes, "draft" uses Telegram's
    # sendMessageDraft in private chats (edits elsewhere), "off" sends the whole answer.
    streaming: Literal["edit", "draft", "off"] = "edit"
    # At most one preview update per chat per interval: Telegram's ~1 message/s per chat.
    stream_interval_s: float = Field(default=1.0, ge=0.3, le=60.0)
    # Message calls (sends, edits, drafts) of this bot per second, paced before Telegram's
    # ~30/s answers 429. Raise it only where Telegram allows more (paid broadcasts go up to
    # 1000/s) or for a local fake with no limit (the benches).
    messages_per_second: int = Field(default=25, ge=1, le=1000)

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        # Never echo the value: only say what shape is expected.
        if not _TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError(
                "does not look like a bot token (spaces, line breaks or '/' in it?); "
                "paste the '<digits>:<secret>' token from @BotFather"
            )
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram's own rule for secret_token; never echo the value.
        if value is not None and not _WEBHOOK_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError(
                "must be 1-256 characters of A-Z, a-z, 0-9, _ and -; "
                "generate one with `openssl rand -hex 32`"
            )
        return value

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)


class TelegramBot(TelegramBotBase):
    id: Identifier

    @property
    def channel(self) -> str:
        return f"telegram-{self.id}"


class Channels(Section):
    telegram_bots: tuple[TelegramBot, ...] = ()
    telegram: TelegramBotBase | None = None

    def bots(self) -> tuple[TelegramBot, ...]:
        """Every bot, the legacy single bot included (id ``default``, channel ``telegram``)."""
        if self.telegram is None:
            return self.telegram_bots
        legacy = LegacyTelegramBot(id=LEGACY_BOT_ID, **self.telegram.model_dump())
        return (legacy, *self.telegram_bots)


class LegacyTelegramBot(TelegramBot):
    @property
    def channel(self) -> str:
        return "telegram"


class SessionSettings(Section):
    database: str = "sessions.db"  # the loader checks the directory on disk
    context_window_tokens: int = Field(default=32000, ge=256)
    compact_at_tokens: int = Field(default=12000, ge=64)
    keep_recent_messages: int = Field(default=10, ge=0)
    # Answered inbox rows (the update with the user's text) are deleted this long after
    # they were answered. Telegram keeps an unconfirmed update at most 24 h, so a key kept
    # at least that long still recognises every redelivery.
    inbox_retention_hours: float = Field(default=48.0, ge=24.0)
    # How often the store is checked (database file still in place) and tidied (WAL
    # truncated, old inbox rows pruned). Small values are for tests.
    upkeep_interval_s: float = Field(default=60.0, gt=0.0, le=3600.0)
    # PostgreSQL with several processes (SPEC §14): how long a process's claims outlive its
    # last heartbeat. A process killed with -9 has its unfinished turns taken over by
    # another within this time; a live one renews every third of it.
    claim_lease_s: float = Field(default=15.0, ge=1.0, le=30.0)

    @field_validator("database")
    @classmethod
    def _a_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "must not be empty; name the SQLite file (e.g. sessions.db) or a postgresql:// URL"
            )
        if any(not c.isprintable() for c in value):
            raise ValueError("contains control characters; write a plain file path")
        return value


class GatewaySettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=18790, ge=0, le=65535)


class BudgetRule(Section):
    """A ceiling on usage per calendar period (SPEC §12). ``"*"`` matches anyone, and the
    rule's allowance is then shared by everything it matches (``agent: "*", user: "*"`` caps
    the whole deployment)."""

    agent: IdText = "*"
    user: IdText = "*"
    period: Literal["day", "week", "month"]
    max_tokens: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)

    @field_validator("user")
    @classmethod
    def _a_user_id(cls, value: str) -> str:
        # Usage is recorded under the numeric id: an @username would never match a call.
        if value != "*" and not _USER_ID.fullmatch(value):
            raise ValueError(f'{value!r}: budgets name a numeric Telegram user id or "*"')
        return value

    @model_validator(mode="after")
    def _a_limit(self) -> BudgetRule:
        if self.max_tokens is None and self.max_cost_usd is None:
            raise ValueError("a budget needs max_tokens, max_cost_usd or both")
        return self


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a known time zone; write e.g. 'UTC' or 'Europe/Berlin'"
        ) from None
    return value


def _public_webhook_url(value: str) -> str:
    value = http_url(value)
    parts = urlsplit(value)
    if parts.scheme != "https":
        raise ValueError(
            "Telegram delivers webhooks over HTTPS only; write https://… "
            "(your reverse proxy ends TLS and forwards to webhook.host:port)"
        )
    if parts.query or parts.fragment:
        raise ValueError("must not have a ?query or #fragment; the bot id is appended as a path")
    if (parts.port or 443) not in WEBHOOK_PUBLIC_PORTS:
        raise ValueError(
            f"Telegram delivers webhooks only to ports {', '.join(map(str, WEBHOOK_PUBLIC_PORTS))}"
            "; publish the reverse proxy on one of them"
        )
    return value


class WebhookSettings(Section):
    """Where the webhook server listens (behind a TLS reverse proxy) and the public address
    Telegram is told to POST to: ``{public_url}/{bot id}``."""

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    public_url: Annotated[str, AfterValidator(_public_webhook_url)]


class BridgeConfig(Section):
    """The whole configuration. Environment overrides are merged in by the loader (SPEC §4)."""

    model_list: tuple[ModelEntry, ...] = Field(min_length=1)
    roles: dict[str, Chain]
    agents: Agents
    bindings: tuple[Binding, ...] = Field(min_length=1)
    channels: Channels = Channels()  # none at all: a console-only config for `chat`
    session: SessionSettings = SessionSettings()
    gateway: GatewaySettings = GatewaySettings()
    # Who may approve pairing codes (``/approve`` in any bot), see everyone's /usage and
    # get budget warnings; checked like allow_from entries ("*" refused).
    admins: tuple[AdminEntry, ...] = ()
    budgets: tuple[BudgetRule, ...] = ()
    budget_timezone: Annotated[str, AfterValidator(_time_zone)] = "UTC"
    webhook: WebhookSettings | None = None

    def model_entry(self, name: str) -> ModelEntry:
        return next(m for m in self.model_list if m.model_name == name)

    def agent(self, agent_id: str) -> AgentSpec:
        return next(a for a in self.agents.list if a.id == agent_id)

    def chain_for(self, agent: AgentSpec) -> ChainSpec:
        chain = agent.model or self.agents.defaults.model
        if chain is None:  # the loader rejects this; keep mypy honest
            raise LookupError(f"agent {agent.id} has no model chain")
        return chain
