"""A scripted fake LLM: a real HTTP server on 127.0.0.1 speaking OpenAI and Anthropic shapes.

Shipped in the package (the way httpx ships MockTransport) so tests, benchmarks and the offline
demo exercise the real HTTP client code, retries and timeouts included, without a network or a
bill. Answers are scripted per model with small frozen behaviour objects::

    async with FakeLLM() as llm:
        llm.script("gpt-x", Reply("hi"), Fault(429, retry_after=1), ToolCall("now", {}))
        ...  # point the client at llm.openai_base or llm.anthropic_base
        seen = await llm.wait_for_requests(3, model="gpt-x")

With nothing scripted the fake echoes (see :func:`echo_text`), which lets a test assert that the
right model, persona and message reached the provider without scripting anything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Protocol, TypeAlias

from aiohttp import BodyPartReader, web

from bot.testing import llm_anthropic_shape, llm_openai_shape

__all__ = [
    "Behaviour",
    "Echo",
    "EmptyChoices",
    "FakeLLM",
    "Fault",
    "GarbageUsage",
    "Hang",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "Slow",
    "Streamed",
    "ToolCall",
    "Truncated",
    "Unterminated",
    "echo_text",
]

log = logging.getLogger(__name__)

Api: TypeAlias = Literal["openai", "anthropic"]


@dataclass(frozen=True)
class Reply:
    """A plain assistant answer."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """One tool call, optionally preceded by text.

    ``arguments`` given as a string is sent verbatim, so tests can send broken JSON.
    """

    name: str
    arguments: dict[str, Any] | str
    text: str = ""
    call_id: str | None = None


@dataclass(frozen=True)
class Fault:
    """An HTTP error in the API's own error shape.

    An empty ``message`` becomes the status phrase; ``error_type`` and ``code`` default per
    status (OpenAI 429 → code "rate_limit_exceeded", Anthropic 529 → "overloaded_error", ...).
    Context overflow is ``Fault(400, "...maximum context length...", code=
    "context_length_exceeded")`` for OpenAI and ``Fault(400, "prompt is too long: ...")`` for
    Anthropic. ``retry_after`` sets ``Retry-After`` (seconds) and ``retry-after-ms``.
    ``quote_credentials`` appends the credential headers the request carried (Authorization,
    x-api-key, ...) verbatim, as careless or hostile servers do: for redaction tests.
    """

    status: int
    message: str = ""
    retry_after: float | None = None
    error_type: str | None = None
    code: str | None = None
    quote_credentials: bool = False


@dataclass(frozen=True)
class Hang:
    """Accept the request and never answer: until ``seconds`` pass or the server stops.

    Either way the request then gets a 504 in the API's error shape, usually long after the
    client gave up. Other requests are served meanwhile.
    """

    seconds: float = 3600.0


@dataclass(frozen=True)
class Slow:
    """Answer with ``then`` after ``seconds``: a model that is working, not a hung one."""

    seconds: float
    then: Behaviour = field(default_factory=lambda: Echo())


@dataclass(frozen=True)
class Malformed:
    """Send ``body`` verbatim with this status and content type, whatever the API."""

    body: str = "{not json"
    status: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True)
class EmptyChoices:
    """A well-formed but empty answer: OpenAI ``choices: []``, Anthropic ``content: []``."""


@dataclass(frozen=True)
class GarbageUsage:
    """A normal answer whose every token count is ``value``, JSON text written verbatim.

    E.g. ``'"12"'``, ``'{"n": 1}'``, ``'1e999'``, ``'-5'``, ``'true'``. An empty ``text``
    answers with :func:`echo_text`.
    """

    value: str
    text: str = ""


@dataclass(frozen=True)
class Truncated:
    """An answer cut at the model's token limit: OpenAI ``finish_reason: "length"``,
    Anthropic ``stop_reason: "max_tokens"``."""

    text: str


@dataclass(frozen=True)
class Unterminated:
    """A stream that stops before its terminator (OpenAI ``data: [DONE]``, Anthropic
    ``message_stop``) after sending ``text`` whole; a non-streamed request gets half a body."""

    text: str


@dataclass(frozen=True)
class Streamed:
    """``text`` streamed in word-sized pieces spread evenly over ``seconds``: a model that
    writes at a human-visible pace. ``fail_after``: the connection drops once that many
    characters went out (a mid-stream fault: no terminator). A request that does not
    stream waits ``seconds`` and gets the whole text."""

    text: str
    seconds: float = 0.0
    fail_after: int | None = None


@dataclass(frozen=True)
class Echo:
    """Answer with :func:`echo_text` of the request; the default behaviour."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it, plus the fields tests keep asking for."""

    api: Api
    path: str
    model: str
    body: dict[str, Any]  # the parsed JSON exactly as received
    headers: dict[str, str]  # names lower-cased; keys are recorded, never logged
    at: float  # time.monotonic() on arrival
    system: str
    last_user_text: str
    stream: bool
    tool_result: str | None = None  # content of a trailing tool result, if the last message is one
    # The image parts the request carried (decoded bytes), in order: OpenAI image_url data
    # URLs and Anthropic base64 image blocks alike.
    images: tuple[bytes, ...] = ()
    # A transcription request (POST …/audio/transcriptions): the uploaded file, as received.
    audio: bytes | None = None
    audio_name: str = ""
    audio_type: str = ""


