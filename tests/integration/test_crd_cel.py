"""The CRDs' CEL rules, evaluated by the real API server.

Every `x-kubernetes-validations` rule is found by walking the generated CRDs; each gets a CR
that it must refuse (server-side dry run), built by breaking one node of a rich valid CR. The
refusal must carry that rule's own message, so another check refusing the CR does not count.
A rule with no case below fails `test_every_rule_has_a_case`: a new rule needs a new case.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from clusterkit import REPO, Cluster

DIGEST = "@sha256:" + "a" * 64
PEERS = [
    {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]},
    {"namespaceSelector": {"team": "a"}, "podSelector": {"app": "b"}},
]
COMMON = {
    "image": "registry.example.com/ml/app" + DIGEST,
    "resources": {"cpu": "1", "memory": "1Gi"},
    "gpu": {"count": 1, "product": "Tesla-T4"},
    "network": {"ingress": copy.deepcopy(PEERS), "egress": copy.deepcopy(PEERS)},
}
# valid CRs reaching every node that carries a rule
BASES: dict[str, dict[str, Any]] = {
    "SecureTrainingJob": {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": "SecureTrainingJob",
        "metadata": {"name": "cel-base"},
        "spec": {
            **copy.deepcopy(COMMON),
            "datasets": [{"claimName": "data", "encrypted": True, "keySecret": "k"}],
            "output": {"size": "1Gi"},
        },
    },
    "SecureInferenceService": {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": "SecureInferenceService",
        "metadata": {"name": "cel-base"},
        "spec": {
            **copy.deepcopy(COMMON),
            "model": {"claimName": "m", "signerKeyConfigMap": "signer", "subPath": "llama"},
            "tls": {"mode": "Secret", "secretName": "serving"},
        },
    },
    "Quarantine": {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": "Quarantine",
        "metadata": {"name": "cel-base"},
        "spec": {
            "match": {
                "workloads": [{"namespace": "ml", "name": "chat"}],
                "selector": {"matchLabels": {"team": "a"}},
                "modelDigests": ["sha256:" + "b" * 64],
            },
            "reason": "a CEL test",
        },
    },
}
CLUSTER_SCOPED = {"Quarantine"}


def _set(node: dict[str, Any], **values: Any) -> dict[str, Any]:
    return {**node, **values}


def _without(node: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k not in keys}


# rule text -> how to break the node the rule sits on (the node's valid value in, a bad one out)
CASES: dict[str, Callable[[Any], Any]] = {
    "self.metadata.name.size() <= 47 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')": (  # noqa: E501 - the rule's own text
        lambda cr: _set(cr, metadata={"name": "a" * 48})
    ),
    "!has(self.datasets) || self.datasets.all(d, !(has(d.encrypted) && d.encrypted) || has(d.keySecret))": (  # noqa: E501 - the rule's own text
        lambda spec: _set(spec, datasets=[{"claimName": "data", "encrypted": True}])
    ),
    "!has(self.product) || (has(self.count) && self.count > 0)": (
        lambda gpu: _set(gpu, count=0, product="Tesla-T4")
    ),
    "has(self.cidr) != (has(self.namespaceSelector) || has(self.podSelector))": (
        lambda peer: {"cidr": "10.0.0.0/8", "podSelector": {"app": "b"}}
    ),
    "!has(self.except) || has(self.cidr)": (
        lambda peer: {"podSelector": {"app": "b"}, "except": ["10.1.0.0/16"]}
    ),
    "!has(self.except) || !has(self.cidr) || !isCIDR(self.cidr) || self.except.all(e, !isCIDR(e) || (cidr(self.cidr).containsCIDR(e) && cidr(e).prefixLength() > cidr(self.cidr).prefixLength()))": (  # noqa: E501 - the rule's own text
        lambda peer: {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}
    ),
    "isCIDR(self) && cidr(self).ip() == cidr(self).masked().ip()": lambda cidr: "10.0.0.1/8",
    "self.all(k, k.matches(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$') && k.size() <= 317 && k.indexOf('/') <= 253)": (  # noqa: E501 - the rule's own text
        lambda labels: {"bad key!": "x"}
    ),
    "quantity(self).isGreaterThan(quantity('0'))": lambda size: "0",
    "!self.startsWith('/') && !self.split('/').exists(p, p == '..')": lambda path: "weights/../..",
    "(has(self.mode) && self.mode == 'Secret') == has(self.secretName)": (
        lambda tls: _without(tls, "secretName")
    ),
    "has(self.workloads) || has(self.namespaces) || has(self.selector) || has(self.imageDigests) || has(self.modelDigests) || has(self.datasetDigests)": (  # noqa: E501 - the rule's own text
        lambda match: {}
    ),
}


def _rules(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str, str]]:
    """(schema path, rule, message) of every CEL rule under `node`; "[]" steps into items."""
    if not isinstance(node, dict):
        return
    for v in node.get("x-kubernetes-validations") or []:
        yield path, v["rule"], v.get("message") or f"failed rule: {v['rule']}"
    for name, sub in (node.get("properties") or {}).items():
        yield from _rules(sub, (*path, name))
    if "items" in node:
        yield from _rules(node["items"], (*path, "[]"))
    if isinstance(node.get("additionalProperties"), dict):
        yield from _rules(node["additionalProperties"], (*path, "{}"))


def all_rules() -> list[tuple[str, tuple[str, ...], str, str]]:
    out = []
    for file in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(file.read_text())
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            for path, rule, message in _rules(version["schema"]["openAPIV3Schema"], ()):
                out.append((kind, path, rule, message))
    return out


RULES = all_rules()


def _replace(node: Any, path: tuple[str, ...], breaker: Callable[[Any], Any]) -> Any:
    """`node` with the value at `path` replaced by `breaker(value)`; an array step takes the
    first element that reaches the rest of the path."""
    if not path:
        return breaker(copy.deepcopy(node))
    head, rest = path[0], path[1:]
    if head == "[]":
        assert isinstance(node, list) and node, f"base CR has no element for {path}"
        for i, item in enumerate(node):
            if _reaches(item, rest):
                return [*node[:i], _replace(item, rest, breaker), *node[i + 1 :]]
        raise AssertionError(f"base CR reaches no {rest}")
    assert isinstance(node, dict) and head in node, f"base CR has no {head!r} (for {path})"
    return {**node, head: _replace(node[head], rest, breaker)}


def _reaches(node: Any, path: tuple[str, ...]) -> bool:
    if not path:
        return True
    if path[0] == "[]":
        return isinstance(node, list) and any(_reaches(i, path[1:]) for i in node)
    return isinstance(node, dict) and path[0] in node and _reaches(node[path[0]], path[1:])


def _dry_run(cluster: Cluster, namespace: str, cr: dict[str, Any]) -> tuple[int, str]:
    doc = cr
    if cr["kind"] not in CLUSTER_SCOPED:
        doc = {**cr, "metadata": {**cr["metadata"], "namespace": namespace}}
    proc = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_the_crds_have_rules() -> None:
    assert len(RULES) >= 10
    assert {kind for kind, *_ in RULES} == set(BASES)


def test_every_rule_has_a_case() -> None:
    missing = sorted({rule for _, _, rule, _ in RULES if rule not in CASES})
    assert not missing, "CEL rules with no refusal case in CASES:\n" + "\n".join(missing)


@pytest.mark.parametrize("kind", sorted(BASES))
def test_the_valid_base_is_admitted(
    cluster: Cluster, crds: None, namespace: str, kind: str
) -> None:
    code, output = _dry_run(cluster, namespace, BASES[kind])
    assert code == 0, output


@pytest.mark.parametrize(
    ("kind", "path", "rule", "message"),
    RULES,
    ids=[f"{k}:{'.'.join(p) or '<root>'}:{r[:40]}" for k, p, r, _ in RULES],
)
def test_the_api_server_refuses_what_the_rule_forbids(
    cluster: Cluster,
    crds: None,
    namespace: str,
    kind: str,
    path: tuple[str, ...],
    rule: str,
    message: str,
) -> None:
    if rule not in CASES:
        pytest.fail(f"no case for rule {rule!r} (see test_every_rule_has_a_case)")
    bad = _replace(BASES[kind], path, CASES[rule])
    assert bad != BASES[kind]
    code, output = _dry_run(cluster, namespace, bad)
    assert code != 0, f"admitted although {rule!r} forbids it:\n{yaml.safe_dump(bad)}"
    assert message in " ".join(output.split()), output
