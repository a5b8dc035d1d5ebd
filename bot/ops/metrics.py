"""The bridge's Prometheus metrics, on a prometheus_client registry of its own.

Each BridgeMetrics owns one CollectorRegistry, never the library's global default, so two
Apps in one process (tests, benches) count apart. Metrics are mutated only from the event
loop thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

import bot.errors as err
from bot.sessions.usage import UsageRow

log = logging.getLogger(__name__)

PREFIX = "persona_bridge_"
TURN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OUTCOMES = (
    "ok", "unavailable", "rate_limited", "auth", "not_found", "invalid_response",
    "invalid_request", "context_window", "content_rejected", "cooling",
)  # fmt: skip
COMPACTION_OUTCOMES = ("ok", "failed", "empty")
# Most specific first: RateLimited is a ProviderUnavailable, ContextWindowExceeded an
# InvalidRequest, so the first isinstance match is the right label.
_OUTCOME_OF: tuple[tuple[type[BaseException], str], ...] = (
    (err.RateLimited, "rate_limited"),
    (err.ProviderUnavailable, "unavailable"),
    (err.ProviderAuthError, "auth"),
    (err.ModelNotFound, "not_found"),
    (err.InvalidResponse, "invalid_response"),
    (err.ContextWindowExceeded, "context_window"),
    (err.InvalidRequest, "invalid_request"),
    (err.ContentRejected, "content_rejected"),
)


def outcome_of(error: BaseException | None) -> str:
    """The ``outcome`` label of one model request: ``ok`` for None, else its error class.

    Anything unforeseen (a bare ProviderError, a stray timeout) counts as ``unavailable``:
    it is treated like one (failover), and the label set stays closed for dashboards.
    """
    # Imported here, not at the top: fallback.py is expected to import this module.
    from bot.providers.fallback import CoolingDown

    if error is None:
        return "ok"
    if isinstance(error, CoolingDown):
        return "cooling"
    for cls, outcome in _OUTCOME_OF:
        if isinstance(error, cls):
            return outcome
    return "unavailable"


class _WithoutCreated:
    """A view of a registry without the ``*_created`` series prometheus_client adds.

    The text format shows them as extra gauges (one per label set) that dashboards here
    never query; dropping them keeps the page to the series named in the README.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():  # fresh Metric objects on every scrape
            created = f"{family.name}_created"
            family.samples = [s for s in family.samples if s.name != created]
            yield family


class BridgeMetrics:
    """The bridge's metrics on its own registry; the names are what dashboards query."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._page = _WithoutCreated(self.registry)
        self._before_render: list[Callable[[], None]] = []
        self.messages_in = self._counter("messages_in_total", "Chat messages admitted.", "bot")
        self.messages_out = self._counter("messages_out_total", "Chat messages sent.", "bot")
        self.turn_seconds = Histogram(
            f"{PREFIX}turn_seconds",
            "Wall time of one turn.",
            ["agent"],
            buckets=TURN_BUCKETS,
            registry=self.registry,
        )
        self.model_requests = self._counter(
            "model_requests_total", "Model requests by entry and outcome.", "model", "outcome"
        )
        self.fallbacks = self._counter(
            "fallbacks_total", "Moves from one model to the next.", "from_model", "to_model"
        )
        self.compactions = self._counter("compactions_total", "Compactions by outcome.", "outcome")
        self.tokens = self._counter(
            "tokens_total",
            "Tokens of answered model calls (kind: prompt or completion; estimated ones too).",
            "agent", "model", "purpose", "kind",
        )  # fmt: skip
        self.cost_usd = self._counter(
            "cost_usd_total", "USD spent, from the model entries' prices.", "agent", "model",
            "purpose",
        )  # fmt: skip
        self.inbox_backlog = self._gauge("inbox_backlog", "Admitted updates not yet answered.")
        self.bots_polling = self._gauge("bots_polling", "Bots whose long poll currently works.")
        self.lease_takeovers = self._counter(
            "lease_takeovers_total", "Unfinished rows taken over from a process whose lease lapsed."
        )
        self.model_cooldown_seconds = self._gauge(
            "model_cooldown_seconds", "Seconds until a model entry may be asked again.", "model"
        )
        self.up = self._gauge("up", "1 while the bridge process runs.")
        self.up.set(1)
        self.store_file_ok = self._gauge(
            "store_file_ok", "1 while the database path names the file the bridge writes."
        )

    def _counter(self, name: str, help: str, *labels: str) -> Counter:
        return Counter(PREFIX + name, help, labels, registry=self.registry)

    def _gauge(self, name: str, help: str, *labels: str) -> Gauge:
        return Gauge(PREFIX + name, help, labels, registry=self.registry)

    def model_request(self, model: str, error: BaseException | None = None) -> None:
        """Counts one request to ``model`` under the outcome label ``error`` maps to."""
        self.model_requests.labels(model=model, outcome=outcome_of(error)).inc()

    # The FallbackChain observer protocol (bot.providers.fallback.ChainObserver).
    def attempted(self, model_name: str, error: BaseException | None) -> None:
        self.model_request(model_name, error)

    def fell_back(self, from_model: str, to_model: str) -> None:
        self.fallbacks.labels(from_model=from_model, to_model=to_model).inc()

    # The UsageMeter's counters (bot.usage.meter.UsageCounters).
    def used(self, agent: str, model: str, purpose: str, row: UsageRow) -> None:
        labels = {"agent": agent, "model": model, "purpose": purpose}
        self.tokens.labels(**labels, kind="prompt").inc(row.prompt_tokens)
        self.tokens.labels(**labels, kind="completion").inc(row.completion_tokens)
        if row.cost_usd is not None:
            self.cost_usd.labels(**labels).inc(row.cost_usd)

    def set_cooldowns(self, snapshot: Mapping[str, float]) -> None:
        """Mirrors ``CooldownBook.snapshot()``; a model seen before and now free reads 0."""
        gauge = self.model_cooldown_seconds
        seen = {sample.labels["model"] for family in gauge.collect() for sample in family.samples}
        for model in seen | set(snapshot):
            gauge.labels(model=model).set(snapshot.get(model, 0.0))

    def track_cooldowns(self, snapshot: Callable[[], Mapping[str, float]]) -> None:
        """Refreshes the cooldown gauge from ``snapshot()`` (e.g. a book's) at every scrape."""
        self._before_render.append(lambda: self.set_cooldowns(snapshot()))

    def render(self) -> str:
        """The page in text format 0.0.4, refreshed by the hooks first."""
        for hook in self._before_render:
            try:
                hook()
            except Exception:  # stale numbers beat a failed scrape
                log.warning("metrics refresh hook failed", exc_info=True)
        return generate_latest(self._page).decode()
