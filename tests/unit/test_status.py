"""Status is computed from the real children's state (pure)."""

from __future__ import annotations

import json
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
    verified_model,
)

REPO = Path(__file__).resolve().parents[2]
POLICY = Policy.from_yaml(REPO / "examples" / "policy.yaml")
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def load(name: str) -> Any:
    doc = yaml.safe_load((REPO / "examples" / name).read_text())
    doc["metadata"]["generation"] = 4
    return parse_workload(doc)


def cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_training_phases_follow_the_job() -> None:
    cr = load("training-distributed.yaml")
    assert isinstance(cr, SecureTrainingJob)
    job = ("Job", cr.metadata.name)
    pending = compute_status(cr, POLICY, Observed(children={job: {"status": {}}}), None, T0)
    assert pending["phase"] == "Pending"
    assert cond(pending, "Ready")["status"] == "False"
    assert cond(pending, "Placed")["status"] == "Unknown"
    running = compute_status(
        cr, POLICY, Observed(children={job: {"status": {"ready": 4}}}), pending, T1
    )
    assert running["phase"] == "Running"
    assert cond(running, "Ready")["lastTransitionTime"] == T1
    assert cond(running, "Isolated")["lastTransitionTime"] == T0  # unchanged status keeps time
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    succeeded = compute_status(cr, POLICY, Observed(children={job: done}), running, T1)
    assert succeeded["phase"] == "Succeeded"
    assert succeeded["gpus"] == 8
    assert succeeded["observedGeneration"] == 4
    assert all(c["observedGeneration"] == 4 for c in succeeded["conditions"])
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert (
        compute_status(cr, POLICY, Observed(children={job: failed}), None, T1)["phase"] == "Failed"
    )


def test_inference_ready_needs_available_replicas_of_current_generation() -> None:
    cr = load("inference-gpu-guarded.yaml")
    assert isinstance(cr, SecureInferenceService)
    key = ("Deployment", cr.metadata.name)
    stale = {
        "metadata": {"generation": 2},
        "status": {"observedGeneration": 1, "availableReplicas": 2, "updatedReplicas": 2},
    }
    assert (
        compute_status(cr, POLICY, Observed(children={key: stale}), None, T0)["phase"] == "Pending"
    )
    fresh = {
        "metadata": {"generation": 2},
        "status": {
            "observedGeneration": 2,
            "availableReplicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
        },
    }
    obs = Observed(children={key: fresh}, tls_not_after="2026-01-02T00:00:00Z")
    status = compute_status(cr, POLICY, obs, None, T0)
    assert status["phase"] == "Ready"
    assert status["readyReplicas"] == 2
    assert status["tls"] == {"notAfter": "2026-01-02T00:00:00Z"}
    assert cond(status, "Encrypted")["reason"] == "TLSIssued"


def test_foreign_policy_and_unlabelled_namespace_show_in_conditions() -> None:
    cr = load("inference-cpu.yaml")
    obs = Observed(foreign_policies=("allow-all",), namespace_labelled=False)
    status = compute_status(cr, POLICY, obs, None, T0)
    assert cond(status, "Isolated")["status"] == "False"
    assert "allow-all" in cond(status, "Isolated")["message"]
    assert cond(status, "Hardened")["status"] == "False"


def test_drift_is_reported_in_status() -> None:
    cr = load("inference-cpu.yaml")
    obs = Observed(
        drift_total=3,
        drift_last_time=T1,
        drift_last_object="Deployment/embeddings",
        drift_last_change="spec.replicas: changed",
    )
    status = compute_status(cr, POLICY, obs, None, T1)
    assert status["drift"] == {
        "revertsTotal": 3,
        "lastRevertTime": T1,
        "lastObject": "Deployment/embeddings",
    }
    assert cond(status, "Drift")["reason"] == "Reverted"


def test_rejected_status_keeps_other_conditions() -> None:
    before = {
        "conditions": [
            {
                "type": "Isolated",
                "status": "True",
                "reason": "DefaultDeny",
                "message": "",
                "observedGeneration": 1,
                "lastTransitionTime": T0,
            }
        ]
    }
    status = rejected_status(2, before, "spec.image: not pinned", T1)
    assert status["phase"] == "Rejected"
    assert cond(status, "Ready")["reason"] == "Rejected"
    assert cond(status, "Isolated")["lastTransitionTime"] == T0


