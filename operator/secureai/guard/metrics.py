"""Prometheus metrics of the guard, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

REJECT_REASONS = ("body_too_large", "rate_limited", "overloaded", "denied_pattern", "bad_request")
UPSTREAM_ERRORS = ("connect", "timeout", "protocol", "redaction")

CONTENT_TYPE = CONTENT_TYPE_LATEST


class GuardMetrics:
    def __init__(self, redact_types: tuple[str, ...] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "secureai_guard_requests", "Requests answered, by HTTP status", ["status"], registry=r
        )
        self.latency = Histogram(
            "secureai_guard_request_duration_seconds",
            "Time from request received to response completed",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.redactions = Counter(
            "secureai_guard_redactions",
            "Values redacted from responses, by type",
            ["type"],
            registry=r,
        )
        self.rejections = Counter(
            "secureai_guard_rejections",
            "Requests refused by the guard, by reason",
            ["reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "secureai_guard_upstream_errors",
            "Failures talking to the model server, by kind",
            ["kind"],
            registry=r,
        )
        self.in_flight = Gauge(
            "secureai_guard_in_flight_requests", "Requests being served", registry=r
        )
        self.tls_reloads = Counter(
            "secureai_guard_tls_reloads",
            "Certificate reload attempts, by result",
            ["result"],
            registry=r,
        )
        self.cert_not_after = Gauge(
            "secureai_guard_tls_cert_not_after_seconds",
            "Expiry (unix time) of the serving certificate",
            registry=r,
        )
        for t in redact_types:
            self.redactions.labels(type=t)
        for reason in REJECT_REASONS:
            self.rejections.labels(reason=reason)
        for kind in UPSTREAM_ERRORS:
            self.upstream_errors.labels(kind=kind)

    def observe(self, status: int, seconds: float, redactions: dict[str, int]) -> None:
        self.requests.labels(status=str(status)).inc()
        self.latency.observe(seconds)
        for t, n in redactions.items():
            self.redactions.labels(type=t).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
