"""Issue 13 on the real control plane: the tampers that passed the old comparison are
reverted within 1 s, isolation is judged from live pods and policies, foreign policies are
removed within 1 s with an Event.

The resync is lengthened to 600 s here, so that what is measured is the watch path.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from clusterkit import Cluster, wait_for
from operatorkit import (
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
    wait_ready,
)

NAME = "chat-llm"
DEADLINE = 1.0  # seconds from the tamper's acceptance to the revert being live
ATTACKER = "attacker"


@pytest.fixture(scope="module")
def remover(
    cluster: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """An operator with `foreignNetworkPolicy: remove` and a resync far beyond the tests."""
    folder = tmp_path_factory.mktemp("exact")
    policy = folder / "policy.yaml"
    registries = sorted({*TEST_POLICY["allowedRegistries"], "secureai.local"})  # examples'
    policy.write_text(
        yaml.safe_dump(
            {**TEST_POLICY, "allowedRegistries": registries, "foreignNetworkPolicy": "remove"}
        )
    )
    process = OperatorProcess(
        cluster,
        operator_kubeconfig(cluster, folder / "kubeconfig"),
        policy,
        folder / "operator.log",
        env_extra={"SECUREAI_RESYNC_SECONDS": "600"},
        namespaces=TEST_NAMESPACES,
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def served(cluster: Cluster, remover: OperatorProcess) -> Iterator[str]:
    ns = f"t-exact-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    cr = example("inference-gpu-guarded.yaml", ns)
    model_prereqs(cluster, ns, [cr["spec"]["model"]["claimName"]])
    apply_yaml(cluster, cr)
    wait_ready(cluster, "sis", ns, NAME, timeout=120)
    wait_for(lambda: isolated(cluster, ns) == "True", timeout=30, description="Isolated=True")
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def isolated(cluster: Cluster, ns: str) -> str | None:
    cond = condition(get_json(cluster, "sis", NAME, "-n", ns), "Isolated")
    return None if cond is None else str(cond["status"])


def metric(operator: OperatorProcess, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    for line in operator.metrics().splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def within(deadline: float, check: Callable[[], bool], what: str) -> float:
    """Poll `check` until it holds; fail if that takes longer than `deadline` seconds."""
    started = time.monotonic()
    while not check():
        elapsed = time.monotonic() - started
        assert elapsed < deadline, f"{what}: not within {deadline} s"
        time.sleep(0.01)
    return time.monotonic() - started


def patch(k8s: Any, kind: str, ns: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """A JSON patch by another field manager, as an attacker with namespace write access."""
    net, core, apps = client.NetworkingV1Api(k8s), client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    call = {
        "NetworkPolicy": net.patch_namespaced_network_policy,
        "Service": core.patch_namespaced_service,
        "Deployment": apps.patch_namespaced_deployment,
    }[kind]
    result: Any = call(name, ns, ops, field_manager=ATTACKER, _preload_content=False)
    return dict(yaml.safe_load(result.data))


def read(k8s: Any, kind: str, ns: str, name: str) -> dict[str, Any]:
    net, core, apps = client.NetworkingV1Api(k8s), client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    call = {
        "NetworkPolicy": net.read_namespaced_network_policy,
        "Service": core.read_namespaced_service,
        "Deployment": apps.read_namespaced_deployment,
    }[kind]
    result: Any = call(name, ns, _preload_content=False)
    return dict(yaml.safe_load(result.data))


TAMPERS: dict[str, tuple[str, str, list[dict[str, Any]], Callable[[dict[str, Any]], bool]]] = {
    "default-deny podSelector matchLabels key": (
        "NetworkPolicy",
        f"{NAME}-default-deny",
        [{"op": "add", "path": "/spec/podSelector/matchLabels/x", "value": "y"}],
        lambda o: "x" not in o["spec"]["podSelector"]["matchLabels"],
    ),
    "default-deny podSelector matchExpressions term": (
        "NetworkPolicy",
        f"{NAME}-default-deny",
        [
            {
                "op": "add",
                "path": "/spec/podSelector/matchExpressions",
                "value": [{"key": "x", "operator": "Exists"}],
            }
        ],
        lambda o: not o["spec"]["podSelector"].get("matchExpressions"),
    ),
    "Service selector key": (
        "Service",
        NAME,
        [{"op": "add", "path": "/spec/selector/x", "value": "y"}],
        lambda o: "x" not in o["spec"]["selector"],
    ),
    "pod template label": (
        "Deployment",
        NAME,
        [{"op": "add", "path": "/spec/template/metadata/labels/x", "value": "y"}],
        lambda o: "x" not in o["spec"]["template"]["metadata"]["labels"],
    ),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_added_key_is_reverted_within_a_second(
    cluster: Cluster, k8s: Any, served: str, remover: OperatorProcess, tamper: str
) -> None:
    """Regression (issue 13): an added key anywhere in a child's spec was not drift."""
    kind, name, ops, reverted = TAMPERS[tamper]
    ns = served
    lost = metric(remover, "secureai_isolation_lost_total", reason="NotSelected")
    tampered = patch(k8s, kind, ns, name, ops)
    assert not reverted(tampered)
    elapsed = within(DEADLINE, lambda: reverted(read(k8s, kind, ns, name)), f"revert of {tamper}")
    print(f"{tamper}: reverted in {elapsed * 1000:.0f} ms")
    wait_for(
        lambda: [e for e in events_for(cluster, ns, NAME, "DriftReverted") if name in e["message"]],
        timeout=10,
        description="DriftReverted Event",
    )
    if tamper.startswith("default-deny"):
        # The window is judged from live selection: not isolated, an Event, a metric.
        assert metric(remover, "secureai_isolation_lost_total", reason="NotSelected") > lost
        assert events_for(cluster, ns, NAME, "NotSelected")
        wait_for(lambda: isolated(cluster, ns) == "True", timeout=10, description="Isolated")


