"""The pure drift comparison: what counts as drift and what is the cluster's own doing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from secureai.api import Policy, parse_workload
from secureai.render import render
from secureai.render.drift import differences, repaired
from secureai.render.selectors import matches, widens

REPO = Path(__file__).resolve().parents[2]
POLICY = Policy.from_yaml(REPO / "examples" / "policy.yaml")


def children(example: str) -> dict[str, dict[str, Any]]:
    cr = parse_workload(yaml.safe_load((REPO / "examples" / example).read_text()))
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in render(cr, POLICY)}


def with_server_defaults(deployment: dict[str, Any]) -> dict[str, Any]:
    live = copy.deepcopy(deployment)
    live["metadata"].update(uid="u", resourceVersion="7", generation=3)
    live["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "2"}
    live["status"] = {"availableReplicas": 2}
    spec = live["spec"]
    spec.update(progressDeadlineSeconds=600, strategy={"type": "RollingUpdate"})
    pod = spec["template"]["spec"]
    pod.update(
        dnsPolicy="ClusterFirst", schedulerName="default-scheduler", serviceAccount="chat-llm"
    )
    pod["terminationGracePeriodSeconds"] = 30
    for c in pod["containers"] + pod.get("initContainers", []):
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c["resources"]["limits"]["cpu"] = c["resources"]["limits"]["cpu"]
    pod["containers"][0]["resources"]["requests"]["memory"] = "25769803776"  # 24Gi, canonical
    return live


@pytest.fixture
def deployment() -> dict[str, Any]:
    return children("inference-gpu-guarded.yaml")["Deployment/chat-llm"]


def test_server_defaults_and_status_are_not_drift(deployment: dict[str, Any]) -> None:
    assert differences(deployment, with_server_defaults(deployment)) == []


TAMPERS = {
    "extra container": lambda p: p["containers"].append({"name": "x", "image": "y"}),
    "privileged": lambda p: p["containers"][0]["securityContext"].update(privileged=True),
    "drop removed": lambda p: p["containers"][0]["securityContext"]["capabilities"].pop("drop"),
    "capability added": lambda p: p["containers"][1]["securityContext"]["capabilities"].update(
        add=["NET_ADMIN"]
    ),
    "image": lambda p: p["containers"][0].update(image="evil:latest"),
    "hostPath": lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    "hostPort": lambda p: p["containers"][0]["ports"][0].update(hostPort=80),
    "automount": lambda p: p.update(automountServiceAccountToken=True),
    "hostNetwork": lambda p: p.update(hostNetwork=True),
    "sysctls": lambda p: p["securityContext"].update(sysctls=[{"name": "a", "value": "1"}]),
    "env secret": lambda p: p["containers"][0].update(
        envFrom=[{"secretRef": {"name": "all-secrets"}}]
    ),
    "ephemeral": lambda p: p.update(ephemeralContainers=[{"name": "debug", "image": "x"}]),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_security_relevant_changes_are_drift(deployment: dict[str, Any], tamper: str) -> None:
    live = with_server_defaults(deployment)
    TAMPERS[tamper](live["spec"]["template"]["spec"])
    assert differences(deployment, live), tamper


def test_scaling_is_drift(deployment: dict[str, Any]) -> None:
    live = with_server_defaults(deployment)
    live["spec"]["replicas"] = 5
    assert differences(deployment, live) == ["spec.replicas: changed"]


def test_network_policy_rule_added_or_edited() -> None:
    deny = children("inference-gpu-guarded.yaml")["NetworkPolicy/chat-llm-default-deny"]
    live = copy.deepcopy(deny)
    live["spec"]["ingress"] = [{}]
    assert differences(deny, live) == ["spec.ingress: added"]
    allow = children("inference-gpu-guarded.yaml")["NetworkPolicy/chat-llm-allow"]
    live = copy.deepcopy(allow)
    live["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] = {"app": "evil"}
    assert differences(allow, live)


def test_removed_label_and_flipped_service_account() -> None:
    sa = children("inference-cpu.yaml")["ServiceAccount/embeddings"]
    live = copy.deepcopy(sa)
    live["automountServiceAccountToken"] = True
    live["metadata"]["labels"].pop("secureai.dev/workload")
    assert sorted(differences(sa, live)) == [
        "automountServiceAccountToken: changed",
        "metadata.labels.secureai.dev/workload: changed",
    ]


def test_repaired_keeps_live_metadata_and_service_ip() -> None:
    service = children("inference-cpu.yaml")["Service/embeddings"]
    live = copy.deepcopy(service)
    live["metadata"].update(resourceVersion="9", uid="u", managedFields=[{"manager": "x"}])
    live["spec"].update(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"])
    live["spec"]["ports"].append({"name": "extra", "port": 22})
    body = repaired(service, live)
    assert "resourceVersion" not in body["metadata"]  # unconditional: no conflict loop
    assert body["metadata"]["uid"] == "u"
    assert "managedFields" not in body["metadata"]
    assert body["spec"]["clusterIP"] == "10.96.0.10"
    assert [p["name"] for p in body["spec"]["ports"]] == ["https"]
    assert differences(service, body) == []


def test_selector_matching_and_widening() -> None:
    pods = {"secureai.dev/workload": "a", "secureai.dev/kind": "inference"}
    assert matches({}, pods)
    assert matches({"matchLabels": {"secureai.dev/workload": "a"}}, pods)
    assert not matches({"matchLabels": {"secureai.dev/workload": "b"}}, pods)
    assert matches({"matchExpressions": [{"key": "secureai.dev/kind", "operator": "Exists"}]}, pods)
    assert not matches(
        {"matchExpressions": [{"key": "x", "operator": "In", "values": ["1"]}]}, pods
    )
    allow_all = {"spec": {"podSelector": {}, "ingress": [{}]}}
    deny_only = {"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    assert widens(allow_all, pods)
    assert not widens(deny_only, pods)
