"""Children of a SecureTrainingJob."""

from __future__ import annotations

import json
import re
from typing import Any, get_args

from secureai.api import Policy, SecureTrainingJob
from secureai.api.kinds import PersonalDataType
from secureai.api.status import DatasetCensus
from secureai.render.meta import ANNOTATION_RETAINED, metadata, selector
from secureai.render.pod import PodParts, helper_container, pod_template

DECRYPTED_SIZE = "1Gi"
KEK_DIR = "/var/run/secrets/secureai/kek"
# The dataset init containers write their census here; the kubelet hands it to the operator
# as the container's termination message (schema in docs/data-minimisation.md).
CENSUS_REPORT = "/dev/termination-log"
CENSUS_SCHEMA = "secureai.dev/dataset-census-summary/v1"
# What `dataset decrypt --report` writes when no scan runs: the dataset's digests only.
DIGESTS_SCHEMA = "secureai.dev/dataset-digests/v1"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DECRYPT_ARGS = ["dataset", "decrypt", "--key", f"{KEK_DIR}/kek", "--report", CENSUS_REPORT]


def allowed_personal_data(cr: SecureTrainingJob, policy: Policy) -> list[str] | None:
    """The personal-data types the job's datasets may hold (None: no rule, no scan).

    The job can only narrow the cluster policy (the intersection applies); a policy that
    allows every type and a job that says nothing make no rule.
    """
    mine, cluster = cr.spec.allowed_personal_data, set(policy.dataset_allowed_personal_data)
    if mine is None:
        return None if cluster >= set(get_args(PersonalDataType)) else sorted(cluster)
    return sorted(set(mine) & cluster)


def _scan_args(allowed: list[str]) -> list[str]:
    return [
        "dataset",
        "scan",
        "--allow",
        ",".join(allowed) or "none",
        "--report",
        CENSUS_REPORT,
        "--max-locations",
        "0",
    ]


def _census(message: str | None, claim_name: str) -> DatasetCensus | None:
    try:
        summary = json.loads(message or "")
    except ValueError:
        return None
    if not isinstance(summary, dict):
        return None
    digests = {
        key: summary[wire]
        for key, wire in (
            ("envelope_digest", "envelopeDigest"),
            ("plaintext_digest", "plaintextDigest"),
        )
        if isinstance(summary.get(wire), str) and DIGEST_RE.match(summary[wire])
    }
    if summary.get("schema") == DIGESTS_SCHEMA:
        return DatasetCensus(claim_name=claim_name, **digests) if digests else None
    if summary.get("schema") != CENSUS_SCHEMA:
        return None
    counts = summary.get("counts")
    violation = summary.get("violation")
    try:
        return DatasetCensus(
            claim_name=claim_name,
            files=summary.get("files", 0),
            unreadable=summary.get("unreadable", 0),
            bytes=summary.get("bytes", 0),
            counts=counts if isinstance(counts, dict) and counts else None,
            violation=violation if isinstance(violation, str) else None,
            **digests,
        )
    except ValueError:
        return None


def dataset_census(cr: SecureTrainingJob, pod_status: dict[str, Any]) -> list[DatasetCensus]:
    """The census each dataset init container of a trainer pod left in its termination message.

    ``pod_status`` is a Pod's ``status``; datasets whose container has not finished, or left
    no census (no rule, or a failure before the scan ended), are absent.
    """
    finished: dict[str, str | None] = {}
    for st in pod_status.get("initContainerStatuses") or []:
        for key in ("state", "lastState"):
            term = (st.get(key) or {}).get("terminated")
            if term and st.get("name") not in finished:
                finished[st.get("name")] = term.get("message")
    out = []
    for i, dataset in enumerate(cr.spec.datasets or []):
        for name in (f"decrypt-{i}", f"scan-{i}"):
            census = _census(finished.get(name), dataset.claim_name)
            if census is not None:
                out.append(census)
    return out


def headless_service_name(cr: SecureTrainingJob) -> str:
    return f"{cr.metadata.name}-workers"


def output_claim_name(cr: SecureTrainingJob) -> str:
    return f"{cr.metadata.name}-output"


