"""The audit policy shipped with the chart (docs/helm.md, "Audit policy"), read offline: what
level each kind of write gets, by the API server's first-match rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterkit import REPO

POLICY = REPO / "charts" / "secureai-operator" / "files" / "audit-policy.yaml"
WRITES = ("create", "update", "patch", "delete", "deletecollection")


def load(path: Path = POLICY) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def _matches(rule: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    """audit.k8s.io/v1 rule matching for what this policy uses: verbs and group/resources."""
    if "verbs" in rule and verb not in rule["verbs"]:
        return False
    kinds = rule.get("resources")
    if kinds is None:
        return True
    for gr in kinds:
        if gr.get("group", "") != group:
            continue
        names = gr.get("resources")
        if names is None or resource in names or "*" in names:
            return True
    return False


def level(group: str, resource: str, verb: str, policy: dict[str, Any] | None = None) -> str:
    for rule in (policy or load())["rules"]:
        if _matches(rule, group, resource, verb):
            return str(rule["level"])
    return "None"


@pytest.mark.parametrize(
    ("group", "resource", "verb", "expected"),
    [
        ("secureai.dev", "securetrainingjobs", "create", "RequestResponse"),
        ("secureai.dev", "secureinferenceservices/status", "patch", "RequestResponse"),
        ("secureai.dev", "quarantines", "update", "RequestResponse"),
        ("secureai.dev", "quarantines", "delete", "RequestResponse"),
        ("", "secrets", "create", "Metadata"),
        ("", "secrets", "patch", "Metadata"),
        ("", "configmaps", "update", "Metadata"),
        ("", "serviceaccounts/token", "create", "Metadata"),
        ("authentication.k8s.io", "tokenreviews", "create", "Metadata"),
        ("apps", "deployments", "patch", "Metadata"),
        ("networking.k8s.io", "networkpolicies", "delete", "Metadata"),
        ("batch", "jobs", "deletecollection", "Metadata"),
        ("", "secrets", "get", "None"),
        ("secureai.dev", "securetrainingjobs", "list", "None"),
    ],
)
def test_each_kind_of_write_gets_its_level(
    group: str, resource: str, verb: str, expected: str
) -> None:
    assert level(group, resource, verb) == expected


def test_nothing_but_secureai_dev_is_logged_with_bodies() -> None:
    policy = load()
    assert policy["apiVersion"] == "audit.k8s.io/v1" and policy["kind"] == "Policy"
    assert policy["omitStages"] == ["RequestReceived"]
    for rule in policy["rules"]:
        if rule["level"] in ("Request", "RequestResponse"):
            groups = {gr.get("group", "") for gr in rule.get("resources") or [{}]}
            assert groups == {"secureai.dev"}, rule
    assert policy["rules"][-1] == {"level": "None"}


def test_the_local_control_plane_uses_the_charts_rules() -> None:
    """hack/cluster.sh writes its policy from this file (after one local kwok rule)."""
    script = (REPO / "hack" / "cluster.sh").read_text()
    assert "charts/secureai-operator/files/audit-policy.yaml" in script
    assert "--audit-policy-file=" in script
