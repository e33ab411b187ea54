"""Quarantine on the real control plane, with the operator process (issue 16).

Containment of many workloads across namespaces (timed from the Quarantine's creation to the
last contained policy, seen by a watch), foreign allow policies made before and after,
credentials revoked (TokenReview), evidence exported and verified, admission blocking (operator
and ValidatingAdmissionPolicy), release restoring the rendered state, and automatic
containment on a drift storm.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from clusterkit import Cluster, wait_for
from operatorkit import (
    REPO,
    TEST_NAMESPACES,
    TEST_POLICY,
    OperatorProcess,
    apply_yaml,
    condition,
    example,
    get_json,
    model_prereqs,
    operator_kubeconfig,
    wait_ready,
)

# `make bench` runs the containment test at 100 workloads in 20 namespaces (bench/
# scenarios_quarantine.py) and reads the figures from SECUREAI_QUARANTINE_REPORT.
WORKLOADS = int(os.environ.get("SECUREAI_QUARANTINE_WORKLOADS", "20"))
NAMESPACES = int(os.environ.get("SECUREAI_QUARANTINE_NAMESPACES", "4"))
REPORT = os.environ.get("SECUREAI_QUARANTINE_REPORT")
CONTAIN_DEADLINE_S = 1.0


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator whose policy quarantines on a drift storm (3 reverts within 60 s)."""
    folder = tmp_path_factory.mktemp("operator")
    policy = folder / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                **TEST_POLICY,
                "autoQuarantine": {"driftStorm": {"reverts": 3, "windowSeconds": 60}},
            }
        )
    )
    kubeconfig = operator_kubeconfig(cluster, folder / "kubeconfig")
    process = OperatorProcess(
        cluster, kubeconfig, policy, folder / "operator.log", namespaces=TEST_NAMESPACES
    ).start()
    yield process
    process.stop()


def quarantine_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": "Quarantine",
        "metadata": {"name": name},
        "spec": {"reason": f"test {name}", **spec},
    }


@pytest.fixture
def quarantines(cluster: Cluster) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        cluster.kubectl("delete", "quarantine", name, "--ignore-not-found", "--wait=false")


def service(namespace: str, name: str, image: str) -> dict[str, Any]:
    cr = example("inference-cpu.yaml", namespace)
    cr["metadata"]["name"] = name
    cr["spec"]["image"] = image
    return cr


@pytest.fixture
def fleet(cluster: Cluster) -> Iterator[tuple[list[tuple[str, str]], str]]:
    """WORKLOADS inference services across NAMESPACES namespaces, all on one (unique) image."""
    tag = uuid.uuid4().hex[:6]
    image_digest = digest_of(f"quarantine-fleet-{tag}")
    image = f"secureai.local/modelserver@{image_digest}"
    spaces = [f"t-qfleet-{tag}-{i}" for i in range(NAMESPACES)]
    for ns in spaces:
        cluster.kubectl("create", "namespace", ns)
        model_prereqs(cluster, ns, ["embeddings-model"])
    refs = [(spaces[i % NAMESPACES], f"svc-{i}") for i in range(WORKLOADS)]
    apply_yaml(cluster, [service(ns, name, image) for ns, name in refs])
    for ns, name in refs:
        wait_ready(cluster, "sis", ns, name, timeout=180)
    yield refs, image_digest
    for ns in spaces:
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


