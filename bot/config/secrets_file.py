"""Where ``${VAR}`` finds its value: the environment, the owner-only secrets file, credentials.

``persona-bridge init`` keeps tokens and keys out of ``config.json``: they go to
``config.secrets.env`` beside it (``NAME=value`` lines, mode 0600) and the config says
``${NAME}``. The loader looks a name up in this order:

1. the process environment (so ``export NAME=…`` always wins),
2. ``<config stem>.secrets.env`` beside the config file, when present,
3. ``$CREDENTIALS_DIRECTORY/NAME`` under systemd's ``LoadCredential=NAME:…``,

so one config works from a shell, from ``init``'s output and as a systemd service.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from bot.errors import ConfigProblem

SUFFIX = ".secrets.env"
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def secrets_path(config_path: Path) -> Path:
    """``config.json`` → ``config.secrets.env``: one file per config, so two never share."""
    return config_path.with_name(config_path.stem + SUFFIX)


class SecretSources(Mapping[str, str]):
    """The environment, then the secrets file, then systemd credentials, as one mapping."""

    def __init__(self, environ: Mapping[str, str], file_values: Mapping[str, str]) -> None:
        self._environ = environ
        self._file = file_values

    def __getitem__(self, name: str) -> str:
        if name in self._environ:
            return self._environ[name]
        if name in self._file:
            return self._file[name]
        value = self._credential(name)
        if value is None:
            raise KeyError(name)
        return value

    def _credential(self, name: str) -> str | None:
        directory = self._environ.get("CREDENTIALS_DIRECTORY")
        if not directory or not set(name) <= _NAME_CHARS:
            return None
        try:
            return (Path(directory) / name).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError:
            return None

    def __iter__(self) -> Iterator[str]:
        return iter({**self._file, **self._environ})

    def __len__(self) -> int:
        return len({**self._file, **self._environ})


def sources_for(
    config_path: Path, environ: Mapping[str, str], problems: list[ConfigProblem]
) -> SecretSources:
    """The lookup ``${VAR}`` uses for ``config_path``; an unusable secrets file is a problem."""
    return SecretSources(environ, read_secrets(secrets_path(config_path), problems))


def read_secrets(path: Path, problems: list[ConfigProblem]) -> dict[str, str]:
    """``NAME=value`` lines; blank lines and ``#`` comments skipped. Values never reported."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        problems.append(_unreadable(path, exc))
        return {}
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(
            ConfigProblem(
                str(path),
                "the secrets file can be read by other users",
                f"chmod 600 {path}",
            )
        )
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(_unreadable(path, exc))
        return {}
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name = name.strip()
        if not sep or not name or not set(name) <= _NAME_CHARS:
            problems.append(
                ConfigProblem(
                    f"{path}:{number}", "not a NAME=value line", "write NAME=value, one per line"
                )
            )
            continue
        values[name] = _unquote(value.strip())
    return values


def write_secrets(path: Path, values: Mapping[str, str]) -> None:
    """Create or replace ``path`` readable by its owner only (0600 from the first byte)."""
    for name, value in values.items():
        if not set(name) <= _NAME_CHARS or "\n" in value or "\r" in value:
            raise ValueError(f"cannot store {name!r} as a NAME=value line")
    lines = ["# Secrets for the config beside this file; it refers to them as ${NAME}."]
    lines += [f"{name}={value}" for name, value in values.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its mode otherwise
        handle.write("\n".join(lines) + "\n")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _unreadable(path: Path, exc: Exception) -> ConfigProblem:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return ConfigProblem(str(path), f"cannot read the secrets file ({reason})", "check its owner")
