"""Default-deny NetworkPolicies with the spec's holes punched in."""

from __future__ import annotations

from typing import Any

from secureai.api import Policy, SecureTrainingJob, Workload
from secureai.api.workload import NetworkPeer
from secureai.render.meta import metadata, selector

NS_NAME_LABEL = "kubernetes.io/metadata.name"


def _peer(peer: NetworkPeer) -> dict[str, Any]:
    if peer.cidr is not None:
        block: dict[str, Any] = {"cidr": peer.cidr}
        if peer.except_:
            block["except"] = list(peer.except_)
        return {"ipBlock": block}
    out: dict[str, Any] = {}
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = {"matchLabels": dict(sorted(peer.namespace_selector.items()))}
    if peer.pod_selector is not None:
        out["podSelector"] = {"matchLabels": dict(sorted(peer.pod_selector.items()))}
    return out


def _ports(peer: NetworkPeer, default: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if peer.ports:
        return [{"port": p.port, "protocol": p.protocol} for p in peer.ports]
    return default


def _rule(
    direction: str, peers: list[dict[str, Any]], ports: list[dict[str, Any]] | None
) -> dict[str, Any]:
    rule: dict[str, Any] = {direction: peers}
    if ports:
        rule["ports"] = ports
    return rule


def network_policies(
    cr: Workload, policy: Policy, serving_port: int | None = None
) -> list[dict[str, Any]]:
    """A default-deny policy for both directions, and one allow policy from the spec."""
    pods = {"matchLabels": selector(cr)}
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cr, f"{cr.metadata.name}-default-deny", "network-policy"),
        "spec": {"podSelector": pods, "policyTypes": ["Ingress", "Egress"]},
    }
    network = cr.spec.network
    serving = [{"port": serving_port, "protocol": "TCP"}] if serving_port else None
    ingress = [
        _rule("from", [_peer(p)], _ports(p, serving))
        for p in (network.ingress or [] if network else [])
    ]
    egress = [
        _rule("to", [_peer(p)], _ports(p, None)) for p in (network.egress or [] if network else [])
    ]
    if network is None or network.allow_dns:
        dns = policy.dns
        egress.append(
            _rule(
                "to",
                [
                    {
                        "namespaceSelector": {"matchLabels": {NS_NAME_LABEL: dns.namespace}},
                        "podSelector": {"matchLabels": dict(sorted(dns.pod_selector.items()))},
                    }
                ],
                [{"port": dns.port, "protocol": "UDP"}, {"port": dns.port, "protocol": "TCP"}],
            )
        )
    if isinstance(cr, SecureTrainingJob) and cr.spec.workers > 1:
        ingress.append({"from": [{"podSelector": pods}]})
        egress.append({"to": [{"podSelector": pods}]})
    allow = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cr, f"{cr.metadata.name}-allow", "network-policy"),
        "spec": {
            "podSelector": pods,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }
    return [deny, allow]