class PolicyWatch:
    """When each workload's allow policy was first seen contained (or restored): a watch on
    every NetworkPolicy, started before the change. The events are read as raw JSON lines:
    the client's model deserialization added up to 0.5 s to the last of 100 under load, the
    watcher's lag and not the operator's."""

    def __init__(self, k8s: Any, wanted: set[tuple[str, str]], contained: bool) -> None:
        self.k8s = k8s
        self.wanted = wanted
        self.contained = contained
        self.seen: dict[tuple[str, str], float] = {}
        self._response: Any = None
        self._closed = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _matches(self, obj: dict[str, Any]) -> bool:
        spec = obj.get("spec") or {}
        empty = not spec.get("ingress") and not spec.get("egress")
        return empty if self.contained else not empty

    def _run(self) -> None:
        api = client.NetworkingV1Api(self.k8s)
        listed = api.list_network_policy_for_all_namespaces()
        self._response = api.list_network_policy_for_all_namespaces(
            watch=True,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=120,
            _preload_content=False,
        )
        self._ready.set()
        try:
            self._read()
        except Exception:
            if not self._closed:  # closed by __exit__: the reader stops, nothing failed
                raise

    def _read(self) -> None:
        buffer = b""
        for chunk in self._response.stream(amt=None, decode_content=True):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                obj = json.loads(line)["object"]
                meta = obj.get("metadata") or {}
                if not str(meta.get("name", "")).endswith("-allow"):
                    continue
                key = (meta["namespace"], meta["name"].removesuffix("-allow"))
                if key in self.wanted and key not in self.seen and self._matches(obj):
                    self.seen[key] = time.monotonic()
                if len(self.seen) == len(self.wanted):
                    return

    def __enter__(self) -> PolicyWatch:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        if self._response is not None:
            self._response.close()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def allow_spec(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    obj = get_json(cluster, "networkpolicy", f"{name}-allow", "-n", ns)
    return dict((obj or {}).get("spec") or {})


def token_for_pod(k8s: Any, ns: str, service_account: str) -> str:
    """A token bound to one of the workload's pods, as the kubelet obtains it."""
    core = client.CoreV1Api(k8s)
    pods = core.list_namespaced_pod(ns, label_selector=f"secureai.dev/workload={service_account}")
    pod = pods.items[0]
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(
            audiences=["secureai"],
            expiration_seconds=600,
            bound_object_ref=client.V1BoundObjectReference(
                kind="Pod", api_version="v1", name=pod.metadata.name, uid=pod.metadata.uid
            ),
        )
    )
    result = core.create_namespaced_service_account_token(service_account, ns, request)
    return str(result.status.token)


def token_accepted(k8s: Any, token: str) -> bool:
    review = client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token=token, audiences=["secureai"])
    )
    result = client.AuthenticationV1Api(k8s).create_token_review(review)
    return bool(result.status.authenticated)


def secureai_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "secureai.cli.main", *args],
        capture_output=True,
        text=True,
        env={**cluster.env(), "SECUREAI_NAMESPACE": "secureai-system"},
        timeout=120,
        check=False,
    )


