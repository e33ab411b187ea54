"""The cluster scenarios of `python -m bench.run`: workloads, tampers and their timings.

Every wait is bounded and event-driven (raw watches, see scenarios_kube); the only timed
sleeps are the idle measurement window and fixed-cadence samplers.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import gc
import itertools
import json
import os
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.scenarios_kube import (
    Api,
    Key,
    Obj,
    Predicate,
    Tracker,
    now,
    path_of,
    resource_version,
)
from bench.scenarios_proc import audit_seconds, summary
from secureai.api import Policy, parse_workload
from secureai.controllers.state import Entry, State, workload_key_of_cr
from secureai.k8s.resources import resource_of
from secureai.render import render

KIND = "SecureInferenceService"
RUN_LABEL = "bench.secureai.dev/run"
PID_ANNOTATION = "bench.secureai.dev/pid"
FLOOR_LABEL = "bench.secureai.dev/floor"
IMAGE = (
    "registry.example.com/ml/server@sha256:"
    "b3eacd33433b31b5252351032c9b3e7a2e7aa7738d5decdf0dd6c62680853c06"
)
MODEL_CLAIM = "bench-model"
SIGNER = "model-signer"
CHILD_KINDS = (
    "ServiceAccount",
    "NetworkPolicy",
    "Secret",
    "ConfigMap",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
)


# --- workloads ---------------------------------------------------------------------------------


def workload(
    ns: str, name: str, run: str, *, replicas: int = 1, guard: bool = False, gpu: bool = False
) -> Obj:
    """A small SecureInferenceService: 10m CPU / 16Mi for the server (kwok pods fit by the
    thousand); the operator's model-verify init container requests 250m / 256Mi per pod."""
    spec: Obj = {
        "image": IMAGE,
        "resources": {"cpu": "10m", "memory": "16Mi"},
        "replicas": replicas,
        "port": 8080,
        "model": {"claimName": MODEL_CLAIM, "signerKeyConfigMap": SIGNER},
        "network": {"ingress": [{"podSelector": {"app": "client"}}]},
    }
    if guard:
        spec["guard"] = {"enabled": True}
    if gpu:
        spec["gpu"] = {"count": 1, "pool": "inference"}
    return {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": KIND,
        "metadata": {"name": name, "namespace": ns, "labels": {RUN_LABEL: run}},
        "spec": spec,
    }


def expected_children(doc: Obj, policy: Policy) -> list[Key]:
    """(kind, namespace, name) of every child the operator renders for ``doc`` (offline)."""
    body = copy.deepcopy(doc)
    body["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
    ns = body["metadata"]["namespace"]
    return [(m["kind"], ns, m["metadata"]["name"]) for m in render(parse_workload(body), policy)]


def cr_key(ns: str, name: str) -> Key:
    return (KIND, ns, name)


# --- namespaces --------------------------------------------------------------------------------


async def make_namespace(api: Api, name: str, run: str) -> None:
    await api.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {RUN_LABEL: run},
                "annotations": {PID_ANNOTATION: str(os.getpid())},
            },
        }
    )


async def model_prereqs(api: Api, ns: str) -> None:
    """The model PVC (bound by the local provisioner) and signer ConfigMap the pods mount."""
    await api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": SIGNER, "namespace": ns},
            "data": {"signer.pub": base64.b64encode(b"bench").decode()},
        }
    )
    await api.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": MODEL_CLAIM, "namespace": ns},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "encrypted-ssd",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )


