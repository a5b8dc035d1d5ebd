"""SystemdNotifier against a test-owned datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.ops.notify import SystemdNotifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound unix datagram socket, as systemd's notify socket is; yields (socket, path)."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2.0)  # a bounded wait for a datagram that is already queued
        yield sock, path


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def test_each_message_is_one_exact_datagram(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.enabled

    assert notifier.ready()
    assert received(sock) == b"READY=1\n"
    assert notifier.ready("2/2 bots polling")
    assert received(sock) == b"READY=1\nSTATUS=2/2 bots polling\n"
    assert notifier.status("reloading config\nsecond line")
    assert received(sock) == b"STATUS=reloading config second line\n"
    assert notifier.stopping()
    assert received(sock) == b"STOPPING=1\n"
    assert notifier.watchdog()
    assert received(sock) == b"WATCHDOG=1\n"
    assert notifier.send(STATUS="x", ERRNO=5)
    assert received(sock) == b"STATUS=x\nERRNO=5\n"


def test_reloading_carries_the_monotonic_clock(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": path}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    match = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)\n", received(sock))
    assert match is not None
    assert before <= int(match.group(1)) <= after


def test_abstract_socket_name_with_at_sign() -> None:
    name = f"persona-bridge-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert received(sock) == b"READY=1\nSTATUS=up\n"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = SystemdNotifier.from_environ({"WATCHDOG_USEC": "60000000"})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert not notifier.reloading()
    assert not notifier.stopping()
    assert not notifier.watchdog()
    assert not notifier.status("x")
    assert notifier.watchdog_interval() is None
    assert not SystemdNotifier.from_environ({"NOTIFY_SOCKET": ""}).enabled


def test_a_vanished_socket_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gone.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    path.unlink()
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": str(path)})

    with caplog.at_level(logging.DEBUG, logger="bot.ops.notify"):
        assert not notifier.ready()
        assert not notifier.watchdog()
        assert not notifier.stopping()

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "cannot notify systemd" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_deadline_for_our_pid_only(
    environ: dict[str, str], expected: float | None
) -> None:
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "/run/notify", **environ})
    assert notifier.watchdog_interval() == expected
