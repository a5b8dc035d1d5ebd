"""Translate httpx failures and HTTP error answers into ``bot.errors`` — the one place.

Status classes follow SPEC §6: which failures move to the next model and which stop.
Provider error bodies are summarised, never echoed whole (they can quote our request), and
redacted before anything else sees them: some servers quote the key they were sent.
"""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime
from time import time

import httpx

from bot.errors import (
    ContentRejected,
    ContextWindowExceeded,
    InvalidRequest,
    InvalidResponse,
    ModelNotFound,
    ProviderAuthError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from bot.redaction import Redactor

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "prompt is too long",
    "too many tokens",
)
_POLICY_MARKERS = ("content_policy", "content policy", "safety system", "content_filter")
_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
MAX_DETAIL_CHARS = 300


def from_transport_error(exc: httpx.HTTPError, model_name: str) -> ProviderError:
    """A request that got no HTTP answer: timeouts and connection failures."""
    if isinstance(exc, httpx.TimeoutException):
        return ProviderUnavailable(f"timed out ({type(exc).__name__})", model_name=model_name)
    return ProviderUnavailable(f"connection failed ({type(exc).__name__})", model_name=model_name)


def from_response(response: httpx.Response, model_name: str) -> ProviderError:
    """An HTTP error answer, classified by status and (for 400/404) by its message."""
    status = response.status_code
    detail = _error_message(response, Redactor(_sent_credentials(response)))
    text = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    lowered = detail.lower()
    if status == 429:
        return RateLimited(text, model_name=model_name, retry_after=retry_after(response))
    if status in (401, 403):
        return ProviderAuthError(text, model_name=model_name, status=status)
    if status == 404:
        return ModelNotFound(text, model_name=model_name, status=status)
    if status == 413:  # the request body is too big for the server: same remedy
        return ContextWindowExceeded(text, model_name=model_name, status=status)
    if status == 408 or status >= 500:
        return ProviderUnavailable(text, model_name=model_name, status=status)
    if any(marker in lowered for marker in _CONTEXT_MARKERS):
        return ContextWindowExceeded(text, model_name=model_name, status=status)
    if any(marker in lowered for marker in _POLICY_MARKERS):
        return ContentRejected(text, model_name=model_name, status=status)
    if 400 <= status < 500:
        return InvalidRequest(text, model_name=model_name, status=status)
    return InvalidResponse(f"unexpected HTTP {status}", model_name=model_name, status=status)


def stream_error(response: httpx.Response, text: str, model_name: str) -> ProviderError:
    """An error event inside a 200 stream (Anthropic's ``overloaded_error`` …): redacted
    like an error body, and worth trying another model."""
    detail = Redactor(_sent_credentials(response)).redact(text)[:MAX_DETAIL_CHARS]
    return ProviderUnavailable(f"stream failed: {detail}", model_name=model_name)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), if any."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


def parse_json(response: httpx.Response, model_name: str) -> dict[str, object]:
    """The body as a JSON object, or ``InvalidResponse`` saying why not."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # nesting too deep
        raise InvalidResponse("answer is not JSON", model_name=model_name) from None
    if not isinstance(data, dict):
        raise InvalidResponse("answer is not a JSON object", model_name=model_name)
    return data


def _error_message(response: httpx.Response, redactor: Redactor) -> str:
    """The body's error text, redacted *before* it is cut: a cut key would escape masking."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        text = ": ".join(str(error.get(k)) for k in ("type", "code", "message") if error.get(k))
    elif isinstance(error, str):
        text = error
    else:
        return ""
    return redactor.redact(text)[:MAX_DETAIL_CHARS]


def _sent_credentials(response: httpx.Response) -> list[str]:
    """The credentials the request carried: what a server could quote back at us."""
    try:
        request = response.request
    except RuntimeError:  # a Response built by hand has no request
        return []
    found = []
    for name in _CREDENTIAL_HEADERS:
        value = request.headers.get(name)
        if value:
            found += [value, value.split(" ", 1)[-1]]  # "Bearer KEY" and KEY alone
    found += request.url.params.get_list("key")  # Google-style ?key=
    return found