def test_missing_children_keep_the_workload_not_ready() -> None:
    cr = load("inference-cpu.yaml")
    key = ("Deployment", cr.metadata.name)
    available = {
        "metadata": {"generation": 1},
        "status": {"observedGeneration": 1, "availableReplicas": 1, "updatedReplicas": 1},
    }
    obs = Observed(children={key: available}, missing=("ServiceAccount/embeddings",))
    status = compute_status(cr, POLICY, obs, None, T0)
    assert status["phase"] == "Pending"
    assert cond(status, "Ready")["reason"] == "ChildrenMissing"
    assert "ServiceAccount/embeddings" in cond(status, "Ready")["message"]


def _pod(name: str, terminated: dict[str, Any], where: str = "state") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "initContainerStatuses": [{"name": "model-verify", where: {"terminated": terminated}}]
        },
    }


def test_model_verify_outcomes_are_read_from_pods() -> None:
    ok = _pod(
        "a",
        {"exitCode": 0, "message": '{"digest": "sha256:ab", "signer_fingerprint": "sha256:cd"}'},
    )
    bad = _pod("b", {"exitCode": 2, "message": "secureai: w.bin: digest mismatch"}, "lastState")
    assert verified_model([bad, ok], "model-verify") == ("sha256:ab", "sha256:cd")
    assert verified_model([bad], "model-verify") is None
    assert init_failure([ok], "model-verify") is None
    reason = init_failure([ok, bad], "model-verify")
    assert reason is not None and "pod b" in reason and "digest mismatch" in reason


def test_lineage_and_model_failure_in_status() -> None:
    cr = load("inference-cpu.yaml")
    obs = Observed(
        model_digest="sha256:ab", model_signer="sha256:cd", init_failure="model-verify failed"
    )
    status = compute_status(cr, POLICY, obs, None, T0)
    assert status["lineage"]["modelDigest"] == "sha256:ab"
    assert status["lineage"]["modelSigner"] == "sha256:cd"
    assert status["phase"] == "Degraded"
    assert cond(status, "Ready")["reason"] == "ModelVerificationFailed"


def test_a_failed_job_says_which_container_failed_and_why() -> None:
    cr = load("training-single-gpu.yaml")
    assert isinstance(cr, SecureTrainingJob)
    pods = [
        {
            "metadata": {"name": "train-0-x"},
            "status": {
                "initContainerStatuses": [
                    {"name": "decrypt-0", "state": {"terminated": {"exitCode": 0}}},
                    {
                        "name": "decrypt-1",
                        "state": {
                            "terminated": {
                                "exitCode": 2,
                                "message": "progress...\nsecureai: wrong key for f.bin\n",
                            }
                        },
                    },
                ],
                "containerStatuses": [
                    {"name": "trainer", "state": {"terminated": {"exitCode": 1}}}
                ],
            },
        }
    ]
    reason = pod_failure(pods)
    assert reason == "decrypt-1 failed in pod train-0-x: secureai: wrong key for f.bin"
    assert pod_failure([{"metadata": {"name": "p"}, "status": {}}]) is None
    # a dataset refused by the personal-data rule leaves its census summary (JSON): the
    # condition gives the violation, not the report
    summary = {"counts": {"email": 2, "us_ssn": 1}, "violation": "forbids: us_ssn=1"}
    refused = pods[0]["status"]["initContainerStatuses"][1]["state"]["terminated"]
    refused["message"] = json.dumps(summary)
    assert pod_failure(pods) == "decrypt-1 failed in pod train-0-x: forbids: us_ssn=1"
    refused["message"] = '{"no": "violation"}'
    assert pod_failure(pods) == 'decrypt-1 failed in pod train-0-x: {"no": "violation"}'
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    job = ("Job", cr.metadata.name)
    status = compute_status(
        cr, POLICY, Observed(children={job: failed}, job_failure=reason), None, T0
    )
    assert status["phase"] == "Failed"
    assert cond(status, "Ready")["message"] == f"the Job failed: {reason}"
