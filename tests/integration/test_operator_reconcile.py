"""The real operator process reconciles every example on the real control plane."""

from __future__ import annotations

from typing import Any

from clusterkit import Cluster, wait_for
from operatorkit import (
    OperatorProcess,
    apply_yaml,
    condition,
    events_for,
    example,
    get_json,
    model_prereqs,
    wait_ready,
)


def children(cluster: Cluster, namespace: str, name: str) -> set[tuple[str, str]]:
    kinds = "serviceaccounts,networkpolicies,jobs,deployments,services,secrets,configmaps,pvc,pdb"
    data = get_json(cluster, kinds, "-n", namespace, "-l", f"secureai.dev/workload={name}")
    return {(i["kind"], i["metadata"]["name"]) for i in (data or {}).get("items", [])}


def test_single_gpu_training_succeeds_on_its_pool(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cr = example("training-single-gpu.yaml", namespace)
    apply_yaml(cluster, cr)
    name = cr["metadata"]["name"]
    obj = wait_for(
        lambda: (
            (o := get_json(cluster, "stj", name, "-n", namespace))
            and o.get("status", {}).get("phase") == "Succeeded"
            and o
        ),
        timeout=120,
        description="training job Succeeded",
    )
    assert condition(obj, "Ready")["status"] == "True"
    for kind in ("Isolated", "Hardened", "Encrypted", "Placed", "Drift"):
        assert condition(obj, kind) is not None, kind
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["status"]["gpus"] == 1
    assert obj["status"]["lineage"]["imageDigest"].startswith("sha256:")
    assert {(k, n) for k, n in children(cluster, namespace, name)} >= {
        ("ServiceAccount", name),
        ("NetworkPolicy", f"{name}-default-deny"),
        ("NetworkPolicy", f"{name}-allow"),
        ("Job", name),
    }
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"job-name={name}")["items"]
    assert pods
    for pod in pods:
        node = get_json(cluster, "node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"]["secureai.dev/pool"] == "training"
        assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    ns = get_json(cluster, "namespace", namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert events_for(cluster, namespace, name, "Reconciled")


def test_distributed_training_gets_headless_service_and_output(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cr = example("training-distributed.yaml", namespace)
    apply_yaml(cluster, cr)
    name = cr["metadata"]["name"]
    wait_for(
        lambda: (
            (o := get_json(cluster, "stj", name, "-n", namespace))
            and o.get("status", {}).get("phase") == "Succeeded"
        ),
        timeout=150,
        description="distributed training Succeeded",
    )
    found = children(cluster, namespace, name)
    assert ("Service", f"{name}-workers") in found
    assert ("PersistentVolumeClaim", f"{name}-output") in found
    pvc = get_json(cluster, "pvc", f"{name}-output", "-n", namespace)
    assert pvc["spec"]["storageClassName"] == "encrypted-ssd"
    job = get_json(cluster, "job", name, "-n", namespace)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == 4


def _serve(cluster: Cluster, namespace: str, file: str) -> tuple[str, dict[str, Any]]:
    cr = example(file, namespace)
    model_prereqs(cluster, namespace, [cr["spec"]["model"]["claimName"]])
    apply_yaml(cluster, cr)
    name = cr["metadata"]["name"]
    obj = wait_ready(cluster, "sis", namespace, name, timeout=120)
    return name, obj


def test_guarded_gpu_inference_becomes_ready(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    name, obj = _serve(cluster, namespace, "inference-gpu-guarded.yaml")
    deployment = get_json(cluster, "deployment", name, "-n", namespace)
    assert deployment["status"]["availableReplicas"] == 2
    found = children(cluster, namespace, name)
    for child in (
        ("Deployment", name),
        ("Service", name),
        ("Secret", f"{name}-tls"),
        ("ConfigMap", f"{name}-guard"),
        ("PodDisruptionBudget", name),
    ):
        assert child in found, child
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    guard = containers["guard"]
    assert guard["securityContext"]["allowPrivilegeEscalation"] is False
    assert guard["securityContext"]["capabilities"]["drop"] == ["ALL"]
    service = get_json(cluster, "service", name, "-n", namespace)
    assert service["spec"]["ports"][0]["targetPort"] == 8443
    assert obj["status"]["tls"]["notAfter"]
    assert obj["status"]["readyReplicas"] == 2


def test_cpu_inference_becomes_ready(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    name, obj = _serve(cluster, namespace, "inference-cpu.yaml")
    assert condition(obj, "Placed")["reason"] == "NoGpuRequested"
    assert ("PodDisruptionBudget", name) not in children(cluster, namespace, name)


def test_spec_updates_reach_children_and_delete_cleans_up(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    name, _ = _serve(cluster, namespace, "inference-cpu.yaml")
    patch = (
        '{"spec":{"replicas":3,"network":{"ingress":[{"podSelector":{"app":"search"}}],'
        '"egress":[{"cidr":"10.30.0.0/16","ports":[{"port":5432}]}]}}}'
    )
    cluster.kubectl("patch", "sis", name, "-n", namespace, "--type=merge", "-p", patch)
    wait_for(
        lambda: get_json(cluster, "deployment", name, "-n", namespace)["spec"]["replicas"] == 3,
        timeout=30,
        description="replicas updated",
    )
    allow = get_json(cluster, "networkpolicy", f"{name}-allow", "-n", namespace)
    cidrs = [p.get("ipBlock", {}).get("cidr") for r in allow["spec"]["egress"] for p in r["to"]]
    assert "10.30.0.0/16" in cidrs
    wait_for(
        lambda: ("PodDisruptionBudget", name) in children(cluster, namespace, name),
        timeout=30,
        description="PDB created for replicas > 1",
    )
    cluster.kubectl("delete", "sis", name, "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: not children(cluster, namespace, name),
        timeout=60,
        description="children garbage-collected",
    )


def test_workers_change_prunes_headless_service(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cr = example("training-distributed.yaml", namespace)
    cr["spec"]["output"] = None
    del cr["spec"]["output"]
    apply_yaml(cluster, cr)
    name = cr["metadata"]["name"]
    wait_for(
        lambda: ("Service", f"{name}-workers") in children(cluster, namespace, name),
        timeout=60,
        description="headless service",
    )
    cluster.kubectl(
        "patch", "stj", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"workers":1}}'
    )
    wait_for(
        lambda: ("Service", f"{name}-workers") not in children(cluster, namespace, name),
        timeout=60,
        description="headless service pruned",
    )
    wait_for(
        lambda: get_json(cluster, "job", name, "-n", namespace)["spec"]["completions"] == 1,
        timeout=60,
        description="job recreated with 1 worker",
    )


def test_policy_violation_is_rejected_then_fixed(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cr = example("training-single-gpu.yaml", namespace)
    cr["spec"]["gpu"]["pool"] = "no-such-pool"
    apply_yaml(cluster, cr)
    name = cr["metadata"]["name"]

    def rejected() -> Any:
        obj = get_json(cluster, "stj", name, "-n", namespace)
        cond = condition(obj, "Ready")
        return obj if cond and cond["reason"] == "Rejected" else None

    obj = wait_for(rejected, timeout=30, description="Rejected condition")
    assert "spec.gpu.pool" in condition(obj, "Ready")["message"]
    assert obj["status"]["phase"] == "Rejected"
    assert not children(cluster, namespace, name)
    assert wait_for(lambda: events_for(cluster, namespace, name, "Rejected"), timeout=20)
    cluster.kubectl(
        "patch",
        "stj",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"gpu":{"pool":"training"}}}',
    )
    wait_for(
        lambda: ("Job", name) in children(cluster, namespace, name),
        timeout=30,
        description="children after the fix",
    )


def test_dataset_on_unencrypted_class_is_rejected(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    apply_yaml(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "plain-data", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "standard",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    cr = example("training-single-gpu.yaml", namespace, datasets=[{"claimName": "plain-data"}])
    apply_yaml(cluster, cr)
    name = cr["metadata"]["name"]

    def rejected() -> Any:
        cond = condition(get_json(cluster, "stj", name, "-n", namespace), "Ready")
        return cond if cond and cond["reason"] == "Rejected" else None

    cond = wait_for(rejected, timeout=30, description="dataset rejection")
    assert "not encrypted" in cond["message"] and "spec.datasets[0]" in cond["message"]
    assert not children(cluster, namespace, name)
