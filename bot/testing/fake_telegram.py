"""A fake Telegram Bot API server: real HTTP on 127.0.0.1, scripted from the test.

Shipped in the package (as httpx ships ``MockTransport``) so tests, benchmarks and the offline
demo exercise the real client stack: python-telegram-bot talks HTTP to this server exactly as
it talks to ``api.telegram.org``. Point a client at it with
``telegram.Bot(token, base_url=f"{fake.base_url}/bot")``.

The server answers the handful of methods the bridge uses with Telegram's semantics (offset
confirmation, long polling, 409 on concurrent polls, HTML validation, the 4096 UTF-16 limit)
and records every call so tests can assert on what the bridge did. Everything runs on one event
loop: call the sync helpers (``inject_message`` ...) from that loop's thread.

Webhooks: once ``setWebhook`` names a URL that ``route_webhooks`` maps to a local server (the
fake's stand-in for the reverse proxy that ends TLS), queued updates are POSTed there with the
``X-Telegram-Bot-Api-Secret-Token`` header: up to ``max_connections`` (setWebhook's, default 40)
requests at once per bot, but one chat's updates one at a time, in update_id order (the next
waits for the previous one's answer). A 2xx confirms an update; anything else, or no answer,
is retried after a short, growing pause, and after ``WEBHOOK_ATTEMPTS`` the update is dropped,
as Telegram gives up after "a reasonable number of attempts". A URL nobody mapped is never
contacted (no network): its updates wait, as for an unreachable host. A prefix routed to
several local servers spreads the POSTs over them in turn (round-robin, as a load balancer in
front of several bridge processes does); Telegram's per-chat order holds all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import aiohttp
from aiohttp import web

from bot.testing.telegram_files import FileDownload, FileShelf
from bot.testing.telegram_html import HtmlParseError, parse_html, utf16_len

__all__ = ["ApiCall", "Draft", "FakeBot", "FakeTelegram", "FileDownload", "SentMessage"]

_log = logging.getLogger(__name__)

MAX_TEXT_UTF16 = 4096
_CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
# Form and query values are JSON-encoded unless they are strings; these are always strings,
# so "123" or "true" sent as text must not be decoded into a number or a bool.
_WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_STRING_PARAMS = frozenset(
    {"text", "parse_mode", "caption", "action", "language_code", "inline_message_id", "url"}
    | {"business_connection_id", "message_effect_id", "title", "description", "emoji"}
)
_CHAT_ACTIONS = frozenset(
    {"typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice"}
    | {"upload_document", "choose_sticker", "find_location", "record_video_note"}
    | {"upload_video_note"}
)
WEBHOOK_ATTEMPTS = 8
WEBHOOK_RETRY_S = 0.05  # doubled after each failed attempt, up to WEBHOOK_RETRY_MAX_S
WEBHOOK_RETRY_MAX_S = 1.0
_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")
_MENTION_RE = re.compile(r"(?<![\w/@])@[A-Za-z0-9_]{1,32}")


@dataclass(frozen=True)
class FakeBot:
    token: str
    id: int
    username: str
    first_name: str


@dataclass(frozen=True)
class SentMessage:
    """A message the bot sent or edited, as the server understood it."""

    token: str
    method: str  # "sendMessage" | "editMessageText"
    chat_id: int
    message_id: int
    text: str  # visible text: HTML tags removed, entities decoded
    parse_mode: str | None
    message_thread_id: int | None
    reply_to_message_id: int | None
    raw: dict[str, Any]  # every request parameter, decoded


@dataclass(frozen=True)
class Draft:
    """One accepted ``sendMessageDraft``: drafts are not messages and never get an id."""

    token: str
    chat_id: int
    draft_id: int
    text: str  # visible text
    raw: dict[str, Any]


@dataclass(frozen=True)
class ApiCall:
    token: str
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic()


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        description: str,
        retry_after: int | None = None,
        migrate_to: int | None = None,
    ) -> None:
        super().__init__(description)
        self.status, self.description, self.retry_after = status, description, retry_after
        self.migrate_to = migrate_to


class _Signal:
    """Broadcast wake-up: ``notify`` wakes every task currently in ``wait``.

    Usable without holding a lock, so the sync ``inject_*`` helpers can wake long polls.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Return on the next ``notify`` or after ``seconds``, whichever comes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), max(seconds, 0.0))


@dataclass
class _Fault:
    error: _ApiError | None  # None: drop the connection (or hold it, see ``arrived``)
    arrived: asyncio.Event | None = None  # set: park the request unanswered until stop()
    passthrough: bool = False  # no fault: lets ``hold_next(after=N)`` skip N calls


@dataclass
class _Route:
    """Where one public webhook prefix leads: one local base, or several taken in turn."""

    bases: list[str]
    turn: int = 0

    def next_base(self) -> str:
        base = self.bases[self.turn % len(self.bases)]
        self.turn += 1
        return base


