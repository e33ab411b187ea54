"""Issue 18 on the real control plane with the real operator process: signed provenance of a
finished training run (verified by `secureai lineage`; any edit fails it), the inference
service serving that output shows it, output retention deletes the output volume at its
deadline with an Event before and after, a retention longer than policy allows is rejected,
and the audit log attributes every write to a workload's children."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from kubernetes import client

from clusterkit import REPO, Cluster, wait_for
from operatorkit import (
    OPERATOR_NAMESPACE,
    OPERATOR_USER,
    TEST_NAMESPACES,
    TEST_POLICY,
    OperatorProcess,
    apply_yaml,
    condition,
    events_for,
    example,
    get_json,
    model_prereqs,
    operator_kubeconfig,
    utc_now,
)
from secureai.cli.main import main as cli
from secureai.controllers.provenance import (
    DELETION_ITEM,
    PUBLIC_KEY_CONFIGMAP,
    PUBLIC_KEY_ITEM,
    STATEMENT_ITEM,
    record_name,
    verify_record,
)

MAX_TTL = 120


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator with a policy that caps output retention at 120 s."""
    folder = tmp_path_factory.mktemp("operator")
    policy = folder / "policy.yaml"
    policy.write_text(yaml.safe_dump({**TEST_POLICY, "maxOutputTtlSeconds": MAX_TTL}))
    kubeconfig = operator_kubeconfig(cluster, folder / "kubeconfig")
    process = OperatorProcess(
        cluster, kubeconfig, policy, folder / "operator.log", namespaces=TEST_NAMESPACES
    ).start()
    yield process
    process.stop()


def training(namespace: str, name: str, **retention: Any) -> dict[str, Any]:
    cr = example("training-single-gpu.yaml", namespace)
    cr["metadata"]["name"] = name
    cr["spec"]["output"] = {"size": "1Gi", "storageClassName": "encrypted-ssd"}
    cr["spec"]["retention"] = {"keepOutput": True, **retention}
    return cr


