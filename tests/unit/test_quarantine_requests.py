"""The API requests of containment, counted with a recording client (issue 16, acceptance 1).

From a Quarantine's event to the last workload's policies in place (the critical path of
`quarantine_contain_p99_s`), the operator sends exactly one request per contained workload:
a merge patch of its allow policy's rules. No read, no dry-run, no status write and no Event
come before the last policy; the default-deny (which allows nothing already) is not written.
The full reconcile that follows needs no dry-run for the contained policy, and a release none
for the rendered one (their stored forms are known)."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from pathlib import Path
from typing import Any, cast

import yaml

from secureai.api import Policy, parse_workload
from secureai.clock import SystemClock
from secureai.controllers.quarantine import QuarantineController
from secureai.controllers.reconciler import Reconciler
from secureai.controllers.state import Entry
from secureai.judge.drift import Expected
from secureai.judge.isolation import allows_some
from secureai.k8s.client import KubeClient
from secureai.k8s.resources import Resource
from secureai.render import render

REPO = Path(__file__).resolve().parents[2]
POLICY = Policy.from_yaml(REPO / "examples" / "policy.yaml").model_copy(
    update={"pod_security_labels": False}
)
WORKLOADS = 12
NAMESPACES = 4


class RecordingApi:
    """A fake API server that keeps objects and records every request as (verb, kind)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.version = 100

    def _stored(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body = copy.deepcopy(manifest)
        body["metadata"]["resourceVersion"] = str(self.version)
        meta = body["metadata"]
        self.objects[(body["kind"], meta.get("namespace", ""), meta["name"])] = body
        return copy.deepcopy(body)

    async def apply_created(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.requests.append(("apply", manifest["kind"]))
        meta = manifest["metadata"]
        created = (manifest["kind"], meta.get("namespace", ""), meta["name"]) not in self.objects
        return self._stored(manifest), created

    async def merge_patch(
        self, kind: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.requests.append(("merge-patch", kind))
        body = copy.deepcopy(self.objects[(kind, namespace or "", name)])
        for key, value in patch.items():
            if isinstance(value, dict):
                body.setdefault(key, {}).update(value)
            else:
                body[key] = value
        return self._stored(body)

    async def dry_run_create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(("dry-run", manifest["kind"]))
        return copy.deepcopy(manifest)

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.requests.append(("get", kind))
        found = self.objects.get((kind, namespace or "", name))
        return copy.deepcopy(found) if found else None

    async def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        self.requests.append(("list", kind))
        return []

    async def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(("replace", manifest["kind"]))
        return self._stored(manifest)

    async def delete(self, kind: str, namespace: str | None, name: str, **_: Any) -> None:
        self.requests.append(("delete", kind))
        self.objects.pop((kind, namespace or "", name), None)

    async def patch_status(
        self, resource: Resource, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.requests.append(("patch-status", resource.kind))
        body = self.objects.get((resource.kind, namespace, name)) or {
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": {"name": name, "namespace": namespace},
        }
        return self._stored({**body, "status": status})

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call: {name}")


def fleet(r: Reconciler, api: RecordingApi) -> list[Entry]:
    """WORKLOADS inference services across NAMESPACES namespaces, reconciled: their
    children live (as the API server stores them) and their expected forms known."""
    template = yaml.safe_load((REPO / "examples" / "inference-cpu.yaml").read_text())
    entries = []
    for i in range(WORKLOADS):
        body = copy.deepcopy(template)
        body["metadata"].update(
            name=f"svc-{i}",
            namespace=f"ns-{i % NAMESPACES}",
            uid=f"u-{i}",
            generation=1,
            resourceVersion="5",
            creationTimestamp="2026-01-01T00:00:00Z",
        )
        r.state.namespaces[body["metadata"]["namespace"]] = {}
        entry = r.observe_workload(api._stored(body))
        assert entry is not None
        entry.model = parse_workload(body)
        for manifest in render(entry.model, POLICY):
            stored = api._stored(manifest)
            r.state.remember_child(stored)
            child = (manifest["kind"], manifest["metadata"]["name"])
            entry.desired[child] = manifest
            entry.expected[child] = Expected.of(manifest, stored)
        entry.reconciled_generation = entry.generation
        entries.append(entry)
    return entries


def quarantine_event(released: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": "Quarantine",
        "metadata": {
            "name": "incident-1",
            "generation": 1,
            "creationTimestamp": "2026-01-02T00:00:00Z",
        },
        "spec": {
            "reason": "test",
            "collectEvidence": False,
            "released": released,
            "match": {"namespaces": [f"ns-{i}" for i in range(NAMESPACES)]},
        },
    }


def setup() -> tuple[Reconciler, QuarantineController, RecordingApi, list[str]]:
    api = RecordingApi()
    events: list[str] = []
    kube = cast(KubeClient, api)
    emit = lambda body, kind, reason, message: events.append(reason)  # noqa: E731
    controller = QuarantineController(kube, POLICY, emit, SystemClock())
    r = Reconciler(kube, POLICY, emit, containments=controller)
    controller.attach(r)
    return r, controller, api, events


def critical_path(r: Reconciler, api: RecordingApi, events: list[str]) -> list[list[Any]]:
    """Requests and Events until the first full reconcile starts (contain_all writes every
    workload's policies before any full reconcile begins)."""
    marks: list[list[Any]] = []
    full = r.reconcile_now

    async def reconcile_now(entry: Entry) -> None:
        if not marks:
            marks.append([list(api.requests), list(events)])
        await full(entry)

    r.reconcile_now = reconcile_now  # type: ignore[method-assign]
    return marks


def test_one_small_write_per_contained_workload_before_the_last_policy_is_in_place() -> None:
    r, controller, api, events = setup()
    entries = fleet(r, api)
    api.requests.clear()
    marks = critical_path(r, api, events)

    async def run() -> None:
        await controller.on_quarantine(quarantine_event(), deleted=False)
        await asyncio.sleep(0)  # the Quarantine's status write, scheduled after containment

    asyncio.run(run())
    critical, critical_events = marks[0]
    assert Counter(critical) == Counter({("merge-patch", "NetworkPolicy"): WORKLOADS})
    assert critical_events == []
    for entry in entries:
        for kind, name in entry.desired:
            if kind == "NetworkPolicy":
                assert allows_some(api.objects[(kind, entry.namespace, name)]["spec"]) == []
        assert entry.containment is not None
    # the full reconcile after: credentials pruned, status written, and no dry-run (the
    # contained policy's stored form follows from the rendered one's)
    after = Counter(api.requests[len(critical) :])
    assert after[("dry-run", "NetworkPolicy")] == 0, after
    assert after[("delete", "ServiceAccount")] == WORKLOADS, after
    assert after[("merge-patch", "NetworkPolicy")] == 0, after
    assert after[("apply", "NetworkPolicy")] == 0, after


def test_release_restores_the_rendered_policies_without_a_dry_run() -> None:
    r, controller, api, _ = setup()
    entries = fleet(r, api)
    rendered = {
        (e.namespace, name): copy.deepcopy(m["spec"])
        for e in entries
        for (kind, name), m in e.desired.items()
        if kind == "NetworkPolicy"
    }

    lanes: list[list[list[Any]]] = []

    async def run() -> None:
        await controller.on_quarantine(quarantine_event(), deleted=False)
        await asyncio.gather(*controller._status_tasks.values())  # containment's status
        api.requests.clear()
        lanes.append(critical_path(r, api, []))
        await controller.on_quarantine(quarantine_event(released=True), deleted=False)
        await asyncio.sleep(0)

    asyncio.run(run())
    # the release's lane: every rendered policy back (one apply each) before any full reconcile
    lane = lanes[0][0][0]
    assert Counter(lane) == Counter({("apply", "NetworkPolicy"): WORKLOADS}), lane
    counted = Counter(api.requests)
    assert counted[("dry-run", "NetworkPolicy")] == 0, counted
    assert counted[("apply", "NetworkPolicy")] == WORKLOADS, counted
    for (namespace, name), spec in rendered.items():
        assert api.objects[("NetworkPolicy", namespace, name)]["spec"] == spec
    assert all(e.containment is None for e in entries)


def test_a_policy_drifted_beyond_its_rules_is_compared_by_the_full_reconcile() -> None:
    """The shortcut never takes drift for the contained form: a policy whose selector was
    changed is dry-run, compared and reverted by the full reconcile."""
    r, controller, api, _ = setup()
    entries = fleet(r, api)
    first = entries[0]
    child = ("NetworkPolicy", f"{first.name}-allow")
    drifted = copy.deepcopy(api.objects[(child[0], first.namespace, child[1])])
    drifted["spec"]["podSelector"] = {}
    r.state.remember_child(api._stored(drifted))
    api.requests.clear()
    asyncio.run(controller.on_quarantine(quarantine_event(), deleted=False))
    assert api.requests.count(("dry-run", "NetworkPolicy")) == 1
    live = api.objects[(child[0], first.namespace, child[1])]
    assert live["spec"]["podSelector"] == first.desired[child]["spec"]["podSelector"]
    assert allows_some(live["spec"]) == []
