"""``persona-bridge doctor``: is this deployment able to work right now? (SPEC §3)

Unlike ``check-config`` it goes online: getMe and getWebhookInfo per bot, one tiny
request per model entry, the store's directory and database, the gateway port and the
systemd credentials the config asks for. One line per check, a fix for each failure.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import socket
import sqlite3
import tempfile
from collections.abc import Mapping
from pathlib import Path

from bot.config.loader import LoadedConfig, load_config
from bot.errors import ConfigError, StoreError
from bot.onboarding.checks import Check, check_model, check_token, check_webhook
from bot.providers.dispatcher import ProviderDispatcher
from bot.sessions.select import database_url, describe, store_for

_REFERENCE = re.compile(r"\$\{(?:cred:)?([A-Za-z_][A-Za-z0-9_]*)\}")
_CREDENTIAL = re.compile(r"\$\{cred:([A-Za-z_][A-Za-z0-9_]*)\}")


async def run_doctor(path: Path) -> int:
    """Print every check as it is decided; exit 0 only when all are green."""
    credentials = check_credentials(path)
    for check in credentials:
        print(check)
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        reported = any(not c.ok for c in credentials)
        for problem in exc.problems:
            # A missing credential was just explained; its config echo adds nothing.
            if not (reported and problem.problem.startswith("credential")):
                print(f"✗ {problem}")
        print("\nFix the config first; then doctor runs the online checks.")
        return 1
    checks = [Check(f"config {loaded.path}", True, "valid"), *credentials]
    print(checks[0])
    for warning in loaded.warnings:  # valid but probably unintended: shown, not failed
        print(f"! {warning}")
    for check in await _online_checks(loaded):
        print(check)
        checks.append(check)
    store = await check_server_store(loaded) if database_url(loaded) else check_store(loaded)
    checks += _print_all([store, check_gateway(loaded), *check_webhook_port(loaded)])
    failed = sum(not c.ok for c in checks)
    print(f"\n{failed} problem(s) found." if failed else "\nAll checks passed.")
    return 1 if failed else 0


def _print_all(checks: list[Check]) -> list[Check]:
    for check in checks:
        print(check)
    return checks


async def _online_checks(loaded: LoadedConfig) -> list[Check]:
    """Bots and models at once: a doctor run should take one slow answer, not the sum."""
    config = loaded.config
    raw_secret_names = _secret_names(loaded.path)
    bot_jobs = []
    for bot in config.channels.bots():
        token = bot.token.get_secret_value()
        name = raw_secret_names.get(bot.id, "its token in the config")
        expected = None
        if bot.updates == "webhook" and config.webhook is not None:
            expected = f"{config.webhook.public_url}/{bot.id}"
        bot_jobs.append(_bot_checks(f"bot {bot.id}", token, bot.api_base, name, expected))
    dispatcher = ProviderDispatcher(config.model_list)
    try:
        results = await asyncio.gather(
            asyncio.gather(*bot_jobs),
            asyncio.gather(*(check_model(dispatcher, e) for e in config.model_list)),
        )
    finally:
        await dispatcher.aclose()
    bots, models = results
    return [check for pair in bots for check in pair] + list(models)


async def _bot_checks(
    subject: str, token: str, api_base: str, secret_name: str, expected_webhook: str | None
) -> list[Check]:
    identity, info = await check_token(subject, token, api_base, secret_name)
    if info is None:
        return [identity]  # the webhook question needs a valid token
    return [identity, await check_webhook(subject, token, api_base, expected_webhook)]


def _secret_names(path: Path) -> dict[str, str]:
    """bot id → where its token comes from (``TELEGRAM_BOT_TOKEN``), to name in a fix."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        bots = raw["channels"]["telegram_bots"]
        return {
            str(b["id"]): _REFERENCE.sub(r"\1", str(b["token"]))
            for b in bots
            if isinstance(b, dict) and _REFERENCE.fullmatch(str(b.get("token", "")))
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def check_credentials(path: Path, environ: Mapping[str, str] = os.environ) -> list[Check]:
    """Every ``${cred:NAME}`` in the file must exist under ``$CREDENTIALS_DIRECTORY``."""
    try:
        names = sorted(set(_CREDENTIAL.findall(path.read_text(encoding="utf-8"))))
    except (OSError, UnicodeDecodeError):
        return []  # load_config reports an unreadable file
    directory = environ.get("CREDENTIALS_DIRECTORY")
    checks = []
    for name in names:
        subject = f"credential {name}"
        fix = (
            f"add LoadCredential={name}:/etc/persona-bridge/credentials/{name} to the unit "
            "and create that file (mode 600)"
        )
        if not directory:
            checks.append(
                Check(
                    subject,
                    False,
                    "$CREDENTIALS_DIRECTORY is not set (not running under systemd)",
                    f"run doctor inside the service's context, e.g. `systemd-run -P "
                    f"-p LoadCredential={name}:… persona-bridge doctor …`, or {fix}",
                )
            )
        elif not os.access(Path(directory) / name, os.R_OK):
            checks.append(Check(subject, False, f"missing in {directory}", fix))
        else:
            checks.append(Check(subject, True, f"present in {directory}"))
    return checks


async def check_server_store(loaded: LoadedConfig) -> Check:
    """A postgresql:// database: it connects and its schema is (brought) up to date."""
    subject = f"session.database {describe(loaded)}"
    try:
        async with store_for(loaded) as store:
            backlog = await store.inbox_backlog()
    except StoreError as exc:
        return Check(
            subject,
            False,
            str(exc),
            "check the URL, that the server runs, and the user's rights on the database",
        )
    return Check(subject, True, f"connects; schema up to date; {backlog} update(s) pending")


def check_store(loaded: LoadedConfig) -> Check:
    """The database's directory exists and takes a new file; an existing database opens."""
    database = loaded.database
    subject = f"session.database {database}"
    if str(database) == ":memory:":
        return Check(subject, True, "in memory (nothing survives a restart)")
    directory = database.parent
    blocker = _first_non_directory(directory)
    if blocker is not None:
        return Check(
            subject,
            False,
            f"{blocker} is a file, not a directory",
            "point session.database into a directory (e.g. sessions.db beside the config)",
        )
    if not directory.exists():
        return Check(subject, False, f"{directory} does not exist", f"mkdir -p {directory}")
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(
            subject,
            False,
            f"{directory} is not writable ({exc.strerror})",
            f"make it writable for the user running the bridge (chown/chmod {directory})",
        )
    if not database.exists():
        return Check(subject, True, f"{directory} is writable; the database will be created")
    try:
        connection = sqlite3.connect(f"file:{database}?mode=rw", uri=True)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return Check(
            subject,
            False,
            f"the database does not open ({exc})",
            "check its owner and mode; restore it from a backup if it is damaged",
        )
    return Check(subject, True, "writable; the database opens")


def _first_non_directory(directory: Path) -> Path | None:
    """The first ancestor that exists but is not a directory (a file in the way)."""
    for candidate in (*reversed(directory.parents), directory):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def check_gateway(loaded: LoadedConfig) -> Check:
    """The health/metrics port must be free, or ``run`` fails after the bots started."""
    host, port = loaded.config.gateway.host, loaded.config.gateway.port
    return _check_port(f"gateway {host}:{port}", host, port, "gateway")


def check_webhook_port(loaded: LoadedConfig) -> list[Check]:
    """The webhook server's port, when a bot uses webhook mode: free, or ``run`` exits 78."""
    webhook = loaded.config.webhook
    if webhook is None or not any(b.updates == "webhook" for b in loaded.config.channels.bots()):
        return []
    subject = f"webhook server {webhook.host}:{webhook.port}"
    return [_check_port(subject, webhook.host, webhook.port, "webhook")]


def _check_port(subject: str, host: str, port: int, section: str) -> Check:
    if port == 0:
        return Check(subject, True, "port 0: any free port is taken at start")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return Check(subject, False, f"{host} does not resolve ({exc})", f"fix {section}.host")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return Check(
                    subject,
                    False,
                    "the port is in use",
                    f"is the bridge already running? find the listener with "
                    f"`ss -ltnp 'sport = :{port}'`, stop it or change {section}.port",
                )
            return Check(
                subject,
                False,
                f"cannot listen there ({exc.strerror})",
                f"fix {section}.host / {section}.port",
            )
    return Check(subject, True, "port free")
