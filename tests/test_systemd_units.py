"""The shipped unit files say what SPEC §9 promises, and systemd itself accepts them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
PLAIN = UNITS / "persona-bridge.service"
TEMPLATE = UNITS / "persona-bridge@.service"
# The README's recipe installs into a venv here: `python3 -m venv /opt/persona-bridge`.
EXECUTABLE = "/opt/persona-bridge/bin/persona-bridge"
Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """section → key → every value in file order; systemd allows a key more than once."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}:{number}: keep directives on one line"
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path.name}:{number}: directive outside a section"
        name, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not a key=value line: {line!r}"
        section.setdefault(name.strip(), []).append(value.strip())
    return unit


HARDENING = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "PrivateMounts": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}
COMMON = {
    "Type": "notify",
    "NotifyAccess": "main",
    "WatchdogSec": "60",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
    "RestartPreventExitStatus": "78",
    "TimeoutStopSec": "45",
    **HARDENING,
}
PER_UNIT = {
    PLAIN: {
        "ExecStart": f"{EXECUTABLE} run --config /etc/persona-bridge/config.json",
        "StateDirectory": "persona-bridge",
        "WorkingDirectory": "%S/persona-bridge",
        "Environment": "PERSONA_BRIDGE_SESSION__DATABASE=%S/persona-bridge/sessions.db",
    },
    TEMPLATE: {
        "ExecStart": f"{EXECUTABLE} run --config /etc/persona-bridge/%i.json",
        "StateDirectory": "persona-bridge/%i",
        "WorkingDirectory": "%S/persona-bridge/%i",
        "Environment": "PERSONA_BRIDGE_SESSION__DATABASE=%S/persona-bridge/%i/sessions.db",
    },
}
BOTH = pytest.mark.parametrize("path", [PLAIN, TEMPLATE], ids=["plain", "template"])


@BOTH
def test_every_promised_directive_has_its_value(path: Path) -> None:
    service = parse_unit(path)["Service"]
    for name, value in {**COMMON, **PER_UNIT[path]}.items():
        assert service.get(name) == [value], f"{path.name}: {name}"


@BOTH
def test_system_calls_are_the_service_set_without_privileged_and_resource_ones(
    path: Path,
) -> None:
    service = parse_unit(path)["Service"]
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]


@BOTH
def test_credentials_are_exactly_the_secrets_of_the_example_config(path: Path) -> None:
    # The example says "${TELEGRAM_BOT_TOKEN}"; under the unit the loader reads it from
    # $CREDENTIALS_DIRECTORY/TELEGRAM_BOT_TOKEN, so the names must be the same, no more.
    service = parse_unit(path)["Service"]
    names = [entry.partition(":")[0] for entry in service["LoadCredential"]]
    example = (ROOT / "config.example.json").read_text()
    assert set(names) == set(re.findall(r"\$\{(?:cred:)?([A-Za-z_][A-Za-z0-9_]*)\}", example))
    assert sorted(names) == ["OPENAI_API_KEY", "TELEGRAM_BOT_TOKEN"]
    readme = (ROOT / "README.md").read_text()
    for name in names:
        assert f"/etc/persona-bridge/credentials/{name}" in readme, name
    for entry in service["LoadCredential"]:
        name, _, source = entry.partition(":")
        assert name.isidentifier(), f"{name}: ${{cred:NAME}} accepts identifiers only"
        assert source.startswith("/etc/persona-bridge/credentials/")
        if path is TEMPLATE:
            assert source == f"/etc/persona-bridge/credentials/%i/{name}"
    assert "${TELEGRAM_BOT_TOKEN}" in path.read_text(), "the comment shows how the config asks"


@BOTH
def test_installs_into_multi_user_after_the_network(path: Path) -> None:
    unit = parse_unit(path)
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert unit["Unit"]["After"] == ["network-online.target"]
    assert unit["Unit"]["Wants"] == ["network-online.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
@pytest.mark.parametrize(
    ("path", "as_name"),
    [(PLAIN, "persona-bridge.service"), (TEMPLATE, "persona-bridge@test.service")],
    ids=["plain", "template"],
)
def test_systemd_analyze_verify_accepts_the_unit(path: Path, as_name: str, tmp_path: Path) -> None:
    # verify insists that ExecStart exists and is executable; point it at a stand-in.
    stand_in = tmp_path / "persona-bridge"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    copy = tmp_path / as_name
    copy.write_text(
        path.read_text().replace("/opt/persona-bridge/bin/persona-bridge", str(stand_in))
    )

    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on unknown keys and unparsable values, warning on stderr; both fail here.
    complaints = [line for line in result.stderr.splitlines() if as_name in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


def _offline_security() -> bool:
    if shutil.which("systemd-analyze") is None:
        return False
    probe = subprocess.run(
        ["systemd-analyze", "security", "--help"], capture_output=True, text=True, check=False
    )
    return "--offline" in probe.stdout  # systemd 250 and later


MAX_EXPOSURE = 1.5


@pytest.mark.skipif(not _offline_security(), reason="needs systemd-analyze security --offline")
@pytest.mark.parametrize(
    ("path", "as_name"),
    [(PLAIN, "persona-bridge.service"), (TEMPLATE, "persona-bridge@test.service")],
    ids=["plain", "template"],
)
def test_security_exposure_is_at_most_1_5(path: Path, as_name: str, tmp_path: Path) -> None:
    # What the README says it measured: `systemd-analyze security --offline=yes UNIT`.
    copy = tmp_path / as_name
    copy.write_text(path.read_text())
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout
