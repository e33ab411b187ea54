"""The security invariants every rendered workload must satisfy (issue 2, items 2 and 3).

Each checker takes the custom resource, the policy and the rendered manifests, and returns a
list of human-readable problems: empty means the invariant holds. Shared by the example tests
and the property-based tests, and tested itself against deliberately broken manifests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from secureai.api import Policy, SecureTrainingJob, Workload
from secureai.api.policy import GPU_PRESENT_LABEL, GPU_PRODUCT_LABEL, GPU_RESOURCE
from secureai.judge.pss import check_restricted, pod_specs_of

Manifest = dict[str, Any]
Checker = Callable[[Workload, Policy, list[Manifest]], list[str]]

DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
K8S_MIN_TOKEN_SECONDS = 600


def pods(manifests: list[Manifest]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for manifest in manifests:
        yield from pod_specs_of(manifest)


def containers(pod: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("initContainers", "containers"):
        for c in pod.get(kind) or []:
            yield f"{kind}/{c.get('name')}", c


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") == kind]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if set(selector) - {"matchLabels"}:
        return False  # matchExpressions and the like: not what we render, so not trusted
    match = selector.get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


# ---------------------------------------------------------------------------- item 2


def pss_problems(cr: Workload, policy: Policy, manifests: list[Manifest]) -> list[str]:
    """Every pod passes Pod Security "restricted"; and there is at least one pod."""
    found = list(pods(manifests))
    if not found:
        return ["no pod template rendered"]
    return [
        f"{label}: {problem}"
        for label, spec, meta in found
        for problem in check_restricted(spec, meta)
    ]


# ---------------------------------------------------------------------------- item 3


def isolation_problems(cr: Workload, policy: Policy, manifests: list[Manifest]) -> list[str]:
    """Every pod is selected by a NetworkPolicy that denies all ingress and all egress."""
    out = []
    deny = [
        np
        for np in of_kind(manifests, "NetworkPolicy")
        if sorted(np["spec"].get("policyTypes") or []) == ["Egress", "Ingress"]
        and not np["spec"].get("ingress")
        and not np["spec"].get("egress")
    ]
    for label, _spec, meta in pods(manifests):
        labels = meta.get("labels") or {}
        if not any(_selects(np["spec"].get("podSelector") or {}, labels) for np in deny):
            out.append(f"{label}: no default-deny (Ingress+Egress) NetworkPolicy selects {labels}")
    # Every NetworkPolicy we render is namespaced with the workload and declares both
    # directions, so that none of them can turn a direction back to allow-all.
    for np in of_kind(manifests, "NetworkPolicy"):
        name = np["metadata"]["name"]
        if np["metadata"].get("namespace") != cr.metadata.namespace:
            out.append(f"NetworkPolicy/{name}: not in the workload's namespace")
        if sorted(np["spec"].get("policyTypes") or []) != ["Egress", "Ingress"]:
            out.append(f"NetworkPolicy/{name}: policyTypes must be [Ingress, Egress]")
    return out


def identity_problems(cr: Workload, policy: Policy, manifests: list[Manifest]) -> list[str]:
    """No automounted API credentials; projected tokens within [600 s, policy maximum]."""
    out = []
    accounts = {sa["metadata"]["name"]: sa for sa in of_kind(manifests, "ServiceAccount")}
    for name, sa in accounts.items():
        if sa.get("automountServiceAccountToken") is not False:
            out.append(f"ServiceAccount/{name}: automountServiceAccountToken must be false")
    high = policy.tokens.max_seconds
    for label, spec, _meta in pods(manifests):
        if spec.get("automountServiceAccountToken") is not False:
            out.append(f"{label}: automountServiceAccountToken must be false")
        account = spec.get("serviceAccountName")
        if account not in accounts:
            out.append(f"{label}: serviceAccountName {account!r} is not a rendered ServiceAccount")
        tokens = [
            source["serviceAccountToken"]
            for volume in spec.get("volumes") or []
            for source in (volume.get("projected") or {}).get("sources") or []
            if "serviceAccountToken" in source
        ]
        if not tokens:
            out.append(f"{label}: no projected service-account token")
        for token in tokens:
            seconds = token.get("expirationSeconds")
            if not isinstance(seconds, int) or not K8S_MIN_TOKEN_SECONDS <= seconds <= high:
                out.append(
                    f"{label}: token {token.get('path')!r} expires in {seconds!r} s, "
                    f"outside [{K8S_MIN_TOKEN_SECONDS}, {high}]"
                )
            if not token.get("audience"):
                out.append(f"{label}: token {token.get('path')!r} has no audience")
        identity = cr.spec.identity
        wanted: list[tuple[str, int | None, str | None]] = [
            (
                "token",
                identity.expiration_seconds if identity else None,
                identity.audience if identity else None,
            )
        ]
        if identity is not None:
            wanted += [(t.name, t.expiration_seconds, t.audience) for t in identity.tokens or []]
        by_path = {t.get("path"): t for t in tokens}
        for path, seconds, audience in wanted:
            token = by_path.get(path)
            if token is None:
                out.append(f"{label}: token {path!r} from the spec is not projected")
                continue
            expected = seconds if seconds is not None else policy.tokens.default_seconds
            if token.get("expirationSeconds") != expected:
                out.append(f"{label}: token {path!r} expires in {token.get('expirationSeconds')}")
            if audience and token.get("audience") != audience:
                out.append(f"{label}: token {path!r} has audience {token.get('audience')!r}")
    return out


def resource_problems(cr: Workload, policy: Policy, manifests: list[Manifest]) -> list[str]:
    """Requests equal limits, with CPU and memory, in every container, init and sidecar."""
    out = []
    for label, spec, _meta in pods(manifests):
        for where, c in containers(spec):
            resources = c.get("resources") or {}
            requests, limits = resources.get("requests"), resources.get("limits")
            if not requests or requests != limits:
                out.append(f"{label} {where}: requests {requests} != limits {limits}")
            elif not {"cpu", "memory"} <= set(limits):
                out.append(f"{label} {where}: cpu and memory must both be set ({limits})")
    return out


def image_problems(cr: Workload, policy: Policy, manifests: list[Manifest]) -> list[str]:
    """Every container image is pinned by digest; the workload runs the spec's image."""
    out = []
    for label, spec, _meta in pods(manifests):
        images = [c.get("image") for _where, c in containers(spec)]
        for where, c in containers(spec):
            if not isinstance(c.get("image"), str) or not DIGEST_RE.search(c["image"]):
                out.append(f"{label} {where}: image {c.get('image')!r} is not pinned by digest")
        if cr.spec.image not in images:
            out.append(f"{label}: the spec's image {cr.spec.image!r} is not run")
    return out


