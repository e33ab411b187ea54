"""Reconciler decisions that need no API call (the cluster-facing ones are integration tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import yaml

from secureai.api import Policy, parse_workload
from secureai.controllers import metrics
from secureai.controllers.reconciler import Reconciler
from secureai.k8s.client import KubeClient
from secureai.render import render

REPO = Path(__file__).resolve().parents[2]
POLICY = Policy.from_yaml(REPO / "examples" / "policy.yaml")


class NoApi:
    """Any API call fails the test: these decisions must be made from memory."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call: {name}")


def workload() -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((REPO / "examples" / "inference-cpu.yaml").read_text())
    body["metadata"].update(namespace="ml", uid="u-1", generation=1, resourceVersion="5")
    return body


def reconciler() -> Reconciler:
    return Reconciler(cast(KubeClient, NoApi()), POLICY, lambda *a, **k: None)


def own_policies(body: dict[str, Any]) -> list[dict[str, Any]]:
    children = render(parse_workload(body), POLICY)
    return [m for m in children if m["kind"] == "NetworkPolicy"]


def test_own_policies_seen_before_the_first_render_are_not_foreign() -> None:
    """Regression: after a restart, reconciles queue; the watch delivered the workload's own
    NetworkPolicies first, they were taken for foreign ones, and Isolated flipped to False."""
    r, body = reconciler(), workload()
    entry = r.observe_workload(body)
    assert entry is not None and not entry.desired
    for policy in own_policies(body):
        policy["metadata"]["resourceVersion"] = "9"
        assert r._ours(policy)
    assert r.state.foreign_policies == {}


def test_policy_labelled_as_ours_but_not_rendered_is_foreign() -> None:
    r, body = reconciler(), workload()
    entry = r.observe_workload(body)
    assert entry is not None
    children = render(parse_workload(body), POLICY)
    entry.desired = {(m["kind"], m["metadata"]["name"]): m for m in children}
    forged = own_policies(body)[0]
    forged["metadata"]["name"] = "embeddings-allow-all"
    assert not r._ours(forged)
    assert all(r._ours(p) for p in own_policies(body))


def test_phase_gauge_moves_with_the_workload() -> None:
    def gauge(phase: str) -> float:
        value = metrics.REGISTRY.get_sample_value(
            "secureai_workloads", {"kind": "SecureInferenceService", "phase": phase}
        )
        return value or 0.0

    async def run() -> None:
        r, body = reconciler(), workload()
        r.observe_workload(body)
        assert (gauge("Pending"), gauge("Ready")) == (1, 0)
        body = {**body, "status": {"phase": "Ready"}, "metadata": {**body["metadata"]}}
        r.observe_workload(body)
        assert (gauge("Pending"), gauge("Ready")) == (0, 1)
        r.observe_workload(body, deleted=True)
        assert (gauge("Pending"), gauge("Ready")) == (0, 0)

    asyncio.run(run())


def test_drift_history_resumes_from_status() -> None:
    body = workload()
    body["status"] = {
        "drift": {
            "revertsTotal": 3,
            "lastRevertTime": "2026-11-26T00:00:00Z",
            "lastObject": "Service/x",
        },
        "conditions": [{"type": "Drift", "message": "reverted Service/x: spec.selector: changed"}],
    }
    entry = reconciler().observe_workload(body)
    assert entry is not None
    assert (entry.drift_total, entry.drift_last_object, entry.drift_last_change) == (
        3,
        "Service/x",
        "spec.selector: changed",
    )
    assert "managedFields" not in entry.body["metadata"]


class NamespaceApi:
    """Answers only namespace label writes, with increasing resourceVersions."""

    def __init__(self) -> None:
        self.writes = 0

    async def apply_namespace_labels(self, namespace: str, labels: dict[str, str]) -> Any:
        self.writes += 1
        version = str(10 * self.writes)
        return {"metadata": {"name": namespace, "resourceVersion": version, "labels": labels}}


def test_stale_namespace_event_is_not_drift() -> None:
    """Regression: the watch delivered the namespace as it was before the operator's own
    label write, and every workload in it got a false DriftReverted Event."""
    events: list[str] = []
    api = NamespaceApi()
    r = Reconciler(
        cast(KubeClient, api), POLICY, lambda body, type, reason, message: events.append(reason)
    )

    async def run() -> None:
        entry = r.observe_workload(workload())
        assert entry is not None
        entry.desired = {
            (m["kind"], m["metadata"]["name"]): m
            for m in render(parse_workload(entry.body), POLICY)
        }
        await r._label_namespace("ml")
        await r.on_namespace({"metadata": {"name": "ml", "resourceVersion": "9", "labels": {}}})
        assert (api.writes, events) == (1, [])
        await r.on_namespace({"metadata": {"name": "ml", "resourceVersion": "11", "labels": {}}})
        assert (api.writes, events) == (2, ["DriftReverted"])

    asyncio.run(run())


def test_relist_adopts_only_workloads_the_watch_missed() -> None:
    """The resync's relist reconciles a workload no event brought, and nothing it knows."""
    r = reconciler()
    seen: list[str] = []

    async def record(entry: Any) -> None:
        seen.append(entry.name)
        entry.reconciled_generation = entry.generation

    r.reconcile = record  # type: ignore[method-assign]

    async def run() -> None:
        known = workload()
        r.observe_workload(known)
        r.state.workloads[next(iter(r.state.workloads))].reconciled_generation = 1
        missed = workload()
        missed["metadata"] = {**missed["metadata"], "name": "missed", "uid": "u-2"}
        assert await r.adopt_missed([known, missed]) == 1
        assert seen == ["missed"]
        assert await r.adopt_missed([known, missed]) == 0

    asyncio.run(run())
