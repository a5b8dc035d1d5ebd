"""The ``persona-bridge`` command line (SPEC §3)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot import __version__
from bot.errors import ChannelError, ConfigError, PersonaBridgeError, StoreBusy, StoreError
from bot.ops import logs
from bot.ops.early_signals import HeldSighup
from bot.usage import command as usage_command

if TYPE_CHECKING:  # the loader pulls in pydantic: imported once SIGHUP is held
    from bot.config.loader import LoadedConfig

# sysexits(3): what systemd and scripts read. 78 is in the unit's RestartPreventExitStatus.
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_IOERR = 74
EX_TEMPFAIL = 75  # another bridge holds the database
EX_CONFIG = 78
CONFIG_HELP = "config file (default: $PERSONA_BRIDGE_CONFIG, then ./config.json)"

log = logging.getLogger("bot")


def main(argv: Sequence[str] | None = None) -> int:
    # First: a reload signal sent while we start must not kill the bridge (see early_signals).
    sighup = HeldSighup()
    args = _parser().parse_args(argv)
    # A subparser's default would overwrite a value given before the subcommand, so the
    # two are kept apart and joined here, for every subcommand (init and doctor too).
    args.config = getattr(args, "config", None) or args.config_before
    if args.command != "run":
        sighup.release()
    from bot.onboarding import commands as onboarding

    if args.command in onboarding.NAMES:  # they need no loaded config, or load their own
        return onboarding.dispatch(args)
    from bot.config.loader import load_config, resolve_path

    try:
        loaded = load_config(resolve_path(args.config))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        from bot.onboarding.examples import where_examples_are

        if hint := where_examples_are(str(exc)):
            print(hint, file=sys.stderr)
        return EX_CONFIG
    try:
        return _dispatch(args, loaded, sighup)
    except StoreError as exc:
        print(f"session store: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `sessions export | head` closed the pipe: stop quietly. Point stdout at devnull so
        # the interpreter's final flush does not raise again (Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _dispatch(args: argparse.Namespace, loaded: LoadedConfig, sighup: HeldSighup) -> int:
    if args.command == "check-config":
        from bot.config.report import render

        print(render(loaded.config))
        for warning in loaded.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"\n{loaded.path}: OK")
        return 0
    if args.command == "models":
        return asyncio.run(_models_check(loaded))
    if args.command == "sessions":
        return asyncio.run(_sessions(loaded, args))
    if args.command == "usage":
        return asyncio.run(usage_command.run(loaded, args))
    if args.command == "chat":
        return _chat(loaded, args.agent_id)
    if args.command == "pairing":
        from bot.sessions import pairing_cli

        return asyncio.run(pairing_cli.run(loaded, args))
    return _run(loaded, args.log_level, args.shutdown_grace, sighup)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persona-bridge", description="Several Telegram bots, each a persona on its own LLM."
    )
    parser.add_argument("--version", action="version", version=f"persona-bridge {__version__}")
    # Also accepted before the subcommand; one given after it wins (see main).
    parser.add_argument("--config", dest="config_before", metavar="PATH", help=CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("run", "run the bridge until SIGTERM/SIGINT; SIGHUP reloads the config"),
        ("check-config", "validate the config and print channel → agent → model chain"),
    ):
        command = _command(commands, name, text)
        command.add_argument(
            "--log-level",
            default="INFO",
            choices=("DEBUG", "INFO", "WARNING"),
            help="least severe log lines shown (default INFO)",
        )
        if name == "run":
            command.add_argument(
                "--shutdown-grace",
                type=float,
                default=30.0,
                metavar="SECONDS",
                help="on SIGTERM, how long in-flight turns may finish (default 30)",
            )
    from bot.onboarding import commands as onboarding

    onboarding.register(commands)
    models = _command(commands, "models", "check the model entries of the config", config=False)
    models_commands = models.add_subparsers(dest="models_command", required=True, metavar="{check}")
    _command(
        models_commands,
        "check",
        "send one tiny request through every model entry; print latency and ok",
    )
    chat = _command(
        commands,
        "chat",
        "talk to an agent in the terminal (same router, sessions and models); "
        "needs no Telegram bot",
    )
    chat.add_argument("agent_id", metavar="AGENT_ID", help="an id from agents.list")
    sessions = _command(commands, "sessions", "inspect the session store", config=False)
    sessions_commands = sessions.add_subparsers(
        dest="sessions_command", required=True, metavar="{list,show,export}"
    )
    _command(sessions_commands, "list", "every session, archived ones too")
    show = _command(sessions_commands, "show", "one session's messages and summaries")
    show.add_argument("session_id", type=int, metavar="ID", help="a session id from 'list'")
    export = _command(sessions_commands, "export", "sessions as JSON Lines on stdout")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "session_id", type=int, nargs="?", metavar="ID", help="a session id from 'list'"
    )
    which.add_argument("--all", action="store_true", help="every session")
    usage = _command(commands, "usage", "tokens and cost per agent, user, model or purpose")
    usage_command.register(usage)
    from bot.sessions import pairing_cli

    pairing_cli.register(commands)
    return parser


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    text: str,
    *,
    config: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand with help and description, and ``--config`` unless it has subcommands."""
    command = commands.add_parser(name, help=text, description=text)
    if config:
        command.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    return command


