"""``persona-bridge init``: from nothing to a config that runs, checked live on the way.

Asks (or takes from flags) the bot tokens, one model endpoint and who may talk to each
bot; checks each token with getMe and the model with one tiny request; writes
``config.json`` with ``${NAME}`` references and the values themselves to the owner-only
``config.secrets.env`` beside it, which the loader reads (see ``config/secrets_file.py``).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.config.schema import DEFAULT_API_BASES, DEFAULT_TELEGRAM_API_BASE, ModelEntry
from bot.config.secrets_file import secrets_path, write_secrets
from bot.errors import ChannelError, ConfigError, ConfigProblem
from bot.onboarding.checks import check_model, check_token
from bot.onboarding.questions import Questions
from bot.onboarding.telegram_probe import BotInfo, Sender, TelegramProbe
from bot.providers.dispatcher import ProviderDispatcher

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"
DEFAULT_ANTHROPIC_MODEL = "claude-haiku-4-5"
MODEL_NAME = "main"
_TOKEN_SHAPE = re.compile(r"^\d+:\S+$")
_ALLOW_ENTRY = re.compile(r"^(?:\d{1,20}|@[A-Za-z0-9_]{1,32})$")


@dataclass(frozen=True)
class InitAnswers:
    """What flags already answered; anything missing is asked (or is an error)."""

    config: Path
    tokens: tuple[str, ...] = ()
    model_url: str | None = None
    key: str | None = None
    model: str | None = None
    anthropic_key: str | None = None
    allow: tuple[str, ...] = ()
    telegram_api_base: str = DEFAULT_TELEGRAM_API_BASE
    force: bool = False


@dataclass
class _Bot:
    info: BotInfo
    token: str
    id: str
    persona: str = ""
    allow: list[str] = field(default_factory=list)


async def run_init(answers: InitAnswers, questions: Questions, interactive: bool) -> int:
    """The whole conversation; returns the exit code. Problems raise ``ConfigError``."""
    path = answers.config
    replace = answers.force or not path.exists()
    if not replace and not questions.confirm(f"{path} exists. Replace it?", False, flag="--force"):
        print("Nothing written.")
        return 1
    print("persona-bridge init: a working config, each answer checked live.\n")
    bots = await _ask_bots(answers, questions, interactive)
    entry, secret_name, secret = await _ask_model(answers, questions, interactive)
    for bot in bots:
        await _ask_access(bot, answers, questions, interactive)
        if interactive:
            default = f"You are {bot.info.first_name}, a friendly assistant. Answer briefly."
            bot.persona = questions.ask(f"Persona for @{bot.info.username}", default)
    secrets = {_token_name(bot, bots): bot.token for bot in bots}
    if secret:
        secrets[secret_name] = secret
    config = _config(bots, entry, secret_name if secret else None, answers.telegram_api_base)
    _write(path, config, secrets)
    _print_next(path, bots)
    return 0


# --- tokens --------------------------------------------------------------------------


async def _ask_bots(answers: InitAnswers, questions: Questions, interactive: bool) -> list[_Bot]:
    bots: list[_Bot] = []
    pending = list(answers.tokens)
    if not pending:
        print("1. Telegram: create a bot with @BotFather (/newbot) and paste its token.")
    while True:
        if pending:
            token = pending.pop(0)
        elif bots and not interactive:
            break
        else:
            question = "Another bot token (Enter when done)" if bots else "Bot token"
            token = questions.secret(question, flag="--token")
            if not token and bots:
                break
        if not _TOKEN_SHAPE.match(token):
            fix = "paste the '<digits>:<secret>' token from @BotFather"
            if not interactive:
                raise ConfigError([ConfigProblem("--token", "does not look like a bot token", fix)])
            print(f"  That does not look like a bot token: {fix}.")
            continue
        check, info = await check_token(
            f"token {len(bots) + 1}",
            token,
            answers.telegram_api_base,
            "this prompt" if interactive else "--token",
        )
        print(f"  {check}")
        if info is None:
            if not interactive:
                raise ConfigError([ConfigProblem("--token", check.detail, check.fix)])
            continue
        if any(b.info.id == info.id for b in bots):
            print(f"  @{info.username} is already in the list.")
            continue
        bots.append(_Bot(info, token, _bot_id(info, bots)))
    return bots


def _bot_id(info: BotInfo, taken: list[_Bot]) -> str:
    """``@Alice_bot`` → ``alice``: the bot's channel is then ``telegram-alice``."""
    name = re.sub(r"[^a-z0-9_.-]", "", info.username.lower()) or f"bot{info.id}"
    for suffix in ("_bot", "bot"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name.removesuffix(suffix)
            break
    name = name[:60]
    candidate, n = name, 2
    while any(b.id == candidate for b in taken):
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def _token_name(bot: _Bot, bots: list[_Bot]) -> str:
    if len(bots) == 1:
        return "TELEGRAM_BOT_TOKEN"
    return "TELEGRAM_BOT_TOKEN_" + re.sub(r"[^A-Z0-9]", "_", bot.id.upper())


# --- model ---------------------------------------------------------------------------


async def _ask_model(
    answers: InitAnswers, questions: Questions, interactive: bool
) -> tuple[ModelEntry, str, str]:
    """The model entry (holding the real key, for the probe), its secret's name and value."""
    if not (answers.model_url or answers.anthropic_key):
        print(
            "\n2. The model: an OpenAI-compatible endpoint (OpenAI, OpenRouter, a local "
            "llama.cpp or Ollama server), or type 'anthropic'."
        )
    while True:
        entry, secret_name, secret = _model_entry(answers, questions)
        dispatcher = ProviderDispatcher([entry])
        try:
            check = await check_model(dispatcher, entry)
        finally:
            await dispatcher.aclose()
        print(f"  {check}")
        if check.ok:
            return entry, secret_name, secret
        if not interactive:
            raise ConfigError([ConfigProblem("--model-url", check.detail, check.fix)])
        if questions.confirm("Keep this model anyway?", False):
            return entry, secret_name, secret
        answers = InitAnswers(config=answers.config)  # ask everything about the model again


def _model_entry(answers: InitAnswers, questions: Questions) -> tuple[ModelEntry, str, str]:
    url = answers.model_url
    if answers.anthropic_key:
        url = "anthropic"
    elif url is None:
        url = questions.ask("Endpoint URL, or 'anthropic'", DEFAULT_API_BASES["openai"])
    if url.lower() == "anthropic":
        secret = answers.anthropic_key or questions.secret(
            "Anthropic API key", flag="--anthropic-key"
        )
        model = answers.model or questions.ask("Model id", DEFAULT_ANTHROPIC_MODEL)
        return _entry(f"anthropic/{model}", None, secret), "ANTHROPIC_API_KEY", secret
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            [ConfigProblem("--model-url", f"{url!r} is not an HTTP URL", "start it with https://")]
        )
    key = answers.key
    if key is None:
        key = questions.secret("API key (Enter for none, e.g. a local server)", flag="--key")
    model = answers.model or questions.ask("Model id", DEFAULT_OPENAI_MODEL)
    base = None if url.rstrip("/") == DEFAULT_API_BASES["openai"] else url.rstrip("/")
    return _entry(f"openai/{model}", base, key), "OPENAI_API_KEY", key


