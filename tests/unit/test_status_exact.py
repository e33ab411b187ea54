"""The whole status subresource for each state a workload can be in, compared exactly.

test_status.py checks one field at a time; a mutation run of `render/status.py` showed that
its tests pass when a condition's status is spelled "TRUE", a reason or message changes, a
condition is renamed, or a transition time is lost. kstatus, `kubectl wait
--for=condition=Ready` and Argo CD read these strings verbatim, so each state is pinned here
with every condition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from secureai.api import Policy, SecureInferenceService, SecureTrainingJob, parse_workload
from secureai.render.status import (
    Observed,
    compute_status,
    init_failure,
    pod_failure,
    rejected_status,
)

REPO = Path(__file__).resolve().parents[2]
POLICY = Policy.from_yaml(REPO / "examples" / "policy.yaml")
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"
GEN = 4

ISOLATED = ("True", "DefaultDeny", "ingress and egress default-deny")
HARDENED = ("True", "RestrictedProfile", "pods meet Pod Security restricted")
IN_SYNC = ("False", "InSync", "children match the rendered state")
NOT_STALLED = ("False", "Progressing", "")
RECONCILED = ("False", "Reconciled", f"generation {GEN} reconciled")


def load(name: str, **spec: Any) -> Any:
    doc = yaml.safe_load((REPO / "examples" / name).read_text())
    doc["metadata"]["generation"] = GEN
    doc["spec"].update(spec)
    return parse_workload(doc)


def c(kind: str, status: str, reason: str, message: str, at: str = T0) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": GEN,
        "lastTransitionTime": at,
    }


def conditions(
    ready: tuple[str, str, str],
    stalled: tuple[str, str, str],
    reconciling: tuple[str, str, str],
    isolated: tuple[str, str, str],
    hardened: tuple[str, str, str],
    encrypted: tuple[str, str, str],
    placed: tuple[str, str, str],
    drift: tuple[str, str, str],
    at: str = T0,
) -> list[dict[str, Any]]:
    kinds = ("Ready", "Stalled", "Reconciling", "Isolated", "Hardened", "Encrypted", "Placed")
    values = (ready, stalled, reconciling, isolated, hardened, encrypted, placed, drift)
    return [c(k, *v, at=at) for k, v in zip((*kinds, "Drift"), values, strict=True)]


def digest_of(cr: Any) -> str:
    image: str = cr.spec.image
    return image.split("@", 1)[1]


def deployment(generation: int, available: int, updated: int, ready: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": generation,
            "availableReplicas": available,
            "updatedReplicas": updated,
            "readyReplicas": ready,
        },
    }


# ------------------------------------------------------------------------------ inference


def test_ready_cpu_inference_with_issued_tls_and_verified_model() -> None:
    cr = load("inference-cpu.yaml")
    assert isinstance(cr, SecureInferenceService)
    obs = Observed(
        children={
            ("Service", "embeddings"): {},
            ("Deployment", "embeddings"): deployment(2, 1, 1, 1),
        },
        tls_not_after=T1,
        model_digest="model-digest",
        model_signer="signer-fingerprint",
    )
    assert compute_status(cr, POLICY, obs, None, T0) == {
        "phase": "Ready",
        "observedGeneration": GEN,
        "gpus": 0,
        "conditions": conditions(
            ("True", "Available", "1 of 1 replicas available"),
            NOT_STALLED,
            RECONCILED,
            ISOLATED,
            HARDENED,
            ("True", "TLSIssued", f"serving certificate valid until {T1}"),
            ("True", "NoGpuRequested", "CPU-only workload"),
            IN_SYNC,
        ),
        "children": [
            {"kind": "Deployment", "name": "embeddings"},
            {"kind": "Service", "name": "embeddings"},
        ],
        "lineage": {
            "imageDigest": digest_of(cr),
            "modelDigest": "model-digest",
            "modelSigner": "signer-fingerprint",
        },
        "drift": {"revertsTotal": 0},
        "readyReplicas": 1,
        "tls": {"notAfter": T1},
    }


def test_gpu_inference_half_available_widened_unlabelled_and_reverted() -> None:
    cr = load("inference-gpu-guarded.yaml")
    assert isinstance(cr, SecureInferenceService)
    obs = Observed(
        children={("Deployment", "chat-llm"): deployment(1, 1, 1, 0)},
        foreign_policies=("zeta-open", "alpha-open"),
        namespace_labelled=False,
        drift_total=3,
        drift_last_time=T0,
        drift_last_object="NetworkPolicy/chat-llm-allow",
        drift_last_change="spec.ingress: changed",
    )
    progressing = ("Progressing", "1 of 2 replicas available")
    assert compute_status(cr, POLICY, obs, None, T0) == {
        "phase": "Pending",
        "observedGeneration": GEN,
        "gpus": 2,
        "conditions": conditions(
            ("False", *progressing),
            NOT_STALLED,
            ("True", *progressing),
            ("False", "ForeignNetworkPolicy", "widened by alpha-open, zeta-open"),
            ("False", "NamespaceUnlabelled", "namespace lacks enforce=restricted"),
            ("True", "TLSConfigured", "serving over TLS"),
            ("True", "GpuNodes", "1 GPU(s) per pod on GPU nodes"),
            (
                "False",
                "Reverted",
                "reverted NetworkPolicy/chat-llm-allow: spec.ingress: changed",
            ),
        ),
        "children": [{"kind": "Deployment", "name": "chat-llm"}],
        "lineage": {"imageDigest": digest_of(cr)},
        "drift": {
            "revertsTotal": 3,
            "lastRevertTime": T0,
            "lastObject": "NetworkPolicy/chat-llm-allow",
        },
        "readyReplicas": 0,
    }


def test_gpu_placement_follows_scheduled_replicas() -> None:
    cr = load("inference-gpu-guarded.yaml")
    key = ("Deployment", "chat-llm")

    def placed(obs: Observed) -> dict[str, Any]:
        status = compute_status(cr, POLICY, obs, None, T0)
        found: dict[str, Any] = status["conditions"][6]
        return found

    nothing = Observed(children={key: deployment(1, 0, 2, 0)})
    assert placed(nothing) == c("Placed", "Unknown", "Scheduling", "waiting for GPU nodes")
    ready = Observed(children={key: deployment(1, 2, 2, 2)})
    assert placed(ready) == c("Placed", "True", "GpuNodes", "1 GPU(s) per pod on GPU nodes")
    # a change without a reason says only that it changed
    reverted = Observed(drift_last_object="Service/chat-llm")
    drift = compute_status(cr, POLICY, reverted, None, T0)["conditions"][7]
    assert drift == c("Drift", "False", "Reverted", "reverted Service/chat-llm: changed")


def test_transition_times_move_only_when_a_condition_changes_status() -> None:
    cr = load("inference-cpu.yaml")
    key = ("Deployment", "embeddings")
    pending = compute_status(cr, POLICY, Observed(children={key: deployment(1, 0, 0, 0)}), None, T0)
    judged = ("False", "PodUnisolated", "pod embeddings-x has no default-deny")
    obs = Observed(children={key: deployment(1, 1, 1, 1)}, isolation=judged)
    ready = compute_status(cr, POLICY, obs, pending, T1)
    assert ready["conditions"] == [
        c("Ready", "True", "Available", "1 of 1 replicas available", at=T1),
        c("Stalled", *NOT_STALLED),
        c("Reconciling", *RECONCILED, at=T1),
        c("Isolated", *judged, at=T1),
        c("Hardened", *HARDENED),
        c("Encrypted", "True", "TLSConfigured", "serving over TLS"),
        c("Placed", "True", "NoGpuRequested", "CPU-only workload"),
        c("Drift", *IN_SYNC),
    ]
    # the live judgement stays False: its time is kept from the previous status
    again = compute_status(cr, POLICY, obs, ready, "2026-01-01T00:02:00Z")
    assert again["conditions"] == ready["conditions"]


def test_model_verification_failure_stalls_an_unready_service() -> None:
    cr = load("inference-cpu.yaml")
    why = "model-verify failed in pod embeddings-x: digest mismatch"
    obs = Observed(init_failure=why, missing=("Service/embeddings",))
    status = compute_status(cr, POLICY, obs, None, T0)
    assert status["phase"] == "Degraded"
    assert status["conditions"][:3] == [
        c("Ready", "False", "ModelVerificationFailed", why),
        c("Stalled", "True", "ModelVerificationFailed", why),
        c("Reconciling", "False", "ModelVerificationFailed", "stopped: " + why),
    ]
    # a service that is Ready is not degraded by an old failure in another pod
    ready = Observed(children={("Deployment", "embeddings"): deployment(1, 1, 1, 1)})
    recovered = Observed(children=ready.children, init_failure=why)
    assert compute_status(cr, POLICY, recovered, None, T0) == compute_status(
        cr, POLICY, ready, None, T0
    )


# ------------------------------------------------------------------------------- training


def _training(job: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
    cr = load("training-single-gpu.yaml")
    assert isinstance(cr, SecureTrainingJob)
    children = {} if job is None else {("Job", "finetune-small"): job}
    status: dict[str, Any] = compute_status(
        cr, POLICY, Observed(children=children, **fields), None, T0
    )
    return status


def _job(**status: Any) -> dict[str, Any]:
    return {"status": status}


def _done(kind: str) -> dict[str, Any]:
    return _job(conditions=[{"type": "Other", "status": "True"}, {"type": kind, "status": "True"}])


TRAINING_REST = (
    ISOLATED,
    HARDENED,
    ("True", "NoPersistentOutput", "no persistent volume written"),
)
GPU_NODES = ("True", "GpuNodes", "1 GPU(s) per pod on GPU nodes")
WAITING = ("Unknown", "Scheduling", "waiting for GPU nodes")


def test_training_job_states_in_full() -> None:
    done = ("Succeeded", "1 of 1 workers done")
    succeeded = _training(_done("Complete"), missing=("NetworkPolicy/finetune-small-allow",))
    assert succeeded == {
        "phase": "Succeeded",
        "observedGeneration": GEN,
        "gpus": 1,
        "conditions": conditions(
            ("True", *done), NOT_STALLED, RECONCILED, *TRAINING_REST, GPU_NODES, IN_SYNC
        ),
        "children": [{"kind": "Job", "name": "finetune-small"}],
        "lineage": {"imageDigest": digest_of(load("training-single-gpu.yaml"))},
        "drift": {"revertsTotal": 0},
    }
    why = "the Job failed: trainer failed in pod finetune-small-x: out of memory"
    failed = _training(
        _done("Failed"), job_failure="trainer failed in pod finetune-small-x: out of memory"
    )
    assert failed["phase"] == "Failed"
    assert failed["conditions"] == conditions(
        ("False", "Failed", why),
        ("True", "Failed", why),
        ("False", "Failed", "stopped: " + why),
        *TRAINING_REST,
        GPU_NODES,
        IN_SYNC,
    )
    # a failed Job stays Failed even if a child went missing since
    gone = _training(_done("Failed"), missing=("ServiceAccount/finetune-small",))
    assert gone["conditions"][0] == c("Ready", "False", "Failed", "the Job failed")
    running = _training(_job(ready=1))
    assert running["phase"] == "Running"
    assert running["conditions"] == conditions(
        ("True", "Running", "1 of 1 workers ready"),
        NOT_STALLED,
        RECONCILED,
        *TRAINING_REST,
        GPU_NODES,
        IN_SYNC,
    )
    pending = _training(_job())
    assert pending["phase"] == "Pending"
    assert pending["conditions"] == conditions(
        ("False", "Pending", "0 of 1 workers ready"),
        NOT_STALLED,
        ("True", "Pending", "0 of 1 workers ready"),
        *TRAINING_REST,
        WAITING,
        IN_SYNC,
    )
    missing = _training(None, missing=("Job/finetune-small", "NetworkPolicy/finetune-small-allow"))
    lacking = (
        "ChildrenMissing",
        "not yet applied: Job/finetune-small, NetworkPolicy/finetune-small-allow",
    )
    assert missing["phase"] == "Pending"
    assert missing["conditions"][:3] == [
        c("Ready", "False", *lacking),
        c("Stalled", *NOT_STALLED),
        c("Reconciling", "True", *lacking),
    ]


def test_training_output_and_datasets() -> None:
    cr = load(
        "training-distributed.yaml",
        datasets=[{"claimName": "corpus-a"}, {"claimName": "corpus-b"}],
    )
    status = compute_status(cr, POLICY, Observed(), None, T0)
    assert status["conditions"][5] == c(
        "Encrypted", "True", "EncryptedStorage", "output on an encrypted StorageClass"
    )
    assert status["lineage"] == {
        "imageDigest": digest_of(cr),
        "datasets": ["corpus-a", "corpus-b"],
    }
    assert status["gpus"] == 8


# ------------------------------------------------------------------------------- rejected


def test_rejected_status_in_full() -> None:
    cr = load("inference-cpu.yaml")
    before = compute_status(
        cr,
        POLICY,
        Observed(children={("Deployment", "embeddings"): deployment(1, 1, 1, 1)}),
        None,
        T0,
    )
    message = "spec.image: not pinned by digest"
    status = rejected_status(GEN + 1, before, message, T1)

    def r(kind: str, *value: str, at: str = T1) -> dict[str, Any]:
        return {**c(kind, *value, at=at), "observedGeneration": GEN + 1}

    assert status == {
        "phase": "Rejected",
        "observedGeneration": GEN + 1,
        "conditions": [
            r("Ready", "False", "Rejected", message),
            r("Stalled", "True", "Rejected", message),
            # Reconciling was False before: its time stays
            r("Reconciling", "False", "Rejected", "stopped: " + message, at=T0),
            *before["conditions"][3:],
        ],
    }
    assert [k["type"] for k in status["conditions"][3:]] == [
        "Isolated",
        "Hardened",
        "Encrypted",
        "Placed",
        "Drift",
    ]


# ---------------------------------------------------------------------- failures from pods


def test_failure_lines_fall_back_to_the_reason_then_to_failed() -> None:
    verify = {
        "metadata": {"name": "p"},
        "status": {
            "initContainerStatuses": [
                {
                    "name": "model-verify",
                    "state": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ]
        },
    }
    assert init_failure([verify], "model-verify") == "model-verify failed in pod p: Error"
    killed = {
        "metadata": {"name": "q"},
        "status": {
            "initContainerStatuses": [
                {"name": "decrypt", "state": {"terminated": {"exitCode": 0}}}
            ],
            "containerStatuses": [{"name": "trainer", "state": {"terminated": {"exitCode": 137}}}],
        },
    }
    assert pod_failure([killed]) == "trainer failed in pod q: failed"
