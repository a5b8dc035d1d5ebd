"""The ``init``, ``doctor`` and ``demo`` subcommands: their arguments and their dispatch.

They run before (or instead of) loading a config, so ``cli.main`` hands them over first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from bot.config.loader import resolve_path
from bot.config.schema import DEFAULT_TELEGRAM_API_BASE
from bot.errors import ConfigError

NAMES = frozenset({"init", "doctor", "demo"})
CONFIG_HELP = "config file (default: $PERSONA_BRIDGE_CONFIG, then ./config.json)"


def register(commands: Any) -> None:
    """Add the three subcommands to ``commands`` (argparse's subparsers action)."""
    init = commands.add_parser(
        "init",
        help="first run: check bot tokens and a model live, write a working config",
        description="Asks for what it needs; every question also has a flag, for scripts. "
        "Secrets go to an owner-only <config>.secrets.env beside the config, not into it. "
        "Flags are visible to other users in `ps`: on a shared machine answer the prompts.",
    )
    init.add_argument("--config", help=CONFIG_HELP)
    init.add_argument(
        "--token", action="append", default=[], metavar="TOKEN", help="a bot token (repeatable)"
    )
    init.add_argument("--model-url", metavar="URL", help="OpenAI-compatible endpoint")
    init.add_argument("--key", metavar="KEY", help="API key for --model-url ('' for none)")
    init.add_argument("--model", metavar="ID", help="model id at the endpoint")
    init.add_argument("--anthropic-key", metavar="KEY", help="use Anthropic with this key")
    init.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="ID_OR_@NAME",
        help="who may talk to the bots (repeatable)",
    )
    init.add_argument(
        "--telegram-api-base",
        default=DEFAULT_TELEGRAM_API_BASE,
        metavar="URL",
        help="Bot API server (default: %(default)s)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing config")
    init.add_argument(
        "--non-interactive", action="store_true", help="never ask: missing flags are errors"
    )
    doctor = commands.add_parser(
        "doctor",
        help="online check of a deployment: tokens, webhooks, models, store, port",
        description="One line per check; a fix for each failure; exit 0 when all pass.",
    )
    doctor.add_argument("--config", help=CONFIG_HELP)
    commands.add_parser(
        "demo",
        help="talk to two personas on a fake Telegram and a fake LLM (offline, no tokens)",
        description="The real bridge against the shipped fakes, in this terminal.",
    )


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        try:
            from bot.testing.demo import main as demo
        except ModuleNotFoundError as exc:  # an install without the HTTP server library
            print(f"demo: needs {exc.name} — pip install {exc.name}", file=sys.stderr)
            return 1
        return demo()
    try:
        if args.command == "doctor":
            from bot.onboarding.doctor import run_doctor

            return asyncio.run(run_doctor(resolve_path(args.config)))
        return asyncio.run(_init(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("\nStopped; nothing written.", file=sys.stderr)
        return 130


async def _init(args: argparse.Namespace) -> int:
    from bot.onboarding.init import InitAnswers, run_init
    from bot.onboarding.questions import NoQuestions, TerminalQuestions

    answers = InitAnswers(
        config=resolve_path(args.config),
        tokens=tuple(args.token),
        model_url=args.model_url,
        key=args.key,
        model=args.model,
        anthropic_key=args.anthropic_key,
        allow=tuple(args.allow),
        telegram_api_base=args.telegram_api_base,
        force=args.force,
    )
    interactive = not args.non_interactive
    questions = TerminalQuestions() if interactive else NoQuestions()
    return await run_init(answers, questions, interactive)
