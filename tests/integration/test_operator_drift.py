"""Tampering by a non-operator user is reverted, with an Event, within a second or so."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clusterkit import Cluster, wait_for
from operatorkit import (
    OperatorProcess,
    apply_yaml,
    condition,
    example,
    get_json,
    model_prereqs,
    operator_writes,
    quiet_over_a_resync,
    resyncs,
    wait_ready,
)

NAME = "chat-llm"


@pytest.fixture(scope="module")
def served(cluster: Cluster, operator: OperatorProcess) -> Iterator[str]:
    ns = f"t-drift-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    cr = example("inference-gpu-guarded.yaml", ns)
    model_prereqs(cluster, ns, [cr["spec"]["model"]["claimName"]])
    apply_yaml(cluster, cr)
    wait_ready(cluster, "sis", ns, NAME, timeout=120)
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def reverts(cluster: Cluster, ns: str) -> int:
    obj = get_json(cluster, "sis", NAME, "-n", ns)
    return int(((obj or {}).get("status") or {}).get("drift", {}).get("revertsTotal") or 0)


def revert_events(cluster: Cluster, ns: str, needle: str) -> list[dict[str, Any]]:
    data = get_json(cluster, "events", "-n", ns, "--field-selector", f"involvedObject.name={NAME}")
    return [
        e
        for e in (data or {}).get("items", [])
        if e.get("reason") == "DriftReverted" and needle in e.get("message", "")
    ]


def jpatch(cluster: Cluster, ns: str, kind: str, name: str, ops: list[dict[str, Any]]) -> None:
    cluster.kubectl("patch", kind, name, "-n", ns, "--type=json", "-p", json.dumps(ops))


def assert_reverted(
    cluster: Cluster, ns: str, before: int, check: Callable[[], bool], needle: str
) -> None:
    wait_for(check, timeout=15, interval=0.1, description=f"revert of {needle}")
    wait_for(lambda: reverts(cluster, ns) > before, timeout=15, description="drift counter")
    wait_for(
        lambda: revert_events(cluster, ns, needle), timeout=15, description=f"event for {needle}"
    )


def pod_spec(cluster: Cluster, ns: str) -> dict[str, Any]:
    return dict(get_json(cluster, "deployment", NAME, "-n", ns)["spec"]["template"]["spec"])


def test_edit_network_policy_rule(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    jpatch(
        cluster,
        ns,
        "networkpolicy",
        f"{NAME}-allow",
        [
            {
                "op": "replace",
                "path": "/spec/ingress/0/from/0/podSelector/matchLabels",
                "value": {"app": "evil"},
            }
        ],
    )
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: (
            get_json(cluster, "networkpolicy", f"{NAME}-allow", "-n", ns)["spec"]["ingress"][0][
                "from"
            ][0]["podSelector"]["matchLabels"]
            == {"app": "gateway"}
        ),
        f"NetworkPolicy/{NAME}-allow",
    )


def test_add_ingress_rule_is_removed(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    jpatch(
        cluster,
        ns,
        "networkpolicy",
        f"{NAME}-default-deny",
        [{"op": "add", "path": "/spec/ingress", "value": [{}]}],
    )
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: (
            not get_json(cluster, "networkpolicy", f"{NAME}-default-deny", "-n", ns)["spec"].get(
                "ingress"
            )
        ),
        f"NetworkPolicy/{NAME}-default-deny",
    )


def test_delete_network_policy(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    cluster.kubectl("delete", "networkpolicy", f"{NAME}-default-deny", "-n", ns)
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: get_json(cluster, "networkpolicy", f"{NAME}-default-deny", "-n", ns) is not None,
        f"NetworkPolicy/{NAME}-default-deny",
    )


def test_delete_service(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    cluster.kubectl("delete", "service", NAME, "-n", ns)
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: get_json(cluster, "service", NAME, "-n", ns) is not None,
        f"Service/{NAME}",
    )


def test_add_container(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    jpatch(
        cluster,
        ns,
        "deployment",
        NAME,
        [
            {
                "op": "add",
                "path": "/spec/template/spec/containers/-",
                "value": {"name": "miner", "image": "registry.example.com/x@sha256:" + "b" * 64},
            }
        ],
    )
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: [c["name"] for c in pod_spec(cluster, ns)["containers"]] == ["server", "guard"],
        f"Deployment/{NAME}",
    )


def test_privileged(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    context = "/spec/template/spec/containers/0/securityContext"
    jpatch(
        cluster,
        ns,
        "deployment",
        NAME,
        [
            {"op": "replace", "path": f"{context}/allowPrivilegeEscalation", "value": True},
            {"op": "replace", "path": f"{context}/privileged", "value": True},
        ],
    )
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: pod_spec(cluster, ns)["containers"][0]["securityContext"]["privileged"] is False,
        f"Deployment/{NAME}",
    )


def test_remove_drop_all(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    jpatch(
        cluster,
        ns,
        "deployment",
        NAME,
        [
            {
                "op": "remove",
                "path": "/spec/template/spec/containers/0/securityContext/capabilities/drop",
            }
        ],
    )
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: (
            pod_spec(cluster, ns)["containers"][0]["securityContext"]["capabilities"].get("drop")
            == ["ALL"]
        ),
        f"Deployment/{NAME}",
    )


def test_change_image(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    good = pod_spec(cluster, ns)["containers"][0]["image"]
    cluster.kubectl(
        "set", "image", f"deployment/{NAME}", "server=docker.io/library/nginx:latest", "-n", ns
    )
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: pod_spec(cluster, ns)["containers"][0]["image"] == good,
        f"Deployment/{NAME}",
    )


def test_add_host_path_volume(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    jpatch(
        cluster,
        ns,
        "deployment",
        NAME,
        [
            {
                "op": "add",
                "path": "/spec/template/spec/volumes/-",
                "value": {"name": "host", "hostPath": {"path": "/"}},
            }
        ],
    )
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: all("hostPath" not in v for v in pod_spec(cluster, ns)["volumes"]),
        f"Deployment/{NAME}",
    )


def test_flip_automount(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    cluster.kubectl(
        "patch", "serviceaccount", NAME, "-n", ns, "-p", '{"automountServiceAccountToken":true}'
    )
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: (
            get_json(cluster, "serviceaccount", NAME, "-n", ns)["automountServiceAccountToken"]
            is False
        ),
        f"ServiceAccount/{NAME}",
    )


def test_scale_deployment(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    cluster.kubectl("scale", f"deployment/{NAME}", "--replicas=5", "-n", ns)
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: get_json(cluster, "deployment", NAME, "-n", ns)["spec"]["replicas"] == 2,
        f"Deployment/{NAME}",
    )


def test_raise_disruption_budget(cluster: Cluster, served: str) -> None:
    """A PodDisruptionBudget is only updated conditionally (regression: never reverted)."""
    ns, before = served, reverts(cluster, served)
    cluster.kubectl("patch", "pdb", NAME, "-n", ns, "-p", '{"spec":{"maxUnavailable":2}}')
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: get_json(cluster, "pdb", NAME, "-n", ns)["spec"]["maxUnavailable"] == 1,
        f"PodDisruptionBudget/{NAME}",
    )


def test_remove_namespace_label(cluster: Cluster, served: str) -> None:
    ns, before = served, reverts(cluster, served)
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce-")
    assert_reverted(
        cluster,
        ns,
        before,
        lambda: (
            get_json(cluster, "namespace", ns)["metadata"]["labels"].get(
                "pod-security.kubernetes.io/enforce"
            )
            == "restricted"
        ),
        f"Namespace/{ns}",
    )


def test_foreign_allow_all_policy_is_reported(cluster: Cluster, served: str) -> None:
    ns = served
    apply_yaml(
        cluster,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-everything", "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]},
        },
    )

    def isolated_false() -> Any:
        cond = condition(get_json(cluster, "sis", NAME, "-n", ns), "Isolated")
        return cond if cond and cond["status"] == "False" else None

    cond = wait_for(isolated_false, timeout=15, description="Isolated=False")
    assert "allow-everything" in cond["message"]
    data = get_json(cluster, "events", "-n", ns, "--field-selector", f"involvedObject.name={NAME}")
    assert any(e["reason"] == "ForeignNetworkPolicy" for e in data["items"])
    cluster.kubectl("delete", "networkpolicy", "allow-everything", "-n", ns)
    wait_for(
        lambda: (
            (c := condition(get_json(cluster, "sis", NAME, "-n", ns), "Isolated"))
            and c["status"] == "True"
        ),
        timeout=15,
        description="Isolated=True again",
    )


def test_resync_of_unchanged_objects_writes_nothing(
    cluster: Cluster, served: str, operator: OperatorProcess
) -> None:
    """Once the cluster has settled, two full resyncs write nothing at all."""

    def writes() -> list[str]:
        return operator_writes(cluster, served, events=False)

    def settled_over_one_resync() -> bool:
        # Earlier tampers leave pods terminating and status catching up: wait that out.
        return quiet_over_a_resync(cluster, operator, served, events=False)

    wait_ready(cluster, "sis", served, NAME)
    try:
        wait_for(settled_over_one_resync, timeout=120, interval=0, description="a quiet cluster")
    except TimeoutError as exc:
        raise AssertionError(f"the operator kept writing: {writes()[-10:]}") from exc
    start = writes()
    first = resyncs(operator)
    wait_for(lambda: resyncs(operator) >= first + 2, timeout=30, description="two resyncs")
    assert writes()[len(start) :] == []
