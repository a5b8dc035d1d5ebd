"""Checks against the disk: persona files readable as text, a database the bridge can write.

Run at load, so ``check-config`` (and a reload) finds what would otherwise fail at ``run``
time with a message that names no field. Every OS error becomes a ``ConfigProblem``.
"""

from __future__ import annotations

import os
from pathlib import Path

from bot.config.schema import BridgeConfig
from bot.errors import ConfigProblem

MAX_PERSONA_BYTES = 1024 * 1024  # a system prompt, not a book; also bounds a wrong path
SERVER_DATABASE_PREFIXES = ("postgresql://",)  # the PostgreSQL store: nothing on disk


def read_personas(
    config: BridgeConfig, base_dir: Path, problems: list[ConfigProblem]
) -> dict[str, str]:
    personas = {}
    for index, agent in enumerate(config.agents.list):
        if agent.persona_file is None:
            personas[agent.id] = agent.persona or f"You are {agent.display_name}."
            continue
        text = _read_persona(base_dir, agent.persona_file, f"agents.list[{index}].persona_file")
        if isinstance(text, ConfigProblem):
            problems.append(text)
        else:
            personas[agent.id] = text.strip()
    return personas


def _read_persona(base_dir: Path, name: str, path: str) -> str | ConfigProblem:
    file = base_dir / name
    try:
        if not file.is_file():
            return ConfigProblem(
                path,
                f"file {name!r} not found (relative to {base_dir})",
                "create it or fix the path",
            )
        if file.stat().st_size > MAX_PERSONA_BYTES:
            return ConfigProblem(
                path, f"file {name!r} is larger than 1 MiB", "shorten it or fix the path"
            )
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return ConfigProblem(
            path,
            f"file {name!r} is not UTF-8 text (byte {exc.start})",
            "save it as UTF-8 (e.g. iconv -t UTF-8)",
        )
    except (OSError, ValueError) as exc:
        return ConfigProblem(path, f"file {name!r} cannot be read ({_why(exc)})", "fix the path")


def database_path(value: str, base_dir: Path, problems: list[ConfigProblem]) -> Path:
    """Where the SQLite file lives; a problem unless its directory exists and is writable."""
    if value == ":memory:" or value.startswith(SERVER_DATABASE_PREFIXES):
        return Path(value)
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user that does not exist
        problems.append(
            ConfigProblem(
                "session.database", f"cannot expand {value!r}", "write the full path instead"
            )
        )
        return Path(value)
    path = path if path.is_absolute() else base_dir / path
    problem = _database_problem(path)
    if problem is not None:
        problems.append(ConfigProblem("session.database", *problem))
    return path


def _database_problem(path: Path) -> tuple[str, str] | None:
    # SQLite writes <db>-wal and <db>-shm beside the file, so the directory must be writable.
    directory = path.parent
    try:
        if path.is_dir():
            return f"{str(path)!r} is a directory", "name a file inside it, e.g. sessions.db"
        if path.exists() and not path.is_file():
            return f"{str(path)!r} is not a regular file", "name a plain file"
        if not directory.is_dir():
            if _a_file_above(directory):
                return (
                    f"a parent of {str(path)!r} is a file, not a directory",
                    "point session.database into a directory",
                )
            return (
                f"directory {str(directory)!r} does not exist",
                f"create it (mkdir -p {directory}) or fix the path",
            )
        if not os.access(directory, os.W_OK | os.X_OK):
            return (
                f"directory {str(directory)!r} is not writable by this user",
                "fix its permissions or choose another directory",
            )
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            return (
                f"{str(path)!r} is not readable and writable by this user",
                "fix its permissions",
            )
    except (OSError, ValueError) as exc:
        return f"{str(path)!r} cannot be checked ({_why(exc)})", "fix the path"
    return None


def _a_file_above(directory: Path) -> bool:
    return any(
        parent.exists() and not parent.is_dir() for parent in (directory, *directory.parents)
    )


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