def _entry(model: str, api_base: str | None, key: str) -> ModelEntry:
    return ModelEntry(
        model_name=MODEL_NAME,
        model=model,
        api_base=api_base,
        api_key=SecretStr(key) if key else None,
    )


# --- access --------------------------------------------------------------------------


async def _ask_access(
    bot: _Bot, answers: InitAnswers, questions: Questions, interactive: bool
) -> None:
    handle = f"@{bot.info.username}"
    if answers.allow:
        bot.allow = [_allow_entry(a) for a in answers.allow]
        return
    if interactive:
        print(f"\n3. Who may talk to {handle}? Nobody, until you say so.")
        questions.ask(f"Send {handle} any message from your Telegram account, then press Enter")
    senders = await _senders(bot, answers.telegram_api_base)
    if not interactive:
        seen = ", ".join(s.describe() for s in senders) or "nobody"
        print(f"  {handle} admits nobody (no --allow). Wrote to it during setup: {seen}.")
        return
    for sender in senders:
        if questions.confirm(f"  Allow {sender.describe()}?", True):
            bot.allow.append(str(sender.id))
    if not senders:
        print("  No message arrived (you can add ids later in allow_from).")
    more = questions.ask("  Other user ids or @usernames, separated by spaces (Enter: none)")
    for item in more.replace(",", " ").split():
        try:
            bot.allow.append(_allow_entry(item))
        except ConfigError as exc:
            print(f"  skipped: {exc}")


