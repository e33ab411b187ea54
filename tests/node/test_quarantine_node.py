"""Quarantine on the real node (issue 16, acceptance 1 and 5): real packets and a real
model-verify.

A service serving a signed model is quarantined by the model digest its model-verify init
container reported; kube-router then lets no packet in or out of its pod, through its own
policies or through a foreign allow-all made before or after, while the same foreign policy
keeps working for every other pod. A tampered model is quarantined by the operator itself
(policy autoQuarantine.modelVerificationFailed).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nodekit import image, pin_to_real_node, real_pod, start_operator
from nodekit import restricted_container as container
from test_e2e_inference import (
    _modify,
    call,
    client_pod,
    inference_cr,
    server_pod,
    signed_model_claim,
    signer_config_map,
    workload,
)

from clusterkit import Cluster, wait_for
from operatorkit import TEST_POLICY, OperatorProcess, apply_yaml, condition, install_crds
from secureai.judge.isolation import selects


@pytest.fixture(scope="module")
def q_operator(
    cluster: Cluster, real_node: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install_crds(cluster)
    policy = {**TEST_POLICY, "autoQuarantine": {"modelVerificationFailed": True}}
    process = start_operator(cluster, tmp_path_factory.mktemp("q-operator"), policy)
    yield process
    process.stop()


@pytest.fixture
def quarantines(cluster: Cluster) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        cluster.kubectl("delete", "quarantine", name, "--ignore-not-found", "--wait=false")


def sink_pod(cluster: Cluster, ns: str) -> str:
    """A pod that answers HTTP on 8000: where the quarantined server's egress would go."""
    c = container(
        "sink", image("secureai-operator"), ["/usr/bin/python3.11", "-m", "http.server", "8000"]
    )
    c["workingDir"] = "/tmp"
    c["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    pod = real_pod("sink", ns, [c], {"app": "sink"})
    pod["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    apply_yaml(cluster, pod)
    return str(
        wait_for(
            lambda: cluster.kubectl_json("-n", ns, "get", "pod", "sink")["status"].get("podIP"),
            timeout=120,
            description="sink pod IP",
        )
    )


EGRESS = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(2)\n"
    "try:\n    s.connect((sys.argv[1], 8000)); print('connected')\n"
    "except OSError as e:\n    print('refused', e)\n"
)


def egress_open(cluster: Cluster, ns: str, pod: str, target: str) -> bool:
    out = cluster.kubectl(
        "-n", ns, "exec", pod, "-c", "server", "--", "/usr/bin/python3.11", "-c", EGRESS, target,
        timeout=60,
    ).stdout  # fmt: skip
    return out.startswith("connected")


def allow_all(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}],
                 "egress": [{}]},
    }  # fmt: skip


def settled(check: Any, want: bool, what: str, timeout: float = 30) -> float:
    """Seconds until `check()` gives `want` (kube-router syncs within its own period)."""
    started = time.monotonic()
    wait_for(lambda: check() is want, timeout=timeout, description=what)
    return time.monotonic() - started


