"""HealthGateway over real HTTP on 127.0.0.1 (httpx, and raw sockets for the abuse cases)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.errors import RateLimited
from bot.ops.gateway import METRICS_TYPE, HealthGateway, HealthReport, cooling_models
from bot.ops.metrics import BridgeMetrics
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
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"


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


async def test_requests_on_one_kept_alive_connection_are_all_answered() -> None:
    """Each report takes a moment (it reads the store): the server's watch for a client
    hanging up must not outlive one request and cut the next."""

    async def slow() -> HealthReport:
        await asyncio.sleep(0.05)  # the time a store read takes, not synchronisation
        return HealthReport(ready=True, bots={}, models={}, inbox_backlog=0)

    server = HealthGateway("127.0.0.1", 0, health=slow, metrics=lambda: PAGE)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            answers = [await http.get(path) for path in ["/readyz", "/readyz", "/metrics"] * 2]
    finally:
        await server.stop()
    assert [a.status_code for a in answers] == [200] * 6
    assert len({a.extensions["network_stream"] for a in answers}) == 1  # one connection


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


async def test_metrics_of_a_bridge_parse_with_their_names_and_labels(probe: Probe) -> None:
    metrics = BridgeMetrics()
    metrics.messages_in.labels(bot="telegram-alice").inc()
    metrics.model_request("gpt", RateLimited("429", model_name="gpt"))
    metrics.fell_back("gpt", "local")
    metrics.turn_seconds.labels(agent="alice").observe(0.3)
    metrics.set_cooldowns({"gpt": 12.5})
    server = HealthGateway("127.0.0.1", 0, health=probe.health, metrics=metrics.render)
    await server.start()
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        await server.stop()

    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {name: f.type for name, f in families.items()} == {
        "persona_bridge_messages_in": "counter",
        "persona_bridge_messages_out": "counter",
        "persona_bridge_turn_seconds": "histogram",
        "persona_bridge_model_requests": "counter",
        "persona_bridge_fallbacks": "counter",
        "persona_bridge_compactions": "counter",
        "persona_bridge_inbox_backlog": "gauge",
        "persona_bridge_store_file_ok": "gauge",
        "persona_bridge_tokens": "counter",
        "persona_bridge_cost_usd": "counter",
        "persona_bridge_bots_polling": "gauge",
        "persona_bridge_lease_takeovers": "counter",
        "persona_bridge_model_cooldown_seconds": "gauge",
        "persona_bridge_up": "gauge",
    }
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert samples[("persona_bridge_messages_in_total", (("bot", "telegram-alice"),))] == 1
    limited = (("model", "gpt"), ("outcome", "rate_limited"))
    assert samples[("persona_bridge_model_requests_total", limited)] == 1
    moved = (("from_model", "gpt"), ("to_model", "local"))
    assert samples[("persona_bridge_fallbacks_total", moved)] == 1
    assert samples[("persona_bridge_turn_seconds_count", (("agent", "alice"),))] == 1
    assert samples[("persona_bridge_model_cooldown_seconds", (("model", "gpt"),))] == 12.5
    assert samples[("persona_bridge_up", ())] == 1


async def test_a_failing_metrics_page_is_500_and_the_gateway_lives_on(probe: Probe) -> None:
    def broken() -> str:
        raise RuntimeError("registry is gone")

    server = HealthGateway("127.0.0.1", 0, health=probe.health, metrics=broken)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/metrics")).status_code == 500
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await server.stop()


async def test_unknown_path_404_and_other_methods_405(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).status_code == 404
    assert (await client.get("/healthz/extra")).status_code == 404
    refused = await client.post("/healthz", content=b"x" * 20_000)
    assert refused.status_code == 405
    assert "GET" in refused.headers["allow"].split(",")
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


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP/1.x answer (aiohttp says HTTP/1.0 before it parsed one)."""
    version, status, _ = answer.split(b" ", 2)
    assert version in (b"HTTP/1.0", b"HTTP/1.1"), answer[:80]
    return int(status)


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
    assert status_of(answer) in (400, 431)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"HELLO\r\n\r\n", id="no-method-target-version"),
        pytest.param(b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", id="bad-version"),
        pytest.param(b"G\x00T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", id="nul-in-method"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", id="header-no-colon"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n",
            id="oversized-header",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\n"
            + b"".join(b"X-%d: y\r\n" % i for i in range(200))
            + b"\r\n",
            id="too-many-headers",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            id="negative-length",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
            id="length-of-5000-digits",
        ),
    ],
)
async def test_a_malformed_request_is_400_and_the_gateway_lives_on(
    gateway: HealthGateway,
    client: httpx.AsyncClient,
    request_bytes: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.ops.gateway")
    answer = await raw_exchange(gateway.port, request_bytes)
    assert status_of(answer) in (400, 431)
    assert (await client.get("/healthz")).status_code == 200
    # The client's mistake: one DEBUG line, no ERROR and no traceback in the journal.
    said = [r for r in caplog.records if r.name.startswith(("bot.ops.gateway", "aiohttp"))]
    assert [r.levelno for r in said if r.levelno > logging.INFO] == []
    (line,) = [r for r in said if "Error handling request" in r.getMessage()]
    assert line.exc_info is None
    assert "\n" not in line.getMessage()


class SlowLoris:
    """One client that sends a request head one byte at a time and never finishes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connected = asyncio.Event()
        self.closed_after: float | None = None  # seconds from connect to the server's hang-up

    async def run(self, byte_every_s: float) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        started = loop.time()
        hung_up = asyncio.ensure_future(reader.read())  # b"" (or a reset) once the server closes
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"s" * 10_000
        try:
            writer.write(head[:1])
            self.connected.set()
            for byte in head[1:]:
                # Pacing the trickle, not synchronisation: we stop as soon as it hangs up.
                done, _ = await asyncio.wait({hung_up}, timeout=byte_every_s)
                if done:
                    break
                writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError):
                await hung_up
            self.closed_after = loop.time() - started
        finally:
            hung_up.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def test_200_slow_loris_clients_neither_block_healthz_nor_stay(probe: Probe) -> None:
    read_timeout = 3.0
    server = HealthGateway(
        "127.0.0.1", 0, health=probe.health, metrics=lambda: PAGE, read_timeout=read_timeout
    )
    await server.start()
    lorises = [SlowLoris(server.port) for _ in range(200)]
    tasks = [asyncio.create_task(loris.run(byte_every_s=0.05)) for loris in lorises]
    try:
        async with asyncio.timeout(read_timeout):
            await asyncio.gather(*(loris.connected.wait() for loris in lorises))
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(timeout=read_timeout) as http:
            asked = loop.time()
            response = await http.get(f"http://127.0.0.1:{server.port}/healthz")
            answered_in = loop.time() - asked
        still_open = sum(loris.closed_after is None for loris in lorises)

        assert response.status_code == 200
        assert answered_in < 1.0
        assert still_open == 200  # answered while every slow client still held its socket

        # Trickling does not buy time: each is cut at read_timeout after it connected.
        async with asyncio.timeout(read_timeout + 10.0):
            await asyncio.gather(*tasks)
        held = [loris.closed_after for loris in lorises]
        assert all(seconds is not None and seconds < read_timeout + 5.0 for seconds in held)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()


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
