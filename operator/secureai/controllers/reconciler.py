"""Reconcile workloads into children, revert drift, keep status. No kopf in here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from secureai.api import Policy, SecureTrainingJob, parse_workload
from secureai.api.errors import one_line
from secureai.controllers import metrics
from secureai.controllers.state import (
    ChildKey,
    Entry,
    State,
    WorkloadKey,
    resource_version,
    slim,
    workload_key_of_child,
    workload_key_of_cr,
)
from secureai.k8s.client import ApiError, KubeClient
from secureai.k8s.resources import WORKLOAD_RESOURCES
from secureai.render import PSS_LABELS, PolicyViolation, render
from secureai.render.drift import differences, repaired
from secureai.render.meta import ANNOTATION_RETAINED, LABEL_MANAGED_BY, MANAGED_BY, selector
from secureai.render.selectors import widens
from secureai.render.status import (
    Observed,
    compute_status,
    init_failure,
    rejected_status,
    verified_model,
)

log = logging.getLogger("secureai")

NAMESPACE_MARKER = "secureai.dev/workloads"
APPLY_FIRST = frozenset({"ServiceAccount", "NetworkPolicy", "PersistentVolumeClaim", "Secret"})
ALERT_REASONS = frozenset({"ModelVerificationFailed", "Failed"})
APPLY_ONLY = frozenset({"Job", "PersistentVolumeClaim"})  # immutable specs: no replace
# Reconciles in flight at once. Reverts do not wait for these slots.
RECONCILE_SLOTS = 16


class Emit(Protocol):
    def __call__(self, body: dict[str, Any], type: str, reason: str, message: str) -> None: ...


class Hooks(Protocol):
    """Optional steps with I/O of their own (certificates, storage checks)."""

    async def prepare(
        self,
        entry: Entry,
        desired: list[dict[str, Any]],
        live: Mapping[ChildKey, dict[str, Any]],
    ) -> str | None:
        """Fill secrets and check the cluster; return a rejection reason or None."""

    def needs_refresh(self, entry: Entry) -> bool:
        """Whether time alone (say, certificate renewal) calls for a reconcile."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        policy: Policy,
        emit: Emit,
        *,
        hooks: Hooks | None = None,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.kube = kube
        self.policy = policy
        self.emit = emit
        self.hooks = hooks
        self.clock = clock
        self.state = State()
        self._status_tasks: dict[WorkloadKey, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(RECONCILE_SLOTS)
        self._namespace_locks: dict[str, asyncio.Lock] = {}
        self._namespace_versions: dict[str, int] = {}
        self._phases: dict[tuple[str, str], int] = {}

    # --- workloads -------------------------------------------------------------------------

    def observe_workload(self, body: dict[str, Any], deleted: bool = False) -> Entry | None:
        """Record a CR event; return the entry when its spec needs reconciling."""
        key = workload_key_of_cr(body)
        if deleted:
            self._forget(key)
            return None
        entry = self.state.workloads.get(key)
        if entry is None:
            entry = self.state.workloads[key] = Entry(body=body)
        else:
            entry.body = slim(body)
        self._count_phase(entry, entry.phase)
        if entry.reconciled_generation != entry.generation:
            return entry
        return None

    def _forget(self, key: WorkloadKey) -> None:
        gone = self.state.workloads.pop(key, None)
        if gone is not None:
            self._count_phase(gone, None)

    async def reconcile(self, entry: Entry) -> None:
        kind = entry.kind
        started = time.perf_counter()
        async with self._slots, entry.lock:
            try:
                result = await self._reconcile_locked(entry)
            except ApiError as exc:
                metrics.RECONCILES.labels(kind, "error").inc()
                log.warning("reconcile of %s/%s failed: %s", entry.namespace, entry.name, exc)
                self.emit(entry.body, "Warning", "ReconcileError", str(exc)[:500])
                raise
            finally:
                metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
        metrics.RECONCILES.labels(kind, result).inc()

    async def _reconcile_locked(self, entry: Entry) -> str:
        body = entry.body
        if entry.namespace in self.state.terminating:
            return "skipped"
        generation = entry.generation
        try:
            model = parse_workload(body)
            desired = render(model, self.policy)
        except ValidationError as exc:
            return await self._reject(entry, one_line(exc))
        except (PolicyViolation, ValueError) as exc:
            return await self._reject(entry, str(exc))
        entry.model = model
        if self.hooks is not None:
            live = self.state.live_children(workload_key_of_cr(body))
            reason = await self.hooks.prepare(entry, desired, live)
            if reason is not None:
                return await self._reject(entry, reason, transient=True)
        if entry.reconciled_generation != generation:
            entry.model_digest = entry.model_signer = None
        entry.rejected = None
        entry.rejected_by_cluster = False
        entry.desired = {(m["kind"], m["metadata"]["name"]): m for m in desired}
        await self._label_namespace(entry.namespace)
        first = [m for m in desired if m["kind"] in APPLY_FIRST]
        rest = [m for m in desired if m["kind"] not in APPLY_FIRST]
        written = 0
        for batch in (first, rest):
            written += sum(await asyncio.gather(*(self._ensure(entry, m) for m in batch)))
        self.state.reproject(workload_key_of_cr(body), entry)
        pruned = await self._prune(entry)
        observed = int((body.get("status") or {}).get("observedGeneration") or 0)
        if entry.reconciled_generation != generation and (
            written or pruned or observed != generation
        ):
            self.emit(
                body,
                "Normal",
                "Reconciled",
                f"generation {generation}: {written} of {len(desired)} children applied"
                + (f", {pruned} pruned" if pruned else ""),
            )
        entry.reconciled_generation = generation
        self._check_foreign(entry)
        await self._write_status(entry)
        return "success"

    async def _reject(self, entry: Entry, reason: str, transient: bool = False) -> str:
        metrics.REJECTED.labels(entry.kind).inc()
        if entry.rejected != reason:
            self.emit(entry.body, "Warning", "Rejected", reason[:1000])
        entry.rejected = reason
        entry.rejected_by_cluster = transient
        entry.reconciled_generation = entry.generation
        status = rejected_status(
            entry.generation, entry.body.get("status"), reason[:1000], self.clock()
        )
        await self._patch_status(entry, status)
        return "rejected"

    async def _ensure(self, entry: Entry, manifest: dict[str, Any]) -> bool:
        """Apply a child unless the live copy already matches (a no-op writes nothing)."""
        key = workload_key_of_cr(entry.body)
        live = self.state.live_children(key).get((manifest["kind"], manifest["metadata"]["name"]))
        if live is not None and not differences(manifest, live):
            return False
        result = await self._apply(manifest)
        self.state.remember_child(result)
        left = differences(manifest, result)
        if left:
            log.error("%s/%s differs right after apply: %s", manifest["kind"], key[2], left)
        return True

    async def _apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.kube.apply(manifest)
        except ApiError as exc:
            if manifest["kind"] != "Job" or exc.status != 422:
                raise
        # A Job's pod template is immutable: replace the Job.
        meta = manifest["metadata"]
        await self.kube.delete("Job", meta["namespace"], meta["name"], propagation="Foreground")
        deadline = time.monotonic() + 30
        while await self.kube.get("Job", meta["namespace"], meta["name"]) is not None:
            if time.monotonic() > deadline:
                raise ApiError(409, "Conflict", f"Job {meta['name']} is still being deleted")
            await asyncio.sleep(0.2)
        return await self.kube.apply(manifest)

    async def _prune(self, entry: Entry) -> int:
        key = workload_key_of_cr(entry.body)
        pruned = 0
        for (kind, name), live in list(self.state.live_children(key).items()):
            if (kind, name) in entry.desired:
                continue
            if (live.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_RETAINED):
                continue
            await self.kube.delete(kind, entry.namespace, name)
            self.state.live_children(key).pop((kind, name), None)
            self.emit(entry.body, "Normal", "Pruned", f"deleted {kind}/{name}: no longer rendered")
            pruned += 1
        return pruned

    async def _label_namespace(self, namespace: str) -> None:
        if not self.policy.pod_security_labels:
            return
        want = {**PSS_LABELS, NAMESPACE_MARKER: "true"}
        # Reconciles in a fresh namespace would each label it: the first one does.
        async with self._namespace_locks.setdefault(namespace, asyncio.Lock()):
            have = self.state.namespaces.get(namespace)
            if have is not None and all(have.get(k) == v for k, v in want.items()):
                return
            result = await self.kube.apply_namespace_labels(namespace, want)
            self._namespace_versions[namespace] = resource_version(result)
            self.state.namespaces[namespace] = {**(have or {}), **want}

    # --- status ----------------------------------------------------------------------------

    async def _inspect_pods(self, entry: Entry) -> str | None:
        """Ask a model server's pods what model-verify said: a failure while the Deployment
        is not available, or the verified digest and signer once (status lineage)."""
        model = entry.model
        if model is None or isinstance(model, SecureTrainingJob):
            return None
        live = self.state.live_children(workload_key_of_cr(entry.body))
        deployment = live.get(("Deployment", entry.name))
        if deployment is None:
            return None
        st = deployment.get("status") or {}
        available = int(st.get("availableReplicas") or 0) >= model.spec.replicas
        if available and entry.lineage_generation == entry.generation:
            return None
        if available:
            entry.lineage_generation = entry.generation
        selector_text = ",".join(f"{k}={v}" for k, v in selector(model).items())
        pods = await self.kube.list("Pod", entry.namespace, label_selector=selector_text)
        verified = verified_model(pods, "model-verify")
        if verified is not None:
            entry.model_digest, entry.model_signer = verified
        return None if available else init_failure(pods, "model-verify")

    def _observed(self, entry: Entry, failure: str | None = None) -> Observed:
        key = workload_key_of_cr(entry.body)
        live = self.state.live_children(key)
        labels = self.state.namespaces.get(entry.namespace, {})
        return Observed(
            children={k: v for k, v in live.items() if k in entry.desired},
            missing=tuple(f"{k}/{n}" for (k, n) in sorted(entry.desired) if (k, n) not in live),
            foreign_policies=tuple(sorted(entry.foreign)),
            namespace_labelled=all(labels.get(k) == v for k, v in PSS_LABELS.items()),
            tls_not_after=entry.tls_not_after,
            drift_total=entry.drift_total,
            drift_last_time=entry.drift_last_time,
            drift_last_object=entry.drift_last_object,
            drift_last_change=entry.drift_last_change,
            init_failure=failure,
            model_digest=entry.model_digest,
            model_signer=entry.model_signer,
        )

    async def _write_status(self, entry: Entry) -> None:
        if entry.model is None or entry.rejected is not None:
            return
        if entry.namespace in self.state.terminating:
            return
        previous = entry.body.get("status") or {}
        failure = await self._inspect_pods(entry)
        status = compute_status(
            entry.model, self.policy, self._observed(entry, failure), previous, self.clock()
        )
        before = _ready(previous)
        if status == previous:
            return
        await self._patch_status(entry, status)
        after = _ready(status)
        if after != before and after[0] is not None:
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            notable = "True" in (after[0], before[0]) or after[1] in ALERT_REASONS
            if notable:
                kind = "Normal" if after[0] == "True" else "Warning"
                self.emit(entry.body, kind, ready["reason"], ready["message"])

    async def _patch_status(self, entry: Entry, status: dict[str, Any]) -> None:
        previous = entry.body.get("status") or {}
        if status == previous:
            return
        # Merge patch: lists replace; keys that vanished are nulled out.
        patch: dict[str, Any] = dict(status)
        for key in previous.keys() - status.keys():
            patch[key] = None
        log.info(
            "status of %s/%s: %s",
            entry.namespace,
            entry.name,
            ", ".join(_changed(previous, status)),
        )
        resource = WORKLOAD_RESOURCES[entry.kind]
        try:
            result = await self.kube.patch_status(resource, entry.namespace, entry.name, patch)
        except ApiError as exc:
            if exc.status == 404:
                return
            raise
        if resource_version(result) >= resource_version(entry.body):
            entry.body = slim(result)
        self._count_phase(entry, entry.phase)

    def schedule_status(self, key: WorkloadKey) -> None:
        """Coalesce status refreshes that bursts of child events would trigger."""
        task = self._status_tasks.get(key)
        if task is not None and not task.done():
            return
        self._status_tasks[key] = asyncio.create_task(self._refresh_status(key))

    async def _refresh_status(self, key: WorkloadKey) -> None:
        await asyncio.sleep(0)
        entry = self.state.workloads.get(key)
        if entry is None or entry.model is None:
            return
        async with entry.lock:
            try:
                await self._write_status(entry)
            except ApiError as exc:
                log.warning("status of %s/%s: %s", entry.namespace, entry.name, exc)

    def _count_phase(self, entry: Entry, phase: str | None) -> None:
        """Move the workload between the per-phase gauges (O(1) per status write)."""
        if entry.counted_phase == phase:
            return
        for old, step in ((entry.counted_phase, -1), (phase, 1)):
            if old is not None:
                label = (entry.kind, old)
                self._phases[label] = self._phases.get(label, 0) + step
                metrics.WORKLOADS.labels(*label).set(self._phases[label])
        entry.counted_phase = phase

    # --- drift -----------------------------------------------------------------------------

    async def on_child(self, body: dict[str, Any], deleted: bool) -> None:
        """A watch event on a managed child: revert drift, refresh status."""
        kind = body["kind"]
        key = self.state.forget_child(body) if deleted else self.state.remember_child(body)
        if key is None:
            return
        entry = self.state.workloads.get(key)
        if entry is None or entry.rejected is not None or entry.namespace in self.state.terminating:
            return
        child: ChildKey = (kind, body["metadata"]["name"])
        desired = entry.desired.get(child)
        if desired is not None:
            started = time.perf_counter()
            if deleted:
                if await self._owner_alive(entry):
                    await self._revert(entry, desired, None, ["deleted"], started)
            else:
                stored = self.state.live_children(key).version(child)
                if stored is None or stored <= resource_version(body):
                    diffs = differences(desired, body)
                    if diffs:
                        await self._revert(entry, desired, body, diffs, started)
        if kind in ("Job", "Deployment"):
            self.schedule_status(key)

    async def _owner_alive(self, entry: Entry) -> bool:
        """A deleted child is recreated only while its owner lives (not during GC)."""
        resource = WORKLOAD_RESOURCES[entry.kind]
        try:
            owner = await self.kube.request("GET", resource.path(entry.namespace, entry.name))
        except ApiError as exc:
            if exc.status == 404:
                self._forget(workload_key_of_cr(entry.body))
                return False
            raise
        meta = owner.get("metadata", {})
        same = meta.get("uid") == entry.body["metadata"].get("uid")
        return same and not meta.get("deletionTimestamp")

    async def _revert(
        self,
        entry: Entry,
        desired: dict[str, Any],
        live: dict[str, Any] | None,
        diffs: list[str],
        started: float,
    ) -> None:
        kind, name = desired["kind"], desired["metadata"]["name"]
        async with entry.lock:
            if entry.desired.get((kind, name)) is not desired:
                return
            try:
                if live is None or kind in APPLY_ONLY:
                    result = await self._apply(desired)
                else:
                    result = await self._replace(desired, live)
            except ApiError as exc:
                if exc.status == 403 and "being terminated" in exc.message:
                    return
                log.warning("revert of %s/%s failed: %s", kind, name, exc)
                self.emit(entry.body, "Warning", "DriftRevertFailed", f"{kind}/{name}: {exc}")
                return
            self.state.remember_child(result)
            left = differences(desired, result)
            if left:
                log.error("%s/%s still differs after the revert: %s", kind, name, left)
                self.emit(entry.body, "Warning", "DriftRevertIncomplete", f"{kind}/{name}: {left}")
            self._record_revert(entry, f"{kind}/{name}", diffs, started)
            await self._write_status(entry)

    async def _replace(self, desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
        for _ in range(3):
            try:
                return await self.kube.replace(repaired(desired, live))
            except ApiError as exc:
                if exc.status == 404:
                    return await self._apply(desired)
                if exc.status != 409:
                    raise
            meta = desired["metadata"]
            fresh = await self.kube.get(desired["kind"], meta["namespace"], meta["name"])
            if fresh is None:
                return await self._apply(desired)
            if not differences(desired, fresh):
                return fresh
            live = fresh
        raise ApiError(409, "Conflict", "the object kept changing during the revert")

    def _record_revert(self, entry: Entry, obj: str, diffs: list[str], started: float) -> None:
        metrics.DRIFT_REVERTS.labels(obj.split("/", 1)[0]).inc()
        metrics.DRIFT_REVERT_SECONDS.observe(time.perf_counter() - started)
        change = ", ".join(diffs[:5]) + (f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else "")
        entry.drift_total += 1
        entry.drift_last_time = self.clock()
        entry.drift_last_object = obj
        entry.drift_last_change = change[:300]
        log.info("reverted drift of %s in %s: %s", obj, entry.namespace, change)
        self.emit(entry.body, "Warning", "DriftReverted", f"{obj}: {change}"[:1000])

    async def on_watch_event(self, body: dict[str, Any], deleted: bool) -> None:
        """Route a child-kind event: our children, or a foreign NetworkPolicy.

        A NetworkPolicy labelled as ours that we did not render is foreign (a forgery).
        """
        if body["kind"] == "NetworkPolicy" and not self._ours(body):
            await self.on_network_policy(body, deleted)
        else:
            await self.on_child(body, deleted)

    def _ours(self, body: dict[str, Any]) -> bool:
        labels = body.get("metadata", {}).get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
            return False
        key = workload_key_of_child(body)
        entry = self.state.workloads.get(key) if key is not None else None
        # Before its first render a workload's children are unknown: a forgery is pruned then.
        if entry is None or not entry.desired:
            return True
        return (body["kind"], body["metadata"]["name"]) in entry.desired

    # --- namespaces and foreign network policies --------------------------------------------

    async def on_namespace(self, body: dict[str, Any], deleted: bool = False) -> None:
        name = body["metadata"]["name"]
        if not deleted and resource_version(body) < self._namespace_versions.get(name, 0):
            return  # older than our own label write: the watch is catching up
        labels = body["metadata"].get("labels") or {}
        self.state.namespaces[name] = dict(labels)
        if deleted or (body.get("status") or {}).get("phase") == "Terminating":
            # Everything in it is going away: nothing to reconcile, revert or report.
            self.state.terminating.add(name)
            return
        self.state.terminating.discard(name)
        if not self.policy.pod_security_labels:
            return
        entries = [e for e in self.state.in_namespace(name) if e.rejected is None and e.desired]
        missing = [k for k, v in PSS_LABELS.items() if labels.get(k) != v]
        if not entries or not missing:
            return
        started = time.perf_counter()
        result = await self.kube.apply_namespace_labels(
            name, {**PSS_LABELS, NAMESPACE_MARKER: "true"}
        )
        self._namespace_versions[name] = resource_version(result)
        self.state.namespaces[name] = {**labels, **PSS_LABELS, NAMESPACE_MARKER: "true"}
        change = ", ".join(f"metadata.labels.{k}: changed" for k in missing)
        self._record_revert(entries[0], f"Namespace/{name}", [change], started)
        for entry in entries[1:]:
            self.emit(entry.body, "Warning", "DriftReverted", f"Namespace/{name}: {change}")

    async def on_network_policy(self, body: dict[str, Any], deleted: bool) -> None:
        """A foreign NetworkPolicy: report it, or remove it, when it widens our pods."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if deleted:
            self.state.foreign_policies.pop((ns, name), None)
        else:
            self.state.foreign_policies[(ns, name)] = slim_policy(body)
        for entry in self.state.in_namespace(ns):
            if entry.model is None:
                continue
            was = name in entry.foreign
            now = not deleted and widens(body, selector(entry.model))
            if now and not was:
                await self._foreign_found(entry, ns, name)
            elif was and not now:
                entry.foreign.discard(name)
                self.schedule_status(workload_key_of_cr(entry.body))

    async def _foreign_found(self, entry: Entry, namespace: str, name: str) -> None:
        if self.policy.foreign_network_policy == "remove":
            metrics.FOREIGN_POLICIES.labels("removed").inc()
            await self.kube.delete("NetworkPolicy", namespace, name)
            self.emit(
                entry.body,
                "Warning",
                "ForeignNetworkPolicyRemoved",
                f"NetworkPolicy/{name} widened access to the workload's pods and was removed",
            )
            return
        metrics.FOREIGN_POLICIES.labels("reported").inc()
        entry.foreign.add(name)
        self.emit(
            entry.body,
            "Warning",
            "ForeignNetworkPolicy",
            f"NetworkPolicy/{name} widens access to the workload's pods",
        )
        self.schedule_status(workload_key_of_cr(entry.body))

    def _check_foreign(self, entry: Entry) -> None:
        if entry.model is None:
            return
        pods = selector(entry.model)
        entry.foreign = {
            name
            for (ns, name), policy in self.state.foreign_policies.items()
            if ns == entry.namespace and widens(policy, pods)
        }

    # --- resync ----------------------------------------------------------------------------

    async def adopt_missed(self, bodies: list[dict[str, Any]]) -> int:
        """Reconcile listed workloads that no watch event brought (or brought stale)."""
        adopted = 0
        for body in bodies:
            known = self.state.workloads.get(workload_key_of_cr(body))
            if known is not None and resource_version(known.body) >= resource_version(body):
                continue
            entry = self.observe_workload(body)
            if entry is None:
                continue
            adopted += 1
            log.info("resync found %s/%s unreconciled", entry.namespace, entry.name)
            try:
                await self.reconcile(entry)
            except ApiError:
                continue  # logged with an Event by reconcile(); the next resync retries
        return adopted

    async def resync(self) -> int:
        """Compare every child with its desired state; write only where they differ."""
        writes = 0
        for key, entry in list(self.state.workloads.items()):
            if entry.namespace in self.state.terminating:
                continue
            try:
                writes += await self._resync_one(key, entry)
            except ApiError as exc:
                log.warning("resync of %s/%s failed: %s", entry.namespace, entry.name, exc)
        return writes

    async def _resync_one(self, key: WorkloadKey, entry: Entry) -> int:
        stale = entry.reconciled_generation != entry.generation
        if (
            stale
            or entry.rejected_by_cluster
            or (self.hooks is not None and self.hooks.needs_refresh(entry))
        ):
            await self.reconcile(entry)
            return 0
        if entry.rejected is not None:
            return 0
        writes = 0
        live = self.state.live_children(key)
        for child, desired in list(entry.desired.items()):
            body = live.get(child)
            diffs = ["deleted"] if body is None else differences(desired, body)
            if diffs and (body is not None or await self._owner_alive(entry)):
                await self._revert(entry, desired, body, diffs, time.perf_counter())
                writes += 1
        async with entry.lock:
            await self._write_status(entry)
        return writes


def slim_policy(body: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": body.get("metadata", {}), "spec": body.get("spec", {})}


def _changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Which status fields (and condition types) a write changes, for the log."""
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    out = [k for k in keys if k != "conditions"]
    if "conditions" in keys:
        old = {c.get("type"): c for c in before.get("conditions") or []}
        new = {c.get("type"): c for c in after.get("conditions") or []}
        out += [
            f"conditions.{t}" for t in sorted(old.keys() | new.keys()) if old.get(t) != new.get(t)
        ]
    return out


def _ready(status: dict[str, Any]) -> tuple[str | None, str | None]:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status"), cond.get("reason")
    return None, None
