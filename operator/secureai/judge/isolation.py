"""Isolation judged from what is live. Pure.

Inputs are gathered once by the caller: the labels of the workload's live pods (and of its
live pod templates, for pods still to come), every live NetworkPolicy of the namespace, which
of them are the workload's own and which of those no longer match what was rendered. The
verdict uses the API's selector semantics (`matchLabels` and `matchExpressions`; a missing
selector selects nothing, an empty one everything).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DIRECTIONS = ("Ingress", "Egress")


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a metav1.LabelSelector selects a set of labels."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key"), expr.get("operator")
        values = expr.get("values") or []
        present = key in labels
        if op == "In":
            ok = present and labels[key] in values
        elif op == "NotIn":
            ok = not present or labels[key] not in values
        elif op == "Exists":
            ok = present
        elif op == "DoesNotExist":
            ok = not present
        else:  # the API refuses other operators; select nothing rather than guess
            ok = False
        if not ok:
            return False
    return True


def policy_types(spec: Mapping[str, Any]) -> set[str]:
    """The directions a policy isolates (the API's default when `policyTypes` is absent)."""
    types = spec.get("policyTypes")
    if types:
        return set(types)
    return {"Ingress", "Egress"} if spec.get("egress") else {"Ingress"}


def allows_some(spec: Mapping[str, Any]) -> list[str]:
    """Directions in which a policy allows any traffic (one rule is enough)."""
    types = policy_types(spec)
    key = {"Ingress": "ingress", "Egress": "egress"}
    return [d for d in DIRECTIONS if d in types and spec.get(key[d])]


@dataclass(frozen=True)
class Verdict:
    isolated: bool
    reason: str
    message: str
    widening: tuple[str, ...] = ()  # policies not the workload's own that widen access

    @property
    def condition(self) -> tuple[str, str, str]:
        return ("True" if self.isolated else "False", self.reason, self.message)


ISOLATED = Verdict(True, "DefaultDeny", "ingress and egress default-deny")


def judge(
    pods: Mapping[str, Mapping[str, str]],
    policies: Mapping[str, Mapping[str, Any]],
    own: Mapping[str, Mapping[str, Any]],
    drifted: frozenset[str] = frozenset(),
) -> Verdict:
    """`pods`: name -> labels; `policies`: name -> live policy; `own`: name -> rendered
    policy of this workload; `drifted`: own policies whose live copy differs."""
    deny = [n for n, p in own.items() if is_default_deny(p.get("spec") or {})]
    for name in deny:
        if name not in policies:
            return Verdict(False, "DefaultDenyMissing", f"NetworkPolicy/{name} is missing")
    for pod, labels in sorted(pods.items()):
        for name in deny:
            spec = policies[name].get("spec") or {}
            if not selects(spec.get("podSelector"), labels):
                return Verdict(
                    False,
                    "NotSelected",
                    f"pod {pod} is not selected by the default-deny NetworkPolicy/{name}",
                )
    widening: list[str] = []
    changed: list[str] = []
    for name, body in sorted(policies.items()):
        spec = body.get("spec") or {}
        directions = allows_some(spec)
        if not directions and name not in own:
            continue
        hit = next(
            (p for p, lb in sorted(pods.items()) if selects(spec.get("podSelector"), lb)), None
        )
        if name in own:
            if name in drifted:
                changed.append(name)
        elif hit is not None:
            widening.append(name)
    if widening:
        return Verdict(
            False, "ForeignNetworkPolicy", "widened by " + ", ".join(widening), tuple(widening)
        )
    if changed:
        return Verdict(
            False,
            "NetworkPolicyChanged",
            "not as rendered: " + ", ".join(f"NetworkPolicy/{n}" for n in changed),
        )
    return ISOLATED


def is_default_deny(spec: Mapping[str, Any]) -> bool:
    return policy_types(spec) >= set(DIRECTIONS) and not allows_some(spec)
