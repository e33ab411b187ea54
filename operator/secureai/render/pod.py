"""The hardened pod template shared by both kinds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from secureai.api import Policy, Workload
from secureai.api.policy import GPU_PRESENT_LABEL, GPU_PRODUCT_LABEL, GPU_RESOURCE
from secureai.render.meta import selector

TOKEN_DIR = "/var/run/secrets/secureai/tokens"  # noqa: S105 - a path
SECRETS_DIR = "/var/run/secrets/secureai"
TMP_SIZE = "256Mi"
SECRET_FILE_MODE = 0o440


def container_security_context(policy: Policy) -> dict[str, Any]:
    """Pod Security "restricted", stated explicitly so that every field is owned."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": policy.run_as_user,
        "runAsGroup": policy.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context(policy: Policy) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": policy.run_as_user,
        "runAsGroup": policy.run_as_group,
        "fsGroup": policy.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def guaranteed(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    """Requests equal to limits."""
    amounts: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def token_volume(cr: Workload, policy: Policy) -> dict[str, Any]:
    """The only credentials a pod gets: projected, audience-bound, short-lived tokens."""
    identity = cr.spec.identity
    sources = [
        {
            "serviceAccountToken": {
                "audience": (identity.audience if identity else None)
                or policy.tokens.default_audience,
                "expirationSeconds": (identity.expiration_seconds if identity else None)
                or policy.tokens.default_seconds,
                "path": "token",
            }
        }
    ]
    for token in identity.tokens or [] if identity else []:
        sources.append(
            {
                "serviceAccountToken": {
                    "audience": token.audience,
                    "expirationSeconds": token.expiration_seconds or policy.tokens.default_seconds,
                    "path": token.name,
                }
            }
        )
    return {"name": "tokens", "projected": {"defaultMode": SECRET_FILE_MODE, "sources": sources}}


def gpu_placement(cr: Workload, policy: Policy) -> dict[str, Any]:
    """nodeSelector, affinity and tolerations for the workload's GPUs and pool."""
    gpu = cr.spec.gpu
    out: dict[str, Any] = {}
    if gpu is None:
        return out
    tolerations: list[dict[str, Any]] = []
    if gpu.count > 0:
        expressions = [{"key": GPU_PRESENT_LABEL, "operator": "In", "values": ["true"]}]
        if gpu.product:
            expressions.append(
                {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [gpu.product]}
            )
        out["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": expressions}]
                }
            }
        }
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if gpu.pool is not None:
        pool = policy.gpu_pools[gpu.pool]
        if pool.node_selector:
            out["nodeSelector"] = dict(sorted(pool.node_selector.items()))
        tolerations += [t.wire() for t in pool.tolerations]
    if tolerations:
        out["tolerations"] = tolerations
    return out


@dataclass
class PodParts:
    """What a kind adds to the common pod: mounts, volumes and extra containers."""

    mounts: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    sidecars: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, str]] = field(default_factory=list)
    ports: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)


def helper_container(
    name: str, policy: Policy, args: list[str], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """A container running the operator's own image (model verify, decrypt, guard)."""
    return {
        "name": name,
        "image": policy.operator_image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": guaranteed("250m", "256Mi"),
        "securityContext": container_security_context(policy),
        "volumeMounts": mounts,
    }


def pod_template(cr: Workload, policy: Policy, main: str, parts: PodParts) -> dict[str, Any]:
    """A pod template hardened to Pod Security "restricted", with no API credentials."""
    spec = cr.spec
    mounts = [
        {"name": "tokens", "mountPath": TOKEN_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
    ]
    volumes: list[dict[str, Any]] = [
        token_volume(cr, policy),
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
    ]
    for i, secret in enumerate(spec.secrets or []):
        mounts.append(
            {
                "name": f"secret-{i}",
                "mountPath": secret.mount_path or f"{SECRETS_DIR}/{secret.name}",
                "readOnly": True,
            }
        )
        volumes.append(
            {
                "name": f"secret-{i}",
                "secret": {"secretName": secret.name, "defaultMode": SECRET_FILE_MODE},
            }
        )
    container: dict[str, Any] = {
        "name": main,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    env = [{"name": e.name, "value": e.value} for e in spec.env or []] + parts.env
    if env:
        container["env"] = env
    if parts.ports:
        container["ports"] = parts.ports
    container.update(parts.probes)
    container["resources"] = guaranteed(spec.resources.cpu, spec.resources.memory, spec.gpu_count)
    container["securityContext"] = container_security_context(policy)
    container["volumeMounts"] = mounts + parts.mounts
    pod: dict[str, Any] = {
        "serviceAccountName": cr.metadata.name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(policy),
    }
    if parts.init_containers:
        pod["initContainers"] = parts.init_containers
    pod["containers"] = [container, *parts.sidecars]
    pod.update(gpu_placement(cr, policy))
    pod["volumes"] = volumes + parts.volumes
    return {"metadata": {"labels": selector(cr)}, "spec": pod}
