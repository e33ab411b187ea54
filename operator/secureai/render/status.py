"""Status from the live children. Pure: the caller passes the observations and the clock."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from secureai.api import Policy, SecureTrainingJob, Workload
from secureai.render.validate import image_digest

# Phases that stay until the spec changes (or, for Degraded, until what it names is fixed).
STALLED_PHASES = ("Failed", "Degraded", "Rejected", "Quarantined")


@dataclass(frozen=True)
class Observed:
    """What the controller saw of a workload's world."""

    children: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    init_failure: str | None = None
    # Why a training pod failed: its first container (init containers first) that exited non-zero.
    job_failure: str | None = None
    foreign_policies: tuple[str, ...] = ()
    # (status, reason, message) of Isolated as judged from live pods and policies (judge/).
    isolation: tuple[str, str, str] | None = None
    namespace_labelled: bool = True
    tls_not_after: str | None = None
    model_digest: str | None = None
    model_signer: str | None = None
    # The dataset init containers' census (DatasetCensus on the wire), training only.
    dataset_census: tuple[dict[str, Any], ...] = ()
    drift_total: int = 0
    drift_last_time: str | None = None
    drift_last_object: str | None = None
    drift_last_change: str | None = None
    # Why the workload is contained (the Quarantines and their reasons), or None.
    quarantine: str | None = None
    quarantine_stopped: bool = False