def test_a_quarantine_by_model_digest_stops_every_packet_of_the_served_model(
    cluster: Cluster,
    namespace_factory: Any,
    q_operator: OperatorProcess,
    signer: tuple[Path, Path],
    tmp_path: Path,
    quarantines: list[str],
) -> None:
    ns = namespace_factory("q-model")
    pin_to_real_node(cluster, ns)
    private, public = signer
    signer_config_map(cluster, ns, public)
    signed_model_claim(cluster, ns, "model", private, tmp_path)
    sink_ip = sink_pod(cluster, ns)
    cr = inference_cr(
        ns,
        "chat",
        "model",
        guard={"enabled": False},
        network={
            "ingress": [{"podSelector": {"app": "search"}}],
            "egress": [{"podSelector": {"app": "sink"}, "ports": [{"port": 8000}]}],
        },
    )
    apply_yaml(cluster, cr)
    obj = wait_for(
        lambda: (
            (o := workload(cluster, ns, "chat"))
            and (condition(o, "Ready") or {}).get("status") == "True"
            and o
        ),
        timeout=180,
        description="chat Ready",
    )
    model_digest = obj["status"]["lineage"]["modelDigest"]
    server = server_pod(cluster, ns, "chat")
    assert server is not None
    server_name, server_ip = server["metadata"]["name"], server["status"]["podIP"]
    ca = cluster.kubectl_json("-n", "secureai-system", "get", "configmap", "secureai-ca-bundle")[
        "data"
    ]["ca.crt"]
    allowed = client_pod(cluster, ns, "search", {"app": "search"}, ca)
    outsider = client_pod(cluster, ns, "outsider", {"app": "other"}, ca)
    dns_name = f"chat.{ns}.svc"

    def reach(src: str, ip: str = server_ip, port: int = 8080) -> bool:
        return bool(call(cluster, ns, src, ip, port, dns_name, "x")["connected"])

    assert reach(allowed) and not reach(outsider) and egress_open(cluster, ns, server_name, sink_ip)
    # a foreign allow-all before the quarantine opens the server to the outsider
    apply_yaml(cluster, allow_all(ns, "allow-all-before"))
    settled(lambda: reach(outsider), True, "the foreign allow-all lets the outsider in")

    name = f"q-model-{uuid.uuid4().hex[:6]}"
    quarantines.append(name)
    apply_yaml(
        cluster,
        {
            "apiVersion": "secureai.dev/v1alpha1",
            "kind": "Quarantine",
            "metadata": {"name": name},
            "spec": {"match": {"modelDigests": [model_digest]}, "reason": "poisoned (test)"},
        },
    )
    blocked_in = settled(lambda: reach(allowed), False, "the allowed client is cut off")
    assert not reach(outsider)
    assert not egress_open(cluster, ns, server_name, sink_ip)
    # the foreign policy still selects every other pod: it was narrowed, not removed
    before = cluster.kubectl_json("-n", ns, "get", "networkpolicy", "allow-all-before")["spec"]
    for labels in ({"app": "sink"}, {"app": "search"}, {"app": "other"}):
        assert selects(before["podSelector"], labels)
    assert not selects(before["podSelector"], server["metadata"]["labels"])
    # a foreign allow-all made after the quarantine changes nothing for the quarantined pod
    apply_yaml(cluster, allow_all(ns, "allow-all-after"))
    wait_for(
        lambda: (
            "secureai.dev/quarantine-excluded"
            in (
                cluster.kubectl_json("-n", ns, "get", "networkpolicy", "allow-all-after")[
                    "metadata"
                ].get("annotations", {})
            )
        ),
        timeout=15,
        description="the later allow-all narrowed",
    )
    for _ in range(3):  # across kube-router syncs
        assert not reach(allowed) and not reach(outsider)
        assert not egress_open(cluster, ns, server_name, sink_ip)
    q = cluster.kubectl_json("get", "quarantine", name)
    assert [w["name"] for w in q["status"]["contained"]] == ["chat"]
    assert q["status"]["contained"][0]["matchedBy"] == f"model {model_digest}"
    print(f"quarantine on the real node: traffic blocked {blocked_in:.1f}s after creation")

    # release: the rendered state, and the traffic it allows, come back
    cluster.kubectl("patch", "quarantine", name, "--type=merge", "-p",
                    json.dumps({"spec": {"released": True}}))  # fmt: skip
    settled(lambda: reach(allowed), True, "released: the client reaches the server again")


def test_a_tampered_model_is_quarantined_by_the_operator(
    cluster: Cluster,
    namespace_factory: Any,
    q_operator: OperatorProcess,
    signer: tuple[Path, Path],
    tmp_path: Path,
    quarantines: list[str],
) -> None:
    ns = namespace_factory("q-tamper")
    pin_to_real_node(cluster, ns)
    private, public = signer
    signer_config_map(cluster, ns, public)
    signed_model_claim(cluster, ns, "model", private, tmp_path, _modify)
    apply_yaml(cluster, inference_cr(ns, "tampered", "model"))

    def auto() -> dict[str, Any] | None:
        for q in cluster.kubectl_json("get", "quarantines")["items"]:
            refs = q["spec"]["match"].get("workloads") or []
            if any(r["namespace"] == ns and r["name"] == "tampered" for r in refs):
                return dict(q)
        return None

    q = wait_for(auto, timeout=180, description="a Quarantine made by the operator")
    quarantines.append(q["metadata"]["name"])
    assert q["spec"]["reason"].startswith("ModelVerificationFailed: model-verify failed")
    assert q["metadata"]["labels"]["secureai.dev/signal"] == "ModelVerificationFailed"
    wait_for(
        lambda: (
            (workload(cluster, ns, "tampered").get("status") or {}).get("phase") == "Quarantined"
        ),
        timeout=30,
        description="the workload contained",
    )
    assert cluster.kubectl("-n", ns, "get", "serviceaccount", "tampered", check=False).returncode
