"""The loopback HTTP endpoint for probes and scrapes: /healthz, /readyz, /metrics.

Three GET routes do not justify an HTTP framework in production (aiohttp is a test-only
extra), so this is a deliberately small HTTP/1.1 server on asyncio streams: one request
per connection, a bounded head (8 KiB) and a read timeout, so a slow or hostile client
costs one socket for a few seconds and nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

from bot.providers.cooldown import CooldownBook

log = logging.getLogger(__name__)

MAX_HEAD = 8 * 1024
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_TYPE = "application/json"
_DRAIN_LIMIT = 64 * 1024


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


@dataclass(frozen=True)
class _Response:
    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    extra: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        head = [
            f"HTTP/1.1 {self.status.value} {self.status.phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.extra),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + self.body


def _json(status: HTTPStatus, payload: object) -> _Response:
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return _Response(status, body, JSON_TYPE)


def _plain(status: HTTPStatus, *extra: tuple[str, str]) -> _Response:
    return _Response(status, f"{status.phrase}\n".encode(), extra=extra)


class HealthGateway:
    """Serves health and metrics on ``host:port``; ``port=0`` picks a free port.

    ``health`` builds a fresh HealthReport per /readyz request; ``metrics`` renders the
    Prometheus page per /metrics request. Both run on the event loop, so /healthz
    answering at all proves the loop is not wedged. ``read_timeout`` bounds both reading
    the request head and building the report: a stuck probe reads as 503, not a hang.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        health: Callable[[], Awaitable[HealthReport]],
        metrics: Callable[[], str],
        read_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._health = health
        self._metrics = metrics
        self._read_timeout = read_timeout
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Returns once the socket listens, so a probe right after start() is answered."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self._requested_port, limit=MAX_HEAD
        )
        log.info("health gateway listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stops listening and drops connections still in flight (at most a few probes)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            response = await self._respond(reader)
            if response is not None:
                writer.write(response.encode())
                await writer.drain()
                await self._linger(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stalled; nothing to tell it
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    async def _respond(self, reader: asyncio.StreamReader) -> _Response | None:
        """None means: drop the connection without a word (the client sent nothing usable)."""
        try:
            async with asyncio.timeout(self._read_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            log.debug("health gateway: client sent no request within %.1fs", self._read_timeout)
            return None
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            return _plain(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _plain(HTTPStatus.BAD_REQUEST)
        method, target = parts[0], parts[1].split("?", 1)[0]
        log.debug("health gateway: %s %s", method, target)
        if target not in ("/healthz", "/readyz", "/metrics"):
            return _plain(HTTPStatus.NOT_FOUND)
        if method != "GET":
            return _plain(HTTPStatus.METHOD_NOT_ALLOWED, ("Allow", "GET"))
        return await self._route(target)

    async def _route(self, target: str) -> _Response:
        if target == "/healthz":
            return _json(HTTPStatus.OK, {"status": "ok"})
        if target == "/metrics":
            try:
                page = self._metrics()
            except Exception:
                log.exception("rendering /metrics failed")
                return _plain(HTTPStatus.INTERNAL_SERVER_ERROR)
            return _Response(HTTPStatus.OK, page.encode(), METRICS_TYPE)
        try:
            async with asyncio.timeout(self._read_timeout):
                report = await self._health()
        except Exception:  # a broken probe reads as not ready, never as a crash
            log.exception("building the /readyz report failed")
            return _json(HTTPStatus.SERVICE_UNAVAILABLE, {"ready": False, "error": "no report"})
        status = HTTPStatus.OK if report.ready else HTTPStatus.SERVICE_UNAVAILABLE
        return _json(status, report.to_json())

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close, then read what the client still sends until it closes (bounded).

        Closing a socket with unread input makes the kernel send a reset, which can destroy
        the response before the client reads it (an oversized head, a POST body).
        """
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError, asyncio.LimitOverrunError):
            async with asyncio.timeout(self._read_timeout):
                drained = 0
                while drained < _DRAIN_LIMIT and (chunk := await reader.read(MAX_HEAD)):
                    drained += len(chunk)