@dataclass
class _BotState:
    bot: FakeBot
    next_update_id: int = 1
    updates: list[dict[str, Any]] = field(default_factory=list)  # not yet confirmed
    confirmed_offset: int = 0
    allowed_updates: list[str] | None = None
    poll_generation: int = 0  # bumped by each getUpdates; an older poll sees 409
    polls_waiting: int = 0
    signal: _Signal = field(default_factory=_Signal)
    last_message_id: dict[int, int] = field(default_factory=dict)  # per chat
    messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    chats: dict[int, dict[str, Any]] = field(default_factory=dict)
    commands: list[dict[str, Any]] = field(default_factory=list)
    chat_actions: list[tuple[int, str]] = field(default_factory=list)
    faults: dict[str, list[_Fault]] = field(default_factory=dict)  # lower-cased method
    moved: dict[int, int] = field(default_factory=dict)  # group id → its supergroup's id
    blocked: set[int] = field(default_factory=set)  # chats where sending answers 403
    webhook_url: str = ""  # set: getUpdates answers 409, as Telegram does
    # Supergroups number messages per chat, for every member alike: shared by all bots.
    supergroup_ids: dict[int, int] = field(default_factory=dict)
    webhook_secret: str = ""
    max_connections: int = 40
    webhook_pusher: asyncio.Task[None] | None = None
    deliveries: list[tuple[int, int]] = field(default_factory=list)  # (update_id, status)
    delivered_to: list[str] = field(default_factory=list)  # the local base of each delivery

    def user(self) -> dict[str, Any]:
        return {
            "id": self.bot.id,
            "is_bot": True,
            "first_name": self.bot.first_name,
            "username": self.bot.username,
        }

    def new_message_id(self, chat_id: int) -> int:
        counter = self._counter(chat_id)
        counter[chat_id] = counter.get(chat_id, 0) + 1
        return counter[chat_id]

    def saw_message_id(self, chat_id: int, message_id: int) -> None:
        counter = self._counter(chat_id)
        counter[chat_id] = max(counter.get(chat_id, 0), message_id)

    def _counter(self, chat_id: int) -> dict[int, int]:
        shared = self.chat(chat_id)["type"] == "supergroup"
        return self.supergroup_ids if shared else self.last_message_id

    def chat(self, chat_id: int) -> dict[str, Any]:
        if chat_id in self.chats:
            return dict(self.chats[chat_id])
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "User"}
        return {"id": chat_id, "type": "supergroup", "title": f"Chat {chat_id}"}


def _error_body(error: _ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ok": False,
        "error_code": error.status,
        "description": error.description,
    }
    if error.retry_after is not None:
        body["parameters"] = {"retry_after": error.retry_after}
    if error.migrate_to is not None:
        body["parameters"] = {"migrate_to_chat_id": error.migrate_to}
    return body


