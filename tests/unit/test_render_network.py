"""The NetworkPolicies rendered for a spec, compared whole.

The example and property tests check invariants (no empty peer, the count of holes, the DNS
rule); a mutation run of `render/network.py` showed that they pass when the rendered peer
loses its `ipBlock` key, its `except` list, its selectors' labels or its ports. These tests
pin the exact objects the API server receives for each kind of hole.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from secureai.api import parse_workload
from secureai.render.meta import metadata, selector
from secureai.render.network import network_policies
from strategies import EXAMPLE_POLICY, EXAMPLES

DNS_RULE = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
}


def _doc(example: str, network: dict[str, Any] | None, **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / example).read_text())
    doc["spec"].pop("network", None)
    if network is not None:
        doc["spec"]["network"] = network
    doc["spec"].update(spec)
    return doc


def _policies(doc: dict[str, Any], serving_port: int | None = None) -> list[dict[str, Any]]:
    cr = parse_workload(copy.deepcopy(doc))
    return network_policies(cr, EXAMPLE_POLICY, serving_port)


def _allow_spec(doc: dict[str, Any], serving_port: int | None = None) -> dict[str, Any]:
    _deny, allow = _policies(doc, serving_port)
    spec: dict[str, Any] = allow["spec"]
    return spec


def test_default_deny_and_allow_objects_are_exact() -> None:
    doc = _doc("inference-cpu.yaml", None)
    cr = parse_workload(copy.deepcopy(doc))
    pods = {"matchLabels": selector(cr)}
    deny, allow = network_policies(cr, EXAMPLE_POLICY, 8080)
    assert deny == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cr, "embeddings-default-deny", "network-policy"),
        "spec": {"podSelector": pods, "policyTypes": ["Ingress", "Egress"]},
    }
    assert allow == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cr, "embeddings-allow", "network-policy"),
        "spec": {
            "podSelector": pods,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [DNS_RULE],
        },
    }


def test_cidr_peer_with_and_without_except() -> None:
    network = {
        "egress": [
            {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]},
            {"cidr": "192.168.0.0/24", "ports": [{"port": 443}]},
        ],
        "allowDNS": False,
    }
    spec = _allow_spec(_doc("training-single-gpu.yaml", network))
    assert spec["ingress"] == []
    assert spec["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]}}]},
        {
            "to": [{"ipBlock": {"cidr": "192.168.0.0/24"}}],
            "ports": [{"port": 443, "protocol": "TCP"}],
        },
    ]


def test_selector_peers_keep_their_labels_sorted() -> None:
    network = {
        "ingress": [
            {"namespaceSelector": {"team": "search", "env": "prod"}, "podSelector": {"app": "a"}},
            {"podSelector": {"z": "1", "b": "2"}},
            {"namespaceSelector": {"team": "ops"}},
        ],
        "egress": [{"podSelector": {"app": "db"}, "ports": [{"port": 5432, "protocol": "TCP"}]}],
        "allowDNS": False,
    }
    spec = _allow_spec(_doc("training-single-gpu.yaml", network))
    assert spec["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"env": "prod", "team": "search"}},
                    "podSelector": {"matchLabels": {"app": "a"}},
                }
            ]
        },
        {"from": [{"podSelector": {"matchLabels": {"b": "2", "z": "1"}}}]},
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}]},
    ]
    # the order of the labels is part of the rendered text (drift compares it)
    assert list(spec["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]) == [
        "env",
        "team",
    ]
    assert list(spec["ingress"][1]["from"][0]["podSelector"]["matchLabels"]) == ["b", "z"]
    assert spec["egress"] == [
        {
            "to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
            "ports": [{"port": 5432, "protocol": "TCP"}],
        }
    ]


def test_inference_ingress_defaults_to_the_serving_port_only() -> None:
    network = {
        "ingress": [
            {"podSelector": {"app": "search"}},
            {"podSelector": {"app": "admin"}, "ports": [{"port": 9000, "protocol": "UDP"}]},
        ]
    }
    doc = _doc("inference-cpu.yaml", network)
    spec = _allow_spec(doc, 8443)
    assert spec["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"app": "search"}}}],
            "ports": [{"port": 8443, "protocol": "TCP"}],
        },
        {
            "from": [{"podSelector": {"matchLabels": {"app": "admin"}}}],
            "ports": [{"port": 9000, "protocol": "UDP"}],
        },
    ]
    # DNS stays allowed unless the spec turns it off
    assert spec["egress"] == [DNS_RULE]
    # without a serving port, an ingress peer without ports opens every port
    assert _allow_spec(doc)["ingress"][0] == {
        "from": [{"podSelector": {"matchLabels": {"app": "search"}}}]
    }


def test_distributed_training_pods_reach_each_other_and_nothing_else() -> None:
    doc = _doc("training-single-gpu.yaml", {"allowDNS": False}, workers=3)
    cr = parse_workload(copy.deepcopy(doc))
    pods = {"matchLabels": selector(cr)}
    spec = _allow_spec(doc)
    assert spec["ingress"] == [{"from": [{"podSelector": pods}]}]
    assert spec["egress"] == [{"to": [{"podSelector": pods}]}]
    single = _allow_spec(_doc("training-single-gpu.yaml", {"allowDNS": False}, workers=1))
    assert single["ingress"] == [] and single["egress"] == []
