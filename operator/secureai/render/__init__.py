"""Pure, deterministic rendering: (custom resource, policy) → child manifests. No I/O."""

from __future__ import annotations

from typing import Any

import yaml

from secureai.api import Policy, SecureTrainingJob, Workload
from secureai.render.containment import Containment, contain
from secureai.render.inference import render_inference, serving_port
from secureai.render.meta import PSS_LABELS, metadata
from secureai.render.network import network_policies
from secureai.render.training import render_training
from secureai.render.validate import PolicyViolation, Violation, check, image_digest, violations

__all__ = [
    "PSS_LABELS",
    "Containment",
    "PolicyViolation",
    "Violation",
    "check",
    "image_digest",
    "render",
    "to_yaml",
    "violations",
]


def _service_account(cr: Workload) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(cr, cr.metadata.name, "identity"),
        "automountServiceAccountToken": False,
    }


def render(
    cr: Workload, policy: Policy, containment: Containment | None = None
) -> list[dict[str, Any]]:
    """Every child of `cr`, in apply order (contained by a Quarantine when `containment` is
    given). Raises PolicyViolation on a bad spec."""
    check(cr, policy)
    if isinstance(cr, SecureTrainingJob):
        policies = network_policies(cr, policy)
        workload = render_training(cr, policy)
    else:
        policies = network_policies(cr, policy, serving_port(cr))
        workload = render_inference(cr, policy)
    children = [_service_account(cr), *policies, *workload]
    return children if containment is None else contain(children, containment)


_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    """A YAML stream (libyaml when present); the same manifests always give the same bytes."""
    return yaml.dump_all(
        manifests, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120
    )
