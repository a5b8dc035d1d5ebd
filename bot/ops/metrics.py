"""A tiny Prometheus registry (text format 0.0.4) and the bridge's own metrics.

prometheus_client is not a runtime dependency: the bridge needs a dozen series on one
loopback endpoint, which is a page of formatting. Metrics are mutated only from the
event loop thread, so there are no locks.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import bot.errors as err

log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
Sample = tuple[str, Mapping[str, str], float]
C = TypeVar("C")
M = TypeVar("M", bound="Metric[Any]")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class Metric(Generic[C]):
    """One family; its children are keyed by label values and rendered in first-seen order."""

    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        bad = [n for n in labelnames if not _LABEL.match(n) or n.startswith("__") or n == "le"]
        if not _NAME.match(name) or bad:
            raise ValueError(f"invalid metric name {name!r} or label names {bad}")
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        if not self.labelnames:  # an unlabelled series exists (as 0) from the start
            self.labels()

    def _new_child(self) -> C:
        raise NotImplementedError

    def labels(self, **values: object) -> C:
        """The child for exactly these label values, created on first use."""
        if set(values) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(values)}")
        key = tuple(str(values[label]) for label in self.labelnames)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def children(self) -> Iterator[tuple[dict[str, str], C]]:
        for key, child in list(self._children.items()):
            yield dict(zip(self.labelnames, key, strict=True)), child

    def samples(self) -> Iterable[Sample]:
        raise NotImplementedError


class CounterChild:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, n: float = 1) -> None:
        """Counters only go up; a decrease would read as a process restart to Prometheus."""
        if n < 0:
            raise ValueError("a counter cannot decrease")
        self.value += n


class Counter(Metric[CounterChild]):
    """Named in full (``…_total``), as the Go client writes 0.0.4 counters."""

    kind = "counter"

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, n: float = 1) -> None:
        self.labels().inc(n)

    def samples(self) -> Iterable[Sample]:
        for labels, child in self.children():
            yield self.name, labels, child.value


class GaugeChild:
    def __init__(self) -> None:
        self.value = 0.0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self._function = None
        self.value = float(value)

    def inc(self, n: float = 1) -> None:
        self.value += n

    def set_function(self, function: Callable[[], float]) -> None:
        """Read at render time, so e.g. the inbox backlog is current without bookkeeping."""
        self._function = function

    def get(self) -> float:
        if self._function is None:
            return self.value
        try:
            return float(self._function())
        except Exception:  # one broken probe must not take the whole page down
            log.warning("gauge function failed", exc_info=True)
            return math.nan


class Gauge(Metric[GaugeChild]):
    kind = "gauge"

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: float) -> None:
        self.labels().set(value)

    def set_function(self, function: Callable[[], float]) -> None:
        self.labels().set_function(function)

    def samples(self) -> Iterable[Sample]:
        for labels, child in self.children():
            yield self.name, labels, child.get()


class HistogramChild:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative: one add per observe
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        for index, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.counts[index] += 1
                return


class Histogram(Metric[HistogramChild]):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = ()
    ) -> None:
        self.bounds = (*sorted({float(b) for b in buckets} - {math.inf}), math.inf)
        super().__init__(name, help, labelnames)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def observe(self, seconds: float) -> None:
        self.labels().observe(seconds)

    def samples(self) -> Iterable[Sample]:
        for labels, child in self.children():
            cumulative = 0
            for bound, count in zip(self.bounds, child.counts, strict=True):
                cumulative += count
                yield f"{self.name}_bucket", {**labels, "le": _number(bound)}, cumulative
            yield f"{self.name}_sum", labels, child.sum
            yield f"{self.name}_count", labels, cumulative


class Registry:
    """An ordered set of metric families rendered as one text exposition page."""

    def __init__(self) -> None:
        self._families: dict[str, Metric[Any]] = {}
        self._before_render: list[Callable[[], None]] = []

    def register(self, family: M) -> M:
        if family.name in self._families:
            raise ValueError(f"metric {family.name} registered twice")
        self._families[family.name] = family
        return family

    def before_render(self, hook: Callable[[], None]) -> None:
        """Runs ``hook`` before each render, to refresh values that live elsewhere."""
        self._before_render.append(hook)

    def render(self) -> str:
        """Text format 0.0.4: ``# HELP`` and ``# TYPE`` per family, then its samples."""
        for hook in self._before_render:
            try:
                hook()
            except Exception:  # stale numbers beat a failed scrape
                log.warning("metrics refresh hook failed", exc_info=True)
        lines: list[str] = []
        for family in self._families.values():
            lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for name, labels, value in family.samples():
                pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                labelled = f"{name}{{{pairs}}}" if pairs else name
                lines.append(f"{labelled} {_number(value)}")
        return "\n".join(lines) + "\n"


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


class BridgeMetrics:
    """The bridge's metrics on one Registry; the names are what dashboards query."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.messages_in = self._counter("messages_in_total", "Chat messages admitted.", "bot")
        self.messages_out = self._counter("messages_out_total", "Chat messages sent.", "bot")
        self.turn_seconds = self.registry.register(
            Histogram(f"{PREFIX}turn_seconds", "Wall time of one turn.", ["agent"], TURN_BUCKETS)
        )
        self.model_requests = self._counter(
            "model_requests_total", "Model requests by entry and outcome.", "model", "outcome"
        )
        self.fallbacks = self._counter(
            "fallbacks_total", "Moves from one model to the next.", "from_model", "to_model"
        )
        self.compactions = self._counter("compactions_total", "Compactions by outcome.", "outcome")
        self.inbox_backlog = self._gauge("inbox_backlog", "Admitted updates not yet answered.")
        self.bots_polling = self._gauge("bots_polling", "Bots whose long poll currently works.")
        self.model_cooldown_seconds = self._gauge(
            "model_cooldown_seconds", "Seconds until a model entry may be asked again.", "model"
        )
        self.up = self._gauge("up", "1 while the bridge process runs.")
        self.up.set(1)
        self.store_file_ok = self._gauge(
            "store_file_ok", "1 while the database path names the file the bridge writes."
        )

    def _counter(self, name: str, help: str, *labels: str) -> Counter:
        return self.registry.register(Counter(PREFIX + name, help, labels))

    def _gauge(self, name: str, help: str, *labels: str) -> Gauge:
        return self.registry.register(Gauge(PREFIX + name, help, labels))

    def model_request(self, model: str, error: BaseException | None = None) -> None:
        """Counts one request to ``model`` under the outcome label ``error`` maps to."""
        self.model_requests.labels(model=model, outcome=outcome_of(error)).inc()

    # The FallbackChain observer protocol (bot.providers.fallback.ChainObserver).
    def attempted(self, model_name: str, error: BaseException | None) -> None:
        self.model_request(model_name, error)

    def fell_back(self, from_model: str, to_model: str) -> None:
        self.fallbacks.labels(from_model=from_model, to_model=to_model).inc()

    def set_cooldowns(self, snapshot: Mapping[str, float]) -> None:
        """Mirrors ``CooldownBook.snapshot()``; a model seen before and now free reads 0."""
        for labels, child in self.model_cooldown_seconds.children():
            child.set(snapshot.get(labels["model"], 0.0))
        for model, seconds in snapshot.items():
            self.model_cooldown_seconds.labels(model=model).set(seconds)

    def track_cooldowns(self, snapshot: Callable[[], Mapping[str, float]]) -> None:
        """Refreshes the cooldown gauge from ``snapshot()`` (e.g. a book's) at every scrape."""
        self.registry.before_render(lambda: self.set_cooldowns(snapshot()))

    def render(self) -> str:
        return self.registry.render()
