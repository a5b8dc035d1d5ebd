"""CooldownBook: when each model_list entry may be asked again, shared by every chain.

One book per process, keyed by model_list entry name, so alice's and bob's chains and
the compaction role all see that ``gpt`` is rate limited the moment any of them learns it.
Reasons are served on ``/readyz``, so they are redacted when recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.errors import ModelNotFound, ProviderAuthError, ProviderError, RateLimited
from bot.redaction import Redactor

ESCALATION_S = (30.0, 60.0, 300.0)  # consecutive failures without a Retry-After
AUTH_COOLDOWN_S = 1800.0  # a bad key needs a person; don't hammer the provider meanwhile
NOT_FOUND_COOLDOWN_S = 600.0
MAX_RETRY_AFTER_S = 3600.0


@dataclass
class _Entry:
    until: float = 0.0
    strikes: int = 0
    reason: str = ""


class CooldownBook:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, redactor: Redactor | None = None
    ) -> None:
        self._clock = clock
        self._redactor = redactor if redactor is not None else Redactor()
        self._entries: dict[str, _Entry] = {}

    def remaining(self, model_name: str) -> float:
        """Seconds until ``model_name`` may be asked again; 0 when it is available."""
        entry = self._entries.get(model_name)
        return max(0.0, entry.until - self._clock()) if entry else 0.0

    def reason(self, model_name: str) -> str:
        entry = self._entries.get(model_name)
        return entry.reason if entry else ""

    def record_failure(self, model_name: str, error: ProviderError) -> float:
        """Put the entry on cooldown for this failure; returns the cooldown in seconds."""
        entry = self._entries.setdefault(model_name, _Entry())
        entry.strikes += 1
        if isinstance(error, RateLimited) and error.retry_after is not None:
            seconds = min(error.retry_after, MAX_RETRY_AFTER_S)
        elif isinstance(error, ProviderAuthError):
            seconds = AUTH_COOLDOWN_S
        elif isinstance(error, ModelNotFound):
            seconds = NOT_FOUND_COOLDOWN_S
        else:
            seconds = ESCALATION_S[min(entry.strikes, len(ESCALATION_S)) - 1]
        entry.until = self._clock() + seconds
        entry.reason = self._redactor.redact(f"{type(error).__name__}: {error}")
        return seconds

    def record_success(self, model_name: str) -> None:
        self._entries.pop(model_name, None)

    def snapshot(self) -> dict[str, float]:
        """Remaining cooldown per entry still cooling, for /readyz and /status."""
        return {name: left for name in self._entries if (left := self.remaining(name)) > 0}