def _condition(
    previous: dict[str, dict[str, Any]],
    kind: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> dict[str, Any]:
    before = previous.get(kind)
    since = now
    if before is not None and before.get("status") == status:
        since = before.get("lastTransitionTime", now)
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def _progress(
    prev: dict[str, dict[str, Any]],
    phase: str,
    ready: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """kstatus's abnormal-true pair: Stalled=True for a terminal failure (kstatus: Failed),
    Reconciling=True while work is in flight (InProgress); both False once it is done."""
    if phase in STALLED_PHASES:
        stalled = ("True", reason, message)
        reconciling = ("False", reason, "stopped: " + message)
    elif ready != "True":
        stalled = ("False", "Progressing", "")
        reconciling = ("True", reason, message)
    else:
        stalled = ("False", "Progressing", "")
        reconciling = ("False", "Reconciled", f"generation {generation} reconciled")
    return [
        _condition(prev, "Stalled", *stalled, generation, now),
        _condition(prev, "Reconciling", *reconciling, generation, now),
    ]


def _find(obs: Observed, kind: str, name: str) -> dict[str, Any]:
    return obs.children.get((kind, name)) or {}


def _is_true(obj: dict[str, Any], kind: str) -> bool:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return True
    return False


def _readiness(cr: Workload, obs: Observed) -> tuple[str, str, str, str, bool]:
    """(phase, Ready status, reason, message, scheduled)."""
    name = cr.metadata.name
    if isinstance(cr, SecureTrainingJob):
        job = _find(obs, "Job", name)
        st = job.get("status", {})
        workers = cr.spec.workers
        if _is_true(job, "Complete"):
            return "Succeeded", "True", "Succeeded", f"{workers} of {workers} workers done", True
        if _is_true(job, "Failed"):
            why = f"the Job failed: {obs.job_failure}" if obs.job_failure else "the Job failed"
            return "Failed", "False", "Failed", why, True
        ready = int(st.get("ready") or 0)
        if job and ready + int(st.get("succeeded") or 0) >= workers:
            return "Running", "True", "Running", f"{ready} of {workers} workers ready", True
        return "Pending", "False", "Pending", f"{ready} of {workers} workers ready", ready > 0
    deployment = _find(obs, "Deployment", name)
    st = deployment.get("status", {})
    want = cr.spec.replicas
    available = int(st.get("availableReplicas") or 0)
    current = int(st.get("observedGeneration") or 0) >= int(
        deployment.get("metadata", {}).get("generation") or 0
    )
    if deployment and current and available >= want and int(st.get("updatedReplicas") or 0) >= want:
        return "Ready", "True", "Available", f"{available} of {want} replicas available", True
    return (
        "Pending",
        "False",
        "Progressing",
        f"{available} of {want} replicas available",
        available > 0,
    )


def compute_status(
    cr: Workload,
    policy: Policy,
    obs: Observed,
    previous: dict[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """The status subresource of a reconciled workload."""
    gen = cr.metadata.generation
    prev = {c["type"]: c for c in (previous or {}).get("conditions") or []}
    phase, ready, reason, message, scheduled = _readiness(cr, obs)
    if obs.init_failure and ready != "True":
        phase, ready, reason = "Degraded", "False", "ModelVerificationFailed"
        message = obs.init_failure
    elif obs.missing and phase not in ("Succeeded", "Failed"):
        phase, ready, reason = "Pending", "False", "ChildrenMissing"
        message = "not yet applied: " + ", ".join(obs.missing)
    if obs.quarantine:
        phase, ready, reason, message = "Quarantined", "False", "Quarantined", obs.quarantine
    gpu = cr.spec.gpu
    workers = cr.spec.workers if isinstance(cr, SecureTrainingJob) else cr.spec.replicas
    conditions = [_condition(prev, "Ready", ready, reason, message, gen, now)]
    conditions += _progress(prev, phase, ready, reason, message, gen, now)
    if obs.isolation is not None:
        conditions.append(_condition(prev, "Isolated", *obs.isolation, gen, now))
    elif obs.foreign_policies:
        conditions.append(
            _condition(
                prev,
                "Isolated",
                "False",
                "ForeignNetworkPolicy",
                "widened by " + ", ".join(sorted(obs.foreign_policies)),
                gen,
                now,
            )
        )
    else:
        conditions.append(
            _condition(
                prev, "Isolated", "True", "DefaultDeny", "ingress and egress default-deny", gen, now
            )
        )
    if policy.pod_security_labels and not obs.namespace_labelled:
        hardened = ("False", "NamespaceUnlabelled", "namespace lacks enforce=restricted")
    else:
        hardened = ("True", "RestrictedProfile", "pods meet Pod Security restricted")
    conditions.append(_condition(prev, "Hardened", *hardened, gen, now))
    if isinstance(cr, SecureTrainingJob):
        encrypted = (
            ("True", "EncryptedStorage", "output on an encrypted StorageClass")
            if cr.spec.output
            else ("True", "NoPersistentOutput", "no persistent volume written")
        )
    elif obs.tls_not_after:
        encrypted = ("True", "TLSIssued", f"serving certificate valid until {obs.tls_not_after}")
    else:
        encrypted = ("True", "TLSConfigured", "serving over TLS")
    conditions.append(_condition(prev, "Encrypted", *encrypted, gen, now))
    if gpu is None or gpu.count == 0:
        placed = ("True", "NoGpuRequested", "CPU-only workload")
    elif scheduled:
        placed = ("True", "GpuNodes", f"{gpu.count} GPU(s) per pod on GPU nodes")
    else:
        placed = ("Unknown", "Scheduling", "waiting for GPU nodes")
    conditions.append(_condition(prev, "Placed", *placed, gen, now))
    if obs.drift_last_object:
        drift = (
            "False",
            "Reverted",
            f"reverted {obs.drift_last_object}: {obs.drift_last_change or 'changed'}",
        )
    else:
        drift = ("False", "InSync", "children match the rendered state")
    conditions.append(_condition(prev, "Drift", *drift, gen, now))
    if obs.quarantine:
        how = "Stopped" if obs.quarantine_stopped else "Isolated"
        conditions.append(_condition(prev, "Quarantined", "True", how, obs.quarantine, gen, now))
    elif "Quarantined" in prev:
        released = ("False", "Released", "no active Quarantine contains the workload")
        conditions.append(_condition(prev, "Quarantined", *released, gen, now))
    lineage: dict[str, Any] = {}
    digest = image_digest(cr.spec.image)
    if digest:
        lineage["imageDigest"] = digest
    if isinstance(cr, SecureTrainingJob):
        if cr.spec.datasets:
            lineage["datasets"] = [d.claim_name for d in cr.spec.datasets]
        if obs.dataset_census:
            lineage["datasetCensus"] = list(obs.dataset_census)
    else:
        if obs.model_digest:
            lineage["modelDigest"] = obs.model_digest
        if obs.model_signer:
            lineage["modelSigner"] = obs.model_signer
    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": gen,
        "gpus": (gpu.count if gpu else 0) * workers,
        "conditions": conditions,
        "children": [{"kind": k, "name": n} for (k, n) in sorted(obs.children)],
        "lineage": lineage,
        "drift": {"revertsTotal": obs.drift_total},
    }
    if obs.drift_last_time:
        status["drift"]["lastRevertTime"] = obs.drift_last_time
        status["drift"]["lastObject"] = obs.drift_last_object
    if not isinstance(cr, SecureTrainingJob):
        status["readyReplicas"] = int(
            _find(obs, "Deployment", cr.metadata.name).get("status", {}).get("readyReplicas") or 0
        )
        if obs.tls_not_after:
            status["tls"] = {"notAfter": obs.tls_not_after}
    return status


def rejected_status(
    cr_generation: int, previous: dict[str, Any] | None, message: str, now: str
) -> dict[str, Any]:
    """Status of a spec that breaks policy or schema: nothing is created."""
    prev = {c["type"]: c for c in (previous or {}).get("conditions") or []}
    conditions = [_condition(prev, "Ready", "False", "Rejected", message, cr_generation, now)]
    conditions += _progress(prev, "Rejected", "False", "Rejected", message, cr_generation, now)
    for kind in ("Isolated", "Hardened", "Encrypted", "Placed", "Drift", "Quarantined"):
        if kind in prev:
            conditions.append(prev[kind])
    return {"phase": "Rejected", "observedGeneration": cr_generation, "conditions": conditions}


def init_failure(pods: list[dict[str, Any]], container: str) -> str | None:
    """Why a helper init container (e.g. model-verify) keeps failing, from pod statuses."""
    for pod in pods:
        for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
            if status.get("name") != container:
                continue
            for state in (status.get("state") or {}, status.get("lastState") or {}):
                done = state.get("terminated") or {}
                if done and int(done.get("exitCode") or 0) != 0:
                    detail = (done.get("message") or done.get("reason") or "failed").strip()
                    return f"{container} failed in pod {pod['metadata']['name']}: {detail}"[:500]
    return None


def pod_failure(pods: list[dict[str, Any]]) -> str | None:
    """The first container, init containers first, that exited non-zero, with its one line."""
    for pod in pods:
        status = pod.get("status") or {}
        for container in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            done = (container.get("state") or {}).get("terminated") or {}
            if done and int(done.get("exitCode") or 0) != 0:
                lines = (done.get("message") or done.get("reason") or "failed").strip().splitlines()
                detail = _reason(lines[-1]) if lines else "failed"
                name = pod["metadata"]["name"]
                return f"{container.get('name')} failed in pod {name}: {detail}"[:500]
    return None


def _reason(line: str) -> str:
    """A report left as the termination message (the dataset census summary, JSON) gives
    its `violation`; any other line is the reason itself."""
    try:
        report = json.loads(line)
    except ValueError:
        return line
    violation = report.get("violation") if isinstance(report, dict) else None
    return violation if isinstance(violation, str) and violation else line


def verified_model(pods: list[dict[str, Any]], container: str) -> tuple[str, str] | None:
    """(digest, signer fingerprint) that a successful model-verify reported, if any."""
    for pod in pods:
        for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
            done = (status.get("state") or {}).get("terminated") or {}
            if status.get("name") != container or done.get("exitCode") != 0:
                continue
            try:
                report = json.loads(done.get("message") or "")
            except ValueError:
                continue
            if isinstance(report, dict) and report.get("digest"):
                return str(report["digest"]), str(report.get("signer_fingerprint") or "")
    return None
