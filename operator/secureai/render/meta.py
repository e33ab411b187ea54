"""Names, labels and owner references shared by every child."""

from __future__ import annotations

from typing import Any

from secureai.api import API_VERSION, SecureTrainingJob, Workload

MANAGED_BY = "secureai"
LABEL_WORKLOAD = "secureai.dev/workload"
LABEL_KIND = "secureai.dev/kind"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
ANNOTATION_RETAINED = "secureai.dev/retained"

PSS_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


def kind_label(cr: Workload) -> str:
    return "training" if isinstance(cr, SecureTrainingJob) else "inference"


def selector(cr: Workload) -> dict[str, str]:
    """Labels that select exactly this workload's pods."""
    return {LABEL_WORKLOAD: cr.metadata.name, LABEL_KIND: kind_label(cr)}


def labels(cr: Workload, component: str) -> dict[str, str]:
    """Labels of every child: recommended app.kubernetes.io labels plus the selector.

    No `app.kubernetes.io/instance`: Argo CD's label tracking reads it as an Application name.
    """
    return {
        "app.kubernetes.io/name": f"secureai-{kind_label(cr)}",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "secureai",
        LABEL_MANAGED_BY: MANAGED_BY,
        **selector(cr),
    }


def owner_reference(cr: Workload) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": cr.kind,
        "name": cr.metadata.name,
        "uid": cr.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    cr: Workload, name: str, component: str, *, owned: bool = True, **extra: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": cr.metadata.namespace,
        "labels": labels(cr, component),
    }
    if owned:
        meta["ownerReferences"] = [owner_reference(cr)]
    meta.update(extra)
    return meta


def child_selector(cr: Workload) -> str:
    """A label selector string matching every child of this workload."""
    return f"{LABEL_WORKLOAD}={cr.metadata.name},{LABEL_KIND}={kind_label(cr)}"
