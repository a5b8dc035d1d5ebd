"""The one exception hierarchy of persona-bridge.

Foreign exceptions (httpx, telegram, sqlite, subprocess) are translated into these at
the boundary that meets them, with ``raise ... from exc`` so the cause survives::

    PersonaBridgeError
    ├── ConfigError                  configuration cannot be used (exit 78)
    ├── ProviderError                one model call failed (carries the model entry)
    │   ├── ProviderUnavailable      timeout, connection error, 408, 5xx       → failover
    │   │   └── RateLimited          429 (retry_after)                         → failover
    │   ├── ProviderAuthError        401/403: key problem, long cooldown        → failover
    │   ├── ModelNotFound            404 model not found                       → failover
    │   ├── InvalidResponse          garbage body, empty choices               → failover
    │   ├── InvalidRequest           400: our request is wrong                 → stop
    │   │   └── ContextWindowExceeded  prompt too long: compact, retry once    → stop
    │   └── ContentRejected          content policy refusal                    → stop
    ├── AllModelsFailed              every candidate of a chain failed this turn
    ├── BudgetExhausted              a budget rule has no room: no request is made
    ├── ChannelError                 talking to a chat platform failed
    │   ├── ChannelUnavailable       5xx, timeout, connection reset: worth retrying
    │   ├── ChannelAuthError         the bot token was rejected
    │   ├── ChannelRateLimited       429 with retry_after
    │   ├── ChatMoved                the group became a supergroup: send to the new id
    │   ├── MessageRejected          400/403: the platform refused this message
    │   │   └── RecipientGone        blocked by the user, kicked, chat deleted: give up
    │   └── MediaUnavailable         a file a person sent could not be fetched
    │       └── FileTooLarge         over the bot's max_file_mb (before or while downloading)
    └── StoreError                   the session store failed
        └── StoreBusy                another bridge already runs on this database
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.durations import wait_text


class PersonaBridgeError(Exception):
    """Root of every error persona-bridge raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration: where, what, and how to fix it."""

    path: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem} — {self.fix}"


class ConfigError(PersonaBridgeError):
    """The configuration cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ProviderError(PersonaBridgeError):
    """A model call failed. ``model_name`` is the model_list entry; messages hold no secrets."""

    failover = True

    def __init__(self, message: str, *, model_name: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.model_name = model_name
        self.status = status


class ProviderUnavailable(ProviderError):
    """The provider could not answer now (timeout, connection, 408, 5xx)."""


class RateLimited(ProviderUnavailable):
    """429; ``retry_after`` in seconds when the provider said so."""

    def __init__(
        self,
        message: str,
        *,
        model_name: str = "",
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, model_name=model_name, status=status)
        self.retry_after = retry_after


class ProviderAuthError(ProviderError):
    """401/403: the key is wrong or lacks access; a person must act."""


class ModelNotFound(ProviderError):
    """404: the model id does not exist at this provider."""


class InvalidResponse(ProviderError):
    """The provider answered with something we cannot use."""


class InvalidRequest(ProviderError):
    """400: the request itself is wrong, so another model would likely refuse it too."""

    failover = False


class ContextWindowExceeded(InvalidRequest):
    """The prompt is longer than the model accepts."""


class ContentRejected(ProviderError):
    """The provider refused the content on policy grounds."""

    failover = False


class AllModelsFailed(PersonaBridgeError):
    """Every candidate in a chain failed for this turn."""

    def __init__(self, reasons: list[ProviderError], retry_in: float | None = None) -> None:
        self.reasons = reasons
        self.retry_in = retry_in
        detail = "; ".join(f"{r.model_name or '?'}: {r}" for r in reasons) or "no candidates"
        super().__init__(f"all models failed ({detail})")

    def user_message(self) -> str:
        """One short sentence a chat user can act on."""
        if self.retry_in is None:
            return "All models are unavailable right now; try again shortly."
        # Same words and rounding as /status, which shows the same cooldowns.
        return f"All models are unavailable right now; try again in {wait_text(self.retry_in)}."


class BudgetExhausted(PersonaBridgeError):
    """A matching budget rule (SPEC §12) has no room for this call, so it was not made.

    ``sentence`` is what the user is told; ``retry_in`` is seconds until the period renews.
    """

    def __init__(self, sentence: str, retry_in: float) -> None:
        super().__init__(sentence)
        self.sentence = sentence
        self.retry_in = retry_in


class ChannelError(PersonaBridgeError):
    """Talking to a chat platform failed."""


class ChannelUnavailable(ChannelError):
    """The platform failed or could not be reached; the same request may work later."""


class ChannelAuthError(ChannelError):
    """The platform rejected the bot's credentials."""


class ChannelRateLimited(ChannelError):
    """The platform asked us to wait ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ChatMoved(ChannelError):
    """Telegram upgraded the group to a supergroup; ``new_chat_id`` is where it lives now."""

    def __init__(self, message: str, new_chat_id: str) -> None:
        super().__init__(message)
        self.new_chat_id = new_chat_id


class MessageRejected(ChannelError):
    """The platform refused this particular message (bad entities, too long, …)."""


class RecipientGone(MessageRejected):
    """Nobody can receive it: the bot was blocked or removed, or the chat no longer exists."""


class MediaUnavailable(ChannelError):
    """A file a person sent could not be fetched from the platform (messages hold no URL)."""


class FileTooLarge(MediaUnavailable):
    """The file is over the bot's ``max_file_mb``; the download stopped at the bound."""

    def __init__(self, message: str, limit_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes


class StoreError(PersonaBridgeError):
    """The session store failed."""


class StoreBusy(StoreError):
    """Another bridge process holds this database; two would answer everything twice."""