async def wait_claim_bound(api: Api, ns: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pvc = await api.get(path_of("PersistentVolumeClaim", ns, MODEL_CLAIM))
        if pvc and (pvc.get("status") or {}).get("phase") == "Bound":
            return
        await asyncio.sleep(0.2)  # polling with a deadline
    raise TimeoutError(f"PVC {ns}/{MODEL_CLAIM} not Bound after {timeout:.0f}s")


async def delete_namespaces(api: Api, names: list[str], timeout: float) -> float:
    """Delete namespaces and wait until they are gone; returns the seconds it took.

    Workloads go first: the garbage collector removes their Deployments and pods (kwok drops a
    terminating pod at once). A namespace deleted while it still holds running pods is
    re-examined only after their 30 s grace period has passed.
    """
    start = time.monotonic()
    deadline = start + timeout
    for name in names:
        await api.request(
            "DELETE", path_of(KIND, name), {"propagationPolicy": "Background"}, allow=(404,)
        )
    pending = list(names)
    while pending and time.monotonic() < min(deadline, start + 120):
        pods = [await api.get(f"/api/v1/namespaces/{n}/pods", {"limit": "1"}) for n in pending]
        pending = [n for n, p in zip(pending, pods, strict=True) if p and p.get("items")]
        if pending:
            await asyncio.sleep(0.5)  # polling with a deadline
    for name in names:
        await api.request("DELETE", path_of("Namespace", None, name), allow=(404, 409))
    pending = list(names)
    while pending and time.monotonic() < deadline:
        pending = [n for n in pending if await api.get(path_of("Namespace", None, n)) is not None]
        if pending:
            await asyncio.sleep(0.5)  # polling with a deadline
    if pending:
        raise TimeoutError(f"namespaces still terminating after {timeout:.0f}s: {pending[:5]}")
    return time.monotonic() - start


async def sweep_stale_runs(api: Api, run: str) -> list[str]:
    """Delete namespaces of earlier benchmark runs whose process is gone (no waiting)."""
    listed = await api.request("GET", path_of("Namespace"), params={"labelSelector": RUN_LABEL})
    swept = []
    for ns in listed.get("items", []):
        meta = ns["metadata"]
        if meta.get("labels", {}).get(RUN_LABEL) == run or meta.get("deletionTimestamp"):
            continue
        try:
            os.kill(int((meta.get("annotations") or {}).get(PID_ANNOTATION, "0")), 0)
            continue  # another benchmark still runs
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        await api.delete("Namespace", None, meta["name"])
        swept.append(meta["name"])
    return swept


# --- scenario 1: the watch floor ---------------------------------------------------------------


@dataclass
class FloorResult:
    send_to_event_ms: list[float] = field(default_factory=list)
    response_to_event_ms: list[float] = field(default_factory=list)
    write_rtt_ms: list[float] = field(default_factory=list)
    timeouts: int = 0


_FLOOR_WRITES = itertools.count()


def _data_is(value: str) -> Predicate:
    return lambda _t, o: (o.get("data") or {}).get("i") == value


async def watch_floor(api: Api, tracker: Tracker, ns: str, writes: int) -> FloorResult:
    """A plain client patches one ConfigMap; a raw watch (label-selected) sees each write."""
    name = "floor"
    await api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": {FLOOR_LABEL: "1"}},
            "data": {"i": "-1"},
        }
    )
    out = FloorResult()
    for _ in range(writes):
        await floor_write(api, tracker, ns, out)
    return out


async def floor_write(api: Api, tracker: Tracker, ns: str, out: FloorResult) -> None:
    """One floor sample: patch the floor ConfigMap, time its event on the raw watch."""
    name = "floor"
    key: Key = ("ConfigMap", ns, name)
    value = str(next(_FLOOR_WRITES))  # unique across every floor write of the run
    fut = tracker.expect(key, _data_is(value))
    t_send = now()
    await api.merge_patch("ConfigMap", ns, name, {"data": {"i": value}})
    t_resp = now()
    t_event = await tracker.wait(fut, 5)
    if t_event is None:
        out.timeouts += 1
        return
    out.send_to_event_ms.append((t_event - t_send) * 1000)
    out.response_to_event_ms.append((t_event - t_resp) * 1000)
    out.write_rtt_ms.append((t_resp - t_send) * 1000)


async def create_rate(api: Api, ns: str, kind: str, count: int, concurrency: int) -> dict[str, Any]:
    """The API server's own create throughput for one kind (no operator involved)."""
    gate = asyncio.Semaphore(concurrency)
    took: list[float] = []
    prefix = f"rate-{kind.lower()}-c{concurrency}"

    def body(i: int) -> Obj:
        meta = {"name": f"{prefix}-{i}", "namespace": ns}
        if kind == "Service":  # type ClusterIP: the API server allocates an address
            spec = {"ports": [{"port": 80}]}
            return {"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": spec}
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "data": {"k": "v"}}

    async def one(i: int) -> None:
        async with gate:
            start = now()
            await api.create(body(i))
            took.append((now() - start) * 1000)

    start = now()
    await asyncio.gather(*(one(i) for i in range(count)))
    seconds = now() - start
    return {
        "count": count,
        "concurrency": concurrency,
        "per_s": round(count / seconds, 1),
        "latency_ms": summary(took),
    }


