"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

RECONCILES = Counter(
    "secureai_reconciles_total",
    "Reconciles by kind and result.",
    ["kind", "result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "secureai_reconcile_duration_seconds",
    "Time to reconcile one workload.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
DRIFT_REVERTS = Counter(
    "secureai_drift_reverts_total",
    "Drift reverted, by child kind.",
    ["child_kind"],
    registry=REGISTRY,
)
DRIFT_REVERT_SECONDS = Histogram(
    "secureai_drift_revert_duration_seconds",
    "From the drift event arriving to the revert being accepted.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
REJECTED = Counter(
    "secureai_rejected_specs_total",
    "Specs rejected by schema or policy, by kind.",
    ["kind"],
    registry=REGISTRY,
)
WORKLOADS = Gauge(
    "secureai_workloads",
    "Workloads by kind and phase.",
    ["kind", "phase"],
    registry=REGISTRY,
)
FOREIGN_POLICIES = Counter(
    "secureai_foreign_network_policies_total",
    "Foreign NetworkPolicies found widening a workload's pods, by action.",
    ["action"],
    registry=REGISTRY,
)
CERT_EXPIRY = Gauge(
    "secureai_certificate_expiry_timestamp_seconds",
    "Expiry of each serving certificate (Unix time).",
    ["namespace", "name"],
    registry=REGISTRY,
)
RESYNCS = Counter(
    "secureai_resyncs",
    "Completed periodic resyncs.",
    registry=REGISTRY,
)
DRY_RUNS = Counter(
    "secureai_dry_runs_total",
    "Server-side dry-runs that obtained a desired child's stored form, by child kind.",
    ["child_kind"],
    registry=REGISTRY,
)
ISOLATION_LOST = Counter(
    "secureai_isolation_lost_total",
    "Times a workload was judged not isolated from live pods and policies, by reason.",
    ["reason"],
    registry=REGISTRY,
)
WORK_FAILURES = Counter(
    "secureai_work_failures_total",
    "Failed work items (reconcile, revert, resync, watch event), requeued with backoff; "
    "by queue and exception type.",
    ["queue", "error"],
    registry=REGISTRY,
)
REFUSED_WRITES = Counter(
    "secureai_refused_writes_total",
    "Writes refused because this replica is not the leader (should stay 0 in practice).",
    ["verb"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "secureai_leader",
    "1 while this replica holds the leader Lease.",
    registry=REGISTRY,
)
QUARANTINES_ACTIVE = Gauge(
    "secureai_quarantines_active",
    "Quarantines not released.",
    registry=REGISTRY,
)
CONTAINED_WORKLOADS = Gauge(
    "secureai_contained_workloads",
    "Workloads contained by at least one active Quarantine.",
    registry=REGISTRY,
)
CONTAINMENT_SECONDS = Histogram(
    "secureai_containment_duration_seconds",
    "From a Quarantine (or its match) being seen to the workload's contained policies in place.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
AUTO_QUARANTINES = Counter(
    "secureai_auto_quarantines_total",
    "Quarantines the operator created on a signal, by signal.",
    ["signal"],
    registry=REGISTRY,
)
