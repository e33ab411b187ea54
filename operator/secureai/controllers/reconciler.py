"""Reconcile workloads into children, revert drift, keep status. No kopf in here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from secureai.api import Policy, SecureTrainingJob, parse_workload
from secureai.api.errors import one_line
from secureai.api.status import DatasetCensus
from secureai.clock import Clock, SystemClock, iso
from secureai.controllers import metrics
from secureai.controllers.queue import WorkQueue
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
from secureai.judge import isolation
from secureai.judge.drift import Expected, differences, digest, repaired
from secureai.k8s.client import ApiError, KubeClient, NotLeader
from secureai.k8s.resources import WORKLOAD_RESOURCES
from secureai.render import PSS_LABELS, Containment, PolicyViolation, render
from secureai.render.containment import contain, exclude_workloads, excluded
from secureai.render.meta import ANNOTATION_RETAINED, selector
from secureai.render.status import (
    Observed,
    compute_status,
    init_failure,
    pod_failure,
    rejected_status,
    verified_model,
)
from secureai.render.training import dataset_census

log = logging.getLogger("secureai")

NAMESPACE_MARKER = "secureai.dev/workloads"
APPLY_FIRST = frozenset({"ServiceAccount", "NetworkPolicy", "PersistentVolumeClaim", "Secret"})
ALERT_REASONS = frozenset({"ModelVerificationFailed", "Failed"})
FINAL_PHASES = frozenset({"Succeeded", "Failed"})
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


class Containments(Protocol):
    """What the Quarantines make of a workload (controllers/quarantine.py)."""

    def of(self, entry: Entry, children: list[dict[str, Any]]) -> Containment | None:
        """The containment the active Quarantines call for (None: not contained)."""

    def blocked(self, entry: Entry, children: list[dict[str, Any]]) -> str | None:
        """Why a new workload is refused by a blocking Quarantine, or None."""

    def contained(self, entry: Entry, containment: Containment | None) -> None:
        """The rendered containment (or its release) is in place."""

    def signal(self, entry: Entry, signal: str, message: str) -> None:
        """A signal that may quarantine the workload (policy autoQuarantine)."""


class NoQuarantines:
    def of(self, entry: Entry, children: list[dict[str, Any]]) -> Containment | None:
        return None

    def blocked(self, entry: Entry, children: list[dict[str, Any]]) -> str | None:
        return None

    def contained(self, entry: Entry, containment: Containment | None) -> None:
        return None

    def signal(self, entry: Entry, signal: str, message: str) -> None:
        return None


class Lifecycle(Protocol):
    """What a finished run leaves (controllers/provenance.py): provenance and retention."""

    async def on_status(
        self, entry: Entry, status: dict[str, Any], job: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Record a finished run; return the status with its provenance in lineage."""

    def output_expired(self, workload_uid: str) -> bool:
        """Whether retention deleted the workload's output (not to be re-created)."""


