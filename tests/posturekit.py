"""The live objects a clean cluster holds for secureai workloads, built from the renderer:
shared by the posture unit tests and the audit benchmark (no cluster)."""

from __future__ import annotations

import copy
from typing import Any

from secureai.api import Policy, parse_workload
from secureai.judge.posture import Gathered
from secureai.render import render

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def world(policy: Policy, manifest: dict[str, Any], pods_per_template: int = 1) -> Gathered:
    """The live objects the operator makes for `manifest`, as a clean cluster would hold them."""
    cr = parse_workload(manifest)
    children = render(cr, policy)
    ns = cr.metadata.namespace
    workload = {**copy.deepcopy(manifest), "status": {}}
    pods, claims, sets = [], [], []
    for child in children:
        if child["kind"] in ("Deployment", "Job"):
            template = child["spec"]["template"]
            child["metadata"]["uid"] = f"uid-{child['kind']}-{child['metadata']['name']}"
            owner = child["metadata"]["uid"]
            if child["kind"] == "Deployment":
                owner = f"uid-rs-{child['metadata']['name']}"
                sets.append(
                    {
                        "kind": "ReplicaSet",
                        "metadata": {
                            "name": "rs",
                            "namespace": ns,
                            "uid": owner,
                            "ownerReferences": [
                                {"uid": child["metadata"]["uid"], "controller": True}
                            ],
                        },
                    }
                )
            for i in range(pods_per_template):
                pods.append(
                    {
                        "kind": "Pod",
                        "metadata": {
                            **copy.deepcopy(template["metadata"]),
                            "name": f"{child['metadata']['name']}-{i}",
                            "namespace": ns,
                            "ownerReferences": [{"uid": owner, "controller": True}],
                        },
                        "spec": copy.deepcopy(template["spec"]),
                    }
                )
        if child["kind"] == "PersistentVolumeClaim":
            claims.append(child)
    rendered = {c["metadata"]["name"] for c in claims}
    for pod in pods:
        for volume in pod["spec"].get("volumes") or []:
            name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if name and name not in rendered:
                rendered.add(name)
                claims.append(
                    {
                        "kind": "PersistentVolumeClaim",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"storageClassName": policy.encrypted_storage_classes[0]},
                    }
                )
    return Gathered(
        workloads=[workload],
        pods=pods,
        controllers=[c for c in children if c["kind"] in ("Deployment", "Job")],
        replica_sets=sets,
        network_policies=[c for c in children if c["kind"] == "NetworkPolicy"],
        namespaces=[namespace(ns, RESTRICTED)],
        claims=claims,
    )


def synthetic(base: dict[str, Any], policy: Policy, count: int, namespaces: int = 10) -> Gathered:
    """`count` copies of `base` (renamed, spread over `namespaces`), merged into one world."""
    worlds = []
    for i in range(count):
        m = copy.deepcopy(base)
        m["metadata"].update(name=f"w-{i}", namespace=f"ns-{i % namespaces}", uid=f"u-{i}")
        worlds.append(world(policy, m))
    return Gathered(
        workloads=[o for w in worlds for o in w.workloads],
        pods=[o for w in worlds for o in w.pods],
        controllers=[o for w in worlds for o in w.controllers],
        replica_sets=[o for w in worlds for o in w.replica_sets],
        network_policies=[o for w in worlds for o in w.network_policies],
        namespaces=[namespace(f"ns-{j}", RESTRICTED) for j in range(namespaces)],
        claims=[o for w in worlds for o in w.claims],
    )
