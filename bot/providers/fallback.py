"""FallbackChain: try a chain's candidates in order, for the current turn only (SPEC §6).

- A failover-class error (``ProviderError.failover``) puts the entry on cooldown in the
  shared ``CooldownBook`` and moves on; any other error ends the turn at once.
- Every entry of the chain is tried at most once per turn, however long the chain: attempts
  are bounded by the chain's length (duplicates count once), never cut short silently.
- A candidate still cooling is skipped without a request; when every candidate is cooling,
  the one that comes back soonest is tried once.
- A provider that fails with anything but a ``ProviderError`` has a bug; the failure is
  logged with its traceback and treated as ``InvalidResponse``, so the turn fails over
  instead of crashing (and re-crashing on every replay of the update).
- Every request passes the ``UsageMeter`` (when one is set): budgets before, a usage row
  after. This is the one place model calls are metered.
- Once streamed text reached the user, no other model is tried: the reply would be stitched
  from two models. The turn ends the shown text with a short note instead (bot.streaming).
  Tool-call deltas alone do not count: they show only as a progress line.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

from bot.config.schema import ChainSpec
from bot.errors import (
    AllModelsFailed,
    InvalidResponse,
    PersonaBridgeError,
    ProviderAuthError,
    ProviderError,
)
from bot.providers.base import Provider
from bot.providers.cooldown import CooldownBook
from bot.providers.dispatcher import ProviderDispatcher
from bot.types import AudioClip, ChatRequest, ChatResponse, TextDelta, ToolCallDelta
from bot.usage.meter import UsageMeter

log = logging.getLogger(__name__)
T = TypeVar("T")
# Fits a request to one candidate (by model_list name) just before it is sent.
RequestAdapter = Callable[[str, ChatRequest], Awaitable[ChatRequest]]


class CoolingDown(ProviderError):
    """A candidate skipped without a request because its entry is cooling down."""


class ChainObserver(Protocol):
    """Told about every candidate tried or skipped: the metrics hook."""

    def attempted(self, model_name: str, error: ProviderError | None) -> None: ...

    def fell_back(self, from_model: str, to_model: str) -> None: ...


class FallbackChain:
    """Resolves every chain (agents', sub-agents' and roles') through the one dispatcher."""

    def __init__(
        self,
        dispatcher: ProviderDispatcher,
        cooldowns: CooldownBook | None = None,
        *,
        max_attempts: int | None = None,
        observer: ChainObserver | None = None,
        meter: UsageMeter | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self._meter = meter
        self.cooldowns = cooldowns or CooldownBook()
        self._max_attempts = max_attempts  # None: the whole chain
        self._observer = observer

    async def chat(
        self, chain: ChainSpec, request: ChatRequest, adapt: RequestAdapter | None = None
    ) -> ChatResponse:
        """The first candidate's answer. ``adapt`` fits the request to each candidate before
        it is sent (bot.media.vision: image parts only for models with vision)."""
        streamed = False
        sink = request.stream_to
        if sink is not None:

            async def forward(event: TextDelta | ToolCallDelta) -> None:
                nonlocal streamed
                if isinstance(event, TextDelta) and event.text:
                    streamed = True  # from here on the answer is this model's
                await sink(event)

            request = dataclasses.replace(request, stream_to=forward)

        async def attempt(name: str, provider: Provider) -> ChatResponse:
            fitted = request if adapt is None else await adapt(name, request)
            # Budgets are checked before every request (BudgetExhausted: none is made).
            sent = fitted if self._meter is None else await self._meter.admit(name, fitted)
            response = await provider.chat(sent)
            if self._meter is not None:
                await self._meter.record(name, sent, response)
            return response

        return await self._first_success(chain, attempt, lambda: streamed)

    async def transcribe(self, chain: ChainSpec, audio: AudioClip) -> str:
        """Speech to text on the first candidate that answers (``roles.transcription``)."""

        async def attempt(name: str, provider: Provider) -> str:
            asked = ChatRequest(system="", messages=())
            if self._meter is not None:
                await self._meter.admit(name, asked)
            text = await provider.transcribe(audio)
            if self._meter is not None:
                # Speech APIs report no tokens: the row is estimated from the transcript.
                heard = ChatResponse(text=text, model_name=name)
                await self._meter.record(name, asked, heard)
            return text

        return await self._first_success(chain, attempt, lambda: False)

    async def _first_success(
        self,
        chain: ChainSpec,
        attempt: Callable[[str, Provider], Awaitable[T]],
        reached_user: Callable[[], bool],
    ) -> T:
        reasons: list[ProviderError] = []
        attempts = 0
        previous: str | None = None
        for name in self._order(chain, reasons):
            if attempts == self._max_attempts:
                break
            attempts += 1
            if previous is not None and self._observer is not None:
                self._observer.fell_back(previous, name)
            previous = name
            provider = await self.dispatcher.get(name)
            try:
                result = await _guarded(attempt(name, provider), name)
            except ProviderError as exc:
                exc.model_name = exc.model_name or name
                if self._observer is not None:
                    self._observer.attempted(name, exc)
                if not exc.failover:
                    raise
                self._note_failure(name, exc)
                reasons.append(exc)
                if reached_user():
                    log.error("model %s failed after text reached the user; not retrying", name)
                    break
                continue
            if self._observer is not None:
                self._observer.attempted(name, None)
            self.cooldowns.record_success(name)
            return result
        raise AllModelsFailed(reasons, retry_in=self._soonest(chain))

    def _order(self, chain: ChainSpec, reasons: list[ProviderError]) -> list[str]:
        """Candidates to ask, in chain order; cooling ones are skipped (and noted)."""
        names = list(dict.fromkeys(chain.names))  # an entry listed twice is tried once
        ready = [name for name in names if self.cooldowns.remaining(name) == 0]
        for name in names:
            if name not in ready:
                left = self.cooldowns.remaining(name)
                skipped = CoolingDown(
                    f"cooling down for {left:.0f}s after {self.cooldowns.reason(name)}",
                    model_name=name,
                )
                reasons.append(skipped)
                if self._observer is not None:
                    self._observer.attempted(name, skipped)
        if ready:
            return ready
        soonest = min(chain.names, key=self.cooldowns.remaining)
        log.warning("every model of the chain is cooling down; trying %s once", soonest)
        return [soonest]

    def _note_failure(self, name: str, error: ProviderError) -> None:
        seconds = self.cooldowns.record_failure(name, error)
        if isinstance(error, ProviderAuthError):
            log.error(
                "model %s: the API key was refused (%s); fix the key — cooling down %.0fs",
                name,
                error,
                seconds,
            )
        else:
            log.warning("model %s failed (%s); cooling down %.0fs", name, error, seconds)

    def _soonest(self, chain: ChainSpec) -> float | None:
        waits = [self.cooldowns.remaining(name) for name in chain.names]
        return min(waits) if waits else None


async def _guarded(call: Awaitable[T], name: str) -> T:
    """A provider call, with a provider bug translated into a failover-class error."""
    try:
        return await call
    except PersonaBridgeError:  # ProviderError, or a channel error from a stream sink
        raise
    except Exception as exc:
        log.exception("model %s: the provider failed unexpectedly", name)
        raise InvalidResponse(
            f"provider failed unexpectedly ({type(exc).__name__})", model_name=name
        ) from exc


class RoleChains:
    """Named model roles (``compaction``, ``fast`` …) resolved through the same chain logic.

    A role never falls back to an agent's model unless the config names that model.
    """

    def __init__(self, roles: Mapping[str, ChainSpec], chain: FallbackChain) -> None:
        self._roles = dict(roles)
        self._chain = chain

    def spec(self, role: str) -> ChainSpec:
        return self._roles[role]

    def has(self, role: str) -> bool:
        return role in self._roles

    async def chat(self, role: str, request: ChatRequest) -> ChatResponse:
        return await self._chain.chat(self._roles[role], request)

    async def transcribe(self, role: str, audio: AudioClip) -> str:
        return await self._chain.transcribe(self._roles[role], audio)