class ChildRefused(Exception):
    """The API server refuses a rendered child as invalid (422): the spec must change."""


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        policy: Policy,
        emit: Emit,
        *,
        hooks: Hooks | None = None,
        clock: Clock | None = None,
        leading: Callable[[], bool] = lambda: True,
        containments: Containments | None = None,
    ) -> None:
        self.kube = kube
        self.containments: Containments = containments or NoQuarantines()
        self.policy = policy
        self.emit = emit
        self.hooks = hooks
        self.lifecycle: Lifecycle | None = None
        self.clock: Clock = clock or SystemClock()
        self.state = State()
        self._status_tasks: dict[WorkloadKey, asyncio.Task[None]] = {}
        self._status_again: set[WorkloadKey] = set()
        self._slots = asyncio.Semaphore(RECONCILE_SLOTS)
        self._namespace_locks: dict[str, asyncio.Lock] = {}
        self._namespace_versions: dict[str, int] = {}
        self._phases: dict[tuple[str, str], int] = {}
        self.leading = leading
        # Workloads whose work found this replica not leading (a standby, or a renewal late).
        self.deferred: set[WorkloadKey] = set()
        # Every failure of a reconcile, revert or resync comes back through this queue.
        self.queue: WorkQueue[WorkloadKey] = WorkQueue("sync", self.sync, workers=RECONCILE_SLOTS)

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
        self.state.pods.pop(key, None)
        self._status_again.discard(key)
        self.deferred.discard(key)
        self.queue.forget(key)
        task = self._status_tasks.pop(key, None)
        if task is not None and not task.done():
            task.cancel()

    def enqueue(self, key: WorkloadKey) -> None:
        """Hand a workload to the queue (the one path that retries whatever failed)."""
        if key in self.state.workloads:
            self.queue.add(key)

    async def sync(self, key: WorkloadKey) -> None:
        """The queue's worker: reconcile a workload whose spec is not yet applied, else
        compare its children and revert drift. A standby only prepares (warm caches)."""
        entry = self.state.workloads.get(key)
        if entry is None:
            self.queue.forget(key)
            return
        if entry.namespace in self.state.terminating:
            return
        if not self.leading():
            self.deferred.add(key)
            await self.prepare(entry)
            return
        try:
            await self._resync_one(key, entry)
        except NotLeader:
            self.deferred.add(key)  # leadership lapsed mid-way: done once it is back

    def resume(self) -> None:
        """Leading (again): queue the work deferred while this replica could not write."""
        while self.deferred:
            self.enqueue(self.deferred.pop())

    async def prepare(self, entry: Entry) -> None:
        """What a standby does instead of reconciling: render, and obtain the stored form of
        every child (dry-runs persist nothing), so that a take-over compares at once."""
        if entry.prepared_generation == entry.generation:
            return
        async with self._slots, entry.lock:
            await self._reconcile_locked(entry, dry=True)
        entry.prepared_generation = entry.generation

    async def prepare_all(self) -> None:
        """A standby's start: prepare every known workload, so that it is ready to take over
        from warm caches (its readiness waits for this)."""

        async def one(key: WorkloadKey, entry: Entry) -> None:
            if self.leading():
                return  # the take-over reconciles instead
            try:
                await self.prepare(entry)
            except Exception as exc:
                self._retry_later("prepare", key, exc)

        await asyncio.gather(*(one(k, e) for k, e in list(self.state.workloads.items())))

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

    async def contain_policies(self, entry: Entry, containment: Containment) -> None:
        """Containment's first step, before the full reconcile: the workload's policies in
        their contained form, written at once from what is already rendered."""
        key = workload_key_of_cr(entry.body)
        # Until its full reconcile (reconcile_now) is done, watch events of its children are
        # not compared: that reconcile compares them all, and 100 workloads contained at once
        # would otherwise double the API requests of this lane.
        entry.containing = True
        try:
            async with entry.lock:
                if not entry.desired or entry.rejected is not None:
                    return
                policies = [
                    m
                    for m in contain(list(entry.desired.values()), containment)
                    if m["kind"] == "NetworkPolicy"
                    and digest(m) != digest(entry.desired[("NetworkPolicy", m["metadata"]["name"])])
                ]
                for manifest in policies:
                    entry.desired[("NetworkPolicy", manifest["metadata"]["name"])] = manifest
                results = await asyncio.gather(*(self._apply(m) for m in policies))
                for result in results:
                    self.state.remember_child(result)
        except NotLeader:
            self.deferred.add(key)
        except Exception as exc:  # the full reconcile that follows tries again
            log.warning("contained policies of %s/%s: %s", entry.namespace, entry.name, exc)

    async def reconcile_now(self, entry: Entry) -> None:
        """Containment's lane: no wait for a reconcile slot; a failure goes to the queue."""
        key = workload_key_of_cr(entry.body)
        try:
            async with entry.lock:
                await self._reconcile_locked(entry)
        except NotLeader:
            self.deferred.add(key)
            return
        except Exception as exc:
            self._retry_later("containment", key, exc)
            return
        finally:
            entry.containing = False
        await self._write_status(entry)

    def _retry_later(self, work: str, key: WorkloadKey, exc: Exception) -> None:
        """Count and log a failure; the queue retries the workload with backoff."""
        metrics.WORK_FAILURES.labels(work, type(exc).__name__).inc()
        log.warning("%s of %s/%s failed: %s", work, key[1], key[2], exc)
        self.queue.add_after(key, self.queue.backoff(key))

    async def _reconcile_locked(self, entry: Entry, *, dry: bool = False) -> str:
        body = entry.body
        if entry.namespace in self.state.terminating:
            return "skipped"
        generation = entry.generation
        try:
            model = parse_workload(body)
            desired = render(model, self.policy)
        except ValidationError as exc:
            return "rejected" if dry else await self._reject(entry, one_line(exc))
        except (PolicyViolation, ValueError) as exc:
            return "rejected" if dry else await self._reject(entry, str(exc))
        blocked = self.containments.blocked(entry, desired)
        if blocked is not None:
            return "rejected" if dry else await self._reject(entry, blocked)
        containment = self.containments.of(entry, desired)
        if containment is not None:
            desired = contain(desired, containment)
        entry.model = model
        if self.hooks is not None:
            live = self.state.live_children(workload_key_of_cr(body))
            reason = await self.hooks.prepare(entry, desired, live)
            if reason is not None:
                return "rejected" if dry else await self._reject(entry, reason, transient=True)
        if entry.reconciled_generation != generation:
            entry.model_digest = entry.model_signer = None
            entry.dataset_census = ()
        entry.rejected = None
        entry.rejected_by_cluster = False
        entry.desired = {(m["kind"], m["metadata"]["name"]): m for m in desired}
        entry.expected = {k: v for k, v in entry.expected.items() if k in entry.desired}
        if dry:
            await asyncio.gather(*(self._expected(entry, m) for m in desired))
            return "prepared"
        released = entry.containment is not None and containment is None
        await self._label_namespace(entry.namespace)
        first = [m for m in desired if m["kind"] in APPLY_FIRST]
        rest = [m for m in desired if m["kind"] not in APPLY_FIRST]
        written = 0
        try:
            for batch in (first, rest):
                written += sum(await asyncio.gather(*(self._ensure(entry, m) for m in batch)))
                if batch is first and containment is not None:
                    # own policies are contained: foreign ones and credentials go next; the
                    # containment counts as in place (entry.containment) only once all is done
                    await self._remove_foreign(entry, self._verdict(entry), contained=True)
                    await self._prune(entry)
                    entry.containment = containment
                    self.containments.contained(entry, containment)
                elif batch is first and released:
                    entry.containment = None
                    await self._readmit_foreign(entry)
        except ChildRefused as exc:  # no retry can change it: only a new spec
            return await self._reject(entry, str(exc))
        pruned = await self._prune(entry)
        if released:
            self.containments.contained(entry, None)
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
        await self._judge(entry, locked=True)
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
            entry.generation, entry.body.get("status"), reason[:1000], iso(self.clock.now())
        )
        await self._patch_status(entry, status)
        return "rejected"

    async def _ensure(self, entry: Entry, manifest: dict[str, Any]) -> bool:
        """Make a child exactly as desired; a child that already is writes nothing."""
        key = workload_key_of_cr(entry.body)
        child: ChildKey = (manifest["kind"], manifest["metadata"]["name"])
        live = self.state.live_children(key).get(child)
        if live is None and self._finished_job_gone(entry, child):
            return False
        if live is not None:
            expected = await self._expected(entry, manifest)
            if not differences(expected, live):
                return False
        try:
            result, created = await self._apply_created(manifest)
        except ApiError as exc:
            if exc.status != 422:
                raise
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            raise ChildRefused(f"the API server refuses {name}: {exc}") from None
        self.state.remember_child(result)
        if created:  # made from the manifest alone: the stored form is the expected one
            entry.expected[child] = Expected.of(manifest, result)
            return True
        await self._settle(entry, manifest, result)
        return True

    async def _expected(
        self, entry: Entry, manifest: dict[str, Any], *, refresh: bool = False
    ) -> Expected:
        """The desired child as the API server stores it: a dry-run create, cached by the
        desired manifest's digest (a new policy or spec renders a new manifest)."""
        child: ChildKey = (manifest["kind"], manifest["metadata"]["name"])
        known = entry.expected.get(child)
        if known is not None and not refresh and known.digest == digest(manifest):
            return known
        stored = await self.kube.dry_run_create(manifest)
        metrics.DRY_RUNS.labels(manifest["kind"]).inc()
        expected = entry.expected[child] = Expected.of(manifest, stored)
        return expected

    async def _settle(
        self, entry: Entry, manifest: dict[str, Any], result: dict[str, Any]
    ) -> dict[str, Any]:
        """After an apply: replace what other managers keep (an apply leaves their fields),
        and refresh a stale expected form (say, the API server's defaults changed)."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        expected = await self._expected(entry, manifest)
        if not differences(expected, result):
            return result
        if kind != "Job":
            result = await self._replace(entry, manifest, result)
            self.state.remember_child(result)
        left = differences(expected, result)
        if left:
            expected = await self._expected(entry, manifest, refresh=True)
            left = differences(expected, result)
        if left:
            log.error("%s/%s differs right after a write: %s", kind, name, left)
            self.emit(entry.body, "Warning", "DriftRevertIncomplete", f"{kind}/{name}: {left}")
        return result

    def _finished_job_gone(self, entry: Entry, child: ChildKey) -> bool:
        """A finished training's Job removed by its TTL is not drift: it is not recreated
        (the training would run again) and the workload keeps its final phase. Nor is an
        output volume that retention deleted."""
        status = entry.body.get("status") or {}
        if child[0] == "PersistentVolumeClaim" and self.lifecycle is not None:
            uid = str(entry.body["metadata"].get("uid"))
            return self.lifecycle.output_expired(uid)
        return (
            child[0] == "Job"
            and status.get("phase") in FINAL_PHASES
            and int(status.get("observedGeneration") or 0) == entry.generation
        )

    async def _apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return (await self._apply_created(manifest))[0]

    async def _apply_created(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        try:
            return await self.kube.apply_created(manifest)
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
        return await self.kube.apply_created(manifest)

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
        if model is None:
            return None
        if isinstance(model, SecureTrainingJob):
            await self._inspect_failed_job(entry, model)
            await self._inspect_census(entry, model)
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

    async def _inspect_failed_job(self, entry: Entry, model: SecureTrainingJob) -> None:
        """Once per generation of a failed Job: which container failed, and its one line."""
        job = self.state.live_children(workload_key_of_cr(entry.body)).get(("Job", entry.name))
        failed = any(
            c.get("type") == "Failed" and c.get("status") == "True"
            for c in ((job or {}).get("status") or {}).get("conditions") or []
        )
        if not failed or entry.job_failure_generation == entry.generation:
            return
        selector_text = ",".join(f"{k}={v}" for k, v in selector(model).items())
        pods = await self.kube.list("Pod", entry.namespace, label_selector=selector_text)
        entry.job_failure = pod_failure(pods)
        entry.job_failure_generation = entry.generation

    async def _inspect_census(self, entry: Entry, model: SecureTrainingJob) -> None:
        """The census each dataset init container reported, read from the trainer pods while
        the Job runs, until every dataset has one or the Job has finished (once then)."""
        status = entry.body.get("status") or {}
        if not entry.dataset_census and status.get("observedGeneration") == entry.generation:
            # Written by an earlier process: the pods may be gone by now.
            entry.dataset_census = tuple((status.get("lineage") or {}).get("datasetCensus") or ())
        if not model.spec.datasets or entry.census_generation == entry.generation:
            return
        job = self.state.live_children(workload_key_of_cr(entry.body)).get(("Job", entry.name))
        st = (job or {}).get("status") or {}
        finished = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in st.get("conditions") or []
        )
        if not (finished or st.get("active") or st.get("ready")):
            return
        selector_text = ",".join(f"{k}={v}" for k, v in selector(model).items())
        pods = await self.kube.list("Pod", entry.namespace, label_selector=selector_text)
        best: list[DatasetCensus] = []
        for pod in pods:
            found = dataset_census(model, pod.get("status") or {})
            if len(found) > len(best):
                best = found
        if best:
            entry.dataset_census = tuple(c.wire() for c in best)
        if finished or len(best) >= len(model.spec.datasets):
            entry.census_generation = entry.generation

    def _observed(self, entry: Entry, failure: str | None = None) -> Observed:
        key = workload_key_of_cr(entry.body)
        live = self.state.live_children(key)
        labels = self.state.namespaces.get(entry.namespace, {})
        return Observed(
            children={k: v for k, v in live.items() if k in entry.desired},
            missing=tuple(f"{k}/{n}" for (k, n) in sorted(entry.desired) if (k, n) not in live),
            foreign_policies=tuple(sorted(entry.foreign)),
            isolation=self._verdict(entry).condition,
            namespace_labelled=all(labels.get(k) == v for k, v in PSS_LABELS.items()),
            tls_not_after=entry.tls_not_after,
            drift_total=entry.drift_total,
            drift_last_time=entry.drift_last_time,
            drift_last_object=entry.drift_last_object,
            drift_last_change=entry.drift_last_change,
            init_failure=failure,
            job_failure=entry.job_failure,
            model_digest=entry.model_digest,
            model_signer=entry.model_signer,
            dataset_census=entry.dataset_census,
            quarantine=entry.containment.message if entry.containment else None,
            quarantine_stopped=bool(entry.containment and entry.containment.stop),
        )

    async def _write_status(self, entry: Entry) -> None:
        """Status writes of a workload are serialized by their own lock, apart from the
        reconcile/revert lock: a revert never waits behind a status write."""
        async with entry.status_lock:
            await self._write_status_locked(entry)

    async def _write_status_locked(self, entry: Entry) -> None:
        if entry.model is None or entry.rejected is not None:
            return
        if entry.namespace in self.state.terminating:
            return
        previous = entry.body.get("status") or {}
        live = self.state.live_children(workload_key_of_cr(entry.body))
        if any(
            c[0] == "Job" and self._finished_job_gone(entry, c) and c not in live
            for c in entry.desired
        ):
            if self.lifecycle is not None:  # the final phase stands; what it left may change
                await self._patch_status(
                    entry, await self.lifecycle.on_status(entry, previous, None)
                )
            return
        failure = await self._inspect_pods(entry)
        status = compute_status(
            entry.model,
            self.policy,
            self._observed(entry, failure),
            previous,
            iso(self.clock.now()),
        )
        if self.lifecycle is not None:
            status = await self.lifecycle.on_status(entry, status, live.get(("Job", entry.name)))
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
            if after[1] == "ModelVerificationFailed":
                self.containments.signal(entry, after[1], ready["message"])
        if entry.containment != self.containments.of(entry, list(entry.desired.values())):
            self.enqueue(workload_key_of_cr(entry.body))  # say, a digest now known matches

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
        if not self.leading():
            self.deferred.add(key)  # written once leading (again)
            return
        task = self._status_tasks.get(key)
        if task is not None and not task.done():
            self._status_again.add(key)
            return
        task = self._status_tasks[key] = asyncio.create_task(self._refresh_status(key))
        task.add_done_callback(lambda t: self._status_done(key, t))

    def _status_done(self, key: WorkloadKey, task: asyncio.Task[None]) -> None:
        if self._status_tasks.get(key) is task:
            del self._status_tasks[key]
        error = None if task.cancelled() else task.exception()
        if isinstance(error, NotLeader):
            self.deferred.add(key)
        elif error is not None:
            metrics.WORK_FAILURES.labels("status", type(error).__name__).inc()
            self.queue.add_after(key, self.queue.backoff(key))

    async def _refresh_status(self, key: WorkloadKey) -> None:
        # An event that comes while a refresh runs asks for one more, which sees it.
        while True:
            self._status_again.discard(key)
            await asyncio.sleep(0)
            entry = self.state.workloads.get(key)
            if entry is None or entry.model is None:
                return
            await self._write_status(entry)  # a failure goes to the queue (_status_done)
            if key not in self._status_again:
                return

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
        if desired is not None and self.leading() and not entry.containing:
            started = time.perf_counter()
            judged = None
            if kind == "NetworkPolicy":  # isolation is judged (Event, status) as the revert runs
                judged = asyncio.create_task(self._judge(entry))
            try:
                await self._check(entry, child, desired, None if deleted else body, started)
            finally:
                if judged is not None:
                    await judged
            if judged is not None:
                await self._judge(entry)
        if kind in ("Job", "Deployment"):
            self.schedule_status(key)

    async def _check(
        self,
        entry: Entry,
        child: ChildKey,
        desired: dict[str, Any],
        body: dict[str, Any] | None,
        started: float,
    ) -> None:
        """Revert a child seen by the watch (`body` None: deleted) if it is not as desired."""
        if body is None:
            if not self._finished_job_gone(entry, child) and await self._owner_alive(entry):
                await self._revert(entry, desired, None, ["deleted"], started)
            return
        key = workload_key_of_cr(entry.body)
        stored = self.state.live_children(key).version(child)
        if stored is None or stored <= resource_version(body):
            diffs = differences(await self._expected(entry, desired), body)
            if diffs:
                await self._revert(entry, desired, body, diffs, started)

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
                if live is None:
                    result = await self._apply(desired)
                    self.state.remember_child(result)
                    result = await self._settle(entry, desired, result)
                else:
                    result = await self._replace(entry, desired, live)
                    self.state.remember_child(result)
                    expected = await self._expected(entry, desired)
                    if differences(expected, result):
                        await self._settle(entry, desired, result)
            except ApiError as exc:
                if exc.status == 403 and "being terminated" in exc.message:
                    return
                log.warning("revert of %s/%s failed: %s", kind, name, exc)
                self.emit(entry.body, "Warning", "DriftRevertFailed", f"{kind}/{name}: {exc}")
                raise  # back to the queue, with backoff
            self._record_revert(entry, f"{kind}/{name}", diffs, started)
            await self._write_status(entry)

    async def _replace(
        self, entry: Entry, desired: dict[str, Any], live: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT the desired content over live metadata: what others added goes too."""
        for _ in range(3):
            try:
                return await self.kube.replace(repaired(desired, live))
            except ApiError as exc:
                if exc.status == 404 or (exc.status == 422 and desired["kind"] == "Job"):
                    return await self._apply(desired)
                if exc.status != 409:
                    raise
            meta = desired["metadata"]
            fresh = await self.kube.get(desired["kind"], meta["namespace"], meta["name"])
            if fresh is None:
                return await self._apply(desired)
            if not differences(await self._expected(entry, desired), fresh):
                return fresh
            live = fresh
        raise ApiError(409, "Conflict", "the object kept changing during the revert")

    def _record_revert(self, entry: Entry, obj: str, diffs: list[str], started: float) -> None:
        metrics.DRIFT_REVERTS.labels(obj.split("/", 1)[0]).inc()
        metrics.DRIFT_REVERT_SECONDS.observe(time.perf_counter() - started)
        change = ", ".join(diffs[:5]) + (f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else "")
        entry.drift_total += 1
        entry.drift_last_time = iso(self.clock.now())
        entry.drift_last_object = obj
        entry.drift_last_change = change[:300]
        log.info("reverted drift of %s in %s: %s", obj, entry.namespace, change)
        self.emit(entry.body, "Warning", "DriftReverted", f"{obj}: {change}"[:1000])
        self.containments.signal(entry, "DriftReverted", f"{obj}: {change}"[:300])

    # --- isolation ---------------------------------------------------------------------------

    async def on_watch_event(self, body: dict[str, Any], deleted: bool) -> None:
        """Route a child-kind event. Every NetworkPolicy is kept, ours or not: isolation is
        judged on all of them, and a policy is a workload's own only if that workload
        rendered it (a policy merely labelled as ours is foreign)."""
        if body["kind"] != "NetworkPolicy":
            await self.on_child(body, deleted)
            return
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        policies = self.state.policies.setdefault(ns, {})
        if deleted:
            policies.pop(name, None)
            if not policies:
                del self.state.policies[ns]
        else:
            policies[name] = slim_policy(body)
        if workload_key_of_child(body) is not None:  # ours, or claims to be: kept live
            await self.on_child(body, deleted)
        owner = self._owner_of_policy(body)
        if owner is not None:
            rendered = owner.desired[("NetworkPolicy", name)]
            selector_kept = (body.get("spec") or {}).get("podSelector") == rendered["spec"].get(
                "podSelector"
            )
            if selector_kept or deleted:
                return  # concerns the owner's pods only: judged by on_child
        for entry in self.state.in_namespace(ns):
            if entry is not owner:
                await self._judge(entry)

    def _owner_of_policy(self, body: dict[str, Any]) -> Entry | None:
        key = workload_key_of_child(body)
        entry = self.state.workloads.get(key) if key is not None else None
        if entry is None or ("NetworkPolicy", body["metadata"]["name"]) not in entry.desired:
            return None
        return entry

    async def on_pod(self, body: dict[str, Any], deleted: bool) -> None:
        """A workload's pod came, went or changed labels: judge isolation again."""
        key = workload_key_of_child(body)
        if key is None:
            return
        name = body["metadata"]["name"]
        labels = dict(body["metadata"].get("labels") or {})
        if deleted:
            pods = self.state.pods.get(key) or {}
            if pods.pop(name, None) is None:
                return
            if not pods:
                del self.state.pods[key]
        else:
            pods = self.state.pods.setdefault(key, {})
            if pods.get(name) == labels:
                return
            pods[name] = labels
        entry = self.state.workloads.get(key)
        if entry is not None:
            await self._judge(entry)

    def _verdict(self, entry: Entry) -> isolation.Verdict:
        """Isolation from what is live: the workload's pods (and pod templates) against
        every NetworkPolicy of its namespace."""
        key = workload_key_of_cr(entry.body)
        live = self.state.live_children(key)
        own = {n: m for (k, n), m in entry.desired.items() if k == "NetworkPolicy"}
        policies = dict(self.state.policies.get(entry.namespace, {}))
        drifted = set()
        for name, rendered in own.items():
            body = live.get(("NetworkPolicy", name))
            if body is None:
                policies.pop(name, None)
                continue
            policies[name] = body
            expected = entry.expected.get(("NetworkPolicy", name))
            if expected is None or expected.digest != digest(rendered):
                continue  # a new rendering (say, contained) is being applied right now
            if differences(expected, body):
                drifted.add(name)
        pods: dict[str, dict[str, str]] = dict(self.state.pods.get(key, {}))
        for (kind, name), child in entry.desired.items():
            if kind in ("Deployment", "Job"):
                body = live.get((kind, name)) or child
                template = body.get("spec", {}).get("template", {}).get("metadata", {})
                pods[f"template of {kind}/{name}"] = dict(template.get("labels") or {})
        return isolation.judge(pods, policies, own, frozenset(drifted))

    async def _judge(self, entry: Entry, *, locked: bool = False) -> None:
        """Act on the isolation verdict: remove (or report) foreign policies that widen
        access; on a change, an Event, a metric and a status write."""
        if entry.model is None or entry.rejected is not None or not entry.desired:
            return
        if (
            not self.leading()
            or entry.reconciled_generation != entry.generation
            or entry.containing
        ):
            return  # a reconcile in flight judges when it is done
        verdict = await self._remove_foreign(entry, self._verdict(entry))
        if verdict == entry.isolation:
            return
        before, entry.isolation = entry.isolation, verdict
        entry.foreign = set(verdict.widening)
        if not verdict.isolated:
            metrics.ISOLATION_LOST.labels(verdict.reason).inc()
            if verdict.widening:
                metrics.FOREIGN_POLICIES.labels("reported").inc()
            self.emit(entry.body, "Warning", verdict.reason, verdict.message[:1000])
        elif before is not None and not before.isolated:
            self.emit(entry.body, "Normal", "Isolated", verdict.message)
        await self._write_status(entry)

    async def _remove_foreign(
        self, entry: Entry, verdict: isolation.Verdict, *, contained: bool = False
    ) -> isolation.Verdict:
        """With `remove`: delete the policies that widen access and no workload rendered.
        A contained workload is excluded from every other widening policy (`report` too)."""
        remove = self.policy.foreign_network_policy == "remove"
        contained = contained or entry.containment is not None
        if not verdict.widening or not (remove or contained):
            return verdict
        rendered = {
            n
            for e in self.state.in_namespace(entry.namespace)
            for (k, n) in e.desired
            if k == "NetworkPolicy"
        }
        if not remove:
            narrowed = [n for n in verdict.widening if n not in rendered]
            for name in narrowed:
                await self._exclude(entry, name)
            return self._verdict(entry) if narrowed else verdict
        removed = [n for n in verdict.widening if n not in rendered]
        for name in removed:
            await self.kube.delete("NetworkPolicy", entry.namespace, name)
            self.state.policies.get(entry.namespace, {}).pop(name, None)
            metrics.FOREIGN_POLICIES.labels("removed").inc()
            self.emit(
                entry.body,
                "Warning",
                "ForeignNetworkPolicyRemoved",
                f"NetworkPolicy/{name} widened access to the workload's pods and was removed",
            )
        return self._verdict(entry) if removed else verdict

    def _to_exclude(self, namespace: str) -> set[str]:
        """Workloads of a namespace that foreign policies must not select: those contained,
        or about to be."""
        return {
            e.name
            for e in self.state.in_namespace(namespace)
            if e.model is not None
            and (e.containment or self.containments.of(e, list(e.desired.values())))
        }

    async def _exclude(self, entry: Entry, name: str) -> None:
        """Narrow (or widen back) a foreign policy so that it selects no pod of a contained
        workload of its namespace; its effect on every other pod is kept. One writer per
        namespace at a time: workloads contained together narrow a policy once."""
        namespace = entry.namespace
        async with self._namespace_locks.setdefault(f"policies/{namespace}", asyncio.Lock()):
            for _ in range(5):
                body = await self.kube.get("NetworkPolicy", namespace, name)
                if body is None:
                    self.state.policies.get(namespace, {}).pop(name, None)
                    return
                have, want = excluded(body), self._to_exclude(namespace)
                if not have and not want:
                    return
                if have == want:
                    self.state.policies.setdefault(namespace, {})[name] = slim_policy(body)
                    return
                body.setdefault("kind", "NetworkPolicy")
                body.setdefault("apiVersion", "networking.k8s.io/v1")
                try:
                    result = await self.kube.replace(exclude_workloads(body, want))
                except ApiError as exc:
                    if exc.status == 409:
                        continue
                    if exc.status == 404:
                        return
                    raise
                self.state.policies.setdefault(namespace, {})[name] = slim_policy(result)
                self.emit(
                    entry.body,
                    "Warning" if want - have else "Normal",
                    "ForeignNetworkPolicyNarrowed"
                    if want - have
                    else "ForeignNetworkPolicyRestored",
                    f"NetworkPolicy/{name} excludes the pods of "
                    + (", ".join(sorted(want)) or "no workload"),
                )
                return
        raise ApiError(409, "Conflict", f"NetworkPolicy/{name} kept changing")

    async def _readmit_foreign(self, entry: Entry) -> None:
        """Released: undo this workload's exclusions from foreign policies."""
        for name, body in list(self.state.policies.get(entry.namespace, {}).items()):
            if entry.name in excluded(body):
                await self._exclude(entry, name)

    # --- namespaces and foreign network policies --------------------------------------------

    async def on_namespace(self, body: dict[str, Any], deleted: bool = False) -> None:
        name = body["metadata"]["name"]
        if not deleted and resource_version(body) < self._namespace_versions.get(name, 0):
            return  # older than our own label write: the watch is catching up
        labels = body["metadata"].get("labels") or {}
        if deleted:  # gone: drop everything kept per namespace
            for table in (
                self.state.namespaces,
                self.state.policies,
                self._namespace_locks,
                self._namespace_versions,
            ):
                table.pop(name, None)
            self._namespace_locks.pop(f"policies/{name}", None)
            self.state.terminating.discard(name)
            return
        self.state.namespaces[name] = dict(labels)
        if (body.get("status") or {}).get("phase") == "Terminating":
            # Everything in it is going away: nothing to reconcile, revert or report.
            self.state.terminating.add(name)
            return
        self.state.terminating.discard(name)
        if not self.policy.pod_security_labels or not self.leading():
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
            self.enqueue(workload_key_of_cr(body))
        return adopted

    async def resync(self) -> int:
        """Compare every child with its desired state; write only where they differ.
        A workload whose resync fails goes to the queue (retried with backoff)."""
        writes = 0
        for key, entry in list(self.state.workloads.items()):
            if entry.namespace in self.state.terminating:
                continue
            if not self.leading():
                self.enqueue(key)  # the standby prepares instead
                continue
            try:
                writes += await self._resync_one(key, entry)
            except NotLeader:
                self.deferred.add(key)
                continue
            except Exception as exc:
                self._retry_later("resync", key, exc)
        return writes

    async def _resync_one(self, key: WorkloadKey, entry: Entry) -> int:
        stale = entry.reconciled_generation != entry.generation or (
            entry.model is not None
            and entry.containment != self.containments.of(entry, list(entry.desired.values()))
        )
        if (
            stale
            or entry.rejected_by_cluster
            or (self.hooks is not None and self.hooks.needs_refresh(entry))
        ):
            await self.reconcile(entry)
            return 0
        if entry.rejected is not None:
            return 0
        writes = await self._revert_children(key, entry)
        await self._judge(entry)
        await self._write_status(entry)
        return writes

    async def revert_from_cache(self, concurrency: int = 32) -> int:
        """A new leader's first pass: every workload whose current generation was applied
        (by this replica or the one before it) has its children compared with the watch
        cache and reverted, all workloads at once. The full reconcile follows in resync."""
        slots = asyncio.Semaphore(concurrency)

        async def one(key: WorkloadKey, entry: Entry) -> int:
            async with slots:
                try:
                    return await self._revert_children(key, entry)
                except NotLeader:
                    self.deferred.add(key)
                except Exception as exc:
                    self._retry_later("take-over", key, exc)
                return 0

        applied = [
            (key, entry)
            for key, entry in list(self.state.workloads.items())
            if entry.desired
            and entry.rejected is None
            and entry.namespace not in self.state.terminating
            and entry.generation in (entry.reconciled_generation, _observed_generation(entry.body))
        ]
        return sum(await asyncio.gather(*(one(key, entry) for key, entry in applied)))

    async def _revert_children(self, key: WorkloadKey, entry: Entry) -> int:
        """Revert each child that differs from its expected form; the number reverted."""
        writes = 0
        live = self.state.live_children(key)
        for child, desired in list(entry.desired.items()):
            body = live.get(child)
            if body is None:
                if self._finished_job_gone(entry, child) or not await self._owner_alive(entry):
                    continue
                diffs = ["deleted"]
            else:
                diffs = differences(await self._expected(entry, desired), body)
            if diffs:
                await self._revert(entry, desired, body, diffs, time.perf_counter())
                writes += 1
        return writes


def _observed_generation(body: dict[str, Any]) -> int:
    try:
        return int((body.get("status") or {}).get("observedGeneration") or -1)
    except (TypeError, ValueError):
        return -1


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