def finished(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def done() -> Any:
        obj = get_json(cluster, "stj", name, "-n", namespace)
        lineage = ((obj or {}).get("status") or {}).get("lineage") or {}
        return obj if lineage.get("provenance") else None

    found: dict[str, Any] = wait_for(done, timeout=150, description=f"provenance of {name}")
    return found


def record_of(cluster: Cluster, obj: dict[str, Any]) -> dict[str, Any]:
    body = get_json(
        cluster, "configmap", record_name(obj["metadata"]["uid"]), "-n", OPERATOR_NAMESPACE
    )
    assert body is not None
    return dict(body)


def public_key(cluster: Cluster) -> bytes:
    cm = get_json(cluster, "configmap", PUBLIC_KEY_CONFIGMAP, "-n", OPERATOR_NAMESPACE)
    return str(cm["data"][PUBLIC_KEY_ITEM]).encode()


def lineage(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "secureai.cli.main", "lineage", *args],
        env={"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _edited(envelope_text: str, path: tuple[Any, ...]) -> str:
    envelope = json.loads(envelope_text)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    target = statement
    for step in path[:-1]:
        target = target[step]
    old = target[path[-1]]
    target[path[-1]] = (
        (not old) if isinstance(old, bool) else (old + 1 if isinstance(old, int) else f"{old}x")
    )
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(envelope)


def test_a_finished_run_has_a_signed_provenance_that_the_serving_inference_shows(
    cluster: Cluster,
    operator: OperatorProcess,
    namespace: str,
    k8s: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apply_yaml(cluster, training(namespace, "trained"))
    obj = finished(cluster, namespace, "trained")
    ref = obj["status"]["lineage"]["provenance"]
    assert obj["status"]["phase"] == "Succeeded"
    assert ref["verified"] is True and ref["trainingJob"] == f"{namespace}/trained"
    assert ref["output"] == f"{namespace}/trained-output"
    body = record_of(cluster, obj)
    assert ref["record"] == f"{OPERATOR_NAMESPACE}/{body['metadata']['name']}"
    assert not body["metadata"].get("ownerReferences")  # outlives the workload
    key = public_key(cluster)
    verified = verify_record(body["data"], key)
    facts = verified.statement["predicate"]
    assert (
        facts["buildDefinition"]["externalParameters"]["workload"]["uid"] == obj["metadata"]["uid"]
    )
    pvc = get_json(cluster, "pvc", "trained-output", "-n", namespace)
    assert (
        verified.statement["subject"][0]["name"]
        == f"persistentvolumeclaim/{namespace}/trained-output"
    )
    output = next(p for p in facts["runDetails"]["byproducts"] if p["name"] == "output-volume")
    assert output["annotations"]["volume"]["uid"] == pvc["metadata"]["uid"]
    assert events_for(cluster, namespace, "trained", "ProvenanceRecorded")

    # `secureai lineage` against the cluster: verified (0), and shown
    proc = lineage(cluster, "verify", f"{namespace}/trained")
    assert proc.returncode == 0, proc.stderr
    assert "verified (sha256:" in proc.stdout
    proc = lineage(cluster, "show", f"{namespace}/trained", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)[0]
    assert shown["statement"] == verified.statement and shown["outcome"] == "Succeeded"

    # editing any field of the live record makes verify fail (exit 1), restored it verifies
    core = client.CoreV1Api(k8s)
    name = body["metadata"]["name"]
    original = body["data"][STATEMENT_ITEM]
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    paths = list(_leaves(verified.statement))
    assert len(paths) > 30
    try:
        for path in paths:
            core.patch_namespaced_config_map(
                name, OPERATOR_NAMESPACE, {"data": {STATEMENT_ITEM: _edited(original, path)}}
            )
            code = cli(["lineage", "verify", f"{namespace}/trained"])
            err = capsys.readouterr().err
            assert code == 1 and "NOT VERIFIED" in err, (path, err)
    finally:
        core.patch_namespaced_config_map(
            name, OPERATOR_NAMESPACE, {"data": {STATEMENT_ITEM: original}}
        )
    assert cli(["lineage", "verify", f"{namespace}/trained"]) == 0
    capsys.readouterr()

    # the inference service serving that output shows the run's provenance in its lineage
    model_prereqs(cluster, namespace, [])
    sis = example("inference-cpu.yaml", namespace)
    sis["spec"]["model"]["claimName"] = "trained-output"
    apply_yaml(cluster, sis)

    def linked() -> Any:
        o = get_json(cluster, "sis", sis["metadata"]["name"], "-n", namespace)
        return ((o or {}).get("status") or {}).get("lineage", {}).get("provenance")

    shown_ref = wait_for(linked, timeout=90, description="inference lineage provenance")
    assert shown_ref["record"] == ref["record"]
    assert shown_ref["statementDigest"] == verified.digest
    assert shown_ref["trainingJob"] == f"{namespace}/trained"


def test_output_retention_deletes_the_volume_at_its_deadline_with_events(
    cluster: Cluster, operator: OperatorProcess, namespace: str, k8s: Any
) -> None:
    since = utc_now()
    apply_yaml(cluster, training(namespace, "shortlived", outputTtlSecondsAfterFinished=60))
    obj = finished(cluster, namespace, "shortlived")
    uid = obj["metadata"]["uid"]
    body = record_of(cluster, obj)
    key = public_key(cluster)
    statement = verify_record(body["data"], key).statement
    output = next(
        p
        for p in statement["predicate"]["runDetails"]["byproducts"]
        if p["name"] == "output-volume"
    )
    deadline = datetime.fromisoformat(output["annotations"]["deleteAfter"].replace("Z", "+00:00"))
    finished_on = datetime.fromisoformat(
        statement["predicate"]["runDetails"]["metadata"]["finishedOn"].replace("Z", "+00:00")
    )
    assert (deadline - finished_on).total_seconds() == 60
    assert events_for(cluster, namespace, "shortlived", "OutputRetention", since=since, uid=uid)
    assert get_json(cluster, "pvc", "shortlived-output", "-n", namespace) is not None
    # a restart in between: the deadline is set again from the record, not forgotten
    operator.stop()
    operator.start()

    core = client.CoreV1Api(k8s)

    def gone() -> float | None:
        try:
            core.read_namespaced_persistent_volume_claim("shortlived-output", namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return time.time()
            raise
        return None

    wait = (deadline - datetime.now(UTC)).total_seconds()
    assert wait > 0, "the run took longer than its retention to be recorded"
    at = wait_for(gone, timeout=wait + 30, interval=0.05, description="output PVC deleted")
    lateness = at - deadline.timestamp()
    print(f"\noutput PVC deleted {lateness:.2f} s after its deadline")
    assert 0 <= lateness <= 5, lateness
    for reason in ("OutputDeleting", "OutputDeleted"):
        wait_for(
            lambda r=reason: events_for(cluster, namespace, "shortlived", r, since=since, uid=uid),
            timeout=10,
            description=f"Event {reason}",
        )
    # the record outlives the data and notes when it was deleted; it still verifies
    done = wait_for(
        lambda: verify_record(record_of(cluster, obj)["data"], key).deleted_on,
        timeout=10,
        description="deletion noted in the record",
    )
    assert DELETION_ITEM in record_of(cluster, obj)["data"]
    noted = datetime.fromisoformat(done.replace("Z", "+00:00"))
    assert abs(noted.timestamp() - at) < 5

    # not re-created as drift, and the workload's status says when the output went
    def status_notes() -> Any:
        o = get_json(cluster, "stj", "shortlived", "-n", namespace)
        return o["status"]["lineage"]["provenance"].get("outputDeletedOn")

    assert wait_for(status_notes, timeout=30, description="status outputDeletedOn") == done
    assert get_json(cluster, "pvc", "shortlived-output", "-n", namespace) is None
    # deleting the workload leaves the record
    cluster.kubectl("delete", "stj", "shortlived", "-n", namespace, "--wait=true")
    assert record_of(cluster, obj)["data"][DELETION_ITEM]


def test_a_retention_longer_than_policy_allows_is_rejected(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    since = utc_now()
    apply_yaml(cluster, training(namespace, "hoarder", outputTtlSecondsAfterFinished=MAX_TTL + 1))
    message = (
        f"spec.retention.outputTtlSecondsAfterFinished: {MAX_TTL + 1} s is longer than policy "
        f"allows ({MAX_TTL} s)"
    )

    def rejected() -> Any:
        obj = get_json(cluster, "stj", "hoarder", "-n", namespace)
        return obj if (obj or {}).get("status", {}).get("phase") == "Rejected" else None

    obj = wait_for(rejected, timeout=60, description="Rejected")
    cond = condition(obj, "Ready")
    assert cond is not None and message in cond["message"]
    events = events_for(cluster, namespace, "hoarder", "Rejected", since=since)
    assert any(message in e["message"] for e in events)
    assert get_json(cluster, "job", "hoarder", "-n", namespace) is None
    assert get_json(cluster, "pvc", "hoarder-output", "-n", namespace) is None


def who(event: dict[str, Any]) -> str:
    """The identity a write acted as: the impersonated user if any, else the caller."""
    return str((event.get("impersonatedUser") or event["user"])["username"])


def test_the_audit_log_attributes_every_write_to_a_workloads_children(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    """With the chart's audit policy: a user's tampering with a child and the operator's
    revert are both there, each with its identity; every write to the children is attributed;
    the CR's writes are logged in full and Secrets never with a body."""
    cr = example("training-single-gpu.yaml", namespace)
    cr["spec"]["activeDeadlineSeconds"] = 3600
    apply_yaml(cluster, cr)
    name = cr["metadata"]["name"]
    obj = wait_for(
        lambda: (
            (o := get_json(cluster, "stj", name, "-n", namespace))
            and (o.get("status") or {}).get("children")
            and o
        ),
        timeout=60,
        description="children",
    )
    children = {(c["kind"], c["name"]) for c in obj["status"]["children"]}
    assert ("NetworkPolicy", f"{name}-default-deny") in children
    # a user (impersonated by the admin) widens the default-deny policy; the operator reverts
    mallory = "mallory@example.com"
    widen = {"spec": {"podSelector": {"matchLabels": {"x": "y"}}}}
    cluster.kubectl(
        "patch", "networkpolicy", f"{name}-default-deny", "-n", namespace, "--as", mallory,
        "--as-group", "system:masters", "--type", "merge", "-p", json.dumps(widen),
    )  # fmt: skip
    wait_for(
        lambda: events_for(cluster, namespace, name, "DriftReverted"),
        timeout=30,
        description="revert",
    )
    plural = {
        "ServiceAccount": "serviceaccounts",
        "NetworkPolicy": "networkpolicies",
        "Job": "jobs",
        "Secret": "secrets",
        "ConfigMap": "configmaps",
        "Service": "services",
        "PersistentVolumeClaim": "persistentvolumeclaims",
    }
    names = {(plural[k], n) for k, n in children if k in plural}

    def writes() -> list[dict[str, Any]]:
        return cluster.audit_events(
            lambda e: (
                (e.get("objectRef") or {}).get("namespace") == namespace
                and (
                    (e.get("objectRef") or {}).get("resource"),
                    (e.get("objectRef") or {}).get("name"),
                )
                in names
                and "dryRun=" not in e.get("requestURI", "")
            )
        )

    found = wait_for(
        lambda: (w := writes()) and any(who(e) == mallory for e in w) and w,
        timeout=10,
        description="the tampering in the audit log",
    )
    users = {who(e) for e in found}
    assert all(u for u in users), found
    control_plane = {u for u in users if u.startswith("system:") and u != OPERATOR_USER}
    assert users - control_plane == {OPERATOR_USER, mallory}, users
    assert all(
        u.startswith(("system:serviceaccount:kube-system:", "system:kube-")) for u in control_plane
    ), control_plane
    tamper = next(e for e in found if who(e) == mallory)
    assert tamper["user"]["username"] == "secureai-admin"  # who impersonated mallory
    revert = [
        e for e in found
        if e["user"]["username"] == OPERATOR_USER
        and e["objectRef"]["name"] == f"{name}-default-deny"
        and e["stageTimestamp"] > tamper["stageTimestamp"]
    ]  # fmt: skip
    assert revert, "the operator's revert is not in the audit log"
    assert tamper["objectRef"]["resource"] == "networkpolicies" and tamper["level"] == "Metadata"
    # the operator's identity carries its ServiceAccount credential
    assert "authentication.kubernetes.io/credential-id" in revert[0]["user"].get("extra", {})

    every = cluster.audit_events()
    # nothing holding secret material at RequestResponse; the secureai kinds in full
    assert all(
        (e.get("objectRef") or {}).get("apiGroup") == "secureai.dev"
        for e in every
        if e.get("level") == "RequestResponse"
    )
    assert not any(
        "requestObject" in e or "responseObject" in e
        for e in every
        if (e.get("objectRef") or {}).get("resource") in ("secrets", "configmaps")
    )
    status_writes = [
        e for e in every
        if (e.get("objectRef") or {}).get("name") == name
        and (e.get("objectRef") or {}).get("namespace") == namespace
        and (e.get("objectRef") or {}).get("resource") == "securetrainingjobs"
        and e["user"]["username"] == OPERATOR_USER
    ]  # fmt: skip
    assert status_writes and all(e["level"] == "RequestResponse" for e in status_writes)
    assert any("status" in (e.get("requestObject") or {}) for e in status_writes)
    assert status_writes[-1]["responseObject"]["metadata"]["name"] == name


def test_the_chart_refuses_a_retention_longer_than_policy_at_admission(
    cluster: Cluster, crds: None, namespace_factory: Any, tmp_path: Any
) -> None:
    """The chart's admission policy (a), with policy.maxOutputTtlSeconds set, refuses the
    spec at `kubectl apply`, before the operator sees it; it is bound to this test's
    namespace only."""
    suffix = uuid.uuid4().hex[:8]
    namespace = namespace_factory(labels={"secureai.dev/retention-test": suffix})
    values = {
        "policy": {**TEST_POLICY, "maxOutputTtlSeconds": MAX_TTL},
        "admissionPolicies": {
            "imagePolicy": {
                "namespaceSelector": {"matchLabels": {"secureai.dev/retention-test": suffix}}
            }
        },
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    rendered = cluster.helm(
        "template", f"ret{suffix}", str(REPO / "charts" / "secureai-operator"),
        "--show-only", "templates/admission-image-policy.yaml", "-f", str(tmp_path / "values.yaml"),
    ).stdout  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=rendered)
    try:
        ok = training(namespace, "keeper", outputTtlSecondsAfterFinished=MAX_TTL)
        long = training(namespace, "hoarder", outputTtlSecondsAfterFinished=MAX_TTL + 1)
        message = (
            f"spec.retention.outputTtlSecondsAfterFinished: {MAX_TTL + 1} s is longer than "
            f"policy allows ({MAX_TTL} s)"
        )

        def refused() -> bool:
            proc = cluster.kubectl(
                "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(long), check=False
            )
            return proc.returncode != 0 and message in proc.stderr

        wait_for(refused, timeout=30, description="admission refuses the long retention")
        cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(ok))
    finally:
        cluster.kubectl("delete", "-f", "-", "--wait=false", input=rendered, check=False)
