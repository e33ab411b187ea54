"""REST paths of the kinds the operator reads and writes."""

from __future__ import annotations

from dataclasses import dataclass

from secureai.api import GROUP, VERSION


@dataclass(frozen=True)
class Resource:
    kind: str
    api_version: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


CHILD_RESOURCES: dict[str, Resource] = {
    r.kind: r
    for r in (
        Resource("ServiceAccount", "v1", "serviceaccounts"),
        Resource("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies"),
        Resource("PersistentVolumeClaim", "v1", "persistentvolumeclaims"),
        Resource("Service", "v1", "services"),
        Resource("Secret", "v1", "secrets"),
        Resource("ConfigMap", "v1", "configmaps"),
        Resource("Job", "batch/v1", "jobs"),
        Resource("Deployment", "apps/v1", "deployments"),
        Resource("PodDisruptionBudget", "policy/v1", "poddisruptionbudgets"),
    )
}
NAMESPACE = Resource("Namespace", "v1", "namespaces", namespaced=False)
POD = Resource("Pod", "v1", "pods")
PERSISTENT_VOLUME = Resource("PersistentVolume", "v1", "persistentvolumes", namespaced=False)
SECURE_TRAINING_JOB = Resource("SecureTrainingJob", f"{GROUP}/{VERSION}", "securetrainingjobs")
SECURE_INFERENCE_SERVICE = Resource(
    "SecureInferenceService", f"{GROUP}/{VERSION}", "secureinferenceservices"
)
WORKLOAD_RESOURCES = {r.kind: r for r in (SECURE_TRAINING_JOB, SECURE_INFERENCE_SERVICE)}
QUARANTINE = Resource("Quarantine", f"{GROUP}/{VERSION}", "quarantines", namespaced=False)


def resource_of(kind: str) -> Resource:
    for table in (CHILD_RESOURCES, WORKLOAD_RESOURCES):
        if kind in table:
            return table[kind]
    if kind == NAMESPACE.kind:
        return NAMESPACE
    if kind == PERSISTENT_VOLUME.kind:
        return PERSISTENT_VOLUME
    if kind == POD.kind:
        return POD
    if kind == QUARANTINE.kind:
        return QUARANTINE
    raise KeyError(kind)
