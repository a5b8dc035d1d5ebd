"""The webhook receiver: one aiohttp.web server for every bot in webhook mode (SPEC §14).

aiohttp (about 9 MiB of an idle bridge) is imported only when the server starts: most
bridges poll and never load it.

Telegram POSTs each update to ``{public_url}/{bot id}``; a reverse proxy ends TLS and
forwards to ``webhook.host:port`` here. A request is answered as soon as the update is in
the durable inbox, never after its turn: OpenClaw learned that a handler which waits for
a busy chat turns into timeouts and retry storms, and that an update acknowledged before
it is stored is lost by a crash. So a request does exactly what one polled update does —
access rules, the inbox row, the hand-over to the chat's lane — and returns. Telegram
retries anything but a 2xx, which is what every "not now" answer here relies on:

- a bot id no running bot has → 404; wrong or missing ``X-Telegram-Bot-Api-Secret-Token`` → 401
  (compared in constant time; nothing is read or stored);
- the bot is not connected yet, or stopping → 503, and the store failing → 503;
- a body over ``MAX_BODY`` → 413; a body that is no update → 200, logged as skipped by id
  (retrying it would never help);
- a duplicate → 200: the inbox key (bot, update id) recognises it, and it is not answered
  again.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

from bot.config.schema import WebhookSettings
from bot.errors import ConfigError, ConfigProblem, PersonaBridgeError

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# A text message is at most 4096 characters; with entities, a reply and the sender it stays
# far below this. Larger bodies are someone else's traffic.
MAX_BODY = 256 * 1024
MAX_HEAD = 8 * 1024
MAX_HEADERS = 32
READ_TIMEOUT_S = 10.0  # a request head or body trickling in longer than this is cut
STOP_GRACE_S = 1.0
BACKLOG = 1024


class WebhookBot(Protocol):
    """What the receiver needs of a bot: its secret, whether it can take updates now, and
    the polling path's store-then-hand-over for one raw update."""

    def webhook_secret(self) -> bytes: ...

    def accepting(self) -> bool: ...

    async def receive(self, raw: dict[str, Any], update_id: int) -> None: ...


class _ClientErrorsAtDebug(logging.Filter):
    """aiohttp logs a malformed request at ERROR with a traceback: the client's mistake,
    and a hostile client must not fill the journal. Our own errors stay ERRORs."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Only aiohttp's server logs here, so it is loaded by now: a dict look-up.
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        record.msg, record.args = "webhook server: %s", (" ".join(str(error).split()),)
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        return _http_log.isEnabledFor(logging.DEBUG)


_http_log = log.getChild("http")
_http_log.addFilter(_ClientErrorsAtDebug())


class WebhookServer:
    """``POST /{bot id}`` for every registered bot; bots register before their setWebhook."""

    def __init__(self) -> None:
        self._bots: dict[str, WebhookBot] = {}
        self._runner: web.AppRunner | None = None
        self.bound: tuple[str, int] | None = None  # host and port, fixed until a restart
        self.public_url: str | None = None  # a reload may change it: bots re-register

    @property
    def listening(self) -> bool:
        return self._runner is not None

    def register(self, bot_id: str, bot: WebhookBot) -> None:
        self._bots[bot_id] = bot

    def unregister(self, bot_id: str, bot: WebhookBot) -> None:
        if self._bots.get(bot_id) is bot:  # a restarted bot may have registered already
            del self._bots[bot_id]

    async def start(self, settings: WebhookSettings) -> None:
        """Listening on return. A port that cannot be bound is the config's problem (78)."""
        from aiohttp import web

        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/{bot_id}", self._update)
        # handler_cancellation stays off: a client hanging up must not cancel a request
        # between storing its update and handing it to the chat's lane.
        runner = web.AppRunner(
            app,
            shutdown_timeout=STOP_GRACE_S,
            access_log=None,  # one line per update is noise; refusals are logged below
            logger=_http_log,
            keepalive_timeout=READ_TIMEOUT_S,
            lingering_time=READ_TIMEOUT_S,
            max_line_size=MAX_HEAD,
            max_field_size=MAX_HEAD,
            max_headers=MAX_HEADERS,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.host, settings.port, backlog=BACKLOG).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                [
                    ConfigProblem(
                        "webhook.port",
                        f"cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc})",
                        "free the port or choose another webhook.port "
                        "(and point the reverse proxy at it)",
                    )
                ]
            ) from exc
        self._runner, self.bound = runner, (settings.host, settings.port)
        self.public_url = settings.public_url
        log.info("webhook server listening on http://%s:%d", settings.host, settings.port)

    async def stop(self) -> None:
        runner, self._runner, self.bound = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def _update(self, request: web.Request) -> web.Response:
        from aiohttp import web  # loaded by start(); a dict look-up here

        bot_id = request.match_info["bot_id"]
        bot = self._bots.get(bot_id)
        if bot is None:
            return web.Response(status=404, text="no such bot\n")
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, bot.webhook_secret()):
            log.warning("webhook %s: a request without the right secret token refused", bot_id)
            return web.Response(status=401, text="wrong secret token\n")
        if request.content_length is not None and request.content_length > MAX_BODY:
            log.warning("webhook %s: a body of %d bytes refused", bot_id, request.content_length)
            return web.Response(status=413, text="too large\n")
        if not bot.accepting():
            return web.Response(status=503, text="not ready; retry\n")
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            log.warning("webhook %s: a body over %d bytes refused", bot_id, MAX_BODY)
            return web.Response(status=413, text="too large\n")
        except TimeoutError:
            return web.Response(status=408, text="body too slow\n")
        raw = _update_of(body)
        if raw is None:
            log.warning("webhook %s: a body that is not an update skipped", bot_id)
            return web.Response(status=200)
        try:
            await bot.receive(raw, raw["update_id"])
        except PersonaBridgeError as exc:  # the store: Telegram retries, nothing is lost
            log.error("webhook %s: update %d not stored (%s)", bot_id, raw["update_id"], exc)
            return web.Response(status=503, text="not stored; retry\n")
        return web.Response(status=200)


def _update_of(body: bytes) -> dict[str, Any] | None:
    """The update object with an integer update_id, or None; the content is never logged."""
    try:
        raw = json.loads(body)
    except ValueError:
        return None
    if not isinstance(raw, dict) or type(raw.get("update_id")) is not int:
        return None
    return raw