@dataclass(frozen=True)
class ReportedUsage:
    """The token counts the fake put in one answer's ``usage``."""

    model: str
    prompt_tokens: int
    completion_tokens: int


Behaviour: TypeAlias = (
    Reply
    | Streamed
    | ToolCall
    | Fault
    | Hang
    | Slow
    | Malformed
    | EmptyChoices
    | GarbageUsage
    | Truncated
    | Unterminated
    | Echo
    | Callable[[RecordedRequest], "Behaviour"]
)
_Concrete: TypeAlias = (
    Reply
    | Streamed
    | ToolCall
    | Fault
    | Hang
    | Slow
    | Malformed
    | EmptyChoices
    | GarbageUsage
    | Truncated
    | Unterminated
)
_Answer: TypeAlias = Reply | ToolCall | GarbageUsage | Truncated | Unterminated | Streamed


def echo_text(request: RecordedRequest) -> str:
    """What :class:`Echo` answers; tests elsewhere rely on this format exactly."""
    if request.tool_result is not None:
        return f"[model={request.model}] tool-result: {request.tool_result}"
    first_line = request.system.split("\n", 1)[0]
    return f"[model={request.model}] [system={first_line}] {request.last_user_text}"


class _WireFormat(Protocol):
    """What :mod:`llm_openai_shape` and :mod:`llm_anthropic_shape` both provide."""

    def system_text(self, body: Mapping[str, Any]) -> str: ...
    def last_user_text(self, body: Mapping[str, Any]) -> str: ...
    def tool_result(self, body: Mapping[str, Any]) -> str | None: ...
    def content_chars(self, body: Mapping[str, Any]) -> int: ...
    def check(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> web.Response | None: ...

    def error(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response: ...

    async def respond(
        self,
        request: web.Request,
        body: Mapping[str, Any],
        *,
        model: str,
        text: str,
        tool_name: str | None,
        tool_id: str | None,
        tool_arguments: str,
        prompt_tokens: int,
        completion_tokens: int,
        stop_reason: str | None = None,
        raw_usage: str | None = None,
        terminate: bool = True,
        pace_s: float = 0.0,
        cut_after: int | None = None,
    ) -> web.StreamResponse: ...

    async def respond_empty(
        self, request: web.Request, body: Mapping[str, Any], *, model: str, prompt_tokens: int
    ) -> web.StreamResponse: ...


_OPENAI: _WireFormat = llm_openai_shape
_ANTHROPIC: _WireFormat = llm_anthropic_shape


def _route(path: str) -> tuple[Api, _WireFormat] | None:
    """Any prefix is accepted, so several fake "providers" can share one server."""
    if path.endswith("/chat/completions"):
        return "openai", _OPENAI
    if path.endswith("/v1/messages"):
        return "anthropic", _ANTHROPIC
    return None


def _phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _retry_headers(retry_after: float | None) -> dict[str, str]:
    if retry_after is None:
        return {}
    seconds = str(int(retry_after)) if retry_after == int(retry_after) else str(retry_after)
    return {"Retry-After": seconds, "retry-after-ms": str(int(retry_after * 1000))}


_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def _quoted_credentials(headers: Mapping[str, str]) -> str:
    sent = [f"{name}: {headers[name]}" for name in _CREDENTIAL_HEADERS if name in headers]
    return f"(you sent {'; '.join(sent)})" if sent else "(you sent no credentials)"


def _images(body: Mapping[str, Any]) -> tuple[bytes, ...]:
    """Image parts in either wire shape, decoded; anything malformed is skipped."""
    found: list[bytes] = []
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if not isinstance(part, dict):
                continue
            encoded = None
            if part.get("type") == "image_url":  # OpenAI: a data URL
                url = (part.get("image_url") or {}).get("url", "")
                encoded = url.split(";base64,", 1)[1] if ";base64," in url else None
            elif part.get("type") == "image":  # Anthropic: a base64 source
                encoded = (part.get("source") or {}).get("data")
            if isinstance(encoded, str):
                with contextlib.suppress(ValueError):
                    found.append(base64.b64decode(encoded, validate=True))
    return tuple(found)


class FakeLLM:
    """The fake server. Use ``async with FakeLLM() as llm`` or ``start()`` / ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._bound_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._queues: dict[str | None, deque[Behaviour]] = {}
        self._defaults: dict[str | None, Behaviour] = {}
        self._arrived = asyncio.Condition()
        self._stopping = asyncio.Event()
        self.requests: list[RecordedRequest] = []
        # The token counts sent with every whole answer, in order: what a usage ledger
        # should add up to.
        self.usage_reported: list[ReportedUsage] = []
        # (model, time.monotonic()) of each answer whose client hung up before it ended.
        self.disconnects: list[tuple[str, float]] = []

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeLLM already started")
        # Fresh primitives per run: a restarted fake may live in another event loop.
        self._arrived = asyncio.Condition()
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        # Hung handlers wake on _stopping, so the shutdown timeout is only a safety net.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        log.debug("fake LLM listening on %s", self.base_url)

    async def stop(self) -> None:
        """Stop serving; in-flight :class:`Hang` requests are released first, so this is quick."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await runner.cleanup()

    async def __aenter__(self) -> FakeLLM:
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
        if self._runner is None or self._bound_port is None:
            raise RuntimeError("FakeLLM is not running; call start() or use 'async with'")
        return f"http://{self._host}:{self._bound_port}"

    @property
    def openai_base(self) -> str:
        """``api_base`` for the openai protocol (the client appends /chat/completions)."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base(self) -> str:
        """``api_base`` for the anthropic protocol (the client appends /v1/messages)."""
        return self.base_url

    # -- scripting --------------------------------------------------------------------------

    def script(self, model: str | None, *behaviours: Behaviour) -> None:
        """Queue behaviours for ``model`` (None: any model), consumed one per request."""
        self._queues.setdefault(model, deque()).extend(behaviours)

    def set_default(self, model: str | None, behaviour: Behaviour) -> None:
        """What answers ``model`` (None: any model) once its queues are empty."""
        self._defaults[model] = behaviour

    def reset(self) -> None:
        """Forget queues, defaults and the request log."""
        self._queues.clear()
        self._defaults.clear()
        self.requests.clear()
        self.usage_reported.clear()

    def requests_for(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.model == model]

    async def wait_for_requests(
        self,
        count: int,
        *,
        model: str | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - a bounded wait is the point of this helper
    ) -> list[RecordedRequest]:
        """Wait until ``count`` requests (for ``model``, if given) arrived; return all so far.

        Woken by each arrival rather than polling. On timeout, TimeoutError lists what was seen.
        """

        def matching() -> list[RecordedRequest]:
            return [r for r in self.requests if model is None or r.model == model]

        async with self._arrived:
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait_for(lambda: len(matching()) >= count)
            except TimeoutError:
                seen = [f"{r.api} {r.model!r} {r.path}" for r in self.requests]
                raise TimeoutError(
                    f"expected {count} request(s) for model {model!r} within {timeout}s, "
                    f"saw {len(matching())} matching; all requests: {seen}"
                ) from None
        return matching()

    async def wait_for_disconnect(
        self,
        count: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - a bounded wait is the point of this helper
    ) -> list[tuple[str, float]]:
        """Wait until ``count`` clients closed their connection mid-answer."""
        async with self._arrived:
            async with asyncio.timeout(timeout):
                await self._arrived.wait_for(lambda: len(self.disconnects) >= count)
        return list(self.disconnects)

    def _next_behaviour(self, model: str) -> Behaviour:
        for key in (model, None):
            queue = self._queues.get(key)
            if queue:
                return queue.popleft()
        return self._defaults.get(model, self._defaults.get(None, Echo()))

    # -- serving ----------------------------------------------------------------------------

    async def _transcription(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's speech-to-text shape: multipart ``file`` + ``model`` → ``{"text"}``."""
        form: dict[str, Any] = {}
        audio = b""
        name = content_type = ""
        try:
            async for part in await request.multipart():
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "file":
                    audio = bytes(await part.read())
                    name, content_type = part.filename or "", part.headers.get("Content-Type", "")
                elif part.name:
                    form[part.name] = await part.text()
        except (ValueError, AssertionError, KeyError):
            return llm_openai_shape.error(400, "expected a multipart/form-data body")
        recorded = RecordedRequest(
            api="openai",
            path=request.path,
            model=str(form.get("model", "")),
            body=form,
            headers={k.lower(): v for k, v in request.headers.items()},
            at=time.monotonic(),
            system="",
            last_user_text="",
            stream=False,
            audio=audio,
            audio_name=name,
            audio_type=content_type,
        )
        async with self._arrived:
            self.requests.append(recorded)
            self._arrived.notify_all()
        if not audio or not recorded.model:
            return llm_openai_shape.error(400, "file and model are required")
        behaviour = self._next_behaviour(recorded.model)
        for _ in range(10):
            if callable(behaviour) and not isinstance(behaviour, type):
                behaviour = behaviour(recorded)
        if isinstance(behaviour, Slow):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(behaviour.seconds):
                    await self._stopping.wait()
            behaviour = behaviour.then
        if isinstance(behaviour, Fault):
            message = behaviour.message or _phrase(behaviour.status)
            headers = _retry_headers(behaviour.retry_after)
            return llm_openai_shape.error(
                behaviour.status, message, behaviour.error_type, behaviour.code, headers
            )
        if isinstance(behaviour, Reply):
            return web.json_response({"text": behaviour.text})
        return web.json_response({"text": f"[transcribed by {recorded.model}] {len(audio)} bytes"})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/audio/transcriptions"):
            return await self._transcription(request)
        route = _route(request.path)
        if route is None:
            return llm_openai_shape.error(404, f"the fake LLM has no endpoint {request.path}")
        api, shape = route
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return shape.error(400, "request body is not a JSON object")

        model = body.get("model")
        recorded = RecordedRequest(
            api=api,
            path=request.path,
            model=model if isinstance(model, str) else "",
            body=body,
            headers={name.lower(): value for name, value in request.headers.items()},
            at=time.monotonic(),
            system=shape.system_text(body),
            last_user_text=shape.last_user_text(body),
            stream=body.get("stream") is True,
            tool_result=shape.tool_result(body),
            images=_images(body),
        )
        async with self._arrived:
            self.requests.append(recorded)
            self._arrived.notify_all()
        log.debug("fake LLM %s request: path=%s model=%s", api, recorded.path, recorded.model)

        rejection = shape.check(body, recorded.headers)
        if rejection is not None:  # checked before scripting so a bad request consumes nothing
            return rejection
        try:
            behaviour = self._resolve(self._next_behaviour(recorded.model), recorded)
        except Exception as exc:  # a broken test callable: say so in the API's own shape
            log.exception("fake LLM behaviour callable failed")
            return shape.error(500, f"fake LLM behaviour raised {exc!r}")
        try:
            return await self._answer(request, shape, recorded, behaviour)
        except (ConnectionResetError, asyncio.CancelledError):
            # The client closed the connection mid-answer (a /stop, a timeout, a crash).
            async with self._arrived:
                self.disconnects.append((recorded.model, time.monotonic()))
                self._arrived.notify_all()
            raise

    @staticmethod
    def _resolve(behaviour: Behaviour, recorded: RecordedRequest) -> _Concrete:
        for _ in range(10):
            if isinstance(behaviour, Echo):
                return Reply(echo_text(recorded))
            if isinstance(behaviour, Slow):
                return behaviour
            if isinstance(behaviour, GarbageUsage) and not behaviour.text:
                return GarbageUsage(behaviour.value, echo_text(recorded))
            if isinstance(
                behaviour,
                Reply
                | ToolCall
                | Fault
                | Hang
                | Malformed
                | EmptyChoices
                | GarbageUsage
                | Truncated
                | Unterminated
                | Streamed,
            ):
                return behaviour
            behaviour = behaviour(recorded)
        raise RuntimeError("behaviour callables returned callables 10 levels deep")

    async def _answer(
        self,
        request: web.Request,
        shape: _WireFormat,
        recorded: RecordedRequest,
        behaviour: _Concrete,
    ) -> web.StreamResponse:
        body, model = recorded.body, recorded.model
        prompt_tokens = shape.content_chars(body) // 4 + 1
        if isinstance(behaviour, Fault):
            message = behaviour.message or _phrase(behaviour.status)
            if behaviour.quote_credentials:
                message = f"{message} {_quoted_credentials(recorded.headers)}"
            headers = _retry_headers(behaviour.retry_after)
            return shape.error(
                behaviour.status, message, behaviour.error_type, behaviour.code, headers
            )
        if isinstance(behaviour, Malformed):
            return web.Response(
                status=behaviour.status,
                body=behaviour.body.encode(),
                headers={"Content-Type": behaviour.content_type},
            )
        if isinstance(behaviour, Slow):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(behaviour.seconds):
                    await self._stopping.wait()
            then = self._resolve(behaviour.then, recorded)
            return await self._answer(request, shape, recorded, then)
        if isinstance(behaviour, Hang):
            try:
                async with asyncio.timeout(behaviour.seconds):
                    await self._stopping.wait()
            except TimeoutError:
                pass
            return shape.error(504, f"the fake LLM hung for up to {behaviour.seconds}s")
        if isinstance(behaviour, EmptyChoices):
            return await shape.respond_empty(
                request, body, model=model, prompt_tokens=prompt_tokens
            )
        return await self._respond(request, shape, recorded, behaviour, prompt_tokens)

    async def _respond(
        self,
        request: web.Request,
        shape: _WireFormat,
        recorded: RecordedRequest,
        behaviour: _Answer,
        prompt_tokens: int,
    ) -> web.StreamResponse:
        body, model = recorded.body, recorded.model
        tool_name = tool_id = None
        arguments = ""
        if isinstance(behaviour, ToolCall):
            tool_name, tool_id = behaviour.name, behaviour.call_id
            raw = behaviour.arguments
            arguments = raw if isinstance(raw, str) else json.dumps(raw)
        pace_s, cut_after = 0.0, None
        if isinstance(behaviour, Streamed):
            pieces = max(1, len(re.findall(r"\S+\s*|\s+", behaviour.text)))
            pace_s, cut_after = behaviour.seconds / pieces, behaviour.fail_after
            if not recorded.stream:
                await asyncio.sleep(behaviour.seconds)
        completion_tokens = (len(behaviour.text) + len(arguments)) // 4 + 1
        cut = isinstance(behaviour, Streamed) and behaviour.fail_after is not None
        if not isinstance(behaviour, GarbageUsage | Unterminated) and not cut:
            self.usage_reported.append(ReportedUsage(model, prompt_tokens, completion_tokens))
        stop_reason = None
        if isinstance(behaviour, Truncated):
            stop_reason = "length" if shape is _OPENAI else "max_tokens"
        return await shape.respond(
            request,
            body,
            model=model,
            text=behaviour.text,
            tool_name=tool_name,
            tool_id=tool_id,
            tool_arguments=arguments,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            stop_reason=stop_reason,
            raw_usage=behaviour.value if isinstance(behaviour, GarbageUsage) else None,
            terminate=not isinstance(behaviour, Unterminated),
            pace_s=pace_s,
            cut_after=cut_after,
        )