def test_a_quarantine_by_image_contains_every_workload_revokes_and_keeps_evidence(
    cluster: Cluster,
    k8s: Any,
    operator: OperatorProcess,
    fleet: tuple[list[tuple[str, str]], str],
    quarantines: list[str],
    tmp_path: Path,
) -> None:
    refs, image_digest = fleet
    first_ns, first = refs[0]
    before_allow = allow_spec(cluster, first_ns, first)
    before_deploy = get_json(cluster, "deployment", first, "-n", first_ns)["spec"]
    before_cert = get_json(cluster, "secret", f"{first}-tls", "-n", first_ns)["data"]["tls.crt"]
    token = token_for_pod(k8s, first_ns, first)
    assert token_accepted(k8s, token)
    # a foreign allow-all made before the quarantine, selecting every pod of the namespace
    foreign = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all-before", "namespace": first_ns},
        "spec": {"podSelector": {}, "ingress": [{}], "egress": [{}]},
    }
    apply_yaml(cluster, foreign)

    name = f"q-fleet-{uuid.uuid4().hex[:6]}"
    quarantines.append(name)
    with PolicyWatch(k8s, set(refs), contained=True) as seen:
        body = quarantine_body(name, match={"imageDigests": [image_digest]})
        started = time.monotonic()
        client.CustomObjectsApi(k8s).create_cluster_custom_object(
            "secureai.dev", "v1alpha1", "quarantines", body
        )
        seen.wait(30)
    latencies = [seen.seen[r] - started for r in refs if r in seen.seen]
    assert len(latencies) == len(refs), f"contained {len(latencies)} of {len(refs)}"
    p99 = percentile(latencies, 0.99)
    print(
        f"containment of {len(refs)} workloads: p50 {percentile(latencies, 0.5):.3f} s, "
        f"p99 {p99:.3f} s, max {max(latencies):.3f} s"
    )
    report: dict[str, Any] = {
        "quarantine_workloads": len(refs),
        "quarantine_namespaces": NAMESPACES,
        "quarantine_contain_p50_s": round(percentile(latencies, 0.5), 3),
        "quarantine_contain_p99_s": round(p99, 3),
        "quarantine_contain_max_s": round(max(latencies), 3),
    }
    if REPORT:
        Path(REPORT).write_text(json.dumps(report))
    assert p99 < CONTAIN_DEADLINE_S

    # credentials: the token taken before is refused, and no new one can be obtained
    # The API server caches a successful token review for 10 s (measured 9.9 s here): the
    # token reviewed above is refused once that runs out; a token not reviewed since, at once.
    wait_for(lambda: not token_accepted(k8s, token), timeout=15, description="token refused")
    with pytest.raises(client.ApiException) as refused:
        token_for_pod(k8s, first_ns, first)
    assert refused.value.status == 404
    assert get_json(cluster, "secret", f"{first}-tls", "-n", first_ns) is None

    # foreign policies, made before and after, no longer select the contained pods
    def narrowed(policy: str) -> bool:
        obj = get_json(cluster, "networkpolicy", policy, "-n", first_ns) or {}
        exprs = ((obj.get("spec") or {}).get("podSelector") or {}).get("matchExpressions") or []
        return any(e["operator"] == "NotIn" and first in e.get("values", []) for e in exprs)

    wait_for(lambda: narrowed("allow-all-before"), timeout=10, description="narrowed (before)")
    apply_yaml(cluster, {**foreign, "metadata": {"name": "allow-all-after", "namespace": first_ns}})
    wait_for(lambda: narrowed("allow-all-after"), timeout=10, description="narrowed (after)")
    cr = get_json(cluster, "sis", first, "-n", first_ns)
    assert cr["status"]["phase"] == "Quarantined"
    assert (condition(cr, "Quarantined") or {}).get("status") == "True"
    assert (condition(cr, "Isolated") or {}).get("status") == "True", condition(cr, "Isolated")

    # tampering with the contained policy is reverted to the contained form
    cluster.kubectl(
        "patch",
        "networkpolicy",
        f"{first}-allow",
        "-n",
        first_ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"ingress": [{}]}}),
    )
    wait_for(
        lambda: not allow_spec(cluster, first_ns, first).get("ingress"),
        timeout=5,
        description="contained policy reverted",
    )

    # status and evidence
    def sealed() -> Any:
        q = get_json(cluster, "quarantine", name) or {}
        status = q.get("status") or {}
        return status if status.get("evidence") and status.get("phase") == "Contained" else None

    status = wait_for(sealed, timeout=120, description="evidence sealed")
    assert status["containedCount"] == len(refs)
    out = tmp_path / "evidence"
    exported = secureai_cli(cluster, "quarantine", "evidence", name, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    index = json.loads((out / "index.json").read_text())
    assert {(w["namespace"], w["name"]) for w in index["workloads"]} == set(refs)
    assert (out / first_ns / "SecureInferenceService" / first / "cr.json").is_file()
    listed = secureai_cli(cluster, "quarantine", "list")
    assert name in listed.stdout and "Contained" in listed.stdout, listed

    # release: the rendered state is back within a second, with new credentials
    with PolicyWatch(k8s, set(refs), contained=False) as back:
        started = time.monotonic()
        client.CustomObjectsApi(k8s).patch_cluster_custom_object(
            "secureai.dev", "v1alpha1", "quarantines", name, {"spec": {"released": True}}
        )
        back.wait(30)
    restore = [back.seen[r] - started for r in refs if r in back.seen]
    assert len(restore) == len(refs)
    print(f"release of {len(refs)} workloads: max {max(restore):.3f} s")
    report["quarantine_release_max_s"] = round(max(restore), 3)
    if REPORT:
        Path(REPORT).write_text(json.dumps(report))
    assert max(restore) < CONTAIN_DEADLINE_S
    assert allow_spec(cluster, first_ns, first) == before_allow
    assert get_json(cluster, "deployment", first, "-n", first_ns)["spec"] == before_deploy
    wait_for(
        lambda: get_json(cluster, "serviceaccount", first, "-n", first_ns) is not None,
        timeout=5,
        description="ServiceAccount back",
    )
    assert not token_accepted(k8s, token)  # a new ServiceAccount: old tokens stay refused
    cert = wait_for(
        lambda: (get_json(cluster, "secret", f"{first}-tls", "-n", first_ns) or {}).get("data"),
        timeout=10,
        description="serving certificate reissued",
    )
    assert cert["tls.crt"] != before_cert
    wait_for(lambda: not narrowed("allow-all-before"), timeout=10, description="readmitted")


def test_a_new_workload_with_a_quarantined_image_is_refused(
    cluster: Cluster, operator: OperatorProcess, quarantines: list[str], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    ns = f"t-qblock-{tag}"
    cluster.kubectl("create", "namespace", ns)
    model_prereqs(cluster, ns, ["embeddings-model"])
    image_digest = digest_of(f"quarantine-block-{tag}")
    name = f"q-block-{tag}"
    quarantines.append(name)
    apply_yaml(cluster, quarantine_body(name, match={"imageDigests": [image_digest]}))
    wait_for(
        lambda: (get_json(cluster, "quarantine", name) or {}).get("status"),
        timeout=10,
        description="quarantine seen",
    )
    apply_yaml(cluster, service(ns, "late", f"secureai.local/modelserver@{image_digest}"))

    def rejected() -> Any:
        cr = get_json(cluster, "sis", "late", "-n", ns) or {}
        return cr if (cr.get("status") or {}).get("phase") == "Rejected" else None

    cr = wait_for(rejected, timeout=15, description="operator rejects")
    released = secureai_cli(cluster, "quarantine", "release", name)
    assert released.returncode == 0, released.stderr
    assert (get_json(cluster, "quarantine", name) or {})["spec"]["released"] is True
    cluster.kubectl(
        "patch", "quarantine", name, "--type=merge", "-p", '{"spec": {"released": false}}'
    )
    assert f"Quarantine/{name}" in condition(cr, "Ready")["message"]
    assert get_json(cluster, "deployment", "late", "-n", ns) is None

    # the chart's admission policy (d) refuses it at `kubectl apply`
    rendered = cluster.helm(
        "template",
        "t",
        str(REPO / "charts" / "secureai-operator"),
        "--show-only",
        "templates/admission-quarantine.yaml",
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    apply_yaml(cluster, docs)
    try:

        def refused() -> bool:
            proc = cluster.kubectl(
                "apply",
                "-f",
                "-",
                "--dry-run=server",
                check=False,
                input=yaml.safe_dump(
                    service(ns, "later", f"secureai.local/modelserver@{image_digest}")
                ),
            )
            return proc.returncode != 0 and f"Quarantine/{name}" in proc.stderr

        wait_for(refused, timeout=20, description="admission refuses the quarantined image")
        other = service(ns, "clean", f"secureai.local/modelserver@{digest_of('clean' + tag)}")
        ok = cluster.kubectl(
            "apply", "-f", "-", "--dry-run=server", check=False, input=yaml.safe_dump(other)
        )
        assert ok.returncode == 0, ok.stderr
    finally:
        for doc in docs:
            cluster.kubectl("delete", doc["kind"], doc["metadata"]["name"], "--ignore-not-found")
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_a_drift_storm_quarantines_the_workload(
    cluster: Cluster, operator: OperatorProcess, quarantines: list[str]
) -> None:
    tag = uuid.uuid4().hex[:6]
    ns = f"t-qstorm-{tag}"
    cluster.kubectl("create", "namespace", ns)
    model_prereqs(cluster, ns, ["embeddings-model"])
    apply_yaml(cluster, service(ns, "stormy", f"secureai.local/modelserver@{digest_of(tag)}"))
    wait_ready(cluster, "sis", ns, "stormy", timeout=120)
    try:

        def reverts() -> int:
            status = (get_json(cluster, "sis", "stormy", "-n", ns) or {}).get("status") or {}
            return int((status.get("drift") or {}).get("revertsTotal") or 0)

        rendered = allow_spec(cluster, ns, "stormy")
        for i in range(3):
            cluster.kubectl(
                "patch",
                "networkpolicy",
                "stormy-allow",
                "-n",
                ns,
                "--type=merge",
                "-p",
                json.dumps({"spec": {"ingress": [{}]}}),
            )
            wait_for(
                # (after the third, the storm's Quarantine contains the policy instead)
                lambda n=i: (
                    reverts() > n and (n == 2 or allow_spec(cluster, ns, "stormy") == rendered)
                ),
                timeout=10,
                description=f"revert {i} recorded",
            )

        def auto() -> Any:
            items = (get_json(cluster, "quarantines") or {}).get("items", [])
            mine = [
                q
                for q in items
                if any(w.get("namespace") == ns for w in q["spec"]["match"].get("workloads") or [])
            ]
            return mine[0] if mine else None

        created = wait_for(auto, timeout=15, description="automatic quarantine")
        quarantines.append(created["metadata"]["name"])
        assert created["spec"]["reason"].startswith("DriftStorm")
        wait_for(
            lambda: (
                get_json(cluster, "sis", "stormy", "-n", ns)["status"]["phase"] == "Quarantined"
            ),
            timeout=10,
            description="contained",
        )
        assert allow_spec(cluster, ns, "stormy").get("ingress") in (None, [])
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_stop_scales_to_zero_only_after_the_evidence_is_sealed(
    cluster: Cluster, operator: OperatorProcess, quarantines: list[str]
) -> None:
    tag = uuid.uuid4().hex[:6]
    ns = f"t-qstop-{tag}"
    cluster.kubectl("create", "namespace", ns)
    model_prereqs(cluster, ns, ["embeddings-model"])
    apply_yaml(cluster, service(ns, "halt", f"secureai.local/modelserver@{digest_of(tag)}"))
    wait_ready(cluster, "sis", ns, "halt", timeout=120)
    name = f"q-stop-{tag}"
    quarantines.append(name)
    try:
        apply_yaml(
            cluster,
            quarantine_body(name, match={"workloads": [{"namespace": ns, "name": "halt"}]},
                            action="Stop"),
        )  # fmt: skip

        def stopped() -> Any:
            deployment = get_json(cluster, "deployment", "halt", "-n", ns) or {}
            return deployment if deployment.get("spec", {}).get("replicas") == 0 else None

        wait_for(stopped, timeout=120, description="scaled to zero")
        q = get_json(cluster, "quarantine", name)
        assert q["status"].get("evidence"), "Stop acts only once the evidence is sealed"
        cr = get_json(cluster, "sis", "halt", "-n", ns)
        assert (condition(cr, "Quarantined") or {}).get("reason") == "Stopped"
        # drift revert protects the stopped form too
        cluster.kubectl("scale", "deployment", "halt", "-n", ns, "--replicas=2", check=False)
        wait_for(stopped, timeout=10, description="scaled back to zero")
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
