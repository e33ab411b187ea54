"""Label selector matching and foreign NetworkPolicy analysis. Pure."""

from __future__ import annotations

from typing import Any

from secureai.render.meta import LABEL_MANAGED_BY, MANAGED_BY


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a metav1.LabelSelector selects `labels` (an empty selector selects all)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def is_foreign(policy: dict[str, Any]) -> bool:
    labels = policy.get("metadata", {}).get("labels") or {}
    return labels.get(LABEL_MANAGED_BY) != MANAGED_BY


def widens(policy: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    """A NetworkPolicy that selects these pods and allows any traffic widens their access."""
    spec = policy.get("spec") or {}
    if not matches(spec.get("podSelector", {}), pod_labels):
        return False
    types = spec.get("policyTypes") or ["Ingress"]
    return bool(
        ("Ingress" in types and spec.get("ingress")) or ("Egress" in types and spec.get("egress"))
    )
