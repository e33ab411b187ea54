"""Each policy rule of `render/validate.py`, broken alone, gives exactly its one-line reasons.

The generated inadmissible specs (test_inadmissible.py) check that the broken field is named
somewhere in the refusal; a mutation run showed that a rule's reason could be lost (None), its
field dropped, or a second rule's violation vanish without a test noticing. The refusal is
what a user reads, on `kubectl apply` and in the CR's status, so the whole list is pinned.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from secureai.api import parse_workload
from secureai.render.validate import PolicyViolation, check, image_repository, violations
from strategies import EXAMPLE_POLICY, EXAMPLES

TRAIN = "training-single-gpu.yaml"
INFER = "inference-cpu.yaml"
GUARDED = "inference-gpu-guarded.yaml"


def _doc(example: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / example).read_text())
    return doc


DIGEST = _doc(INFER)["spec"]["image"].split("@", 1)[1]
OPERATOR_REPO = image_repository(EXAMPLE_POLICY.operator_image)
ALLOWED = "secureai.local, registry.example.com"
NOT_PINNED = "is not pinned by digest (@sha256:<64 hex>)"
NOT_A_SECRET_ENV = "mount it read-only with spec.secrets"


def _regex_error(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    raise AssertionError(f"{pattern!r} compiles")


# (example, spec changes, policy changes, every violation as printed)
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any], list[str]]] = {
    "unpinned-image": (
        INFER,
        {"image": "secureai.local/modelserver:1.0"},
        {},
        [f"spec.image: image 'secureai.local/modelserver:1.0' {NOT_PINNED}"],
    ),
    "foreign-registry": (
        INFER,
        {"image": f"evil.example.org/x@{DIGEST}"},
        {},
        [f"spec.image: registry of 'evil.example.org/x' is not allowed (allowed: {ALLOWED})"],
    ),
    "docker-hub-short-name": (
        TRAIN,
        {"image": f"nginx@{DIGEST}"},
        {},
        [f"spec.image: registry of 'docker.io/library/nginx' is not allowed (allowed: {ALLOWED})"],
    ),
    "no-registry-allowed": (
        INFER,
        {},
        {"allowed_registries": []},
        [
            "spec.image: registry of 'secureai.local/modelserver' is not allowed (allowed: none)",
            f"policy.operatorImage: registry of '{OPERATOR_REPO}' is not allowed (allowed: none)",
        ],
    ),
    "token-too-short": (
        INFER,
        {"identity": {"expirationSeconds": 599}},
        {},
        ["spec.identity.expirationSeconds: token lifetime 599s is outside policy [600s, 3600s]"],
    ),
    "tokens-reserved-repeated-too-long": (
        INFER,
        {
            "identity": {
                "expirationSeconds": 600,
                "tokens": [
                    {"name": "token", "audience": "a"},
                    {"name": "s3", "audience": "b", "expirationSeconds": 3601},
                    {"name": "s3", "audience": "c", "expirationSeconds": 3600},
                ],
            }
        },
        {},
        [
            "spec.identity.tokens[0].name: 'token' is reserved or repeated",
            "spec.identity.tokens[1].expirationSeconds: token lifetime 3601s is outside policy"
            " [600s, 3600s]",
            "spec.identity.tokens[1].name: 's3' is reserved or repeated",
            "spec.identity.tokens[2].name: 's3' is reserved or repeated",
        ],
    ),
    "secret-looking-env": (
        TRAIN,
        {
            "env": [
                {"name": "LOG_LEVEL", "value": "info"},
                {"name": "DB_PASSWORD", "value": "x"},
                {"name": "KEY_ID", "value": "AKIA" + "A" * 16},
                {"name": "PEM", "value": "-----BEGIN RSA PRIVATE KEY-----"},
            ]
        },
        {},
        [
            f"spec.env[1].name: 'DB_PASSWORD' looks like a secret; {NOT_A_SECRET_ENV}",
            f"spec.env[2].value: value looks like secret material; {NOT_A_SECRET_ENV}",
            f"spec.env[3].value: value looks like secret material; {NOT_A_SECRET_ENV}",
        ],
    ),
    "gpus": (
        TRAIN,
        {"gpu": {"count": 9, "pool": "nope"}},
        {},
        [
            "spec.gpu.count: 9 GPUs exceeds the policy maximum of 8",
            "spec.gpu.pool: unknown pool 'nope' (known: inference, training)",
        ],
    ),
    "gpu-product-without-gpus": (
        TRAIN,
        {"gpu": {"count": 0, "product": "NVIDIA-H100-80GB-HBM3"}},
        {},
        ["spec.gpu.product: a GPU product needs spec.gpu.count > 0"],
    ),
    "no-gpu-pools": (
        TRAIN,
        {},
        {"gpu_pools": {}},
        ["spec.gpu.pool: unknown pool 'training' (known: none)"],
    ),
    "peers": (
        TRAIN,
        {
            "network": {
                "ingress": [{}, {"podSelector": {"a": "b"}, "except": ["10.0.0.0/8"]}],
                "egress": [
                    {"cidr": "10.0.0.0/8", "podSelector": {"a": "b"}},
                    {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24", "10.0.0.0/8"]},
                ],
            }
        },
        {},
        [
            "spec.network.ingress[0]: set cidr or a namespace/pod selector",
            "spec.network.ingress[1].except: except needs cidr",
            "spec.network.egress[0]: cidr cannot be combined with selectors",
            "spec.network.egress[1].except[1]: '10.0.0.0/8' is not a strict subset of cidr"
            " '10.0.0.0/16'",
        ],
    ),
    "repeated-secret": (
        INFER,
        {"secrets": [{"name": "a"}, {"name": "b"}, {"name": "a", "mountPath": "/x"}]},
        {},
        [
            "spec.secrets[0].name: secret 'a' is repeated",
            "spec.secrets[2].name: secret 'a' is repeated",
        ],
    ),
    "reserved-mounts": (
        INFER,
        {
            "secrets": [
                {"name": "a", "mountPath": "/tmp/"},
                {"name": "b", "mountPath": "/models"},
                {"name": "c", "mountPath": "/etc/secureai/tls"},
            ]
        },
        {},
        [
            "spec.secrets[0].mountPath: mount path '/tmp/' is already used by the private /tmp",
            "spec.secrets[1].mountPath: mount path '/models' is already used by the model",
            "spec.secrets[2].mountPath: mount path '/etc/secureai/tls' is already used by"
            " the serving certificate",
        ],
    ),
    "training-mounts": (
        TRAIN,
        {
            "datasets": [{"claimName": "d"}],
            "scratch": {"sizeLimit": "1Gi", "mountPath": "/datasets/d"},
            "secrets": [{"name": "s", "mountPath": "/var/run/secrets/secureai/tokens"}],
        },
        {},
        [
            "spec.secrets[0].mountPath: mount path '/var/run/secrets/secureai/tokens' is"
            " already used by the projected token",
            "spec.scratch.mountPath: mount path '/datasets/d' is already used by"
            " spec.datasets[0].mountPath",
        ],
    ),
    "output-not-encrypted": (
        TRAIN,
        {"output": {"size": "1Gi", "storageClassName": "plain", "mountPath": "/scratch"}},
        {},
        # mounts are checked before the kind's own rules
        [
            "spec.scratch.mountPath: mount path '/scratch' is already used by"
            " spec.output.mountPath",
            "spec.output.storageClassName: StorageClass 'plain' is not encrypted"
            " (allowed: encrypted-ssd)",
        ],
    ),
    "no-encrypted-class": (
        TRAIN,
        {"output": {"size": "1Gi"}},
        {"encrypted_storage_classes": []},
        ["spec.output.storageClassName: policy names no encrypted StorageClass"],
    ),
    "datasets": (
        TRAIN,
        {
            "datasets": [
                {"claimName": "d", "encrypted": True, "mountPath": "/d1"},
                {"claimName": "d", "mountPath": "/d2"},
            ]
        },
        {"operator_image": "secureai.local/secureai-operator:dev"},
        [
            "spec.datasets[0].keySecret: an encrypted dataset needs keySecret",
            "spec.datasets[0].claimName: 'd' is repeated",
            "spec.datasets[1].claimName: 'd' is repeated",
            "policy.operatorImage: image 'secureai.local/secureai-operator:dev' " + NOT_PINNED,
        ],
    ),
    "tls-secret-without-name": (
        INFER,
        {"tls": {"mode": "Secret"}},
        {},
        ["spec.tls.secretName: required with mode Secret and only then"],
    ),
    "tls-name-without-secret-mode": (
        INFER,
        {"tls": {"mode": "OperatorCA", "secretName": "x"}},
        {},
        ["spec.tls.secretName: required with mode Secret and only then"],
    ),
    "guard-port": (
        GUARDED,
        {"port": 9090},
        {},
        ["spec.port: port 9090 is reserved for the guard"],
    ),
    "guard-regexes": (
        GUARDED,
        {
            "guard": {
                "enabled": True,
                "denyPatterns": ["ok", "(unclosed"],
                "redaction": {"customPatterns": [{"name": "bad", "regex": "[z-a]"}]},
            }
        },
        {},
        [
            "spec.guard.denyPatterns[1]: " + _regex_error("(unclosed"),
            "spec.guard.redaction.customPatterns[0].regex: " + _regex_error("[z-a]"),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_rule_gives_exactly_its_reasons(name: str) -> None:
    example, spec, policy_changes, expected = CASES[name]
    doc = _doc(example)
    doc["spec"].update(spec)
    cr = parse_workload(doc)
    policy = EXAMPLE_POLICY.model_copy(update=policy_changes)
    assert [str(v) for v in violations(cr, policy)] == expected
    with pytest.raises(PolicyViolation) as err:
        check(cr, policy)
    assert str(err.value) == "; ".join(expected)
    assert err.value.violations == violations(cr, policy)


@pytest.mark.parametrize("example", [TRAIN, INFER, GUARDED])
def test_the_examples_and_the_boundaries_are_admissible(example: str) -> None:
    doc = _doc(example)
    # the limits themselves are allowed: 600 s and the policy's maximum token lifetime, and
    # the guard's ports when the guard is off
    doc["spec"]["identity"] = {
        "expirationSeconds": 600,
        "tokens": [{"name": "t", "audience": "a", "expirationSeconds": 3600}],
    }
    if example == INFER:
        doc["spec"]["port"] = 8443
    if example == TRAIN:
        doc["spec"]["gpu"] = {"count": 8, "pool": "training"}
    check(parse_workload(doc), EXAMPLE_POLICY)


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("nginx:1.27", "docker.io/library/nginx"),
        ("team/app:1@sha256:x", "docker.io/team/app"),
        ("localhost/app", "localhost/app"),
        ("localhost:5000/app:tag", "localhost:5000/app"),
        ("registry.example.com/a/b:tag", "registry.example.com/a/b"),
        ("host:5000/a/b@sha256:x", "host:5000/a/b"),
    ],
)
def test_image_repository(image: str, repository: str) -> None:
    assert image_repository(image) == repository