def _parts(cr: SecureTrainingJob, policy: Policy) -> PodParts:
    spec = cr.spec
    parts = PodParts()
    allowed = allowed_personal_data(cr, policy)
    for i, dataset in enumerate(spec.datasets or []):
        path = dataset.mount_path or f"/datasets/{dataset.claim_name}"
        source = {
            "name": f"dataset-{i}",
            "persistentVolumeClaim": {"claimName": dataset.claim_name, "readOnly": True},
        }
        parts.volumes.append(source)
        if not dataset.encrypted:
            parts.mounts.append({"name": f"dataset-{i}", "mountPath": path, "readOnly": True})
            if allowed is not None:
                parts.init_containers.append(
                    helper_container(
                        f"scan-{i}",
                        policy,
                        [*_scan_args(allowed), "/dataset"],
                        [{"name": f"dataset-{i}", "mountPath": "/dataset", "readOnly": True}],
                    )
                )
            continue
        plain = f"dataset-{i}-plain"
        key = f"dataset-{i}-key"
        parts.volumes += [
            {
                "name": plain,
                "emptyDir": {
                    "medium": "Memory",
                    "sizeLimit": dataset.decrypted_size_limit or DECRYPTED_SIZE,
                },
            },
            {"name": key, "secret": {"secretName": dataset.key_secret, "defaultMode": 0o440}},
        ]
        parts.init_containers.append(
            helper_container(
                f"decrypt-{i}",
                policy,
                [*DECRYPT_ARGS, "/encrypted", "/plain"]
                if allowed is None
                # Scan while decrypting: one pass, and refused data never reaches the trainer.
                else [
                    *_scan_args(allowed),
                    "--key",
                    f"{KEK_DIR}/kek",
                    "--decrypt-to",
                    "/plain",
                    "/encrypted",
                ],
                [
                    {"name": f"dataset-{i}", "mountPath": "/encrypted", "readOnly": True},
                    {"name": plain, "mountPath": "/plain"},
                    {"name": key, "mountPath": KEK_DIR, "readOnly": True},
                ],
            )
        )
        parts.mounts.append({"name": plain, "mountPath": path, "readOnly": True})
    if spec.output is not None:
        parts.volumes.append(
            {"name": "output", "persistentVolumeClaim": {"claimName": output_claim_name(cr)}}
        )
        parts.mounts.append({"name": "output", "mountPath": spec.output.mount_path or "/output"})
    if spec.scratch is not None:
        parts.volumes.append(
            {
                "name": "scratch",
                "emptyDir": {"medium": "Memory", "sizeLimit": spec.scratch.size_limit},
            }
        )
        parts.mounts.append({"name": "scratch", "mountPath": spec.scratch.mount_path or "/scratch"})
    return parts


def render_training(cr: SecureTrainingJob, policy: Policy) -> list[dict[str, Any]]:
    spec = cr.spec
    out: list[dict[str, Any]] = []
    if spec.output is not None:
        keep = spec.retention.keep_output if spec.retention else True
        extra = {"annotations": {ANNOTATION_RETAINED: "true"}} if keep else {}
        out.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": metadata(cr, output_claim_name(cr), "output", owned=not keep, **extra),
                "spec": {
                    "accessModes": ["ReadWriteOnce" if spec.workers == 1 else "ReadWriteMany"],
                    "storageClassName": spec.output.storage_class_name
                    or policy.encrypted_storage_classes[0],
                    "resources": {"requests": {"storage": spec.output.size}},
                },
            }
        )
    if spec.workers > 1:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata(cr, headless_service_name(cr), "workers"),
                "spec": {
                    "clusterIP": "None",
                    "selector": selector(cr),
                    "publishNotReadyAddresses": True,
                },
            }
        )
    template = pod_template(cr, policy, "trainer", _parts(cr, policy))
    template["spec"]["restartPolicy"] = "Never"
    if spec.workers > 1:
        template["spec"]["subdomain"] = headless_service_name(cr)
    job: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.workers,
        "parallelism": spec.workers,
        "backoffLimit": spec.backoff_limit if spec.backoff_limit is not None else 0,
    }
    if spec.active_deadline_seconds is not None:
        job["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.retention and spec.retention.ttl_seconds_after_finished is not None:
        job["ttlSecondsAfterFinished"] = spec.retention.ttl_seconds_after_finished
    job["template"] = template
    out.append(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": metadata(cr, cr.metadata.name, "trainer"),
            "spec": job,
        }
    )
    return out