def _main_container(spec: dict[str, Any]) -> dict[str, Any]:
    return (spec.get("containers") or [{}])[0]


def gpu_problems(cr: Workload, policy: Policy, manifests: list[Manifest]) -> list[str]:
    """GPU limit, required node affinity and toleration; pool placement from policy."""
    out = []
    gpu = cr.spec.gpu
    count = gpu.count if gpu else 0
    for label, spec, _meta in pods(manifests):
        main = _main_container(spec)
        limits = (main.get("resources") or {}).get("limits") or {}
        terms = (
            ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"
            )
            or {}
        ).get("nodeSelectorTerms") or []
        tolerations = spec.get("tolerations") or []
        gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        if count == 0:
            for where, c in containers(spec):
                if GPU_RESOURCE in str(c.get("resources")):
                    out.append(f"{label} {where}: GPU resource without spec.gpu.count")
            if terms:
                out.append(f"{label}: GPU node affinity without GPUs")
        else:
            if str(limits.get(GPU_RESOURCE)) != str(count):
                out.append(f"{label}: {GPU_RESOURCE} limit {limits.get(GPU_RESOURCE)!r} != {count}")
            if gpu_toleration not in tolerations:
                out.append(f"{label}: missing toleration {gpu_toleration}")
            if not terms:
                out.append(f"{label}: no required node affinity")
            for i, term in enumerate(terms):
                exprs = term.get("matchExpressions") or []
                want = [{"key": GPU_PRESENT_LABEL, "operator": "In", "values": ["true"]}]
                if gpu is not None and gpu.product:
                    want.append(
                        {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [gpu.product]}
                    )
                for expr in want:
                    if expr not in exprs:
                        out.append(f"{label}: nodeSelectorTerms[{i}] lacks {expr}")
            for where, c in containers(spec):
                if c is not main and GPU_RESOURCE in str(c.get("resources")):
                    out.append(f"{label} {where}: a helper container must not take GPUs")
        if gpu is not None and gpu.pool is not None:
            pool = policy.gpu_pools[gpu.pool]
            selector = spec.get("nodeSelector") or {}
            for key, value in pool.node_selector.items():
                if selector.get(key) != value:
                    out.append(f"{label}: pool nodeSelector {key}={value} missing")
            for toleration in pool.tolerations:
                if toleration.wire() not in tolerations:
                    out.append(f"{label}: pool toleration {toleration.wire()} missing")
        elif spec.get("nodeSelector"):
            out.append(f"{label}: nodeSelector without a pool: {spec['nodeSelector']}")
    return out


