"""What a finished training run leaves behind: its SLSA provenance and its retention deadline.

Pure: every input is an object already read from the API server. The statements built here are
signed by the controllers (``secureai.controllers.provenance``); the format is in
docs/provenance.md.

The operator never reads the output volume's contents, so it cannot digest them. The subject
of a run's provenance is the output PVC's *identity* (namespace, name, uid, bound volume,
StorageClass, capacity), and its digest is ``sha256`` over that identity as canonical JSON:
what is recorded is which volume the run wrote to, not what it wrote. A run without an output
volume has its Job as the subject, digested the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from secureai import __version__
from secureai.api import Policy, SecureTrainingJob

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PROVENANCE_TYPE: Final = "https://slsa.dev/provenance/v1"
DELETION_TYPE: Final = "https://secureai.dev/retention/output-deleted/v1"
BUILD_TYPE: Final = "https://secureai.dev/provenance/SecureTrainingJob/v1"
BUILDER_ID: Final = "https://secureai.dev/operator"
_DIGEST = re.compile(r"@sha256:([0-9a-f]{64})$")


def canonical(obj: Any) -> bytes:
    """Compact JSON with sorted keys (the form that is digested and signed)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(obj: Any) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()


def _uri(namespace: str | None, plural: str, name: str) -> str:
    return f"k8s://{namespace or ''}/{plural}/{name}"


def volume_identity(pvc: dict[str, Any]) -> dict[str, Any]:
    """What identifies a PVC and the volume behind it (never its contents)."""
    meta, spec = pvc.get("metadata") or {}, pvc.get("spec") or {}
    requested = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    capacity = ((pvc.get("status") or {}).get("capacity") or {}).get("storage") or requested
    return {
        "kind": "PersistentVolumeClaim",
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "volumeName": spec.get("volumeName"),
        "storageClassName": spec.get("storageClassName"),
        "capacity": capacity,
    }


def _job_identity(job: dict[str, Any]) -> dict[str, Any]:
    meta = job.get("metadata") or {}
    return {
        "kind": "Job",
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
    }


def outcome(job: dict[str, Any]) -> tuple[str, str | None, str | None] | None:
    """(Succeeded|Failed, startedOn, finishedOn) of a finished Job; None while it runs."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            finished = status.get("completionTime") or cond.get("lastTransitionTime")
            return "Succeeded", status.get("startTime"), finished
        if cond.get("type") == "Failed":
            return "Failed", status.get("startTime"), cond.get("lastTransitionTime")
    return None


def output_ttl(cr: SecureTrainingJob, policy: Policy) -> int | None:
    """Seconds the output is kept after the run ends: the spec's, else the policy maximum."""
    if cr.spec.output is None:
        return None
    retention = cr.spec.retention
    if retention is not None and retention.output_ttl_seconds_after_finished is not None:
        return retention.output_ttl_seconds_after_finished
    return policy.max_output_ttl_seconds


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _image(image: str) -> dict[str, Any]:
    found = _DIGEST.search(image)
    out: dict[str, Any] = {"name": "trainer-image", "uri": image}
    if found:
        out["digest"] = {"sha256": found.group(1)}
    return out


def _dataset(
    index: int,
    cr: SecureTrainingJob,
    pvc: dict[str, Any] | None,
    census: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    dataset = (cr.spec.datasets or [])[index]
    ns = cr.metadata.namespace
    annotations: dict[str, Any] = {"encrypted": dataset.encrypted}
    out: dict[str, Any] = {
        "name": f"dataset/{dataset.claim_name}",
        "uri": _uri(ns, "persistentvolumeclaims", dataset.claim_name),
    }
    if pvc is not None:
        identity = volume_identity(pvc)
        out["digest"] = {"sha256": sha256_hex(identity)}
        annotations["volume"] = identity
    report = dict(census.get(dataset.claim_name) or {})
    for key in ("envelopeDigest", "plaintextDigest"):  # what the decrypting container measured
        if report.get(key):
            annotations[key] = report.pop(key)
    if set(report) - {"claimName"}:  # a scan ran: its counts (never values)
        annotations["personalDataCensus"] = report
    out["annotations"] = annotations
    return out


def provenance_statement(
    cr: SecureTrainingJob,
    spec: dict[str, Any],
    policy: Policy,
    job: dict[str, Any],
    *,
    output_pvc: dict[str, Any] | None,
    dataset_pvcs: dict[str, dict[str, Any] | None],
    census: list[dict[str, Any]],
    nodes: dict[str, str | None],
    builder_id: str = BUILDER_ID,
) -> dict[str, Any]:
    """The in-toto v1 Statement (SLSA Provenance v1 predicate) of a finished run.

    ``spec`` is the CR's spec as the API server stores it (its digest is recorded), ``nodes``
    maps each node the run's pods ran on to its pool label.
    """
    finished = outcome(job)
    if finished is None:
        raise ValueError("the Job has not finished")
    result, started_on, finished_on = finished
    ns, name = cr.metadata.namespace, cr.metadata.name
    if output_pvc is not None:
        identity = volume_identity(output_pvc)
        subject_name = f"persistentvolumeclaim/{ns}/{identity['name']}"
        subject_uri = _uri(ns, "persistentvolumeclaims", str(identity["name"]))
    else:
        identity = _job_identity(job)
        subject_name, subject_uri = f"job/{ns}/{identity['name']}", _uri(ns, "jobs", name)
    subject_digest = {"sha256": sha256_hex(identity)}
    ttl = output_ttl(cr, policy)
    by_claim = {c.get("claimName", ""): c for c in census}
    external: dict[str, Any] = {
        "workload": {
            "apiVersion": cr.api_version,
            "kind": cr.KIND,
            "namespace": ns,
            "name": name,
            "uid": cr.metadata.uid,
            "generation": cr.metadata.generation,
        },
        "specDigest": {"sha256": sha256_hex(spec)},
        "policyDigest": {"sha256": sha256_hex(policy.wire())},
    }
    if ttl is not None:
        external["outputTtlSecondsAfterFinished"] = ttl
    byproducts: list[dict[str, Any]] = [
        {
            "name": "outcome",
            "content": base64.b64encode(result.encode()).decode(),
            "mediaType": "text/plain",
        },
        {
            "name": f"job/{ns}/{name}",
            "uri": _uri(ns, "jobs", name),
            "digest": {"sha256": sha256_hex(_job_identity(job))},
            "annotations": _job_identity(job),
        },
    ]
    for node, pool in sorted(nodes.items()):
        byproducts.append(
            {
                "name": f"node/{node}",
                "uri": _uri(None, "nodes", node),
                "annotations": {"nodePool": pool},
            }
        )
    if output_pvc is not None:
        output: dict[str, Any] = {
            "name": "output-volume",
            "uri": subject_uri,
            "digest": subject_digest,
            "annotations": {"volume": identity},
        }
        if ttl is not None and finished_on is not None:
            delete_after = parse_time(finished_on) + timedelta(seconds=ttl)
            output["annotations"]["deleteAfter"] = iso_z(delete_after)
        byproducts.append(output)
    metadata: dict[str, Any] = {"invocationId": str((job.get("metadata") or {}).get("uid"))}
    if started_on:
        metadata["startedOn"] = started_on
    if finished_on:
        metadata["finishedOn"] = finished_on
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "uri": subject_uri, "digest": subject_digest}],
        "predicateType": PROVENANCE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "resolvedDependencies": [
                    _image(cr.spec.image),
                    *(
                        _dataset(i, cr, dataset_pvcs.get(d.claim_name), by_claim)
                        for i, d in enumerate(cr.spec.datasets or [])
                    ),
                ],
            },
            "runDetails": {
                "builder": {"id": builder_id, "version": {"secureai": __version__}},
                "metadata": metadata,
                "byproducts": byproducts,
            },
        },
    }


