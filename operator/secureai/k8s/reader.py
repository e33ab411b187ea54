"""Read, once, everything `secureai audit` judges. GET only: it never writes.

Each resource is listed once (cluster-wide, or in one namespace), concurrently. A 403 on one
resource does not stop the audit: the resource is named in `Gathered.forbidden` and every
check that needs it is reported as not run. Secrets are never read: which Secrets matter
(KEKs, the CA key) follows from the workloads' specs, and who may read them from RBAC; an
auditor allowed to list Secrets would itself be one more reader of every key.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from secureai.crypto.ca import bundle_certs
from secureai.judge.posture import Gathered, Rbac
from secureai.k8s.certs import CA_BUNDLE_CONFIGMAP, CA_SECRET
from secureai.k8s.client import ApiError, KubeClient
from secureai.k8s.resources import (
    CHILD_RESOURCES,
    NAMESPACE,
    PERSISTENT_VOLUME,
    POD,
    SECURE_INFERENCE_SERVICE,
    SECURE_TRAINING_JOB,
    Resource,
)


@dataclass(frozen=True)
class Listed:
    key: str  # the resource's plural, as named in messages and `forbidden`
    resource: Resource


def _r(kind: str, api_version: str, plural: str, namespaced: bool = True) -> Listed:
    return Listed(plural, Resource(kind, api_version, plural, namespaced))


NAMESPACED = (
    Listed("securetrainingjobs", SECURE_TRAINING_JOB),
    Listed("secureinferenceservices", SECURE_INFERENCE_SERVICE),
    Listed("pods", POD),
    Listed("deployments", CHILD_RESOURCES["Deployment"]),
    _r("StatefulSet", "apps/v1", "statefulsets"),
    _r("DaemonSet", "apps/v1", "daemonsets"),
    _r("ReplicaSet", "apps/v1", "replicasets"),
    Listed("jobs", CHILD_RESOURCES["Job"]),
    _r("CronJob", "batch/v1", "cronjobs"),
    Listed("networkpolicies", CHILD_RESOURCES["NetworkPolicy"]),
    Listed("persistentvolumeclaims", CHILD_RESOURCES["PersistentVolumeClaim"]),
    _r("Event", "v1", "events"),
    _r("Role", "rbac.authorization.k8s.io/v1", "roles"),
    _r("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings"),
)
CLUSTER = (
    Listed("namespaces", NAMESPACE),
    Listed("persistentvolumes", PERSISTENT_VOLUME),
    _r("ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles", False),
    _r("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
)
CONTROLLERS = ("deployments", "statefulsets", "daemonsets", "jobs", "cronjobs")


class Unreachable(Exception):
    """The API server could not be asked at all (one line)."""


# Only their metadata is judged (owner references): the API server sends nothing else.
METADATA_ONLY = frozenset({"replicasets"})
PARTIAL_METADATA = (
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
)


async def _list(
    kube: KubeClient, item: Listed, namespace: str | None, params: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    accept = PARTIAL_METADATA if item.key in METADATA_ONLY else "application/json"
    result = await kube.request("GET", item.resource.path(namespace), params=params, accept=accept)
    items: list[dict[str, Any]] = result.get("items") or []
    for obj in items:  # a list's items carry no kind (or PartialObjectMetadata)
        obj["kind"] = item.resource.kind
        obj["apiVersion"] = item.resource.api_version
    return items


async def _ca_not_after(kube: KubeClient, operator_namespace: str) -> tuple[datetime, ...] | None:
    cm = await kube.request(
        "GET", f"/api/v1/namespaces/{operator_namespace}/configmaps/{CA_BUNDLE_CONFIGMAP}"
    )
    pem = ((cm.get("data") or {}).get("ca.crt") or "").encode()
    certs = bundle_certs(pem) if pem else []
    return tuple(c.not_valid_after_utc for c in certs) or None


async def gather(kube: KubeClient, namespace: str | None, operator_namespace: str) -> Gathered:
    """Every object the audit judges, read once; 403s are recorded, not raised."""
    forbidden: dict[str, str] = {}
    lists: dict[str, list[dict[str, Any]]] = {}

    async def one(item: Listed) -> None:
        ns = namespace if item.resource.namespaced else None
        params = {"fieldSelector": "reason=DriftReverted"} if item.key == "events" else None
        try:
            if item.key == "namespaces" and namespace is not None:
                got = await kube.request("GET", item.resource.path(None, namespace))
                lists[item.key] = [{**got, "kind": "Namespace"}] if got else []
            else:
                lists[item.key] = await _list(kube, item, ns, params)
        except ApiError as exc:
            if exc.status in (401, 403):
                forbidden[item.key] = "forbidden" if exc.status == 403 else "unauthorized"
            elif exc.status == 404:  # a kind not installed (say, the CRDs)
                lists[item.key] = []
            elif exc.status == 0:
                raise Unreachable(f"API server unreachable: {exc.message}") from None
            else:
                forbidden[item.key] = f"{exc.status} {exc.reason}"

    await asyncio.gather(*(one(item) for item in (*NAMESPACED, *CLUSTER)))
    if len(forbidden) == len(NAMESPACED) + len(CLUSTER) and set(forbidden.values()) == {
        "unauthorized"
    }:
        raise Unreachable("the API server refused the credentials (401)")
    ca: tuple[datetime, ...] | None = None
    try:
        ca = await _ca_not_after(kube, operator_namespace)
    except ApiError as exc:
        if exc.status in (401, 403):
            forbidden["configmaps"] = "forbidden"
        elif exc.status != 404:
            forbidden["configmaps"] = f"{exc.status} {exc.reason}"
    except ValueError:
        ca = None
    return Gathered(
        workloads=lists.get("securetrainingjobs", []) + lists.get("secureinferenceservices", []),
        pods=lists.get("pods", []),
        controllers=[obj for key in CONTROLLERS for obj in lists.get(key, [])],
        replica_sets=lists.get("replicasets", []),
        network_policies=lists.get("networkpolicies", []),
        namespaces=lists.get("namespaces", []),
        claims=lists.get("persistentvolumeclaims", []),
        volumes=lists.get("persistentvolumes", []),
        events=lists.get("events", []),
        rbac=Rbac(
            cluster_roles=lists.get("clusterroles", []),
            cluster_role_bindings=lists.get("clusterrolebindings", []),
            roles=lists.get("roles", []),
            role_bindings=lists.get("rolebindings", []),
        ),
        ca_not_after=ca,
        operator_namespace=operator_namespace,
        ca_secret=CA_SECRET,
        forbidden=forbidden,
    )