# --- scenario 2: drift -> revert ---------------------------------------------------------------

Apply = Callable[[Api, str, str, Obj], Awaitable[tuple[int, Predicate]]]


@dataclass(frozen=True)
class Tamper:
    name: str
    kind: str
    suffix: str  # child name = CR name + suffix
    apply: Apply
    needs_guard: bool = False


def _alive(etype: str) -> bool:
    return etype != "DELETED"


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid", ""))


async def _deploy_scale(api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    want = live["spec"]["replicas"]
    r = await api.merge_patch("Deployment", ns, name, {"spec": {"replicas": want + 2}})
    return resource_version(r), lambda t, o: _alive(t) and o["spec"].get("replicas") == want


async def _deploy_image(api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    want = live["spec"]["template"]["spec"]["containers"][0]["image"]
    evil = "registry.example.com/evil@sha256:" + "c" * 64
    path = "/spec/template/spec/containers/0/image"
    r = await api.json_patch(
        "Deployment", ns, name, [{"op": "replace", "path": path, "value": evil}]
    )
    return resource_version(
        r
    ), lambda t, o: _alive(t) and (o["spec"]["template"]["spec"]["containers"][0]["image"] == want)


async def _deploy_add_container(api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    names = [c["name"] for c in live["spec"]["template"]["spec"]["containers"]]
    extra = {"name": "miner", "image": "registry.example.com/x@sha256:" + "d" * 64}
    op = {"op": "add", "path": "/spec/template/spec/containers/-", "value": extra}
    r = await api.json_patch("Deployment", ns, name, [op])
    return (
        resource_version(r),
        lambda t, o: (
            _alive(t)
            and ([c["name"] for c in o["spec"]["template"]["spec"]["containers"]] == names)
        ),
    )


async def _np_edit_rule(api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    want = live["spec"].get("ingress")
    op = {
        "op": "replace",
        "path": "/spec/ingress/0/from/0",
        "value": {"ipBlock": {"cidr": "0.0.0.0/0"}},
    }
    r = await api.json_patch("NetworkPolicy", ns, name, [op])
    return resource_version(r), lambda t, o: _alive(t) and o["spec"].get("ingress") == want


async def _delete(kind: str, api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    old = _uid(live)
    await api.delete(kind, ns, name)
    # the re-created object is newer than the deleted one (history may hold older uids)
    return resource_version(live), lambda t, o: _alive(t) and _uid(o) != old


async def _np_delete(api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    return await _delete("NetworkPolicy", api, ns, name, live)


async def _svc_delete(api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    return await _delete("Service", api, ns, name, live)


async def _sa_automount(api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    want = live.get("automountServiceAccountToken")
    r = await api.merge_patch("ServiceAccount", ns, name, {"automountServiceAccountToken": True})
    return resource_version(
        r
    ), lambda t, o: _alive(t) and (o.get("automountServiceAccountToken") == want)


async def _svc_selector(api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    want = live["spec"].get("selector")
    op = {"op": "replace", "path": "/spec/selector/secureai.dev~1workload", "value": "evil"}
    r = await api.json_patch("Service", ns, name, [op])
    return resource_version(r), lambda t, o: _alive(t) and o["spec"].get("selector") == want


async def _secret_data(api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    want = (live.get("data") or {}).get("tls.crt")
    bad = base64.b64encode(b"tampered").decode()
    r = await api.merge_patch("Secret", ns, name, {"data": {"tls.crt": bad}})
    return resource_version(
        r
    ), lambda t, o: _alive(t) and ((o.get("data") or {}).get("tls.crt") == want)


async def _cm_data(api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    want = live.get("data") or {}
    key = sorted(want)[0]
    r = await api.merge_patch("ConfigMap", ns, name, {"data": {key: "{}"}})
    return resource_version(r), lambda t, o: _alive(t) and (o.get("data") or {}) == want


async def _pdb_edit(api: Api, ns: str, name: str, live: Obj) -> tuple[int, Predicate]:
    want = live["spec"].get("maxUnavailable")
    r = await api.merge_patch("PodDisruptionBudget", ns, name, {"spec": {"maxUnavailable": 5}})
    return resource_version(r), lambda t, o: _alive(t) and o["spec"].get("maxUnavailable") == want


TAMPERS = (
    Tamper("deployment-scale", "Deployment", "", _deploy_scale),
    Tamper("networkpolicy-edit-rule", "NetworkPolicy", "-allow", _np_edit_rule),
    Tamper("serviceaccount-automount", "ServiceAccount", "", _sa_automount),
    Tamper("service-delete", "Service", "", _svc_delete),
    Tamper("deployment-image", "Deployment", "", _deploy_image),
    Tamper("secret-data", "Secret", "-tls", _secret_data),
    Tamper("configmap-data", "ConfigMap", "-guard", _cm_data, needs_guard=True),
    Tamper("networkpolicy-delete", "NetworkPolicy", "-default-deny", _np_delete),
    Tamper("service-selector", "Service", "", _svc_selector),
    Tamper("pdb-edit", "PodDisruptionBudget", "", _pdb_edit, needs_guard=True),
    Tamper("deployment-add-container", "Deployment", "", _deploy_add_container),
)
SCALE_TAMPERS = tuple(t for t in TAMPERS if not t.needs_guard)
ABANDON_AFTER = 3
QUIET_S = 0.25
QUIET_TIMEOUT_S = 5.0


@dataclass
class DriftSample:
    tamper: str
    kind: str
    ms: float | None  # None: not reverted within the timeout
    status_ms: float | None  # until the CR's status counted the revert
    namespace: str = ""
    child: str = ""
    t0_wall: float = 0.0  # Unix time of t0 (to line up with audit timestamps)
    back_wall: float | None = None


def reverts_total(obj: Obj | None) -> int:
    return int((((obj or {}).get("status") or {}).get("drift") or {}).get("revertsTotal") or 0)


def _tampered(restored: Predicate) -> Predicate:
    return lambda t, o: not restored(t, o)


def _counted_past(before: int) -> Predicate:
    return lambda _t, o: reverts_total(o) > before


async def _live(api: Api, kind: str, ns: str, name: str, timeout: float) -> Obj:
    """The child as it is now (waiting, bounded, for one that a previous tamper deleted)."""
    deadline = time.monotonic() + timeout
    while True:
        obj = await api.get(path_of(kind, ns, name))
        if obj is not None:
            return obj
        if time.monotonic() > deadline:
            raise TimeoutError(f"{kind} {ns}/{name} missing for {timeout:.0f}s")
        await asyncio.sleep(0.1)  # polling with a deadline


async def drift(
    api: Api,
    tracker: Tracker,
    targets: list[tuple[str, str, bool]],  # (namespace, CR name, has guard + PDB)
    count: int,
    timeout: float,
    tampers: tuple[Tamper, ...] = TAMPERS,
    between: Callable[[], Awaitable[None]] | None = None,
) -> list[DriftSample]:
    """``count`` tampers, one at a time, rotating over tamper types and CRs.

    A tamper type that the operator failed to revert ``ABANDON_AFTER`` times is dropped (its
    timeouts are reported); the others fill the count.
    """
    samples: list[DriftSample] = []
    active = list(tampers)
    done: dict[str, int] = {}
    failed: dict[str, int] = {}
    for i in range(count):
        if not active:
            break
        tamper = active[i % len(active)]
        turn = done[tamper.name] = done.get(tamper.name, 0) + 1
        pool = [t for t in targets if t[2]] if tamper.needs_guard else targets
        ns, cr, _ = pool[(turn - 1) % len(pool)]
        # one tamper at a time on a settled namespace: the previous revert's aftermath
        # (status writes, controllers reacting) is over
        await tracker.quiet(ns, QUIET_S, QUIET_TIMEOUT_S)
        if between is not None:  # e.g. one watch-floor sample under the same conditions
            await between()
        child = cr + tamper.suffix
        live = await _live(api, tamper.kind, ns, child, timeout)
        before = reverts_total(tracker.workloads.get(cr_key(ns, cr)))
        counted = tracker.expect(cr_key(ns, cr), _counted_past(before))
        min_rv, restored = await tamper.apply(api, ns, child, live)
        t0 = now()
        key: Key = (tamper.kind, ns, child)
        # The tamper's own event may beat its response (a Service DELETE answers only after
        # releasing the ClusterIP, and the operator may have re-created it by then).
        seen = tracker.expect(key, _tampered(restored), resource_version(live))
        if seen.done():
            t0 = min(t0, seen.result())
        else:
            seen.cancel()
        back = await tracker.wait(tracker.expect(key, restored, min_rv), timeout)
        status = None if back is None else await tracker.wait(counted, timeout)
        if back is None:
            failed[tamper.name] = failed.get(tamper.name, 0) + 1
            if failed[tamper.name] >= ABANDON_AFTER:
                active.remove(tamper)
        samples.append(
            DriftSample(
                tamper.name,
                tamper.kind,
                None if back is None else (back - t0) * 1000,
                None if status is None else (status - t0) * 1000,
                ns,
                child,
                to_wall(t0),
                None if back is None else to_wall(back),
            )
        )
    return samples


_WALL_OFFSET = time.time() - now()


def to_wall(t: float) -> float:
    """A perf_counter() instant as Unix time (the audit log's clock: same host)."""
    return t + _WALL_OFFSET


def _credential(event: Obj) -> list[str]:
    extra = (event.get("user") or {}).get("extra") or {}
    return list(extra.get("authentication.kubernetes.io/credential-id") or [])


def drift_breakdown(samples: list[DriftSample], events: list[Obj], jti: str) -> dict[str, Any]:
    """Split each revert with the API server's own audit timestamps (one host, one clock).

    reaction: tamper committed (its ResponseComplete, or the benchmark's sight of it if earlier)
              -> the operator's revert request received
              (watch delivery to the operator + kopf + the reconciler);
    revert_server: the revert request, received -> response complete (API server + etcd);
    delivery: revert response complete -> the benchmark's raw watch shows it;
    tamper_server: the tamper request itself, received -> response complete.
    """
    mine = f"JTI={jti}"
    by_object: dict[tuple[str, str, str], list[Obj]] = {}
    for e in events:
        ref = e.get("objectRef") or {}
        if ref.get("subresource"):
            continue
        key = (ref.get("resource", ""), ref.get("namespace", ""), ref.get("name", ""))
        by_object.setdefault(key, []).append(e)
    rows: list[dict[str, float]] = []
    for s in samples:
        if s.back_wall is None:
            continue
        plural = resource_of(s.kind).plural
        evs = sorted(
            by_object.get((plural, s.namespace, s.child), []),
            key=lambda e: audit_seconds(e["requestReceivedTimestamp"]),
        )
        tampers = [
            e
            for e in evs
            if mine not in _credential(e)
            and audit_seconds(e["requestReceivedTimestamp"]) <= s.t0_wall + 0.001
        ]
        if not tampers:
            continue
        tamper = tampers[-1]
        received = audit_seconds(tamper["requestReceivedTimestamp"])
        reverts = [
            e
            for e in evs
            if mine in _credential(e)
            and e.get("verb") in ("update", "patch", "create")
            and audit_seconds(e["requestReceivedTimestamp"]) >= received
        ]
        if not reverts:
            continue
        revert = reverts[0]
        # a DELETE completes its response after the watchers (and the operator) saw it
        committed = min(audit_seconds(tamper["stageTimestamp"]), s.t0_wall)
        r_in, r_out = (
            audit_seconds(revert["requestReceivedTimestamp"]),
            audit_seconds(revert["stageTimestamp"]),
        )
        rows.append(
            {
                "reaction_ms": (r_in - committed) * 1000,
                "revert_server_ms": (r_out - r_in) * 1000,
                "delivery_ms": (s.back_wall - r_out) * 1000,
                "tamper_server_ms": (committed - received) * 1000,
            }
        )
    out: dict[str, Any] = {"matched": len(rows)}
    for part in ("reaction_ms", "revert_server_ms", "delivery_ms", "tamper_server_ms"):
        out[part] = summary([r[part] for r in rows])
    return out


# --- scenario 3: create -> applied, create -> Ready (sequential) -------------------------------


@dataclass
class CreateResult:
    applied_ms: list[float] = field(default_factory=list)
    ready_ms: list[float] = field(default_factory=list)
    timeouts: int = 0


async def sequential_creates(
    api: Api,
    tracker: Tracker,
    policy: Policy,
    ns: str,
    run: str,
    count: int,
    timeout: float,
    gpu_every: int,
) -> CreateResult:
    out = CreateResult()
    for i in range(count):
        doc = workload(ns, f"seq-{i}", run, gpu=i % gpu_every == gpu_every // 2)
        applied = tracker.when_seen(expected_children(doc, policy))
        ready = tracker.when_ready(cr_key(ns, doc["metadata"]["name"]))
        await api.create(doc)
        t0 = now()
        t_applied = await tracker.wait(applied, timeout)
        t_ready = await tracker.wait(ready, timeout)
        if t_applied is None or t_ready is None:
            out.timeouts += 1
            continue
        out.applied_ms.append((t_applied - t0) * 1000)
        out.ready_ms.append((t_ready - t0) * 1000)
    return out


# --- scenario 4: burst -------------------------------------------------------------------------


@dataclass
class BurstResult:
    count: int
    created_s: float | None = None
    applied_s: float | None = None
    ready_s: float | None = None
    ready: int = 0
    timeline: list[dict[str, float]] = field(default_factory=list)


async def burst(
    api: Api,
    tracker: Tracker,
    docs: list[Obj],
    policy: Policy,
    *,
    concurrency: int,
    timeout: float,
    sample: Callable[[], dict[str, float]],
) -> BurstResult:
    """Create every CR at once (``concurrency`` requests in flight) and wait for all Ready."""
    out = BurstResult(len(docs))
    keys = [cr_key(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs]
    children = [k for d in docs for k in expected_children(d, policy)]
    ready_futs = [tracker.when_ready(k) for k in keys]
    applied_fut = tracker.when_seen(children)
    gate = asyncio.Semaphore(concurrency)
    t0 = now()

    async def create(doc: Obj) -> None:
        async with gate:
            await api.create(doc)

    async def sampler() -> None:
        while True:
            point = {"t": round(now() - t0, 2), "ready": sum(f.done() for f in ready_futs)}
            point.update(sample())
            out.timeline.append(point)
            await asyncio.sleep(1.0)  # fixed sampling cadence

    task = asyncio.create_task(sampler())
    try:
        await asyncio.gather(*(create(d) for d in docs))
        out.created_s = now() - t0
        remaining = max(timeout - (now() - t0), 1.0)
        all_ready = asyncio.gather(*ready_futs)
        done, _ = await asyncio.wait([all_ready], timeout=remaining)
        out.ready = sum(f.done() for f in ready_futs)
        if done:
            out.ready_s = max(f.result() for f in ready_futs) - t0
        else:
            all_ready.cancel()
        if applied_fut.done():
            out.applied_s = applied_fut.result() - t0
    finally:
        task.cancel()
        point = {"t": round(now() - t0, 2), "ready": sum(f.done() for f in ready_futs)}
        point.update(sample())
        out.timeline.append(point)
    return out


def burst_audit(events: list[Obj], jti: str, t0_wall: float) -> dict[str, Any]:
    """Where a burst's time goes, from the API server's audit events in its namespaces.

    Per CR: its create, the operator's first write for it (the ServiceAccount apply), its
    Deployment apply and its first status patch; plus the latency of every write.
    """
    mine = f"JTI={jti}"
    created: dict[tuple[str, str], float] = {}
    first: dict[tuple[str, str], float] = {}
    deployed: dict[tuple[str, str], float] = {}
    status: dict[tuple[str, str], float] = {}
    op_ms: list[float] = []
    other_ms: list[float] = []
    per_second: dict[int, int] = {}
    for e in events:
        ref = e.get("objectRef") or {}
        key = (ref.get("namespace", ""), ref.get("name", ""))
        received = audit_seconds(e["requestReceivedTimestamp"])
        took = (audit_seconds(e["stageTimestamp"]) - received) * 1000
        resource, verb = ref.get("resource"), e.get("verb")
        if mine in _credential(e):
            op_ms.append(took)
            second = int(received - t0_wall)
            per_second[second] = per_second.get(second, 0) + 1
            if resource == "serviceaccounts" and verb == "patch":
                first.setdefault(key, received)
            elif resource == "deployments" and verb == "patch":
                deployed.setdefault(key, received)
            elif resource == "secureinferenceservices" and ref.get("subresource") == "status":
                status.setdefault(key, received)
        else:
            other_ms.append(took)
            if resource == "secureinferenceservices" and verb == "create":
                created.setdefault(key, received)

    def offsets(table: dict[tuple[str, str], float], since: dict[tuple[str, str], float]) -> Any:
        return summary([(t - since[k]) * 1000 for k, t in table.items() if k in since])

    last = max(per_second) if per_second else -1
    return {
        "operator_write_ms": summary(op_ms),
        "other_write_ms": summary(other_ms),
        "create_to_first_operator_write_ms": offsets(first, created),
        "first_write_to_deployment_apply_ms": offsets(deployed, first),
        "deployment_apply_to_first_status_ms": offsets(status, deployed),
        "operator_writes_per_second": [per_second.get(i, 0) for i in range(last + 1)],
    }


async def state_footprint(api: Api, namespaces: list[str], policy: Policy) -> dict[str, Any]:
    """Memory of the reconciler's state for the CRs in ``namespaces``, rebuilt in-process.

    The same classes and steps as the operator (secureai.controllers.state): each CR's body,
    parsed model and rendered children in an Entry, each live child (without managedFields)
    remembered. Measured with tracemalloc, parsing included; kopf's and aiohttp's own
    per-object memory is not part of it.
    """
    crs: list[tuple[str, str]] = []
    children: list[tuple[str, str]] = []
    for ns in namespaces:
        crs.append((KIND, await api.text(path_of(KIND, ns))))
        for kind in CHILD_KINDS:
            params = {"labelSelector": "app.kubernetes.io/managed-by=secureai"}
            children.append((kind, await api.text(path_of(kind, ns), params)))
    return await asyncio.to_thread(_measure_state, crs, children, policy)


def _measure_state(
    crs: list[tuple[str, str]], children: list[tuple[str, str]], policy: Policy
) -> dict[str, Any]:
    gc.collect()
    tracemalloc.start()
    try:
        state = State()
        parts: dict[str, int] = {}

        def mark(name: str, before: int) -> int:
            now_size = tracemalloc.get_traced_memory()[0]
            parts[name] = parts.get(name, 0) + now_size - before
            return now_size

        size = tracemalloc.get_traced_memory()[0]
        for kind, text in crs:
            for body in json.loads(text).get("items", []):
                body["kind"] = kind
                body["apiVersion"] = "secureai.dev/v1alpha1"
                entry = Entry(body=body)
                state.workloads[workload_key_of_cr(body)] = entry
                size = mark("cr_bodies", size)
                entry.model = parse_workload(body)
                size = mark("models", size)
                entry.desired = {
                    (m["kind"], m["metadata"]["name"]): m for m in render(entry.model, policy)
                }
                size = mark("desired_children", size)
        for kind, text in children:
            items = json.loads(text).get("items", [])
            for body in items:
                body["kind"] = kind
                state.remember_child(body)
            del items
            gc.collect()
            size = mark("live_children", size)
        total = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    count = len(state.workloads)
    mib = 1024 * 1024
    return {
        "crs": count,
        "live_children": sum(len(c) for c in state.live.values()),
        "total_mib": round(total / mib, 1),
        "per_cr_kib": round(total / max(count, 1) / 1024, 1),
        "parts_mib": {k: round(v / mib, 1) for k, v in parts.items()},
    }


# --- operator metrics --------------------------------------------------------------------------


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of one metric family (all label sets) in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                continue
    return total
