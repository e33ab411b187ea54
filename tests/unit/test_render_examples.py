"""Issue 2, items 2 and 3 on the shipped examples: every rendered pod is hardened and isolated.

The invariant checkers live in tests/invariants.py and are shared with the property-based
tests; the mutation tests at the bottom prove each checker fails when its behaviour breaks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from invariants import CHECKERS, containers, of_kind, pods
from secureai.api import Workload, parse_workload
from secureai.render import render, to_yaml
from strategies import EXAMPLE_POLICY, EXAMPLES

EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "policy.yaml")


def load(path: Path) -> Workload:
    return parse_workload(yaml.safe_load(path.read_text()))


def rendered(name: str) -> tuple[Workload, list[dict[str, Any]]]:
    cr = load(EXAMPLES / name)
    return cr, render(cr, EXAMPLE_POLICY)


def test_there_are_examples_of_both_kinds() -> None:
    kinds = {load(p).kind for p in EXAMPLE_FILES}
    assert kinds == {"SecureTrainingJob", "SecureInferenceService"}
    assert len(EXAMPLE_FILES) >= 4


@pytest.mark.parametrize("check", sorted(CHECKERS))
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_satisfies_invariant(path: Path, check: str) -> None:
    cr = load(path)
    assert CHECKERS[check](cr, EXAMPLE_POLICY, render(cr, EXAMPLE_POLICY)) == []


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_renders_deterministically(path: Path) -> None:
    first = to_yaml(render(load(path), EXAMPLE_POLICY))
    second = to_yaml(render(load(path), EXAMPLE_POLICY))
    assert first == second
    assert list(yaml.safe_load_all(first)) == render(load(path), EXAMPLE_POLICY)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_child_is_owned_labelled_and_namespaced(path: Path) -> None:
    cr = load(path)
    for m in render(cr, EXAMPLE_POLICY):
        meta = m["metadata"]
        assert meta["namespace"] == cr.metadata.namespace
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "secureai"
        assert meta["labels"]["secureai.dev/workload"] == cr.metadata.name
        retained = (meta.get("annotations") or {}).get("secureai.dev/retained") == "true"
        if not retained:
            (owner,) = meta["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["controller"]) == (
                cr.kind,
                cr.metadata.name,
                True,
            )


def test_distributed_training_children() -> None:
    _cr, manifests = rendered("training-distributed.yaml")
    kinds = [m["kind"] for m in manifests]
    assert kinds.count("Job") == 1
    (job,) = of_kind(manifests, "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    (headless,) = [s for s in of_kind(manifests, "Service") if s["spec"].get("clusterIP") == "None"]
    assert job["spec"]["template"]["spec"]["subdomain"] == headless["metadata"]["name"]
    (pvc,) = of_kind(manifests, "PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == "encrypted-ssd"
    # keepOutput: true → the PVC outlives the CR, so it has no ownerReference
    assert "ownerReferences" not in pvc["metadata"]
    spec = job["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"secureai.dev/pool": "training"}
    exprs = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert {
        "key": "nvidia.com/gpu.product",
        "operator": "In",
        "values": ["NVIDIA-H100-80GB-HBM3"],
    } in exprs
    # intra-job traffic only between the job's own pods
    (allow,) = [n for n in of_kind(manifests, "NetworkPolicy") if n["spec"].get("egress")]
    own = {"podSelector": allow["spec"]["podSelector"]}
    assert {"from": [own]} in allow["spec"]["ingress"]
    assert {"to": [own]} in allow["spec"]["egress"]


def test_single_gpu_training_has_no_headless_service_and_no_pvc() -> None:
    _cr, manifests = rendered("training-single-gpu.yaml")
    assert of_kind(manifests, "Service") == []
    assert of_kind(manifests, "PersistentVolumeClaim") == []
    (job,) = of_kind(manifests, "Job")
    assert job["spec"]["completions"] == 1
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 3600


def test_guarded_inference_children() -> None:
    _cr, manifests = rendered("inference-gpu-guarded.yaml")
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "Secret", "ConfigMap", "PodDisruptionBudget"} <= kinds
    (deploy,) = of_kind(manifests, "Deployment")
    spec = deploy["spec"]["template"]["spec"]
    names = [c["name"] for c in spec["containers"]]
    assert names == ["server", "guard"]
    assert [c["name"] for c in spec["initContainers"]] == ["model-verify"]
    (svc,) = of_kind(manifests, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == 8443  # the guard, not the server
    # the model server only listens on loopback behind the guard
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["SECUREAI_LISTEN_HOST"] == "127.0.0.1"


def test_cpu_inference_children() -> None:
    _cr, manifests = rendered("inference-cpu.yaml")
    assert of_kind(manifests, "PodDisruptionBudget") == []  # one replica
    assert of_kind(manifests, "ConfigMap") == []  # no guard
    (deploy,) = of_kind(manifests, "Deployment")
    spec = deploy["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["server"]
    for _where, c in containers(spec):
        assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert "affinity" not in spec
    assert "tolerations" not in spec


# ---------------------------------------------------------------------------- the checkers bite

Mutation = Callable[[list[dict[str, Any]]], None]


def _pod(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    for m in manifests:
        if m["kind"] in ("Job", "Deployment"):
            spec: dict[str, Any] = m["spec"]["template"]["spec"]
            return spec
    raise AssertionError("no workload")


def _set(path: str, value: Any) -> Mutation:
    def mutate(manifests: list[dict[str, Any]]) -> None:
        node: Any = _pod(manifests)
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return mutate


def _drop_deny(manifests: list[dict[str, Any]]) -> None:
    manifests[:] = [m for m in manifests if not m["metadata"]["name"].endswith("-default-deny")]


def _deny_ingress_only(manifests: list[dict[str, Any]]) -> None:
    for m in manifests:
        if m["metadata"]["name"].endswith("-default-deny"):
            m["spec"]["policyTypes"] = ["Ingress"]


def _deny_with_rule(manifests: list[dict[str, Any]]) -> None:
    for m in manifests:
        if m["metadata"]["name"].endswith("-default-deny"):
            m["spec"]["egress"] = [{}]


def _sa_automount(manifests: list[dict[str, Any]]) -> None:
    of_kind(manifests, "ServiceAccount")[0]["automountServiceAccountToken"] = True


def _long_token(manifests: list[dict[str, Any]]) -> None:
    volume = next(v for v in _pod(manifests)["volumes"] if "projected" in v)
    volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] = 86400


def _short_token(manifests: list[dict[str, Any]]) -> None:
    volume = next(v for v in _pod(manifests)["volumes"] if "projected" in v)
    volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] = 60


def _init_limit(manifests: list[dict[str, Any]]) -> None:
    _pod(manifests)["initContainers"][0]["resources"]["limits"]["memory"] = "1Gi"


def _sidecar_by_tag(manifests: list[dict[str, Any]]) -> None:
    _pod(manifests)["containers"][-1]["image"] = "registry.example.com/secureai/operator:latest"


def _no_gpu_toleration(manifests: list[dict[str, Any]]) -> None:
    _pod(manifests)["tolerations"] = []


def _no_affinity(manifests: list[dict[str, Any]]) -> None:
    del _pod(manifests)["affinity"]


def _no_gpu_limit(manifests: list[dict[str, Any]]) -> None:
    for part in ("requests", "limits"):
        del _pod(manifests)["containers"][0]["resources"][part]["nvidia.com/gpu"]


def _plain_class(manifests: list[dict[str, Any]]) -> None:
    of_kind(manifests, "PersistentVolumeClaim")[0]["spec"]["storageClassName"] = "standard"


def _secret_on_tmp(manifests: list[dict[str, Any]]) -> None:
    pod = _pod(manifests)
    pod["volumes"].append({"name": "s", "secret": {"secretName": "s"}})
    pod["containers"][0]["volumeMounts"].append({"name": "s", "mountPath": "/tmp"})


def _digit_service(manifests: list[dict[str, Any]]) -> None:
    of_kind(manifests, "Service")[0]["metadata"]["name"] = "1embeddings"


def _host_path(manifests: list[dict[str, Any]]) -> None:
    _pod(manifests)["volumes"].append({"name": "h", "hostPath": {"path": "/"}})


MUTATIONS: list[tuple[str, str, Mutation]] = [
    (
        "pss-restricted",
        "inference-gpu-guarded.yaml",
        _set("containers.1.securityContext.privileged", True),
    ),
    (
        "pss-restricted",
        "inference-cpu.yaml",
        _set("initContainers.0.securityContext.capabilities", {}),
    ),
    ("pss-restricted", "training-distributed.yaml", _set("securityContext.runAsUser", 0)),
    ("pss-restricted", "training-single-gpu.yaml", _set("hostNetwork", True)),
    ("pss-restricted", "training-single-gpu.yaml", _host_path),
    ("isolation", "training-distributed.yaml", _drop_deny),
    ("isolation", "inference-cpu.yaml", _deny_ingress_only),
    ("isolation", "inference-gpu-guarded.yaml", _deny_with_rule),
    ("identity", "inference-cpu.yaml", _set("automountServiceAccountToken", True)),
    ("identity", "training-single-gpu.yaml", _sa_automount),
    ("identity", "training-distributed.yaml", _long_token),
    ("identity", "inference-cpu.yaml", _short_token),
    ("resources", "inference-gpu-guarded.yaml", _init_limit),
    (
        "resources",
        "training-single-gpu.yaml",
        _set("containers.0.resources.requests", {"cpu": "1", "memory": "1Gi"}),
    ),
    ("image-digest", "inference-gpu-guarded.yaml", _sidecar_by_tag),
    (
        "image-digest",
        "training-single-gpu.yaml",
        _set("containers.0.image", "registry.example.com/ml/trainer:v1"),
    ),
    ("gpu", "training-distributed.yaml", _no_gpu_toleration),
    ("gpu", "inference-gpu-guarded.yaml", _no_affinity),
    ("gpu", "training-single-gpu.yaml", _no_gpu_limit),
    ("gpu", "training-distributed.yaml", _set("nodeSelector", {})),
    ("storage", "training-distributed.yaml", _plain_class),
    ("apiserver", "training-distributed.yaml", _secret_on_tmp),
    ("apiserver", "inference-cpu.yaml", _digit_service),
    ("apiserver", "inference-gpu-guarded.yaml", _set("containers.1.ports.0.containerPort", 8080)),
    ("apiserver", "inference-gpu-guarded.yaml", _set("containers.1.name", "server")),
]


@pytest.mark.parametrize(
    ("check", "example", "mutation"),
    MUTATIONS,
    ids=[f"{c}-{e.removesuffix('.yaml')}-{i}" for i, (c, e, _m) in enumerate(MUTATIONS)],
)
def test_checker_detects_a_broken_manifest(check: str, example: str, mutation: Mutation) -> None:
    cr, manifests = rendered(example)
    assert CHECKERS[check](cr, EXAMPLE_POLICY, manifests) == []
    broken = copy.deepcopy(manifests)
    mutation(broken)
    assert broken != manifests
    assert CHECKERS[check](cr, EXAMPLE_POLICY, broken) != []


def test_every_example_has_pods() -> None:
    for path in EXAMPLE_FILES:
        assert list(pods(render(load(path), EXAMPLE_POLICY))), path.name
