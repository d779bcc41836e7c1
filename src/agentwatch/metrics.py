"""Prometheus metrics on an app-owned registry: recorded once per call where the call ends,
gauges read from the live state; correct across worker processes in multiprocess mode."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from agentwatch.routing.breaker import CircuitState

if TYPE_CHECKING:
    from agentwatch.proxy.call import Call
    from agentwatch.state import AppState
    from agentwatch.usage.recorder import UsageEvent

# prometheus_client's own switch: set before it is imported (`serve --workers N` does), every
# process writes its values to files there and a scrape adds them up.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds. Gateway overhead sits around a millisecond; upstream calls take seconds.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
PER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.0)
NANOS_PER_USD = 1e9

# A call's series key: endpoint, model, provider, status, org, tenant.
SeriesKey = tuple[str, str, str, int, str, str]


@dataclass(slots=True)
class _CallSeries:
    """The label children one kind of call touches, bound once and reused."""

    requests: Counter
    duration: Histogram
    upstream: Histogram
    overhead: Histogram
    ttft: Histogram
    per_token: Histogram
    input_tokens: Counter
    output_tokens: Counter
    cached_tokens: Counter
    reasoning_tokens: Counter
    cost: Counter


class GatewayMetrics:
    """Every `agentwatch_` metric (docs/metrics.md). `enabled=False` records nothing per call
    (the benchmark's A/B switch); the gauges and /metrics still work."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        call = ["endpoint", "model", "provider"]
        spend = ["model", "provider", "org", "tenant"]
        self.requests = Counter(
            "agentwatch_requests",
            "Proxied calls by endpoint, model alias, provider, HTTP status, org and tenant",
            [*call, "status", "org", "tenant"],
            registry=r,
        )
        self.duration = _histogram(r, "request_duration", "Whole call, as the client saw it", call)
        self.upstream = _histogram(
            r, "upstream_duration", "Time spent on upstream calls (retries included)", call
        )
        self.overhead = _histogram(
            r, "gateway_overhead", "Whole call minus upstream time, calls an upstream saw", call
        )
        self.ttft = _histogram(r, "time_to_first_token", "Streams: start to first event", call)
        self.per_token = Histogram(
            "agentwatch_time_per_output_token_seconds",
            "Streams: first event to end, per output token after the first",
            call,
            buckets=PER_TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "agentwatch_tokens",
            "Tokens by type: input, output, cached (input read from the provider's cache), "
            "reasoning (part of output)",
            [*spend, "type"],
            registry=r,
        )
        self.cost = Counter(
            "agentwatch_cost_usd", "Cost of the calls in US dollars", spend, registry=r
        )
        self.cache = Counter(
            "agentwatch_cache_requests",
            "Response cache lookups by org and result (hit, miss)",
            ["org", "result"],
            registry=r,
        )
        self.dlp_findings = Counter(
            "agentwatch_dlp_findings",
            "DLP findings by detector and action taken",
            ["detector", "action"],
            registry=r,
        )
        self.refusals = Counter(
            "agentwatch_limit_refusals",
            "Calls refused with 429 by the rate limits or budgets, by error code",
            ["code"],
            registry=r,
        )
        self.in_flight = _gauge(
            r, "upstream_in_flight", "Calls in flight per limited provider key", "livesum"
        )
        self.queued = _gauge(
            r,
            "upstream_queue_depth",
            "Calls waiting for a slot per limited provider key",
            "livesum",
        )
        self.circuit_open = Gauge(
            "agentwatch_circuit_open",
            "1 while a route's circuit is open or half-open, else 0",
            ["model", "provider", "upstream_model"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.backlog = Gauge(
            "agentwatch_usage_backlog",
            "Usage rows recorded but not yet in the database (memory and spill file)",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.spilled = Gauge(
            "agentwatch_usage_spilled",
            "Usage rows waiting in the spill file",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.budget_remaining = Gauge(
            "agentwatch_budget_remaining_usd",
            "A budget's amount minus its spend this period (negative when overshot), as of the "
            "last settled call",
            ["scope", "scope_id", "period"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self._series: dict[SeriesKey, _CallSeries] = {}
        self._dlp_children: dict[tuple[str, str], Counter] = {}
        self._refusal_children: dict[str, Counter] = {}
        self._cache_children: dict[tuple[int, bool], Counter] = {}
        self._gauge_labels: dict[MetricWrapperBase, set[tuple[str, ...]]] = {}

    def record_call(self, call: Call, event: UsageEvent | None) -> None:
        """One finished call, from its bookkeeping; `event` is its ledger row, if any."""
        if not self.enabled:
            return
        ended = time.perf_counter()
        principal = call.principal
        route = call.route
        provider = route.provider_name if route is not None else ""
        if principal is None:
            key: SeriesKey = (call.endpoint, call.model, provider, call.status, "", "")
        else:
            org, tenant = str(principal.org_id), principal.tenant_name
            key = (call.endpoint, call.model, provider, call.status, org, tenant)
        series = self._series.get(key)
        if series is None:
            series = self._bind(key)
        series.requests.inc()
        total = ended - call.started
        series.duration.observe(total)
        if call.attempts:
            series.upstream.observe(call.upstream_seconds)
            series.overhead.observe(max(total - call.upstream_seconds, 0.0))
        first = call.first_byte_at
        if call.stream and first is not None:
            series.ttft.observe(first - call.started)
        if event is not None:
            output = event.completion_tokens
            if output:
                series.output_tokens.inc(output)
                if call.stream and first is not None and output > 1:
                    series.per_token.observe((ended - first) / (output - 1))
            if event.prompt_tokens:
                series.input_tokens.inc(event.prompt_tokens)
            if event.cached_tokens:
                series.cached_tokens.inc(event.cached_tokens)
            if event.reasoning_tokens:
                series.reasoning_tokens.inc(event.reasoning_tokens)
            if event.cost_nanousd:
                series.cost.inc(event.cost_nanousd / NANOS_PER_USD)
        if call.dlp is not None:
            for finding in call.dlp.events:
                self._dlp(finding.detector, finding.action).inc()
        if call.status == 429:
            self._refusal(call.error_type or "").inc()

    def budget_spent(self, scope: str, entity: int, period: str, remaining_usd: float) -> None:
        """The budget alerts call this with each budget's spend after a settled call."""
        if self.enabled:
            self.budget_remaining.labels(scope, str(entity), period).set(remaining_usd)

    def cache_event(self, org: int, hit: bool) -> None:
        """The response cache calls this on every lookup."""
        if not self.enabled:
            return
        child = self._cache_children.get((org, hit))
        if child is None:
            child = self.cache.labels(str(org), "hit" if hit else "miss")
            self._cache_children[(org, hit)] = child
        child.inc()

    def refresh(self, state: AppState | None) -> None:
        """Copy what the state holds right now (slots, queues, circuits, backlog) to gauges."""
        if state is None:
            return
        in_flight: dict[tuple[str, ...], float] = {}
        queued: dict[tuple[str, ...], float] = {}
        for (_org, provider, key), limit in state.router.limits.items():
            in_flight[(provider, str(key))] = limit.in_flight
            queued[(provider, str(key))] = limit.waiting
        circuits: dict[tuple[str, ...], float] = {}
        for (_org, alias, provider, model), breaker in state.router.breakers.items():
            tripped = breaker.state is not CircuitState.CLOSED
            circuits[(alias, provider, model)] = 1.0 if tripped else 0.0
        self._set_all(self.in_flight, in_flight)
        self._set_all(self.queued, queued)
        self._set_all(self.circuit_open, circuits)
        self.backlog.set(state.recorder.backlog)
        self.spilled.set(state.recorder.spilled)

    def exposition(self, state: AppState | None) -> bytes:
        """The text a scrape gets: this process's registry, or every worker's files."""
        self.refresh(state)
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def _bind(self, key: SeriesKey) -> _CallSeries:
        endpoint, model, provider, status, org, tenant = key
        call = (endpoint, model, provider)
        spend = (model, provider, org, tenant)
        series = _CallSeries(
            requests=self.requests.labels(*call, str(status), org, tenant),
            duration=self.duration.labels(*call),
            upstream=self.upstream.labels(*call),
            overhead=self.overhead.labels(*call),
            ttft=self.ttft.labels(*call),
            per_token=self.per_token.labels(*call),
            input_tokens=self.tokens.labels(*spend, "input"),
            output_tokens=self.tokens.labels(*spend, "output"),
            cached_tokens=self.tokens.labels(*spend, "cached"),
            reasoning_tokens=self.tokens.labels(*spend, "reasoning"),
            cost=self.cost.labels(*spend),
        )
        self._series[key] = series
        return series

    def _dlp(self, detector: str, action: str) -> Counter:
        child = self._dlp_children.get((detector, action))
        if child is None:
            child = self.dlp_findings.labels(detector, action)
            self._dlp_children[(detector, action)] = child
        return child

    def _refusal(self, code: str) -> Counter:
        child = self._refusal_children.get(code)
        if child is None:
            child = self.refusals.labels(code)
            self._refusal_children[code] = child
        return child

    def _set_all(self, gauge: Gauge, values: dict[tuple[str, ...], float]) -> None:
        """Set every labelled value; series that went away read 0 rather than their last value
        (a removed child would linger in the multiprocess files anyway)."""
        seen = self._gauge_labels.setdefault(gauge, set())
        for labels in seen - values.keys():
            gauge.labels(*labels).set(0.0)
        for labels, value in values.items():
            gauge.labels(*labels).set(value)
        seen |= values.keys()


def _histogram(registry: CollectorRegistry, name: str, doc: str, labels: list[str]) -> Histogram:
    return Histogram(
        f"agentwatch_{name}_seconds", doc, labels, buckets=LATENCY_BUCKETS, registry=registry
    )


def _gauge(registry: CollectorRegistry, name: str, doc: str, mode: str) -> Gauge:
    return Gauge(
        f"agentwatch_{name}",
        doc,
        ["provider", "key"],
        multiprocess_mode=mode,  # type: ignore[arg-type]
        registry=registry,
    )