def _decode(name: str, value: Any) -> Any:
    if not isinstance(value, str) or name in _STRING_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _int_param(params: dict[str, Any], name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or value is None:
        raise _ApiError(400, f"Bad Request: parameter {name!r} is required")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _ApiError(400, f"Bad Request: invalid {name!r}") from None


def _chat_id(params: dict[str, Any]) -> int:
    try:
        return _int_param(params, "chat_id")
    except _ApiError:
        raise _ApiError(400, "Bad Request: chat not found") from None


def _render(params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Validate ``text``/``parse_mode`` as Telegram does; return visible text and entities."""
    text = str(params.get("text") or "")
    mode = str(params.get("parse_mode") or "")
    entities: list[dict[str, Any]] = []
    if mode.lower() == "html":
        try:
            parsed = parse_html(text)
        except HtmlParseError as exc:
            raise _ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        text, entities = parsed.text, parsed.entities
    elif mode.lower() not in ("", "markdown", "markdownv2"):
        raise _ApiError(400, "Bad Request: unsupported parse_mode")
    elif not mode and isinstance(params.get("entities"), list):
        entities = params["entities"]
    if not text.strip():
        raise _ApiError(400, "Bad Request: message text is empty")
    if utf16_len(text) > MAX_TEXT_UTF16:
        raise _ApiError(400, "Bad Request: message is too long")
    return text, entities


def _auto_entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram's clients attach: a leading /command and @mentions."""
    found: list[dict[str, Any]] = []
    if text.startswith("/"):
        command = text.split(maxsplit=1)[0]
        found.append({"type": "bot_command", "offset": 0, "length": utf16_len(command)})
    for match in _MENTION_RE.finditer(text):
        offset = utf16_len(text[: match.start()])
        found.append({"type": "mention", "offset": offset, "length": utf16_len(match.group())})
    return found


def _chat_of(update: dict[str, Any]) -> object:
    """What per-chat ordering keys on: the chat of any message-like field, else the update."""
    for value in update.values():
        if isinstance(value, dict):
            chat = value.get("chat")
            if isinstance(chat, dict) and "id" in chat:
                return ("chat", chat["id"])
    return ("update", update["update_id"])


def _strip_reply(message: dict[str, Any]) -> dict[str, Any]:
    """Telegram nests only one level of ``reply_to_message``."""
    return {k: v for k, v in message.items() if k != "reply_to_message"}


class FakeTelegram:
    """The fake Bot API server. Use as ``async with FakeTelegram() as fake:``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._bots: dict[str, _BotState] = {}
        self._sent: list[SentMessage] = []
        self._sent_signal = _Signal()
        self._supergroup_ids: dict[int, int] = {}  # one message counter per supergroup
        self._stopped = asyncio.Event()
        self._poll_signal = _Signal()
        self._delivery_signal = _Signal()
        self._proxies: dict[str, _Route] = {}  # public URL prefix → its local base URL(s)
        self._client: aiohttp.ClientSession | None = None
        self.calls: list[ApiCall] = []
        self.files = FileShelf()
        # 409s answered to a poller still connected: two live processes polled one bot.
        self.poll_conflicts: dict[str, int] = {}
        self._methods: dict[str, Callable[[_BotState, dict[str, Any]], Awaitable[Any]]] = {
            "getme": self._get_me,
            "deletewebhook": self._delete_webhook,
            "setwebhook": self._set_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "sendchataction": self._send_chat_action,
            "close": self._true,
            "logout": self._true,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "getfile": self._get_file,
            "sendmessagedraft": self._send_message_draft,
        }
        # Calls the fake refused on their merits (not injected faults): (method, description).
        self.rejected: list[tuple[str, str]] = []
        self.drafts: list[Draft] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeTelegram is already running")
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("GET", "/file/bot{token}/{path:.+}", self.files.serve)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        # access_log=None: the access log would print request paths, which contain tokens.
        # handler_cancellation: a client that hangs up ends its long poll, as on Telegram.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=5.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._port = int(runner.addresses[0][1])
        self._runner, self._closing = runner, False

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._closing = True  # parked long polls answer [] instead of holding shutdown up
        self._stopped.set()  # held requests give up too
        for state in self._bots.values():
            state.signal.notify()
            await self._stop_pushing(state)
        if self._client is not None:
            await self._client.close()
            self._client = None
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._runner is None:
            raise RuntimeError("FakeTelegram is not running; call start() first")
        return f"http://{self._host}:{self._port}"

    # -- scripting -------------------------------------------------------------------------

    def add_bot(self, token: str, username: str, first_name: str | None = None) -> FakeBot:
        bot_id = int(token.split(":", 1)[0])  # ValueError for a malformed token
        bot = FakeBot(token, bot_id, username.lstrip("@"), first_name or username.lstrip("@"))
        self._bots[token] = _BotState(bot, supergroup_ids=self._supergroup_ids)
        return bot

    def revoke(self, token: str) -> None:
        """Forget the bot: its token now gets 401 Unauthorized, as after /revoke in BotFather."""
        self._bots.pop(token, None)

    def set_webhook(self, token: str, url: str) -> None:
        """Leave a webhook set, as another deployment might: polling then gets 409."""
        self._state(token).webhook_url = url

    def route_webhooks(self, public_prefix: str, local_base: str, *more_bases: str) -> None:
        """Deliver webhooks for URLs under ``public_prefix`` to ``local_base`` instead (what a
        TLS-ending reverse proxy does): ``https://bot.example/x/alice`` →
        ``http://127.0.0.1:8081/x/alice`` minus the prefix, i.e. ``…:8081/alice``.

        With ``more_bases``, each POST (a retry too) goes to the next base in turn, as a
        round-robin load balancer in front of several processes sends it."""
        bases = [base.rstrip("/") for base in (local_base, *more_bases)]
        self._proxies[public_prefix.rstrip("/")] = _Route(bases)

    def webhook_deliveries(self, token: str) -> list[tuple[int, int]]:
        """Every webhook POST so far as (update_id, HTTP status; 0 when nothing answered)."""
        return list(self._state(token).deliveries)

    def webhook_delivery_log(self, token: str) -> list[tuple[int, int, str]]:
        """Every webhook POST so far as (update_id, HTTP status, the local base it went to)."""
        state = self._state(token)
        return [
            (u, s, base) for (u, s), base in zip(state.deliveries, state.delivered_to, strict=True)
        ]

    async def wait_for_deliveries(
        self,
        token: str,
        count: int,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> list[tuple[int, int]]:
        """Wait until ``count`` webhook POSTs were answered (or failed); return them all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found := self.webhook_deliveries(token)) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"waited {timeout}s for {count} webhook deliveries: {found}")
            await self._delivery_signal.wait(remaining)
        return found

    def webhook_url(self, token: str) -> str:
        return self._state(token).webhook_url

    def _state(self, token: str) -> _BotState:
        try:
            return self._bots[token]
        except KeyError:
            raise KeyError("no fake bot registered with this token; call add_bot()") from None

    def inject_message(
        self,
        token: str,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        username: str | None = None,
        first_name: str = "User",
        chat_type: Literal["private", "group", "supergroup"] = "private",
        from_bot: bool = False,
        reply_to_bot_message: int | None = None,
        message_thread_id: int | None = None,
        entities: list[dict[str, Any]] | None = None,
        media: dict[str, Any] | None = None,
    ) -> int:
        """Queue a text message update from a user; returns its update_id.

        ``user_id`` defaults to ``chat_id`` in private chats and to ``abs(chat_id)`` elsewhere
        (a negative user id would be nonsense). With ``media`` (fields such as ``photo`` or
        ``voice``, see ``inject_photo`` …) ``text`` is the caption, and may be empty.
        """
        state = self._state(token)
        default_user = chat_id if chat_type == "private" else abs(chat_id)
        sender: dict[str, Any] = {"is_bot": from_bot, "first_name": first_name}
        sender["id"] = default_user if user_id is None else user_id
        if username is not None:
            sender["username"] = username
        if chat_type == "private":
            chat = {k: v for k, v in sender.items() if k in ("first_name", "username")}
            chat |= {"id": chat_id, "type": "private"}
        else:
            chat = {"id": chat_id, "type": chat_type, "title": f"Chat {chat_id}"}
        state.chats[chat_id] = chat
        message: dict[str, Any] = {
            "message_id": state.new_message_id(chat_id),
            "date": int(time.time()),
            "chat": chat,
            "from": sender,
        }
        text_key, entities_key = (
            ("text", "entities") if media is None else ("caption", "caption_entities")
        )
        message |= media or {}
        if text or media is None:
            message[text_key] = text
        entities = _auto_entities(text) if entities is None else entities
        if entities:
            message[entities_key] = entities
        if message_thread_id is not None:
            message["message_thread_id"] = message_thread_id
            message["is_topic_message"] = True
        if reply_to_bot_message is not None:
            original = state.messages.get((chat_id, reply_to_bot_message))
            if original is None or original.get("from", {}).get("id") != state.bot.id:
                raise ValueError(f"bot sent no message {reply_to_bot_message} in chat {chat_id}")
            message["reply_to_message"] = _strip_reply(original)
        state.messages[(chat_id, message["message_id"])] = message
        return self._enqueue(state, {"message": message})

    # -- media (files served by getFile and /file/bot<token>/<path>) ------------------------

    def inject_photo(
        self, token: str, chat_id: int, data: bytes, caption: str = "", **kwargs: Any
    ) -> int:
        """A photo (a small thumbnail and the full size, as Telegram sends them)."""
        return self.inject_message(
            token, chat_id, caption, media=self.photo_media(token, data), **kwargs
        )

    def photo_media(
        self, token: str, data: bytes, media_group_id: str | None = None
    ) -> dict[str, Any]:
        thumb = self.files.put(token, data[:64], ".jpg") | {"width": 90, "height": 90}
        full = self.files.put(token, data, ".jpg") | {"width": 1280, "height": 960}
        media: dict[str, Any] = {"photo": [thumb, full]}
        if media_group_id is not None:
            media["media_group_id"] = media_group_id
        return media

    def inject_album(
        self, token: str, chat_id: int, photos: list[bytes], caption: str = "", **kwargs: Any
    ) -> list[int]:
        """Several photos sharing a ``media_group_id``, the caption on the first: one
        update each, as Telegram delivers them."""
        group = f"album-{len(self.files.downloads)}-{time.monotonic_ns()}"
        return [
            self.inject_message(
                token,
                chat_id,
                caption if i == 0 else "",
                media=self.photo_media(token, data, group),
                **kwargs,
            )
            for i, data in enumerate(photos)
        ]

    def inject_voice(
        self, token: str, chat_id: int, data: bytes, caption: str = "", **kwargs: Any
    ) -> int:
        """A voice note (OGG/Opus)."""
        voice = self.files.put(token, data, ".oga") | {"duration": 3, "mime_type": "audio/ogg"}
        return self.inject_message(token, chat_id, caption, media={"voice": voice}, **kwargs)

    def inject_document(
        self,
        token: str,
        chat_id: int,
        data: bytes,
        file_name: str,
        mime_type: str,
        caption: str = "",
        *,
        declared_size: int | bool | None = True,
        **kwargs: Any,
    ) -> int:
        """A file; ``declared_size`` None omits its size, a number lies about it."""
        suffix = "." + file_name.rsplit(".", 1)[-1] if "." in file_name else ""
        document = self.files.put(token, data, suffix, declared=declared_size)
        document |= {"file_name": file_name, "mime_type": mime_type}
        return self.inject_message(token, chat_id, caption, media={"document": document}, **kwargs)

    def inject_sticker(self, token: str, chat_id: int, emoji: str, **kwargs: Any) -> int:
        sticker = self.files.put(token, b"RIFF-webp", ".webp") | {
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
        }
        return self.inject_message(token, chat_id, "", media={"sticker": sticker}, **kwargs)

    def downloads(self, token: str) -> list[FileDownload]:
        """Every file fetched with ``token``, in order."""
        return self.files.downloads_for(token)

    def inject_update(self, token: str, update: dict[str, Any]) -> int:
        """Queue a raw update dict (any type); the server assigns its update_id."""
        state = self._state(token)
        update = {k: v for k, v in update.items() if k != "update_id"}
        message = update.get("message")
        if isinstance(message, dict) and {"chat", "message_id"} <= message.keys():
            chat_id, message_id = int(message["chat"]["id"]), int(message["message_id"])
            state.messages[(chat_id, message_id)] = message
            state.saw_message_id(chat_id, message_id)
        return self._enqueue(state, update)

    def inject_group_message(
        self,
        tokens: list[str],
        chat_id: int,
        text: str,
        *,
        user_id: int,
        first_name: str = "User",
        from_bot: bool = False,
        reply_to: tuple[str, int] | None = None,
        message_id: int | None = None,
    ) -> dict[str, int]:
        """One message in a supergroup, delivered as Telegram does to each bot in
        ``tokens``: every bot gets its own update (its own update_id) with the same chat
        and ``message_id``. ``reply_to`` names a message a bot sent there (its token and
        id). ``message_id`` delivers a message injected before to more bots (one bot's
        copy may reach the bridge well before another's). Returns each token's update_id."""
        chat = {"id": chat_id, "type": "supergroup", "title": f"Chat {chat_id}"}
        if message_id is None:
            message_id = self._supergroup_ids[chat_id] = self._supergroup_ids.get(chat_id, 0) + 1
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": from_bot, "first_name": first_name},
            "text": text,
        }
        if entities := _auto_entities(text):
            message["entities"] = entities
        if reply_to is not None:
            original = self._state(reply_to[0]).messages.get((chat_id, reply_to[1]))
            if original is None:
                raise ValueError(f"no message {reply_to[1]} in chat {chat_id}")
            message["reply_to_message"] = _strip_reply(original)
        ids = {}
        for token in tokens:
            state = self._state(token)
            state.chats[chat_id] = chat
            state.messages[(chat_id, message["message_id"])] = message
            ids[token] = self._enqueue(state, {"message": dict(message)})
        return ids

    def _enqueue(self, state: _BotState, update: dict[str, Any]) -> int:
        update_id = update["update_id"] = state.next_update_id
        state.next_update_id += 1
        state.updates.append(update)
        state.signal.notify()
        _log.debug("fake telegram: update %d queued for @%s", update_id, state.bot.username)
        return update_id

    def fail_next(
        self,
        token: str,
        method: str,
        *,
        status: int = 500,
        description: str = "Internal Server Error",
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``status``."""
        if status == 429:
            retry_after = 1 if retry_after is None else retry_after
            if description == "Internal Server Error":
                description = f"Too Many Requests: retry after {retry_after}"
        error = _ApiError(status, description, retry_after)
        faults = self._state(token).faults.setdefault(method.lower(), [])
        faults.extend(_Fault(error) for _ in range(times))

    def migrate_chat(
        self, token: str, old_chat_id: int, new_chat_id: int, *, announce: bool = True
    ) -> int | None:
        """Upgrade a group to a supergroup as Telegram does: sends to the old id answer 400
        with ``migrate_to_chat_id``; with ``announce`` the service message is queued too.
        Returns its update_id."""
        state = self._state(token)
        state.moved[old_chat_id] = new_chat_id
        state.chats[new_chat_id] = {"id": new_chat_id, "type": "supergroup", "title": "Moved"}
        if not announce:
            return None
        chat = {"id": old_chat_id, "type": "group", "title": f"Chat {old_chat_id}"}
        service = {
            "message_id": state.new_message_id(old_chat_id),
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": 1, "is_bot": False, "first_name": "Admin"},
            "migrate_to_chat_id": new_chat_id,
        }
        return self._enqueue(state, {"message": service})

    def block(self, token: str, chat_id: int) -> None:
        """The user blocked the bot: every send to ``chat_id`` answers 403."""
        self._state(token).blocked.add(chat_id)

    def hold_next(self, token: str, method: str, *, after: int = 0) -> asyncio.Event:
        """Park a call of ``method`` unanswered — a request in flight that Telegram never
        processed — until the fake stops (then 502; nothing recorded). ``after`` calls are
        served normally first. The returned event is set when the held request arrives."""
        arrived = asyncio.Event()
        faults = self._state(token).faults.setdefault(method.lower(), [])
        faults.extend(_Fault(None, passthrough=True) for _ in range(after))
        faults.append(_Fault(None, arrived))
        return arrived

    def drop_connection_next(self, token: str, method: str, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` end with a closed socket, no answer."""
        faults = self._state(token).faults.setdefault(method.lower(), [])
        faults.extend(_Fault(None) for _ in range(times))

    # -- inspection ------------------------------------------------------------------------

    def sent(self, token: str, chat_id: int | None = None) -> list[SentMessage]:
        return [
            m for m in self._sent if m.token == token and (chat_id is None or m.chat_id == chat_id)
        ]

    async def wait_for_sent(
        self,
        token: str,
        count: int,
        *,
        chat_id: int | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> list[SentMessage]:
        """Wait until ``count`` messages were sent (or edited); return all of them so far."""
        state = self._state(token)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found := self.sent(token, chat_id)) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                where = "" if chat_id is None else f" in chat {chat_id}"
                seen = [m.text[:80] for m in found]
                raise TimeoutError(
                    f"waited {timeout}s for {count} message(s) from @{state.bot.username}"
                    f"{where}; saw {len(found)}: {seen!r}"
                )
            await self._sent_signal.wait(remaining)
        return found

    async def wait_for_poll(self, token: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until a getUpdates long poll for ``token`` is parked waiting for updates.

        Lets a test inject *during* a long poll deterministically, without sleeping.
        """
        state = self._state(token)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while state.polls_waiting == 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no getUpdates long poll from @{state.bot.username}")
            await self._poll_signal.wait(remaining)

    def calls_to(self, method: str, token: str | None = None) -> list[ApiCall]:
        method = method.lower()
        return [
            c
            for c in self.calls
            if c.method.lower() == method and (token is None or c.token == token)
        ]

    def confirmed_offset(self, token: str) -> int:
        return self._state(token).confirmed_offset

    def pending_updates(self, token: str) -> int:
        return len(self._state(token).updates)

    def commands(self, token: str) -> list[dict[str, Any]]:
        return list(self._state(token).commands)

    def chat_actions(self, token: str) -> list[tuple[int, str]]:
        return list(self._state(token).chat_actions)

    # -- HTTP ------------------------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response(_error_body(_ApiError(404, "Not Found")), status=404)

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = {k: _decode(k, v) for k, v in request.query.items()}
        if not request.can_read_body:
            return params
        if request.content_type == "application/json":
            try:
                body = json.loads(await request.text() or "{}")
            except ValueError:
                raise _ApiError(400, "Bad Request: can't parse JSON") from None
            if not isinstance(body, dict):
                raise _ApiError(400, "Bad Request: JSON body must be an object")
            params.update(body)
        else:
            for key, value in (await request.post()).items():
                params[key] = _decode(
                    key, value.filename if isinstance(value, web.FileField) else value
                )
        return params

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        token, method = request.match_info["token"], request.match_info["method"]
        try:
            params = await self._read_params(request)
        except _ApiError as exc:
            return web.json_response(_error_body(exc), status=exc.status)
        self.calls.append(ApiCall(token, method, params, time.monotonic()))
        state = self._bots.get(token)
        if state is None:
            return web.json_response(_error_body(_ApiError(401, "Unauthorized")), status=401)
        _log.debug("fake telegram: @%s %s", state.bot.username, method)
        faults = state.faults.get(method.lower())
        if faults and not (fault := faults.pop(0)).passthrough:
            if fault.arrived is not None:
                fault.arrived.set()
                await self._stopped.wait()
                return web.json_response(_error_body(_ApiError(502, "Bad Gateway")), status=502)
            if fault.error is not None:
                return web.json_response(_error_body(fault.error), status=fault.error.status)
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never written: aiohttp sees the closed socket
        handler = self._methods.get(method.lower())
        try:
            if handler is None:
                raise _ApiError(404, "Not Found")
            result = await handler(state, params)
        except _ApiError as exc:
            if exc.description == _CONFLICT and request.transport is not None:
                self.poll_conflicts[token] = self.poll_conflicts.get(token, 0) + 1
            self.rejected.append((method, exc.description))
            return web.json_response(_error_body(exc), status=exc.status)
        except Exception:  # a bug here or a malformed parameter: answer like Telegram's 500
            _log.exception("fake telegram: %s for @%s failed", method, state.bot.username)
            error = _ApiError(500, "Internal Server Error")
            return web.json_response(_error_body(error), status=500)
        return web.json_response({"ok": True, "result": result})

    # -- methods ---------------------------------------------------------------------------

    async def _get_me(self, state: _BotState, params: dict[str, Any]) -> Any:
        return state.user() | {
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _true(self, state: _BotState, params: dict[str, Any]) -> Any:
        return True

    async def _delete_webhook(self, state: _BotState, params: dict[str, Any]) -> Any:
        state.webhook_url = ""
        await self._stop_pushing(state)
        if params.get("drop_pending_updates") is True:
            self._confirm(state, state.next_update_id)
        return True

    async def _set_webhook(self, state: _BotState, params: dict[str, Any]) -> Any:
        url = str(params.get("url") or "")
        if url and not url.startswith("https://"):
            raise _ApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _ApiError(400, "Bad Request: secret token contains unallowed characters")
        await self._stop_pushing(state)
        state.webhook_url, state.webhook_secret = url, str(secret or "")
        if isinstance(params.get("allowed_updates"), list):
            state.allowed_updates = params["allowed_updates"]
        state.max_connections = min(max(_int_param(params, "max_connections", 40), 1), 100)
        if url:
            state.webhook_pusher = asyncio.create_task(
                self._push_updates(state), name=f"webhook @{state.bot.username}"
            )
        return True

    # -- webhook delivery ------------------------------------------------------------------

    def _route(self, url: str) -> tuple[_Route, str] | None:
        """The route of ``url`` and the path below its prefix; None when nobody mapped it."""
        for prefix, route in self._proxies.items():
            if url == prefix or url.startswith(prefix + "/"):
                return route, url[len(prefix) :]
        return None

    async def _stop_pushing(self, state: _BotState) -> None:
        task, state.webhook_pusher = state.webhook_pusher, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _push_updates(self, state: _BotState) -> None:
        """Deliver queued updates: up to ``max_connections`` at once, but never two of one
        chat, and each chat's in update_id order (a chat's next update waits until its
        previous one is answered with a 2xx or given up)."""
        routed = self._route(state.webhook_url)
        if routed is None:
            return  # not routed: never leave 127.0.0.1; the updates wait
        route, path = routed
        if self._client is None:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        headers = {_SECRET_HEADER: state.webhook_secret} if state.webhook_secret else {}
        posting: dict[int, asyncio.Task[None]] = {}  # update_id → its delivery
        try:
            while not self._closing:
                waiting: set[object] = set()  # chats with an earlier update not yet answered
                for update in self._ready(state, len(state.updates)):
                    chat = _chat_of(update)
                    if update["update_id"] in posting or chat in waiting:
                        waiting.add(chat)
                        continue
                    waiting.add(chat)
                    if len(posting) < state.max_connections:
                        posting[update["update_id"]] = asyncio.create_task(
                            self._post_update(
                                state, self._client, route, path, headers, update, posting
                            )
                        )
                await state.signal.wait(1.0)
        finally:
            for task in posting.values():
                task.cancel()
            await asyncio.gather(*posting.values(), return_exceptions=True)

    async def _post_update(
        self,
        state: _BotState,
        client: aiohttp.ClientSession,
        route: _Route,
        path: str,
        headers: dict[str, str],
        update: dict[str, Any],
        posting: dict[int, asyncio.Task[None]],
    ) -> None:
        """One update until a 2xx, or dropped after WEBHOOK_ATTEMPTS; then the next of its
        chat may go."""
        pause = WEBHOOK_RETRY_S
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            base = route.next_base()
            try:
                async with client.post(base + path, json=update, headers=headers) as answer:
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            state.deliveries.append((update["update_id"], status))
            state.delivered_to.append(base)
            self._delivery_signal.notify()
            if 200 <= status < 300:
                break
            if attempt == WEBHOOK_ATTEMPTS:
                _log.warning("fake telegram: update %d dropped", update["update_id"])
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, WEBHOOK_RETRY_MAX_S)
        state.updates = [u for u in state.updates if u is not update]
        del posting[update["update_id"]]
        state.signal.notify()  # the chat's next update may go now

    async def _get_webhook_info(self, state: _BotState, params: dict[str, Any]) -> Any:
        return {
            "url": state.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(state.updates),
        }

    async def _set_my_commands(self, state: _BotState, params: dict[str, Any]) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list) or not all(
            isinstance(c, dict) and _COMMAND_RE.fullmatch(str(c.get("command", "")))
            for c in commands
        ):
            raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        state.commands = commands
        return True

    async def _get_my_commands(self, state: _BotState, params: dict[str, Any]) -> Any:
        return state.commands

    async def _send_chat_action(self, state: _BotState, params: dict[str, Any]) -> Any:
        chat_id, action = _chat_id(params), str(params.get("action", ""))
        if action not in _CHAT_ACTIONS:
            raise _ApiError(400, "Bad Request: wrong parameter action in request")
        state.chat_actions.append((chat_id, action))
        return True

    async def _get_file(self, state: _BotState, params: dict[str, Any]) -> Any:
        found = self.files.get_file(state.bot.token, str(params.get("file_id") or ""))
        if found is None:
            raise _ApiError(400, "Bad Request: invalid file_id")
        return found

    def _confirm(self, state: _BotState, offset: int) -> None:
        """Forget updates below ``offset``; a negative offset keeps the last ``-offset``."""
        if offset < 0:
            kept = state.updates[offset:]
            offset = kept[0]["update_id"] if kept else state.next_update_id
        if offset > state.confirmed_offset:
            state.confirmed_offset = offset
        state.updates = [u for u in state.updates if u["update_id"] >= state.confirmed_offset]

    def _ready(self, state: _BotState, limit: int) -> list[dict[str, Any]]:
        if state.allowed_updates:
            allowed = set(state.allowed_updates) | {"update_id"}
            state.updates = [u for u in state.updates if u.keys() <= allowed]
        return state.updates[:limit]

    async def _get_updates(self, state: _BotState, params: dict[str, Any]) -> Any:
        offset = _int_param(params, "offset", 0)
        limit = min(max(_int_param(params, "limit", 100), 1), 100)
        timeout = float(params.get("timeout") or 0)
        if state.webhook_url:
            raise _ApiError(409, _WEBHOOK_CONFLICT)
        if isinstance(params.get("allowed_updates"), list):
            state.allowed_updates = params["allowed_updates"]
        state.poll_generation += 1
        generation = state.poll_generation
        state.signal.notify()  # an older parked poll wakes up and answers 409
        self._confirm(state, offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if generation != state.poll_generation:
                raise _ApiError(409, _CONFLICT)
            ready = self._ready(state, limit)
            remaining = deadline - loop.time()
            if ready or self._closing or remaining <= 0:
                return ready
            state.polls_waiting += 1
            self._poll_signal.notify()
            try:
                await state.signal.wait(remaining)
            finally:
                state.polls_waiting -= 1

    def _record(
        self,
        state: _BotState,
        method: str,
        message: dict[str, Any],
        params: dict[str, Any],
        reply_to: int | None,
    ) -> None:
        self._sent.append(
            SentMessage(
                token=state.bot.token,
                method=method,
                chat_id=message["chat"]["id"],
                message_id=message["message_id"],
                text=message["text"],
                parse_mode=params.get("parse_mode"),
                message_thread_id=message.get("message_thread_id"),
                reply_to_message_id=reply_to,
                raw=dict(params),
            )
        )
        self._sent_signal.notify()

    async def _send_message(self, state: _BotState, params: dict[str, Any]) -> Any:
        chat_id = _chat_id(params)
        if chat_id in state.moved:
            raise _ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to=state.moved[chat_id],
            )
        if chat_id in state.blocked:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")
        text, entities = _render(params)
        message: dict[str, Any] = {
            "message_id": state.new_message_id(chat_id),
            "date": int(time.time()),
            "chat": state.chat(chat_id),
            "from": state.user(),
            "text": text,
        }
        if entities:
            message["entities"] = entities
        if params.get("message_thread_id") is not None:
            message["message_thread_id"] = _int_param(params, "message_thread_id")
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        reply_params = params.get("reply_parameters")
        if isinstance(reply_params, dict):
            reply_to = _int_param(reply_params, "message_id")
        elif params.get("reply_to_message_id") is not None:
            reply_to = _int_param(params, "reply_to_message_id")
        else:
            reply_to = None
        if reply_to is not None:
            # Lenient like an unknown chat: replying to an unknown message is not an error.
            original = state.messages.get((chat_id, reply_to))
            if original is not None:
                message["reply_to_message"] = _strip_reply(original)
        state.messages[(chat_id, message["message_id"])] = message
        self._record(state, "sendMessage", message, params, reply_to)
        return message

    async def _edit_message_text(self, state: _BotState, params: dict[str, Any]) -> Any:
        if params.get("inline_message_id") is not None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        chat_id = _chat_id(params)
        current = state.messages.get((chat_id, _int_param(params, "message_id")))
        if current is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        if current.get("from", {}).get("id") != state.bot.id:
            raise _ApiError(400, "Bad Request: message can't be edited")
        text, entities = _render(params)
        markup = params.get("reply_markup")
        if (text, entities, markup) == (
            current["text"],
            current.get("entities", []),
            current.get("reply_markup"),
        ):
            raise _ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup "
                "of the message",
            )
        edited = {k: v for k, v in current.items() if k not in ("entities", "reply_markup")}
        edited |= {"text": text, "edit_date": int(time.time())}
        if entities:
            edited["entities"] = entities
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            edited["reply_markup"] = markup
        state.messages[(chat_id, edited["message_id"])] = edited
        reply = edited.get("reply_to_message")
        self._record(state, "editMessageText", edited, params, reply and reply["message_id"])
        return edited

    async def _send_message_draft(self, state: _BotState, params: dict[str, Any]) -> Any:
        """Private chats only (400 TEXTDRAFT_PEER_INVALID elsewhere, as Telegram answers);
        a non-zero ``draft_id``; empty text is the "Thinking…" placeholder."""
        chat_id = _chat_id(params)
        if state.chat(chat_id).get("type") != "private":
            raise _ApiError(400, "Bad Request: TEXTDRAFT_PEER_INVALID")
        draft_id = _int_param(params, "draft_id", 0)
        if draft_id == 0:
            raise _ApiError(400, "Bad Request: draft_id must be non-zero")
        text = ""
        if str(params.get("text") or "").strip():
            text, _ = _render(params)
        self.drafts.append(Draft(state.bot.token, chat_id, draft_id, text, dict(params)))
        return True
