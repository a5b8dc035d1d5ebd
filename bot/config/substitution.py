"""``${VAR}`` and ``${cred:NAME}`` expansion over the raw JSON tree, before validation.

Expansion runs on the raw tree so that problems carry the JSON path of the string that
asked for the value. ``$${`` writes a literal ``${``. Values never appear in problems.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.errors import ConfigProblem

_REFERENCE = re.compile(r"\$\$\{|\$\{(cred:)?([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME_ONLY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def expand(
    tree: Any, environ: Mapping[str, str], problems: list[ConfigProblem], path: str = ""
) -> Any:
    """Return ``tree`` with every reference replaced; unresolved ones become problems."""
    if isinstance(tree, dict):
        return {k: expand(v, environ, problems, _join(path, k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [expand(v, environ, problems, f"{path}[{i}]") for i, v in enumerate(tree)]
    if isinstance(tree, str) and "${" in tree:
        return _expand_string(tree, environ, problems, path or "(root)")
    return tree


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _expand_string(
    text: str, environ: Mapping[str, str], problems: list[ConfigProblem], path: str
) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        is_credential, name = match.group(1), match.group(2)
        value = _credential(name, environ, problems, path) if is_credential else environ.get(name)
        if value is None and not is_credential:
            problems.append(
                ConfigProblem(
                    path,
                    f"environment variable {name} is not set",
                    f"export {name}=… before starting, or write the value in the file",
                )
            )
        return value or ""

    return _REFERENCE.sub(replace, text)


def _credential(
    name: str, environ: Mapping[str, str], problems: list[ConfigProblem], path: str
) -> str | None:
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        problems.append(
            ConfigProblem(
                path,
                f"credential {name} asked for but $CREDENTIALS_DIRECTORY is not set",
                f"run under systemd with LoadCredential={name}:/path/to/secret, "
                "or use ${VAR} instead",
            )
        )
        return None
    if not _NAME_ONLY.match(name):  # the regex already guarantees it; no path tricks
        return None
    try:
        return (Path(directory) / name).read_bytes().decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        problems.append(
            ConfigProblem(
                path,
                f"credential {name} is not UTF-8 text (byte {exc.start})",
                "store the secret as plain UTF-8 text",
            )
        )
        return None
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        problems.append(
            ConfigProblem(
                path,
                f"credential {name} cannot be read ({why})",
                f"add LoadCredential={name}:/path/to/secret to the unit",
            )
        )
        return None
