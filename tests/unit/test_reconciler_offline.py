"""Reconciler decisions that need no API call (the cluster-facing ones are integration tests)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any, cast

import yaml

from secureai.api import Policy, parse_workload
from secureai.controllers import metrics
from secureai.controllers.reconciler import Reconciler
from secureai.controllers.state import Entry, workload_key_of_child, workload_key_of_cr
from secureai.k8s.client import KubeClient
from secureai.render import render
from secureai.render.meta import LABEL_KIND, LABEL_MANAGED_BY, LABEL_WORKLOAD, MANAGED_BY

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


class FakeApi:
    """Dry-runs answer with the manifest as sent; deletes are recorded; nothing else."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def dry_run_create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(manifest)

    async def delete(self, kind: str, namespace: str | None, name: str, **_: Any) -> None:
        self.deleted.append(f"{kind}/{name}")

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call: {name}")


def rendered(r: Reconciler, body: dict[str, Any]) -> Entry:
    """A workload as after its first reconcile: desired children and their expected form."""
    entry = r.observe_workload(body)
    assert entry is not None
    entry.model = parse_workload(body)
    children = render(entry.model, POLICY)
    entry.desired = {(m["kind"], m["metadata"]["name"]): m for m in children}
    entry.reconciled_generation = entry.generation
    return entry


def foreign(name: str, selector: dict[str, Any], **labels: str) -> dict[str, Any]:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "ml", "labels": labels, "resourceVersion": "20"},
        "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": [{}]},
    }


def test_own_policies_seen_before_the_first_render_are_not_foreign() -> None:
    """Regression: after a restart, reconciles queue; the watch delivered the workload's own
    NetworkPolicies first, they were taken for foreign ones, and Isolated flipped to False."""
    events: list[str] = []
    r = Reconciler(
        cast(KubeClient, FakeApi()), POLICY, lambda b, t, reason, m: events.append(reason)
    )
    body = workload()

    async def run() -> None:
        entry = r.observe_workload(body)
        assert entry is not None and not entry.desired
        for policy in own_policies(body):
            policy["metadata"]["resourceVersion"] = "9"
            await r.on_watch_event(policy, deleted=False)
        entry = rendered(r, body)
        await r._judge(entry, locked=True)
        assert r._verdict(entry).isolated, r._verdict(entry)

    r._write_status = _no_status  # type: ignore[method-assign]
    asyncio.run(run())
    assert events == []


async def _no_status(entry: Any) -> None:
    return None


def judged(policy: str = "report", pods: dict[str, dict[str, str]] | None = None) -> Any:
    api = FakeApi()
    events: list[tuple[str, str]] = []
    r = Reconciler(
        cast(KubeClient, api),
        POLICY.model_copy(update={"foreign_network_policy": policy}),
        lambda b, t, reason, message: events.append((reason, message)),
    )
    r._write_status = _no_status  # type: ignore[method-assign]
    body = workload()
    entry = rendered(r, body)

    async def setup() -> None:
        for m in own_policies(body):
            m["metadata"]["resourceVersion"] = "9"
            await r.on_watch_event(m, deleted=False)
        for name, labels in (pods or {}).items():
            pod = {"kind": "Pod", "metadata": {"name": name, "namespace": "ml", "labels": labels}}
            await r.on_pod(pod, deleted=False)

    asyncio.run(setup())
    return r, api, events, entry


def test_policy_labelled_as_ours_but_not_rendered_is_foreign() -> None:
    """Regression: a forged allow-all policy labelled managed-by=secureai (workload label
    unknown or missing) was taken for the operator's own and dropped from the cache."""
    for labels in ({}, {LABEL_WORKLOAD: "nobody", LABEL_KIND: "inference"}):
        r, api, events, entry = judged()
        forged = foreign("allow-all", {}, **{LABEL_MANAGED_BY: MANAGED_BY, **labels})
        asyncio.run(r.on_watch_event(forged, deleted=False))
        assert not entry.isolation.isolated
        assert entry.isolation.widening == ("allow-all",)
        assert ("ForeignNetworkPolicy", "widened by allow-all") in events
        assert api.deleted == []


def test_foreign_policy_selecting_by_pod_template_hash_is_judged_on_live_pods() -> None:
    """Regression: isolation was judged against the rendered labels only."""
    name = parse_workload(workload()).metadata.name
    live = {LABEL_WORKLOAD: name, LABEL_KIND: "inference", "pod-template-hash": "abc"}
    r, _, events, entry = judged(pods={f"{name}-abc-1": live})
    sneaky = foreign("by-hash", {"matchLabels": {"pod-template-hash": "abc"}})
    asyncio.run(r.on_watch_event(sneaky, deleted=False))
    assert entry.isolation.reason == "ForeignNetworkPolicy"
    assert [e for e, _ in events] == ["ForeignNetworkPolicy"]
    asyncio.run(r.on_watch_event(sneaky, deleted=True))
    assert entry.isolation.isolated
    assert [e for e, _ in events] == ["ForeignNetworkPolicy", "Isolated"]


