"""The contained form of a workload's children: what a Quarantine makes of them. Pure.

Containment is an input of render, not a side path: drift revert then protects it.
- the workload's allow policy allows nothing (with the default-deny: no traffic either way);
  a policy that allows nothing already (the default-deny) is left as rendered, so that
  containment writes one object per workload, and only its rules (`rules_patch`);
- its ServiceAccount is not rendered (deleted): every token issued for it is refused at once,
  and the pods cannot obtain new ones; release renders a new one (new UID);
- the operator-issued serving certificate is not rendered (deleted): release issues a new key;
- with Stop, the model server scales to zero and the training Job is suspended.
Foreign policies that would still allow traffic are excluded from the workload's pods
(`exclude_workloads`): NetworkPolicies are additive, a deny cannot cancel an allow.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from secureai.render.meta import LABEL_WORKLOAD

ANNOTATION_EXCLUDED = "secureai.dev/quarantine-excluded"
RULES = ("ingress", "egress", "policyTypes")


@dataclass(frozen=True)
class Containment:
    """Why and how a workload is contained."""

    quarantines: tuple[str, ...]  # names of the active Quarantines that contain it, sorted
    stop: bool = False
    message: str = ""


def contain(manifests: list[dict[str, Any]], containment: Containment) -> list[dict[str, Any]]:
    """The contained form of rendered children (a new list; the input is not changed)."""
    out: list[dict[str, Any]] = []
    for rendered in manifests:
        kind = rendered["kind"]
        if kind == "ServiceAccount":
            continue
        if kind == "Secret" and _is_serving_certificate(rendered):
            continue
        if kind == "NetworkPolicy":
            out.append(contained_policy(rendered))
            continue
        manifest = copy.deepcopy(rendered)
        if kind == "Deployment" and containment.stop:
            manifest["spec"]["replicas"] = 0
        elif kind == "Job" and containment.stop:
            manifest["spec"]["suspend"] = True
        out.append(manifest)
    return out


def contained_policy(rendered: dict[str, Any]) -> dict[str, Any]:
    """A NetworkPolicy that allows nothing: the rendered one, or a new object with empty
    rules that shares the rendered one's other (unchanged) parts. No deep copy: containment
    makes this for every matched workload before its first write, and neither object is
    changed in place afterwards (a new rendering makes new manifests)."""
    if allows_nothing(rendered["spec"]):
        return rendered
    spec = {**rendered["spec"], "ingress": [], "egress": [], "policyTypes": ["Ingress", "Egress"]}
    return {**rendered, "spec": spec}


def allows_nothing(spec: dict[str, Any]) -> bool:
    """A NetworkPolicy spec without a single ingress or egress rule allows no traffic (it
    may deny some): containment leaves it as it is."""
    return not spec.get("ingress") and not spec.get("egress")


def rules_patch(contained: dict[str, Any]) -> dict[str, Any]:
    """A merge patch that puts a contained policy's rules in place over whatever the live
    policy holds (its other fields are compared, and reverted, by the reconcile after)."""
    return {"spec": {key: contained["spec"][key] for key in RULES}}


def _is_serving_certificate(manifest: dict[str, Any]) -> bool:
    return str(manifest.get("type")) == "kubernetes.io/tls"


def excluded(policy: dict[str, Any]) -> set[str]:
    """Workloads a foreign policy was narrowed to exclude by a quarantine."""
    text = ((policy.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_EXCLUDED, "")
    return {n for n in text.split(",") if n}


def exclude_workloads(policy: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """A foreign NetworkPolicy narrowed so that it no longer selects the named workloads' pods
    (and widened back for workloads no longer named). Its other effects are kept."""
    want = set(names)
    had = excluded(policy)
    body = copy.deepcopy(policy)
    spec = body.setdefault("spec", {})
    selector = dict(spec.get("podSelector") or {})
    expressions = [
        e
        for e in selector.get("matchExpressions") or []
        if not (
            e.get("key") == LABEL_WORKLOAD
            and e.get("operator") == "NotIn"
            and sorted(e.get("values") or []) == sorted(had)
        )
    ]
    if want:
        expressions.append({"key": LABEL_WORKLOAD, "operator": "NotIn", "values": sorted(want)})
    if expressions:
        selector["matchExpressions"] = expressions
    else:
        selector.pop("matchExpressions", None)
    spec["podSelector"] = selector
    annotations = body.setdefault("metadata", {}).setdefault("annotations", {})
    if want:
        annotations[ANNOTATION_EXCLUDED] = ",".join(sorted(want))
    else:
        annotations.pop(ANNOTATION_EXCLUDED, None)
    return body
