"""The loopback HTTP endpoint for probes and scrapes: /healthz, /readyz, /metrics.

Served by :class:`bot.ops.get_server.GetServer` (asyncio streams, no aiohttp: importing
aiohttp would cost every idle bridge about 9 MiB) with its limits set tight, so a slow or
hostile client costs one socket for a few seconds and nothing more: a connection that has
not delivered a whole request head within ``read_timeout`` is closed however slowly it
trickles bytes, request lines and header fields are capped at 8 KiB, a body is never read
(only drained and dropped before the close, for ``read_timeout`` at most), and an
unparsable request gets a 400 or 431 and one DEBUG line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from bot.ops.get_server import GetServer, Reply
from bot.providers.cooldown import CooldownBook

log = logging.getLogger(__name__)

MAX_HEAD = 8 * 1024  # per request line and per header field
MAX_HEADERS = 32  # a probe or a scraper sends a handful
BACKLOG = 1024  # a burst of connects (a scraper fleet, an attack) queues instead of SYN retries
STOP_GRACE_S = 0.5  # a probe in flight at stop() may finish within this, then it is cut
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_TYPE = "application/json; charset=utf-8"
_NO_STORE = {"Cache-Control": "no-store"}
# The server's log for our gateway, under our name: malformed requests at DEBUG.
_http_log = log.getChild("http")


@dataclass(frozen=True)
class HealthReport:
    """What /readyz shows. Only names and states: never tokens, keys or chat content."""

    ready: bool
    bots: Mapping[str, Mapping[str, object]]
    models: Mapping[str, Mapping[str, object]]
    inbox_backlog: int
    store: Mapping[str, object] = field(default_factory=dict)  # {"ok": …, "problem": …}

    def to_json(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "bots": {name: dict(state) for name, state in self.bots.items()},
            "models": {name: dict(state) for name, state in self.models.items()},
            "inbox_backlog": self.inbox_backlog,
            **({"store": dict(self.store)} if self.store else {}),
        }


def cooling_models(book: CooldownBook) -> dict[str, dict[str, object]]:
    """The ``models`` part of a report: every entry still cooling down, and why."""
    return {
        name: {"cooling_down_s": round(left, 1), "reason": book.reason(name)}
        for name, left in book.snapshot().items()
    }


class HealthGateway:
    """Serves health and metrics on ``host:port``; ``port=0`` picks a free port.

    ``health`` builds a fresh HealthReport per /readyz request; ``metrics`` renders the
    Prometheus page per /metrics request. Both run on the event loop, so /healthz
    answering at all proves the loop is not wedged. ``read_timeout`` bounds reading a
    request head, an idle kept-alive connection and building the report: a stuck probe
    reads as 503, not a hang.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        health: Callable[[], Awaitable[HealthReport]],
        metrics: Callable[[], str | Awaitable[str]],
        read_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._health = health
        self._metrics = metrics
        self._read_timeout = read_timeout
        self._server: GetServer | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        address = self._server.address if self._server is not None else None
        return self._requested_port if address is None else address[1]

    async def start(self) -> None:
        """Returns once the socket listens, so a probe right after start() is answered."""
        server = GetServer(
            {"/healthz": self._healthz, "/readyz": self._readyz, "/metrics": self._metrics_page},
            log=_http_log,
            read_timeout=self._read_timeout,  # for a head, and for an idle kept-alive socket
            max_line=MAX_HEAD,
            max_headers=MAX_HEADERS,
            stop_grace_s=STOP_GRACE_S,
            headers=_NO_STORE,
        )
        await server.start(self.host, self._requested_port, backlog=BACKLOG)
        self._server = server
        log.info("health gateway listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stops listening and drops connections still in flight (at most a few probes)."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _healthz(self) -> Reply:
        return Reply(200, b'{"status": "ok"}', JSON_TYPE)

    async def _metrics_page(self) -> Reply:
        try:
            page = self._metrics()
            if not isinstance(page, str):  # numbers that are read at scrape time
                page = await page
        except Exception:
            log.exception("rendering /metrics failed")
            return Reply(500, b"Internal Server Error\n")
        return Reply(200, page.encode(), METRICS_TYPE)

    async def _readyz(self) -> Reply:
        try:
            async with asyncio.timeout(self._read_timeout):
                report = await self._health()
        except Exception:  # a broken probe reads as not ready, never as a crash
            log.exception("building the /readyz report failed")
            return Reply(503, _compact_json({"ready": False, "error": "no report"}), JSON_TYPE)
        return Reply(200 if report.ready else 503, _compact_json(report.to_json()), JSON_TYPE)


def _compact_json(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=str).encode()