def test_remove_deletes_a_foreign_policy_that_predates_the_workload() -> None:
    """Regression: with `remove`, a foreign policy present before the first reconcile was only
    recorded, never removed, and no Event was posted."""
    api = FakeApi()
    events: list[str] = []
    r = Reconciler(
        cast(KubeClient, api),
        POLICY.model_copy(update={"foreign_network_policy": "remove"}),
        lambda b, t, reason, m: events.append(reason),
    )
    r._write_status = _no_status  # type: ignore[method-assign]
    body = workload()

    async def run() -> None:
        await r.on_watch_event(foreign("old-allow-all", {}), deleted=False)
        for m in own_policies(body):
            await r.on_watch_event(m, deleted=False)
        entry = rendered(r, body)
        await r._judge(entry, locked=True)
        assert entry.isolation is not None and entry.isolation.isolated

    asyncio.run(run())
    assert api.deleted == ["NetworkPolicy/old-allow-all"]
    assert events == ["ForeignNetworkPolicyRemoved"]


def test_tampered_default_deny_is_not_isolated_before_the_revert() -> None:
    """Regression: a key added to the default-deny podSelector made it select no pod, and
    status kept saying Isolated=True."""
    name = parse_workload(workload()).metadata.name
    pod = {LABEL_WORKLOAD: name, LABEL_KIND: "inference"}
    r, _, _, entry = judged(pods={"p": pod})
    deny = next(m for m in own_policies(entry.body) if m["metadata"]["name"].endswith("deny"))
    deny["spec"]["podSelector"]["matchLabels"]["x"] = "y"
    deny["metadata"]["resourceVersion"] = "30"
    r.state.remember_child(deny)
    verdict = r._verdict(entry)
    assert (verdict.isolated, verdict.reason) == (False, "NotSelected")


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

    async def record(entry: Any, *_: Any) -> None:
        seen.append(entry.name)
        entry.reconciled_generation = entry.generation

    r.reconcile = record  # type: ignore[method-assign]

    async def run() -> None:
        known = workload()
        r.observe_workload(known)
        r.state.workloads[next(iter(r.state.workloads))].reconciled_generation = 1
        missed = workload()
        missed["metadata"] = {**missed["metadata"], "name": "missed", "uid": "u-2"}
        r.queue.start()
        assert await r.adopt_missed([known, missed]) == 1
        while r.queue.sizes()["queued"] or r.queue.sizes()["active"]:
            await asyncio.sleep(0.001)
        assert seen == ["missed"]
        assert await r.adopt_missed([known, missed]) == 0
        await r.queue.stop()

    asyncio.run(run())


def test_finished_job_deleted_by_its_ttl_is_not_drift() -> None:
    """Regression (issue 14, 9): the TTL controller's deletion of a finished Job was taken
    for drift: the Job was recreated (training ran again) and DriftReverted was posted."""
    body: dict[str, Any] = yaml.safe_load(
        (REPO / "examples" / "training-single-gpu.yaml").read_text()
    )
    body["metadata"].update(namespace="ml", uid="u-9", generation=2, resourceVersion="5")
    body["status"] = {"phase": "Succeeded", "observedGeneration": 2}
    events: list[str] = []
    r = Reconciler(cast(KubeClient, NoApi()), POLICY, lambda b, t, reason, m: events.append(reason))
    entry = rendered(r, body)
    job = next(m for m in entry.desired.values() if m["kind"] == "Job")

    async def run() -> None:
        live = copy.deepcopy(job)
        live["metadata"]["resourceVersion"] = "40"
        r.state.remember_child(live)
        await r.on_child(live, deleted=True)  # NoApi: any write or read fails the test
        assert await r._ensure(entry, job) is False
        await r._write_status(entry)

    asyncio.run(run())
    assert events == []
    assert entry.phase == "Succeeded"


def test_a_child_whose_workload_label_was_edited_still_belongs_to_its_owner() -> None:
    """Regression: a child was matched to its workload by labels only; editing the
    `secureai.dev/workload` label made its drift invisible to the watch path."""
    body = workload()
    entry = rendered(reconciler(), body)
    deployment = next(m for m in entry.desired.values() if m["kind"] == "Deployment")
    tampered = copy.deepcopy(deployment)
    tampered["metadata"]["labels"][LABEL_WORKLOAD] = "someone-else"
    assert workload_key_of_child(tampered) == workload_key_of_cr(body)
