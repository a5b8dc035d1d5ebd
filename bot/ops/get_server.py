"""A small HTTP/1.1 server for a few fixed GET paths, on asyncio streams alone.

The health gateway serves three tiny pages to probes on loopback. aiohttp did that, but
importing it costs an idle bridge about 9 MiB (its package loads the whole client, which
builds SSL contexts at import); a bridge whose bots poll needs nothing else of it. So
this serves exactly what a probe or a scraper sends, with the limits aiohttp had:

- the request head must arrive whole within ``read_timeout`` of the connect (or of the
  previous answer on a kept-alive connection), however slowly it trickles: then the
  socket is closed, unanswered;
- request lines and header fields of more than ``max_line`` bytes, more than
  ``max_headers`` fields, or a head that is no HTTP/1.x request get a 400 or 431 and a
  closed connection, logged as one DEBUG line;
- a body is never read: a request that announces one is answered, then the connection is
  shut for writing and drained (for ``read_timeout`` at most) before it is closed, so the
  client reads its answer rather than a reset;
- a client that hangs up cancels its handler; stop() lets a request in flight finish
  within ``stop_grace_s`` and then cuts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

HEAD_END = b"\r\n\r\n"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_FIELD_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[], Awaitable[Reply]]


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class _Request:
    method: bytes
    path: str
    keep_alive: bool
    has_body: bool


class GetServer:
    """GET (and HEAD) of the paths in ``routes``; 404 elsewhere, 405 for other methods."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        log: logging.Logger,
        read_timeout: float,
        max_line: int,
        max_headers: int,
        stop_grace_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._routes = dict(routes)
        self._log = log
        self._read_timeout = read_timeout
        self._max_line = max_line
        self._max_headers = max_headers
        self._stop_grace_s = stop_grace_s
        self._headers = dict(headers or {})  # on every answer
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()  # those answering a request

    @property
    def address(self) -> tuple[str, int] | None:
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self, host: str, port: int, *, backlog: int) -> None:
        """Listening on return; OSError when the address cannot be bound."""
        # The head may hold max_headers fields of max_line bytes, plus the request line.
        limit = (self._max_headers + 2) * (self._max_line + 2)
        self._server = await asyncio.start_server(
            self._connection, host, port, backlog=backlog, limit=limit
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in self._connections - self._busy:
            task.cancel()
        if self._busy:
            await asyncio.wait(set(self._busy), timeout=self._stop_grace_s)
        cut = set(self._connections)
        for task in cut:
            task.cancel()
        await asyncio.gather(*cut, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._server is None:  # accepted just before stop(): not served
            writer.close()
            return
        self._connections.add(task)
        # Done when the connection is lost: one waiter for all its requests, never cancelled
        # before the end (cancelling it would cancel the stream's own close future).
        hung_up = asyncio.ensure_future(writer.wait_closed())
        try:
            await self._serve(reader, writer, task, hung_up)
        except (ConnectionError, TimeoutError):
            pass  # the client left, or would not read its answer
        except asyncio.CancelledError:
            pass  # stop() cut it; asyncio's stream callback logs a cancelled task as an error
        finally:
            self._connections.discard(task)
            self._busy.discard(task)
            writer.close()
            try:
                async with asyncio.timeout(self._stop_grace_s):
                    await hung_up
            except TimeoutError:
                writer.transport.abort()  # unsent bytes to a client that does not read
            except (Exception, asyncio.CancelledError):
                pass  # lost with an error, or stop() cut us here: closed either way
            hung_up.cancel()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        task: asyncio.Task[None],
        hung_up: asyncio.Future[None],
    ) -> None:
        while True:
            try:
                async with asyncio.timeout(self._read_timeout):
                    head = await reader.readuntil(HEAD_END)
                request = self._parse(head)
            except (TimeoutError, asyncio.IncompleteReadError):
                return  # silent, too slow, or gone before a whole head: no answer
            except asyncio.LimitOverrunError:
                await self._refuse(reader, writer, _BadRequest(431, "request head too large"))
                return
            except _BadRequest as refusal:
                await self._refuse(reader, writer, refusal)
                return
            self._busy.add(task)
            reply = await self._answer(request, hung_up)
            keep_alive = request.keep_alive and not request.has_body
            await self._write(writer, reply, keep_alive, head_only=request.method == b"HEAD")
            self._busy.discard(task)
            if not keep_alive:
                await self._linger(reader, writer)
                return

    def _parse(self, head: bytes) -> _Request:
        lines = head[: -len(HEAD_END)].split(b"\r\n")
        if len(lines) - 1 > self._max_headers:
            raise _BadRequest(431, "too many header fields")
        if any(len(line) > self._max_line for line in lines):
            raise _BadRequest(431, "a request line or header field is too long")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _VERSION.fullmatch(parts[2]):
            raise _BadRequest(400, f"no HTTP/1.x request line: {lines[0][:80]!r}")
        method, target, version = parts
        fields: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
                raise _BadRequest(400, f"malformed header field: {line[:80]!r}")
            key = name.lower()
            value = value.strip(b" \t")
            if key in fields and key == b"content-length" and fields[key] != value:
                raise _BadRequest(400, "conflicting Content-Length")
            fields[key] = value
        length = fields.get(b"content-length", b"0")
        if not length.isdigit() or len(length) > 18:  # int() refuses 4,300 digits
            raise _BadRequest(400, f"bad Content-Length: {length[:20]!r}")
        connection = fields.get(b"connection", b"").lower()
        return _Request(
            method=method,
            path=target.split(b"?", 1)[0].decode("latin-1"),
            keep_alive=version == b"HTTP/1.1" and connection != b"close",
            has_body=int(length) > 0 or b"transfer-encoding" in fields,
        )

    async def _answer(self, request: _Request, hung_up: asyncio.Future[None]) -> Reply:
        handler = self._routes.get(request.path)
        if handler is None:
            return Reply(404, b"404: Not Found")
        if request.method not in (b"GET", b"HEAD"):
            return Reply(405, b"405: Method Not Allowed", headers={"Allow": "GET,HEAD"})
        # A client that hangs up stops its handler (a /readyz report it no longer waits for).
        answering = asyncio.ensure_future(handler())
        either: set[asyncio.Future[Any]] = {answering, hung_up}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not answering.done():
                answering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answering
        if answering.cancelled():
            raise ConnectionResetError("the client hung up")
        if (error := answering.exception()) is not None:
            self._log.error("answering %s failed", request.path, exc_info=error)
            return Reply(500, b"500: Internal Server Error")
        return answering.result()

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, refusal: _BadRequest
    ) -> None:
        """The client's mistake: one DEBUG line (a hostile client must not fill the journal)."""
        peer = writer.get_extra_info("peername")
        self._log.debug("Error handling request from %s: %s", peer, refusal)
        text = f"{refusal.status}: {HTTPStatus(refusal.status).phrase}"
        await self._write(writer, Reply(refusal.status, text.encode()), keep_alive=False)
        await self._linger(reader, writer)

    async def _write(
        self, writer: asyncio.StreamWriter, reply: Reply, keep_alive: bool, head_only: bool = False
    ) -> None:
        phrase = HTTPStatus(reply.status).phrase
        headers = {
            "Content-Type": reply.content_type,
            "Content-Length": str(len(reply.body)),
            "Connection": "keep-alive" if keep_alive else "close",
            **self._headers,
            **reply.headers,
        }
        head = f"HTTP/1.1 {reply.status} {phrase}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        )
        writer.write(head.encode("latin-1") + b"\r\n" + (b"" if head_only else reply.body))
        async with asyncio.timeout(self._read_timeout):  # a client that never reads
            await writer.drain()

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Shut our side, then drop what the client still sends until it closes (bounded):
        closing with unread bytes would reset the connection and lose the answer."""
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(self._read_timeout):
                while await reader.read(64 * 1024):
                    pass