def foreign_policy(ns: str, name: str, selector: dict[str, Any], **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": [{}]},
    }


def create_policy(k8s: Any, body: dict[str, Any]) -> None:
    client.NetworkingV1Api(k8s).create_namespaced_network_policy(
        body["metadata"]["namespace"], body, field_manager=ATTACKER
    )


def gone(k8s: Any, ns: str, name: str) -> bool:
    try:
        client.NetworkingV1Api(k8s).read_namespaced_network_policy(name, ns)
    except client.ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def removed_event(cluster: Cluster, ns: str, policy: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events_for(cluster, ns, NAME, "ForeignNetworkPolicyRemoved")
        if f"NetworkPolicy/{policy} " in e["message"]
    ]


def test_forged_managed_looking_policy_is_removed(cluster: Cluster, k8s: Any, served: str) -> None:
    """Regression: labelled managed-by=secureai with an unknown workload, it was taken for
    the operator's own and dropped from the cache."""
    for labels in (
        {"app.kubernetes.io/managed-by": "secureai"},
        {
            "app.kubernetes.io/managed-by": "secureai",
            "secureai.dev/workload": "nobody",
            "secureai.dev/kind": "inference",
        },
    ):
        name = f"forged-{uuid.uuid4().hex[:4]}"
        create_policy(k8s, foreign_policy(served, name, {}, **labels))
        within(DEADLINE, lambda n=name: gone(k8s, served, n), f"removal of {name}")
        wait_for(lambda n=name: removed_event(cluster, served, n), timeout=10, description="Event")


def test_policy_selecting_by_pod_template_hash_is_removed(
    cluster: Cluster, k8s: Any, served: str
) -> None:
    """Regression: isolation was judged on rendered labels; a policy selecting the live pods
    by pod-template-hash widened access unseen."""
    pods = client.CoreV1Api(k8s).list_namespaced_pod(
        served, label_selector=f"secureai.dev/workload={NAME}"
    )
    hashes = {p.metadata.labels.get("pod-template-hash") for p in pods.items} - {None}
    assert hashes, "no live pods with a pod-template-hash"
    selector = {"matchLabels": {"pod-template-hash": sorted(hashes)[0]}}
    create_policy(k8s, foreign_policy(served, "by-hash", selector))
    within(DEADLINE, lambda: gone(k8s, served, "by-hash"), "removal of by-hash")
    wait_for(lambda: removed_event(cluster, served, "by-hash"), timeout=10, description="Event")


def test_policy_that_predates_the_workload_is_removed(
    cluster: Cluster, k8s: Any, remover: OperatorProcess, tmp_path: Path
) -> None:
    """Regression: with `remove`, a foreign policy present before the first reconcile was only
    recorded, never removed, and no Event was posted."""
    ns = f"t-pre-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    try:
        create_policy(k8s, foreign_policy(ns, "allow-all", {}))
        cr = example("inference-cpu.yaml", ns)
        model_prereqs(cluster, ns, [cr["spec"]["model"]["claimName"]])
        apply_yaml(cluster, cr)
        name = cr["metadata"]["name"]
        wait_for(
            lambda: not gone(k8s, ns, f"{name}-default-deny"),
            timeout=30,
            interval=0.01,
            description="the workload's own policies",
        )
        within(DEADLINE, lambda: gone(k8s, ns, "allow-all"), "removal of allow-all")
        wait_for(
            lambda: [
                e
                for e in events_for(cluster, ns, name, "ForeignNetworkPolicyRemoved")
                if "allow-all" in e["message"]
            ],
            timeout=10,
            description="Event",
        )
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
