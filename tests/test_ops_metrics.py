"""The Prometheus text page, read back with prometheus_client's own parser."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

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
from bot.ops.metrics import OUTCOMES, BridgeMetrics, outcome_of
from bot.providers.fallback import CoolingDown
from bot.sessions.usage import UsageRow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(page: str) -> tuple[dict[str, str], Samples]:
    """Family name → type, and (sample name, labels) → value."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(page):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_bridge_metrics_names_types_and_moving_counters() -> None:
    metrics = BridgeMetrics()
    metrics.messages_in.labels(bot="telegram-alice").inc()
    metrics.messages_in.labels(bot="telegram-alice").inc(2)
    metrics.messages_out.labels(bot="telegram-bob").inc()
    metrics.model_request("gpt")
    metrics.model_request("gpt", RateLimited("429", model_name="gpt"))
    metrics.fallbacks.labels(from_model="gpt", to_model="local").inc()
    metrics.compactions.labels(outcome="ok").inc()
    metrics.inbox_backlog.set(7)
    metrics.bots_polling.set(2)
    metrics.set_cooldowns({"gpt": 12.5})
    row = UsageRow(0.0, "alice", "1", "c", "1", "gpt", "tool", 100, 20, 0.003)
    metrics.used("alice", "gpt", "tool", row)
    metrics.used("alice", "gpt", "tool", row)

    types, samples = parse(metrics.render())

    assert types == {
        "persona_bridge_messages_in": "counter",
        "persona_bridge_messages_out": "counter",
        "persona_bridge_turn_seconds": "histogram",
        "persona_bridge_model_requests": "counter",
        "persona_bridge_fallbacks": "counter",
        "persona_bridge_compactions": "counter",
        "persona_bridge_inbox_backlog": "gauge",
        "persona_bridge_bots_polling": "gauge",
        "persona_bridge_model_cooldown_seconds": "gauge",
        "persona_bridge_up": "gauge",
        "persona_bridge_store_file_ok": "gauge",
        "persona_bridge_tokens": "counter",
        "persona_bridge_cost_usd": "counter",
        "persona_bridge_lease_takeovers": "counter",
    }
    labels = {"agent": "alice", "model": "gpt", "purpose": "tool"}
    assert samples[key("persona_bridge_tokens_total", **labels, kind="prompt")] == 200
    assert samples[key("persona_bridge_tokens_total", **labels, kind="completion")] == 40
    assert samples[key("persona_bridge_cost_usd_total", **labels)] == pytest.approx(0.006)
    assert samples[key("persona_bridge_messages_in_total", bot="telegram-alice")] == 3
    assert samples[key("persona_bridge_messages_out_total", bot="telegram-bob")] == 1
    ok = key("persona_bridge_model_requests_total", model="gpt", outcome="ok")
    limited = key("persona_bridge_model_requests_total", model="gpt", outcome="rate_limited")
    assert (samples[ok], samples[limited]) == (1, 1)
    assert samples[key("persona_bridge_fallbacks_total", from_model="gpt", to_model="local")] == 1
    assert samples[key("persona_bridge_compactions_total", outcome="ok")] == 1
    assert samples[key("persona_bridge_inbox_backlog")] == 7
    assert samples[key("persona_bridge_bots_polling")] == 2
    assert samples[key("persona_bridge_model_cooldown_seconds", model="gpt")] == 12.5
    assert samples[key("persona_bridge_up")] == 1
    assert not [name for name, _ in samples if name.endswith("_created")]  # no extra series


def test_each_bridge_metrics_counts_on_its_own_registry() -> None:
    """Two Apps in one process (tests, benches) must not share counters."""
    first, second = BridgeMetrics(), BridgeMetrics()
    first.messages_in.labels(bot="telegram-alice").inc()
    _, samples = parse(second.render())
    assert key("persona_bridge_messages_in_total", bot="telegram-alice") not in samples
    assert first.registry is not second.registry


def test_cooldown_gauge_follows_the_book_at_each_scrape() -> None:
    metrics = BridgeMetrics()
    book = {"gpt": 30.0, "sonnet": 5.0}
    metrics.track_cooldowns(lambda: book)
    _, first = parse(metrics.render())
    book = {"sonnet": 4.0}
    _, second = parse(metrics.render())

    gauge = "persona_bridge_model_cooldown_seconds"
    assert first[key(gauge, model="gpt")] == 30.0
    assert second[key(gauge, model="gpt")] == 0.0  # recovered: reads 0, does not vanish
    assert second[key(gauge, model="sonnet")] == 4.0


def test_histogram_buckets_are_cumulative_and_inf_equals_count() -> None:
    metrics = BridgeMetrics()
    turns = metrics.turn_seconds.labels(agent="alice")
    for seconds in (0.05, 0.3, 0.3, 4.0, 200.0):
        turns.observe(seconds)

    _, samples = parse(metrics.render())
    buckets = {
        float(dict(labels)["le"]): value
        for (name, labels), value in samples.items()
        if name == "persona_bridge_turn_seconds_bucket" and ("agent", "alice") in labels
    }
    assert sorted(buckets) == [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, math.inf]
    assert buckets[0.1] == 1
    assert buckets[0.25] == 1
    assert buckets[0.5] == 3
    assert buckets[5] == 4
    assert buckets[120] == 4
    values = [buckets[bound] for bound in sorted(buckets)]
    assert values == sorted(values)
    count = samples[key("persona_bridge_turn_seconds_count", agent="alice")]
    assert buckets[math.inf] == count == 5
    assert samples[key("persona_bridge_turn_seconds_sum", agent="alice")] == pytest.approx(204.65)


def test_label_values_escape_and_round_trip() -> None:
    metrics = BridgeMetrics()
    nasty = 'back\\slash "quoted"\nnew line'
    metrics.messages_in.labels(bot=nasty).inc(4)

    page = metrics.render()
    assert '{bot="back\\\\slash \\"quoted\\"\\nnew line"}' in page
    _, samples = parse(page)
    assert samples[key("persona_bridge_messages_in_total", bot=nasty)] == 4


def test_a_failing_refresh_hook_keeps_the_page() -> None:
    metrics = BridgeMetrics()

    def broken() -> dict[str, float]:
        raise RuntimeError("book is gone")

    metrics.track_cooldowns(broken)
    _, samples = parse(metrics.render())
    assert samples[key("persona_bridge_up")] == 1


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (ProviderUnavailable("timeout"), "unavailable"),
        (RateLimited("429", retry_after=3), "rate_limited"),
        (ProviderAuthError("401"), "auth"),
        (ModelNotFound("404"), "not_found"),
        (InvalidResponse("garbage"), "invalid_response"),
        (InvalidRequest("400"), "invalid_request"),
        (ContextWindowExceeded("too long"), "context_window"),
        (ContentRejected("policy"), "content_rejected"),
        (CoolingDown("cooling", model_name="gpt"), "cooling"),
        (ProviderError("unclassified"), "unavailable"),
        (TimeoutError(), "unavailable"),
    ],
)
def test_outcome_of_maps_each_error_class(error: BaseException | None, outcome: str) -> None:
    assert outcome_of(error) == outcome
    assert outcome in OUTCOMES
