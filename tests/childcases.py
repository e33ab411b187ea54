"""Specs whose values the API server would refuse in a child (issue 14 item 8), shared by the
offline test (tests/unit/test_child_values.py) and the admission test
(tests/integration/test_child_values_admission.py)."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from strategies import EXAMPLES

STJ = yaml.safe_load((EXAMPLES / "training-single-gpu.yaml").read_text())
SIS = yaml.safe_load((EXAMPLES / "inference-cpu.yaml").read_text())


def set_field(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    node = obj["spec"]
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return obj


LONG_PREFIX = ".".join(["a" * 60] * 5)  # 304 characters: a DNS subdomain too long for a prefix

# (case id, custom resource, field the one-line reason must name)
CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "pod-selector-key",
        set_field(STJ, "network.ingress", [{"podSelector": {"app name": "x"}}]),
        "spec.network.ingress[0].podSelector.app name (key)",
    ),
    (
        "namespace-selector-key-prefix",
        set_field(STJ, "network.egress", [{"namespaceSelector": {f"{LONG_PREFIX}/team": "a"}}]),
        "spec.network.egress[0].namespaceSelector",
    ),
    (
        "label-value-64",
        set_field(STJ, "network.ingress", [{"namespaceSelector": {"team": "a" * 64}}]),
        "spec.network.ingress[0].namespaceSelector.team",
    ),
    (
        "label-value-chars",
        set_field(STJ, "network.ingress", [{"podSelector": {"app": "-web"}}]),
        "spec.network.ingress[0].podSelector.app",
    ),
    (
        "except-outside-cidr",
        set_field(STJ, "network.egress", [{"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}]),
        "spec.network.egress[0].except[0]",
    ),
    (
        "except-equal-to-cidr",
        set_field(STJ, "network.egress", [{"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}]),
        "spec.network.egress[0].except[0]",
    ),
    (
        "except-other-family",
        set_field(STJ, "network.egress", [{"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}]),
        "spec.network.egress[0].except[0]",
    ),
    (
        "cidr-host-bits",
        set_field(STJ, "network.egress", [{"cidr": "10.0.0.1/8"}]),
        "spec.network.egress[0].cidr",
    ),
    ("cidr-bare-ip", set_field(STJ, "network.egress", [{"cidr": "10.0.0.1"}]), "cidr"),
    ("cidr-netmask", set_field(STJ, "network.egress", [{"cidr": "10.0.0.0/255.0.0.0"}]), "cidr"),
    ("cidr-leading-zero", set_field(STJ, "network.egress", [{"cidr": "010.0.0.0/8"}]), "cidr"),
    ("cidr-v4-mapped", set_field(STJ, "network.egress", [{"cidr": "::ffff:10.0.0.0/104"}]), "cidr"),
    ("gpu-product-64", set_field(STJ, "gpu.product", "G" * 64), "spec.gpu.product"),
    ("gpu-product-space", set_field(STJ, "gpu.product", "NVIDIA H100"), "spec.gpu.product"),
    ("secret-name", set_field(STJ, "secrets", [{"name": "Api_Key"}]), "spec.secrets[0].name"),
    (
        "dataset-claim",
        set_field(STJ, "datasets", [{"claimName": "-x"}]),
        "spec.datasets[0].claimName",
    ),
    (
        "output-size-zero",
        set_field(STJ, "output", {"size": "0Gi"}),
        "spec.output.size",
    ),
    (
        "ttl-over-int32",
        set_field(STJ, "retention", {"ttlSecondsAfterFinished": 2**31}),
        "spec.retention.ttlSecondsAfterFinished",
    ),
    ("image-space", set_field(STJ, "image", STJ["spec"]["image"] + " "), "spec.image"),
    (
        "token-lifetime",
        set_field(STJ, "identity", {"expirationSeconds": 2**32 + 1}),
        "spec.identity.expirationSeconds",
    ),
    ("sub-path-up", set_field(SIS, "model.subPath", "../other"), "spec.model.subPath"),
    ("sub-path-absolute", set_field(SIS, "model.subPath", "/etc"), "spec.model.subPath"),
    (
        "tls-secret",
        set_field(SIS, "tls", {"mode": "Secret", "secretName": "Web_TLS"}),
        "spec.tls.secretName",
    ),
    (
        "signer-config-map",
        set_field(SIS, "model.signerKeyConfigMap", "Signer"),
        "spec.model.signerKeyConfigMap",
    ),
]
