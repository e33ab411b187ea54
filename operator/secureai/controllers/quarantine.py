"""The quarantine controller: matches Quarantines to workloads, contains them first (a
priority lane beside the ordinary queue), then keeps the evidence and writes the status.

Containment itself is rendered by the workload's reconcile (render/containment.py), so drift
revert protects it. This controller decides *which* workloads, records them in the
Quarantine's status (sticky until release) and hands the evidence to k8s/evidence.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from secureai.api import API_VERSION, Policy
from secureai.api.errors import one_line
from secureai.api.quarantine import Quarantine
from secureai.clock import Clock, iso
from secureai.controllers import metrics
from secureai.controllers.reconciler import Emit, Reconciler
from secureai.controllers.state import Entry, workload_key_of_cr
from secureai.judge.quarantine import WorkloadFacts, blocked_by, containment, facts_of, matched_by
from secureai.k8s.client import ApiError, KubeClient, NotLeader
from secureai.k8s.resources import QUARANTINE
from secureai.render import Containment

log = logging.getLogger("secureai")

Ref = tuple[str, str, str]  # (kind, namespace, name)
EvidenceTask = Callable[[Quarantine, list[Ref]], Awaitable[tuple[str, str]]]


class QuarantineController:
    def __init__(self, kube: KubeClient, policy: Policy, emit: Emit, clock: Clock) -> None:
        self.kube = kube
        self.policy = policy
        self.emit = emit
        self.clock = clock
        self.reconciler: Reconciler | None = None
        self.quarantines: dict[str, Quarantine] = {}
        self.bodies: dict[str, dict[str, Any]] = {}
        # Quarantine -> workload -> its status entry (sticky until release).
        self.recorded: dict[str, dict[Ref, dict[str, Any]]] = {}
        self.evidence: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, str] = {}
        self.seen_at: dict[str, float] = {}
        self.collect_evidence: EvidenceTask | None = None
        self._status_tasks: dict[str, asyncio.Task[None]] = {}
        self._status_again: set[str] = set()
        self._evidence_tasks: dict[str, asyncio.Task[None]] = {}
        self._reverts: dict[Ref, deque[float]] = {}
        self._background: set[asyncio.Task[None]] = set()

    def attach(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler

    # --- what the reconciler asks -------------------------------------------------------------

    def _facts(self, entry: Entry, children: list[dict[str, Any]]) -> WorkloadFacts:
        return facts_of(entry.body, children, entry.model_digest)

    def of(self, entry: Entry, children: list[dict[str, Any]]) -> Containment | None:
        if not self.quarantines:
            return None
        recorded = {q: set(refs) for q, refs in self.recorded.items()}
        done = {q: q in self.evidence for q in self.quarantines}
        return containment(self.quarantines.values(), self._facts(entry, children), recorded, done)

    def blocked(self, entry: Entry, children: list[dict[str, Any]]) -> str | None:
        if not self.quarantines:
            return None
        if self.reconciler is not None and self.reconciler.state.live.get(
            workload_key_of_cr(entry.body)
        ):
            return None  # it has children already: contained, never left half-built
        facts = self._facts(entry, children)
        for quarantine in sorted(self.quarantines.values(), key=lambda q: q.metadata.name):
            if facts.ref in self.recorded.get(quarantine.metadata.name, {}):
                continue  # contained before it was updated: stays contained, not refused
            reason = blocked_by(quarantine, facts)
            if reason is not None:
                return reason
        return None

    def contained(self, entry: Entry, contained: Containment | None) -> None:
        """The reconcile put the containment (or its release) in place."""
        ref: Ref = (entry.kind, entry.namespace, entry.name)
        if contained is None:  # the status write's Ready change says so in an Event
            metrics.CONTAINED_WORKLOADS.set(self._contained_count())
            return
        now = time.monotonic()
        facts = self._facts(entry, list(entry.desired.values()))
        for name in contained.quarantines:
            quarantine = self.quarantines.get(name)
            records = self.recorded.setdefault(name, {})
            if quarantine is None or ref in records:
                continue
            seconds = round(now - self.seen_at.get(name, now), 3)
            metrics.CONTAINMENT_SECONDS.observe(seconds)
            records[ref] = {
                "kind": entry.kind,
                "namespace": entry.namespace,
                "name": entry.name,
                "matchedBy": matched_by(quarantine, facts) or "recorded",
                "containedAt": iso(self.clock.now()),
                "containmentSeconds": seconds,
            }
            self.schedule_status(name)  # the workload's Event comes with its status (Ready)
        metrics.CONTAINED_WORKLOADS.set(self._contained_count())

    def _contained_count(self) -> int:
        if self.reconciler is None:
            return 0
        return sum(1 for e in self.reconciler.state.workloads.values() if e.containment)

    # --- signals ------------------------------------------------------------------------------

    def signal(self, entry: Entry, signal: str, message: str) -> None:
        """A model that failed verification, or a drift revert (a storm counts them)."""
        auto = self.policy.auto_quarantine
        ref: Ref = (entry.kind, entry.namespace, entry.name)
        if signal == "DriftReverted":
            storm = auto.drift_storm
            if storm is None:
                return
            now = time.monotonic()
            times = self._reverts.setdefault(ref, deque())
            times.append(now)
            while times and times[0] < now - storm.window_seconds:
                times.popleft()
            if len(times) < storm.reverts:
                return
            times.clear()
            signal = "DriftStorm"
            message = (
                f"{storm.reverts} drift reverts within {storm.window_seconds} s; last: {message}"
            )
        elif signal != "ModelVerificationFailed" or not auto.model_verification_failed:
            return
        task = asyncio.get_running_loop().create_task(self._auto(entry, signal, message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _auto(self, entry: Entry, signal: str, message: str) -> None:
        digest = hashlib.sha256(f"{entry.kind}/{entry.namespace}/{entry.name}".encode())
        slug = f"auto-{signal.lower()}-{entry.namespace}-{entry.name}"[:53]
        name = f"{slug.rstrip('-')}-{digest.hexdigest()[:8]}"
        body = {
            "apiVersion": API_VERSION,
            "kind": "Quarantine",
            "metadata": {
                "name": name,
                "labels": {
                    "secureai.dev/signal": signal,
                    "app.kubernetes.io/managed-by": "secureai",
                },
            },
            "spec": {
                "match": {
                    "workloads": [
                        {"namespace": entry.namespace, "name": entry.name, "kind": entry.kind}
                    ]
                },
                "action": self.policy.auto_quarantine.action,
                "reason": f"{signal}: {message}"[:1024],
            },
        }
        try:
            await self.kube.request("POST", QUARANTINE.path(), body=body)
        except NotLeader:
            return
        except ApiError as exc:
            if exc.status != 409:  # 409: this signal already quarantined it
                log.warning("could not create Quarantine %s: %s", name, exc)
            return
        metrics.AUTO_QUARANTINES.labels(signal).inc()
        self.emit(entry.body, "Warning", "AutoQuarantine", f"created Quarantine/{name}: {signal}")

    # --- Quarantine events --------------------------------------------------------------------

    async def on_quarantine(self, body: dict[str, Any], deleted: bool) -> None:
        name = body["metadata"]["name"]
        log.debug("Quarantine/%s %s", name, "deleted" if deleted else "seen")
        if deleted:
            self.quarantines.pop(name, None)
            self.bodies.pop(name, None)
            self.recorded.pop(name, None)
            self.evidence.pop(name, None)
            self.seen_at.pop(name, None)
            task = self._evidence_tasks.pop(name, None)
            if task is not None:
                task.cancel()
        else:
            try:
                quarantine = Quarantine.model_validate(body)
            except ValidationError as exc:
                log.warning("Quarantine/%s ignored: %s", name, one_line(exc))
                return
            self.bodies[name] = body
            first = name not in self.quarantines
            before = self.quarantines.get(name)
            self.quarantines[name] = quarantine
            if first:
                self.seen_at[name] = time.monotonic()
                self._resume(name, body)
            if before is not None and before.spec == quarantine.spec:
                return  # our own status write coming back
        metrics.QUARANTINES_ACTIVE.set(sum(1 for q in self.quarantines.values() if q.active))
        await self.contain_all()
        if not deleted:
            self.schedule_status(name)

    def _resume(self, name: str, body: dict[str, Any]) -> None:
        """Carry over what an earlier process recorded in status (containment is sticky)."""
        status = body.get("status") or {}
        for item in status.get("contained") or []:
            ref: Ref = (item.get("kind", ""), item.get("namespace", ""), item.get("name", ""))
            self.recorded.setdefault(name, {})[ref] = dict(item)
        if status.get("evidence"):
            self.evidence[name] = dict(status["evidence"])

    async def contain_all(self) -> int:
        """Re-render every workload whose containment changes, all at once (not through the
        ordinary queue, which may be busy). Returns how many changed."""
        reconciler = self.reconciler
        if reconciler is None:
            return 0
        changed: list[tuple[Entry, Containment | None]] = []
        for entry in list(reconciler.state.workloads.values()):
            if entry.model is None or entry.rejected is not None:
                continue
            wanted = self.of(entry, list(entry.desired.values()))
            if wanted != entry.containment:
                changed.append((entry, wanted))
        if changed:
            started = time.perf_counter()
            log.info("containment changes for %d workload(s)", len(changed))
            # every policy first (contained, or restored on release), then the rest of each
            # workload (foreign policies, credentials, status)
            await asyncio.gather(
                *(
                    reconciler.contain_policies(e, c)
                    if c is not None
                    else reconciler.release_policies(e)
                    for e, c in changed
                )
            )
            policies = time.perf_counter() - started
            log.info("policies of %d workload(s) in place in %.3f s", len(changed), policies)
            await asyncio.gather(*(reconciler.reconcile_now(e) for e, _ in changed))
            log.info(
                "containment of %d workload(s): policies in %.3f s, all in %.3f s",
                len(changed),
                policies,
                time.perf_counter() - started,
            )
        return len(changed)

    # --- status -------------------------------------------------------------------------------

    def schedule_status(self, name: str) -> None:
        task = self._status_tasks.get(name)
        if task is not None and not task.done():
            self._status_again.add(name)
            return
        task = asyncio.get_running_loop().create_task(self._status_loop(name))
        self._status_tasks[name] = task

    async def _status_loop(self, name: str) -> None:
        while True:
            self._status_again.discard(name)
            try:
                await self._write_status(name)
            except NotLeader:
                return
            except ApiError as exc:
                if exc.status != 404:
                    log.warning("status of Quarantine/%s: %s", name, exc)
                return
            if name not in self._status_again:
                return

    def _status(self, quarantine: Quarantine) -> dict[str, Any]:
        name = quarantine.metadata.name
        records = sorted(
            self.recorded.get(name, {}).values(),
            key=lambda r: (r["namespace"], r["name"], r["kind"]),
        )
        entries = list(self.reconciler.state.workloads.values()) if self.reconciler else []
        targets = [
            e
            for e in entries
            if e.model is not None
            and e.rejected is None
            and name in getattr(self.of(e, list(e.desired.values())), "quarantines", ())
        ]
        contained = [e for e in targets if e.containment and name in e.containment.quarantines]
        if not quarantine.active:
            phase = "Released"
        elif len(contained) == len(targets):
            phase = "Contained"
        else:
            phase = "Containing"
        now = iso(self.clock.now())
        before_status = self.bodies[name].get("status") or {}
        previous = {c["type"]: c for c in before_status.get("conditions") or []}

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
            before = previous.get(kind) or {}
            since = before.get("lastTransitionTime", now) if before.get("status") == status else now
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "observedGeneration": quarantine.metadata.generation,
                "lastTransitionTime": since,
            }

        if phase == "Released":
            held = condition("Contained", "False", "Released", "containment lifted")
        elif phase == "Contained":
            held = condition(
                "Contained", "True", "Contained", f"{len(records)} workload(s) contained"
            )
        else:
            held = condition(
                "Contained",
                "False",
                "Containing",
                f"{len(contained)} of {len(targets)} workload(s) contained",
            )
        conditions = [held]
        if quarantine.spec.collect_evidence:
            if name in self.evidence:
                ev = ("True", "Sealed", f"bundle {self.evidence[name].get('digest')}")
            elif name in self.failures:
                ev = ("False", "CollectionFailed", self.failures[name])
            else:
                ev = ("Unknown", "Collecting", "evidence is being collected")
            conditions.append(condition("EvidenceCollected", *ev))
        status: dict[str, Any] = {
            "phase": phase,
            "observedGeneration": quarantine.metadata.generation,
            "contained": records,
            "containedCount": len(records),
            "conditions": conditions,
        }
        if name in self.evidence:
            status["evidence"] = self.evidence[name]
        return status

    async def _write_status(self, name: str) -> None:
        quarantine = self.quarantines.get(name)
        if quarantine is None:
            return
        status = self._status(quarantine)
        previous = self.bodies[name].get("status") or {}
        if status == previous:
            return
        result = await self.kube.patch_status(QUARANTINE, "", name, status)
        if name in self.bodies:
            self.bodies[name] = result
        if status["phase"] != previous.get("phase"):
            self.emit(
                result,
                "Normal" if status["phase"] != "Containing" else "Warning",
                status["phase"],
                status["conditions"][0]["message"],
            )
        if (
            status["phase"] == "Contained"
            and quarantine.spec.collect_evidence
            and name not in self.evidence
            and name not in self._evidence_tasks
            and status["contained"]
            and self.collect_evidence is not None
        ):
            task = asyncio.get_running_loop().create_task(self._evidence(quarantine))
            self._evidence_tasks[name] = task

    async def _evidence(self, quarantine: Quarantine) -> None:
        """After containment (never before it): collect, seal and store; then a Stop acts."""
        name = quarantine.metadata.name
        refs = sorted(self.recorded.get(name, {}))
        assert self.collect_evidence is not None
        try:
            reference, digest = await self.collect_evidence(quarantine, refs)
        except NotLeader:
            self._evidence_tasks.pop(name, None)
            return
        except Exception as exc:  # recorded in status; the containment stands
            log.warning("evidence of Quarantine/%s failed: %s", name, exc)
            self.failures[name] = str(exc)[:500]
            self._evidence_tasks.pop(name, None)
            self.schedule_status(name)
            return
        self.evidence[name] = {
            "reference": reference,
            "digest": digest,
            "collectedAt": iso(self.clock.now()),
            "workloads": len(refs),
        }
        self.failures.pop(name, None)
        self._evidence_tasks.pop(name, None)
        self.schedule_status(name)
        if quarantine.spec.action == "Stop":
            await self.contain_all()

    async def resync(self) -> None:
        """A new leader: contain what changed meanwhile and bring every status up to date."""
        await self.contain_all()
        for name in list(self.quarantines):
            self.schedule_status(name)