async def _senders(bot: _Bot, api_base: str) -> list[Sender]:
    async with TelegramProbe(bot.token, api_base) as probe:
        try:
            return await probe.recent_senders()
        except ChannelError as exc:
            print(f"  could not read recent messages: {exc}")
            return []


def _allow_entry(value: str) -> str:
    value = value.strip()
    if not _ALLOW_ENTRY.match(value):
        raise ConfigError(
            [
                ConfigProblem(
                    "--allow",
                    f"{value!r} is neither a numeric user id nor an @username",
                    "write e.g. 123456789 or @friend",
                )
            ]
        )
    return value


# --- output --------------------------------------------------------------------------


def _config(
    bots: list[_Bot], entry: ModelEntry, key_name: str | None, api_base: str
) -> dict[str, Any]:
    model: dict[str, Any] = {"model_name": entry.model_name, "model": entry.model}
    if entry.api_base:
        model["api_base"] = entry.api_base
    if key_name:
        model["api_key"] = f"${{{key_name}}}"
    channels = []
    for bot in bots:
        spec: dict[str, Any] = {
            "id": bot.id,
            "token": f"${{{_token_name(bot, bots)}}}",
            "allow_from": bot.allow,
        }
        if api_base.rstrip("/") != DEFAULT_TELEGRAM_API_BASE:
            spec["api_base"] = api_base.rstrip("/")
        channels.append(spec)
    return {
        "model_list": [model],
        "roles": {"compaction": {"primary": entry.model_name}},
        "agents": {
            "defaults": {"model": entry.model_name},
            "list": [
                {
                    "id": bot.id,
                    "name": bot.info.first_name or bot.id,
                    "persona": bot.persona
                    or f"You are {bot.info.first_name or bot.id}, a friendly assistant.",
                }
                for bot in bots
            ],
        },
        "bindings": [
            {"agent_id": bot.id, "match": {"channel": f"telegram-{bot.id}"}} for bot in bots
        ],
        "channels": {"telegram_bots": channels},
        "session": {"database": "sessions.db"},
    }


def _write(path: Path, config: dict[str, Any], secrets: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_secrets(secrets_path(path), secrets)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _print_next(path: Path, bots: list[_Bot]) -> None:
    print(f"\nWrote {path} (no secrets in it) and {secrets_path(path)} (owner-only, mode 600).")
    closed = [f"@{b.info.username}" for b in bots if not b.allow]
    if closed:
        print(f"Nobody may talk to {', '.join(closed)} yet: add user ids to allow_from.")
    program = _program()
    print(f"\nNext:\n  {program} run --config {path}")
    print(f"Check the deployment any time with:\n  {program} doctor --config {path}")


def _program() -> str:
    """How this user starts us: ``persona-bridge`` if that is on PATH, else the real path."""
    started_as = Path(sys.argv[0])
    if started_as.name != "persona-bridge":
        return f"{sys.executable} -m bot"
    found = shutil.which("persona-bridge")
    if found and Path(found).resolve() == started_as.resolve():
        return "persona-bridge"
    return str(started_as)
