"""sd_notify(3) without libsystemd: one datagram per state change to ``$NOTIFY_SOCKET``.

Under ``Type=notify`` systemd waits for ``READY=1`` before it calls the unit started, kills
us when ``WATCHDOG=1`` stops arriving, and shows ``STATUS=`` in ``systemctl status``. The
protocol is a few ``KEY=value`` lines in one datagram, so a stdlib socket is enough.

Notifying is best effort on purpose: the bridge must keep answering chats even if the
manager's socket went away (a ``systemctl daemon-reexec``, a test harness that exited), so
send errors are logged once and swallowed, never raised.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares ``MONOTONIC_USEC`` with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _address(notify_socket: str) -> str:
    """A leading '@' names a Linux abstract socket, which the kernel spells with a NUL."""
    return "\0" + notify_socket[1:] if notify_socket.startswith("@") else notify_socket


def _one_line(value: str | int | float) -> str:
    """A newline inside a value would start a new (bogus) assignment in the datagram."""
    return str(value).replace("\r", " ").replace("\n", " ")


class SystemdNotifier:
    """Talks to the service manager; every method is a silent no-op outside systemd.

    A socket is opened per message (as libsystemd's ``sd_notify`` does): messages are rare
    (start, reload, stop, a watchdog ping every ~30 s), and nothing is left to close.
    """

    def __init__(
        self,
        notify_socket: str | None = None,
        *,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
    ) -> None:
        self._address = _address(notify_socket) if notify_socket else None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._failed_once = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> SystemdNotifier:
        """Reads what systemd hands a ``Type=notify`` service; no NOTIFY_SOCKET → no-op."""
        return cls(
            environ.get("NOTIFY_SOCKET") or None,
            watchdog_usec=environ.get("WATCHDOG_USEC"),
            watchdog_pid=environ.get("WATCHDOG_PID"),
        )

    @property
    def enabled(self) -> bool:
        """True when a manager is listening, so callers can skip building status text."""
        return self._address is not None

    def send(self, **fields: str | int | float) -> bool:
        """Sends ``KEY=value`` lines in one datagram; returns whether it was handed over."""
        if self._address is None or not fields:
            return False
        payload = "".join(f"{key}={_one_line(value)}\n" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(payload.encode(), self._address)
        except OSError as exc:
            self._report(exc)
            return False
        return True

    def _report(self, exc: OSError) -> None:
        """Once at WARNING, then DEBUG: a gone socket would otherwise log every 30 s forever."""
        level = logging.DEBUG if self._failed_once else logging.WARNING
        self._failed_once = True
        log.log(level, "cannot notify systemd (%s); carrying on without it", exc)

    def ready(self, status: str | None = None) -> bool:
        """Every bot polls: systemd may call the unit started (and a reload finished)."""
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=status)

    def reloading(self) -> bool:
        """A SIGHUP reload began; systemd ≥253 wants the monotonic time alongside it."""
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec())

    def stopping(self) -> bool:
        """Shutdown began, so systemd does not mistake the drain for a hang."""
        return self.send(STOPPING=1)

    def watchdog(self) -> bool:
        """Proof of life; the loop that sends this must be the one that does the work."""
        return self.send(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """Free text for ``systemctl status`` (e.g. "3/3 bots polling")."""
        return self.send(STATUS=text)

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of ``WatchdogSec=``), or None.

        None when no watchdog is configured, or when ``$WATCHDOG_PID`` names another process
        (the variable leaked into a child, which must not ping on its parent's behalf).
        """
        if self._address is None or not self._watchdog_usec:
            return None
        if self._watchdog_pid and self._watchdog_pid.strip() != str(os.getpid()):
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            log.warning("ignoring unparsable WATCHDOG_USEC=%r", self._watchdog_usec)
            return None
        return usec / 2 / 1_000_000 if usec > 0 else None