def storage_problems(cr: Workload, policy: Policy, manifests: list[Manifest]) -> list[str]:
    """Every PVC uses an encrypted StorageClass from policy; datasets are read-only."""
    out = []
    for pvc in of_kind(manifests, "PersistentVolumeClaim"):
        cls = pvc["spec"].get("storageClassName")
        if cls not in policy.encrypted_storage_classes:
            out.append(
                f"PersistentVolumeClaim/{pvc['metadata']['name']}: class {cls!r} is not encrypted"
            )
    if isinstance(cr, SecureTrainingJob):
        if (cr.spec.output is not None) != bool(of_kind(manifests, "PersistentVolumeClaim")):
            out.append("an output PVC is rendered exactly when spec.output is set")
        claims = {d.claim_name for d in cr.spec.datasets or []}
        for label, spec, _meta in pods(manifests):
            for volume in spec.get("volumes") or []:
                claim = volume.get("persistentVolumeClaim") or {}
                if claim.get("claimName") in claims and claim.get("readOnly") is not True:
                    out.append(f"{label}: dataset {claim['claimName']} is not mounted read-only")
    return out


DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def apiserver_problems(cr: Workload, policy: Policy, manifests: list[Manifest]) -> list[str]:
    """What the API server rejects but the offline OpenAPI schemas cannot see.

    Unique mount paths per container, mounts of declared volumes only, unique volume and
    container names, no port bound twice in a pod, DNS-1035 Service names, and names of
    at most 63 characters where Kubernetes needs a label.
    """
    out = []
    for m in manifests:
        name = m["metadata"]["name"]
        if m["kind"] == "Service" and not DNS_1035.match(name):
            out.append(f"Service/{name}: name is not a DNS-1035 label")
        if len(name) > 63 or not DNS_1123_LABEL.match(name):
            out.append(f"{m['kind']}/{name}: name is not a DNS-1123 label")
    for label, spec, _meta in pods(manifests):
        volumes = [v["name"] for v in spec.get("volumes") or []]
        if len(set(volumes)) != len(volumes):
            out.append(f"{label}: repeated volume names {volumes}")
        names = [c["name"] for _where, c in containers(spec)]
        if len(set(names)) != len(names):
            out.append(f"{label}: repeated container names {names}")
        bound: list[int] = []
        for where, c in containers(spec):
            paths = [mount["mountPath"] for mount in c.get("volumeMounts") or []]
            if len(set(paths)) != len(paths):
                out.append(f"{label} {where}: repeated mountPath in {paths}")
            for mount in c.get("volumeMounts") or []:
                if mount["name"] not in volumes:
                    out.append(f"{label} {where}: mounts undeclared volume {mount['name']!r}")
            if where.startswith("containers/"):
                bound += [p["containerPort"] for p in c.get("ports") or []]
        if len(set(bound)) != len(bound):
            out.append(f"{label}: a port is bound twice in the pod: {bound}")
    return out


CHECKERS: dict[str, Checker] = {
    "pss-restricted": pss_problems,
    "isolation": isolation_problems,
    "identity": identity_problems,
    "resources": resource_problems,
    "image-digest": image_problems,
    "gpu": gpu_problems,
    "storage": storage_problems,
    "apiserver": apiserver_problems,
}
