"""One error contract (issue 13, 5) and bounded memory (issue 14, 10), without a cluster."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any, cast

import yaml

from secureai.api import Policy
from secureai.controllers import metrics
from secureai.controllers.queue import WorkQueue
from secureai.controllers.reconciler import Reconciler
from secureai.controllers.state import workload_key_of_cr
from secureai.k8s.client import KubeClient
from secureai.render.meta import LABEL_KIND, LABEL_WORKLOAD

REPO = Path(__file__).resolve().parents[2]
POLICY = Policy.from_yaml(REPO / "examples" / "policy.yaml")


def failures(queue: str, error: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "secureai_work_failures_total", {"queue": queue, "error": error}
    )
    return value or 0.0


def test_an_unexpected_exception_is_retried_with_backoff_and_the_loop_lives() -> None:
    """Regression: only ApiError was retried; anything else was logged by kopf and the
    reconcile was dropped (a CA error ended the resync loop with no sign)."""
    attempts: list[float] = []
    done: list[str] = []

    async def worker(key: str) -> None:
        attempts.append(time.monotonic())
        if key == "flaky" and len(attempts) <= 3:
            raise RuntimeError("injected")
        done.append(key)

    async def run() -> None:
        queue: WorkQueue[str] = WorkQueue("test", worker, workers=2, base_delay=0.02)
        queue.start()
        before = failures("test", "RuntimeError")
        queue.add("flaky")
        deadline = time.monotonic() + 5
        while "flaky" not in done:
            assert time.monotonic() < deadline, "never retried to success"
            await asyncio.sleep(0.005)
        assert failures("test", "RuntimeError") == before + 3
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.08  # exponential
        assert queue.failures == {}  # a success resets the backoff
        queue.add("next")  # the workers are alive
        while "next" not in done:
            assert time.monotonic() < deadline, "the loop died"
            await asyncio.sleep(0.005)
        await queue.stop()

    asyncio.run(run())


def test_reconcile_failure_of_any_kind_goes_back_to_the_queue() -> None:
    """The reconciler's queue: an unexpected error in a workload's sync is retried."""
    calls: list[str] = []

    class Boom:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"unexpected API call: {name}")

    r = Reconciler(cast(KubeClient, Boom()), POLICY, lambda *a, **k: None)
    body = workload("ml", "a")

    async def flaky(key: Any, entry: Any) -> int:
        calls.append(entry.name)
        if len(calls) == 1:
            raise KeyError("injected")
        return 0

    r._resync_one = flaky  # type: ignore[method-assign]

    async def run() -> None:
        r.queue._base = 0.01
        r.queue.start()
        r.observe_workload(body)
        r.enqueue(workload_key_of_cr(body))
        deadline = time.monotonic() + 5
        while len(calls) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        await r.queue.stop()

    before = failures("sync", "KeyError")
    asyncio.run(run())
    assert failures("sync", "KeyError") == before + 1


def workload(namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((REPO / "examples" / "inference-cpu.yaml").read_text())
    body["metadata"].update(
        name=name, namespace=namespace, uid=f"u-{namespace}-{name}", generation=1
    )
    body["metadata"]["resourceVersion"] = "5"
    return body


def sizes(r: Reconciler) -> dict[str, int]:
    return {
        "workloads": len(r.state.workloads),
        "live": len(r.state.live),
        "pods": len(r.state.pods),
        "policies": len(r.state.policies),
        "namespaces": len(r.state.namespaces),
        "terminating": len(r.state.terminating),
        "status tasks": len(r._status_tasks),
        "status again": len(r._status_again),
        "deferred": len(r.deferred),
        "namespace locks": len(r._namespace_locks),
        "namespace versions": len(r._namespace_versions),
        **{f"queue {k}": v for k, v in r.queue.sizes().items()},
    }


class NamespaceApi:
    async def apply_namespace_labels(self, namespace: str, labels: dict[str, str]) -> Any:
        return {"metadata": {"name": namespace, "resourceVersion": "10", "labels": labels}}

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call: {name}")


def test_per_workload_and_per_namespace_memory_returns_to_baseline() -> None:
    """Regression (issue 14, 10): the retry map, the status task map and the per-namespace
    lock map only ever grew."""
    r = Reconciler(cast(KubeClient, NamespaceApi()), POLICY, lambda *a, **k: None)
    baseline = sizes(r)

    async def run() -> None:
        for n in range(20):
            ns = f"ns-{n}"
            await r.on_namespace({"metadata": {"name": ns, "resourceVersion": "1"}})
            await r._label_namespace(ns)
            for i in range(10):
                body = workload(ns, f"w-{i}")
                entry = r.observe_workload(body)
                assert entry is not None
                key = workload_key_of_cr(body)
                labels = {LABEL_WORKLOAD: f"w-{i}", LABEL_KIND: "inference"}
                child = {
                    "kind": "ConfigMap",
                    "metadata": {"name": f"w-{i}", "namespace": ns, "labels": labels},
                }
                pod = {
                    "kind": "Pod",
                    "metadata": {"name": f"p-{i}", "namespace": ns, "labels": labels},
                }
                r.state.remember_child(child)
                await r.on_pod(pod, deleted=False)
                await r.on_watch_event(
                    {"kind": "NetworkPolicy", "metadata": {"name": f"np-{i}", "namespace": ns}},
                    deleted=False,
                )
                r.schedule_status(key)
                r.queue.failures[key] = 3
                r.queue.add_after(key, 60)
        await asyncio.sleep(0)
        assert sizes(r)["workloads"] == 200
        for n in range(20):
            ns = f"ns-{n}"
            for i in range(10):
                body = workload(ns, f"w-{i}")
                labels = {LABEL_WORKLOAD: f"w-{i}", LABEL_KIND: "inference"}
                r.observe_workload(body, deleted=True)
                meta = {"name": f"w-{i}", "namespace": ns, "labels": labels}
                await r.on_child({"kind": "ConfigMap", "metadata": meta}, deleted=True)
                pod_meta = {"name": f"p-{i}", "namespace": ns, "labels": labels}
                await r.on_pod({"kind": "Pod", "metadata": pod_meta}, deleted=True)
            await r.on_namespace({"metadata": {"name": ns, "resourceVersion": "20"}}, deleted=True)
        await asyncio.sleep(0.01)
        assert sizes(r) == baseline

    asyncio.run(run())


class RecordingApi:
    """Records every call; answers reads and dry-runs, as the API server would."""

    WRITES = frozenset(
        {"apply", "apply_created", "replace", "delete", "patch_status", "post_event"}
        | {"apply_namespace_labels", "request_token"}
    )

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def dry_run_create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("dry_run_create")
        return json.loads(json.dumps(manifest))

    async def list(self, *args: Any, **kwargs: Any) -> list[Any]:
        self.calls.append("list")
        return []

    def __getattr__(self, name: str) -> Any:
        async def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return {}

        return record


def test_a_standby_prepares_and_never_writes() -> None:
    """The standby renders and dry-runs (warm caches) but never writes, whatever it sees."""
    api = RecordingApi()
    events: list[str] = []
    r = Reconciler(
        cast(KubeClient, api),
        POLICY.model_copy(update={"foreign_network_policy": "remove"}),
        lambda b, t, reason, m: events.append(reason),
        leading=lambda: False,
    )
    body = workload("ml", "a")

    async def run() -> None:
        r.observe_workload(body)
        key = workload_key_of_cr(body)
        await r.sync(key)
        entry = r.state.workloads[key]
        assert entry.desired and len(entry.expected) == len(entry.desired)
        tampered = json.loads(json.dumps(entry.desired[("Service", "a")]))
        tampered["spec"]["selector"]["x"] = "y"
        tampered["metadata"]["resourceVersion"] = "50"
        await r.on_child(tampered, deleted=False)
        await r.on_child(tampered, deleted=True)
        allow_all = {
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-all", "namespace": "ml"},
            "spec": {"podSelector": {}, "ingress": [{}]},
        }
        await r.on_watch_event(allow_all, deleted=False)
        await r.on_namespace({"metadata": {"name": "ml", "resourceVersion": "3", "labels": {}}})
        await r.resync()
        await r.sync(key)

    asyncio.run(run())
    assert set(api.calls) <= {"dry_run_create", "list", "get"}, api.calls
    assert events == []


class ReplacingApi(RecordingApi):
    async def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("replace")
        stored: dict[str, Any] = json.loads(json.dumps(manifest))
        stored["metadata"]["resourceVersion"] = "51"
        return stored


def test_a_new_leader_reverts_from_its_prepared_caches_before_any_reconcile() -> None:
    """Take-over: what a standby prepared is compared with its watch cache and reverted at
    once; nothing is rendered or applied again for it."""
    api = ReplacingApi()
    events: list[str] = []
    leading = [False]
    r = Reconciler(
        cast(KubeClient, api),
        POLICY,
        lambda b, t, reason, m: events.append(reason),
        leading=lambda: leading[0],
    )
    body = workload("ml", "a")
    body["status"] = {"observedGeneration": 1}  # the previous leader applied generation 1
    unapplied = workload("ml", "b")  # generation 1 not applied yet: left to the reconcile

    async def run() -> None:
        for b in (body, unapplied):
            r.observe_workload(b)
        await r.prepare_all()
        entries = [r.state.workloads[workload_key_of_cr(b)] for b in (body, unapplied)]
        for entry in entries:
            service = json.loads(json.dumps(entry.desired[("Service", entry.name)]))
            service["spec"]["selector"]["x"] = "y"  # stood while no replica led
            service["metadata"]["resourceVersion"] = "50"
            await r.on_child(service, deleted=False)  # a standby only caches it
        assert "replace" not in api.calls
        leading[0] = True
        api.calls.clear()
        assert await r.revert_from_cache() == 1
        live = r.state.live_children(workload_key_of_cr(body)).get(("Service", "a"))
        assert live is not None and "x" not in live["spec"]["selector"]

    asyncio.run(run())
    assert api.calls.count("replace") == 1, api.calls
    assert not {"apply", "apply_created", "apply_namespace_labels"} & set(api.calls), api.calls
    assert events == ["DriftReverted"]