def _chat(loaded: LoadedConfig, agent_id: str) -> int:
    from bot.app import App
    from bot.channels.console import CHANNEL, ConsoleChannel, state_dir
    from bot.config.schema import Binding, BindingMatch
    from bot.routing import Router

    agents = {a.id: a for a in loaded.config.agents.list}
    if agent_id not in agents:
        print(f"chat: unknown agent {agent_id!r}; use one of: {', '.join(agents)}", file=sys.stderr)
        return 2
    history: Path | None = None
    log_file: Path | None = None
    where = "on this terminal"
    state = state_dir()
    try:
        # Logs go to a file: lines inside the conversation would interrupt it.
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        history, log_file = state / "chat_history", state / "chat.log"
        where = str(log_file)
    except OSError as exc:
        where = f"on this terminal ({exc.strerror}: {state}; no history kept)"
    console = ConsoleChannel(agents[agent_id].display_name, history=history)
    binding = Binding(agent_id=agent_id, match=BindingMatch(channel=CHANNEL))
    app = App(loaded, channels=lambda _loaded, _inbox: [console], router=Router([binding]))
    logs.configure("INFO" if log_file else "WARNING", redactor=app.redactor, path=log_file)
    console.converse(app.start, app.stop, logs=where)
    return 0


async def _sessions(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from bot.sessions import inspect
    from bot.sessions.select import database_url, store_for

    if database_url(loaded) is None and not loaded.database.exists():
        # A fresh install: nothing to list or export yet, which is not an error. Not opened:
        # opening would create the database.
        if args.sessions_command == "list":
            print(inspect.NO_SESSIONS)
            return 0
        print(f"{inspect.NO_SESSIONS} ({loaded.database} does not exist)", file=sys.stderr)
        return 1 if args.sessions_command == "show" else 0
    async with store_for(loaded) as store:
        if args.sessions_command == "list":
            return await inspect.list_sessions(store)
        if args.sessions_command == "show":
            return await inspect.show_session(store, args.session_id)
        return await inspect.export_sessions(store, None if args.all else args.session_id)


async def _models_check(loaded: LoadedConfig) -> int:
    from bot.providers import health_check
    from bot.providers.dispatcher import ProviderDispatcher
    from bot.redaction import Redactor, secrets_of

    entries = list(loaded.config.model_list)
    dispatcher = ProviderDispatcher(entries)
    redactor = Redactor(secrets_of(loaded.config))
    try:
        results = await health_check.probe_all(dispatcher, entries, redactor)
    finally:
        await dispatcher.aclose()
    print(health_check.render(results))
    return 0 if all(r.ok for r in results) else 1


def _run(loaded: LoadedConfig, level: str, grace_s: float, sighup: HeldSighup) -> int:
    """Serve until stopped; a start that cannot succeed exits at once with a sysexits code."""
    from bot.app import App
    from bot.ops.notify import SystemdNotifier
    from bot.ops.service import serve

    if not loaded.config.channels.bots():
        print(
            "channels.telegram_bots: no Telegram bot is configured, so `run` has nothing to "
            "serve — add a bot, or talk in the terminal with `persona-bridge chat AGENT_ID`",
            file=sys.stderr,
        )
        return EX_CONFIG
    app = App(loaded, exclusive=True)
    redactor = logs.configure(level, redactor=app.redactor)
    try:
        asyncio.run(
            serve(
                app,
                loaded.path,
                notifier=SystemdNotifier.from_environ(),
                redactor=redactor,
                grace_s=grace_s,
                early_reload=sighup.arrived,
            )
        )
    except StoreBusy as exc:
        log.error("cannot run: %s", exc)
        return EX_TEMPFAIL
    except ConfigError as exc:  # every token rejected, the gateway port taken, …
        for problem in exc.problems:
            log.error("cannot run: %s", problem)
        return EX_CONFIG
    except StoreError as exc:
        return _store_failed(loaded, exc)
    except ChannelError as exc:
        log.error("cannot run: %s", exc)
        return EX_UNAVAILABLE
    except PersonaBridgeError as exc:
        log.error("cannot run: %s", exc)
        return EX_SOFTWARE
    finally:
        # The closed loop gave SIGHUP back its default action: a late reload must not
        # turn a clean exit into a kill.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return 0


def _store_failed(loaded: LoadedConfig, exc: StoreError) -> int:
    """A database that cannot be opened: the config's fault (78) or the file's (74)."""
    path = loaded.database
    directory = path.parent
    if not directory.is_dir() or path.is_dir() or not os.access(directory, os.W_OK):
        log.error(
            "cannot run: session.database: %s is not a file in a writable directory (%s) — "
            "point session.database at one",
            path,
            exc,
        )
        return EX_CONFIG
    log.error(
        "cannot run: session.database: %s cannot be used (%s) — if the file is damaged, "
        "move it aside and restore a backup (a new empty one is created otherwise)",
        path,
        exc,
    )
    return EX_IOERR
