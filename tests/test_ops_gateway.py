"""HealthGateway over real HTTP on 127.0.0.1 (httpx, and raw sockets for the abuse cases)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.errors import RateLimited
from bot.ops.gateway import METRICS_TYPE, HealthGateway, HealthReport, cooling_models
from bot.providers.cooldown import CooldownBook

PAGE = "# HELP persona_bridge_up 1 while running.\n# TYPE persona_bridge_up gauge\n"


class Probe:
    """The bridge's side: a report that tests flip between ready and not ready."""

    def __init__(self) -> None:
        self.ready = True
        self.calls = 0

    async def health(self) -> HealthReport:
        self.calls += 1
        return HealthReport(
            ready=self.ready,
            bots={
                "telegram-alice": {"polling": True, "username": "alice_bot"},
                "telegram-bob": {"polling": self.ready, "username": "bob_bot"},
            },
            models={"gpt": {"cooling_down_s": 12.3, "reason": "RateLimited: 429"}},
            inbox_backlog=4,
        )


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def gateway(probe: Probe) -> AsyncIterator[HealthGateway]:
    server = HealthGateway(
        "127.0.0.1", 0, health=probe.health, metrics=lambda: PAGE, read_timeout=0.2
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(gateway: HealthGateway) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://127.0.0.1:{gateway.port}"
    async with httpx.AsyncClient(base_url=base, timeout=5.0) as http:
        yield http


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["connection"] == "close"
    assert response.headers["content-type"] == "application/json"


async def test_readyz_200_when_ready_503_when_not(
    client: httpx.AsyncClient, probe: Probe, gateway: HealthGateway
) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "bots": {
            "telegram-alice": {"polling": True, "username": "alice_bot"},
            "telegram-bob": {"polling": True, "username": "bob_bot"},
        },
        "models": {"gpt": {"cooling_down_s": 12.3, "reason": "RateLimited: 429"}},
        "inbox_backlog": 4,
    }
    probe.ready = False
    not_ready = await client.get("/readyz?verbose=1")
    assert not_ready.status_code == 503
    assert not_ready.json()["ready"] is False
    assert not_ready.json()["bots"]["telegram-bob"] == {"polling": False, "username": "bob_bot"}
    assert probe.calls == 2  # a fresh report per request, never a cached one


async def test_readyz_is_503_when_the_report_itself_fails(probe: Probe) -> None:
    async def broken() -> HealthReport:
        raise RuntimeError("store is gone")

    server = HealthGateway("127.0.0.1", 0, health=broken, metrics=lambda: PAGE)
    await server.start()
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(f"http://127.0.0.1:{server.port}/readyz")
    finally:
        await server.stop()
    assert response.status_code == 503
    assert response.json()["ready"] is False


async def test_metrics_page_and_content_type(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == METRICS_TYPE
    assert METRICS_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    assert response.text == PAGE


async def test_unknown_path_404_and_other_methods_405(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).status_code == 404
    assert (await client.get("/healthz/extra")).status_code == 404
    refused = await client.post("/healthz", content=b"x" * 20_000)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET"
    assert (await client.delete("/readyz")).status_code == 405


async def test_cooling_models_reports_names_and_reasons_only() -> None:
    now = [100.0]
    book = CooldownBook(clock=lambda: now[0])
    book.record_failure("gpt", RateLimited("slow down", model_name="gpt", retry_after=42))
    assert cooling_models(book) == {
        "gpt": {"cooling_down_s": 42.0, "reason": "RateLimited: slow down"}
    }
    now[0] += 60
    assert cooling_models(book) == {}


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Sends ``data`` and reads until the server closes; bounded so a hang fails the test."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if data:
            writer.write(data)
            await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5.0)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_silent_client_is_dropped_after_the_read_timeout(
    gateway: HealthGateway, client: httpx.AsyncClient
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await raw_exchange(gateway.port, b"") == b""  # EOF: the server hung up
    assert loop.time() - started >= 0.2
    assert (await client.get("/healthz")).status_code == 200  # and it still serves others


async def test_a_slow_head_is_dropped_too(gateway: HealthGateway) -> None:
    assert await raw_exchange(gateway.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") == b""


async def test_an_oversized_request_line_is_refused(gateway: HealthGateway) -> None:
    line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = await raw_exchange(gateway.port, line)
    assert answer.split(b"\r\n", 1)[0] in (
        b"HTTP/1.1 431 Request Header Fields Too Large",
        b"HTTP/1.1 400 Bad Request",
    )
    assert b"Connection: close" in answer


async def test_garbage_request_line_is_400(gateway: HealthGateway) -> None:
    answer = await raw_exchange(gateway.port, b"HELLO\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def test_stop_closes_the_port() -> None:
    async def health() -> HealthReport:
        return HealthReport(ready=True, bots={}, models={}, inbox_backlog=0)

    server = HealthGateway("127.0.0.1", 0, health=health, metrics=lambda: "")
    await server.start()
    port = server.port
    assert port != 0
    await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_stop_drops_a_request_in_flight() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def stuck() -> HealthReport:
        entered.set()
        await release.wait()
        raise AssertionError("released only if stop() failed to cancel")

    server = HealthGateway("127.0.0.1", 0, health=stuck, metrics=lambda: "", read_timeout=30)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(entered.wait(), timeout=5.0)
        await asyncio.wait_for(server.stop(), timeout=5.0)
        assert await asyncio.wait_for(reader.read(), timeout=5.0) == b""
    finally:
        release.set()
        writer.close()
        await writer.wait_closed()
