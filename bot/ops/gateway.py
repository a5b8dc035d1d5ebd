"""The loopback HTTP endpoint for probes and scrapes: /healthz, /readyz, /metrics.

Served by aiohttp.web with its limits set tight, so a slow or hostile client costs one
socket for a few seconds and nothing more: a connection that has not delivered a whole
request head within ``read_timeout`` is closed however slowly it trickles bytes (aiohttp
>= 3.14.4 arms that timer on connect), heads are capped at 8 KiB, a body is only drained
and dropped (for ``read_timeout`` at most), and an unparsable request gets a 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bot.providers.cooldown import CooldownBook

log = logging.getLogger(__name__)

MAX_HEAD = 8 * 1024  # per request line and per header field
MAX_HEADERS = 32  # a probe or a scraper sends a handful
MAX_BODY = 1024  # nothing here reads a body; this caps any that is read by mistake
BACKLOG = 1024  # a burst of connects (a scraper fleet, an attack) queues instead of SYN retries
STOP_GRACE_S = 0.5  # a probe in flight at stop() may finish within this, then it is cut
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NO_STORE = {"Cache-Control": "no-store"}


class _ClientErrorsInOneLine(logging.Filter):
    """aiohttp logs each unparsable request at ERROR with a traceback. That is the client's
    mistake, not ours, and a hostile client must not fill the journal: one DEBUG line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        said = record.getMessage()
        record.msg, record.args = "health gateway: %s: %s", (said, " ".join(str(error).split()))
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        return _http_log.isEnabledFor(logging.DEBUG)


# aiohttp's server log for our gateway, under our name; the filter is configuration, set once.
_http_log = log.getChild("http")
_http_log.addFilter(_ClientErrorsInOneLine())


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
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._runner is None or not self._runner.addresses:
            return self._requested_port
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        """Returns once the socket listens, so a probe right after start() is answered."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        runner = web.AppRunner(
            app,
            shutdown_timeout=STOP_GRACE_S,
            access_log=None,  # a scrape every few seconds is not worth a log line
            logger=_http_log,
            handler_cancellation=True,  # a client that hangs up stops its handler
            keepalive_timeout=self._read_timeout,
            lingering_time=self._read_timeout,
            max_line_size=MAX_HEAD,
            max_field_size=MAX_HEAD,
            max_headers=MAX_HEADERS,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._requested_port, backlog=BACKLOG).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("health gateway listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stops listening and drops connections still in flight (at most a few probes)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, headers=_NO_STORE)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        try:
            page = self._metrics()
            if not isinstance(page, str):  # numbers that are read at scrape time
                page = await page
        except Exception:
            log.exception("rendering /metrics failed")
            return web.Response(status=500, text="Internal Server Error\n", headers=_NO_STORE)
        return web.Response(body=page.encode(), headers={"Content-Type": METRICS_TYPE, **_NO_STORE})

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(self._read_timeout):
                report = await self._health()
        except Exception:  # a broken probe reads as not ready, never as a crash
            log.exception("building the /readyz report failed")
            return web.json_response(
                {"ready": False, "error": "no report"}, status=503, headers=_NO_STORE
            )
        return web.json_response(
            report.to_json(),
            status=200 if report.ready else 503,
            headers=_NO_STORE,
            dumps=_compact_json,
        )


def _compact_json(payload: object) -> str:
    return json.dumps(payload, separators=(",", ":"), default=str)