def deletion_statement(
    provenance: dict[str, Any], provenance_digest: str, deleted_on: datetime, reason: str
) -> dict[str, Any]:
    """A Statement that the subject of ``provenance`` (its output volume) was deleted."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": provenance["subject"],
        "predicateType": DELETION_TYPE,
        "predicate": {
            "deletedOn": iso_z(deleted_on),
            "reason": reason,
            "provenance": {"sha256": provenance_digest},
        },
    }


def delete_after(statement: dict[str, Any]) -> datetime | None:
    """The output's deletion deadline recorded in a provenance statement, if any."""
    for product in statement["predicate"]["runDetails"].get("byproducts") or []:
        if product.get("name") == "output-volume":
            when = (product.get("annotations") or {}).get("deleteAfter")
            return parse_time(when) if isinstance(when, str) else None
    return None


def run_job(statement: dict[str, Any]) -> dict[str, Any] | None:
    """The identity of the run's Job recorded in a provenance statement."""
    for product in statement["predicate"]["runDetails"].get("byproducts") or []:
        if str(product.get("name", "")).startswith("job/"):
            ident = product.get("annotations")
            return ident if isinstance(ident, dict) else None
    return None


def workload_uid(statement: dict[str, Any]) -> str:
    """The uid of the SecureTrainingJob a provenance statement is about."""
    external = statement["predicate"]["buildDefinition"]["externalParameters"]
    return str(external["workload"]["uid"])


def output_volume(statement: dict[str, Any]) -> dict[str, Any] | None:
    """The output volume's recorded identity."""
    for product in statement["predicate"]["runDetails"].get("byproducts") or []:
        if product.get("name") == "output-volume":
            volume = (product.get("annotations") or {}).get("volume")
            return volume if isinstance(volume, dict) else None
    return None


def summary(statement: dict[str, Any]) -> dict[str, Any]:
    """The facts of a provenance statement, flat, for `secureai lineage show`."""
    build = statement["predicate"]["buildDefinition"]
    run = statement["predicate"]["runDetails"]
    external = build["externalParameters"]
    workload = external.get("workload") or {}
    result = None
    for product in run.get("byproducts") or []:
        if product.get("name") == "outcome":
            result = base64.b64decode(product.get("content") or "").decode(errors="replace")
    nodes = {
        p["name"].removeprefix("node/"): (p.get("annotations") or {}).get("nodePool")
        for p in run.get("byproducts") or []
        if str(p.get("name", "")).startswith("node/")
    }
    deps: list[dict[str, Any]] = build.get("resolvedDependencies") or []
    image: dict[str, Any] = next((d for d in deps if d.get("name") == "trainer-image"), {})
    return {
        "trainingJob": f"{workload.get('namespace')}/{workload.get('name')}",
        "uid": workload.get("uid"),
        "generation": workload.get("generation"),
        "outcome": result,
        "startedOn": run["metadata"].get("startedOn"),
        "finishedOn": run["metadata"].get("finishedOn"),
        "image": image.get("uri"),
        "datasets": [
            d["name"].removeprefix("dataset/") for d in deps if d["name"] != "trainer-image"
        ],
        "specDigest": "sha256:" + str(external.get("specDigest", {}).get("sha256")),
        "policyDigest": "sha256:" + str(external.get("policyDigest", {}).get("sha256")),
        "nodes": nodes,
        "subject": statement["subject"][0]["name"],
        "subjectDigest": "sha256:" + str(statement["subject"][0]["digest"].get("sha256")),
        "deleteAfter": iso_z(d) if (d := delete_after(statement)) else None,
    }
