"""Exact ownership (judge/drift.py): any difference from the stored desired form is drift,
added keys at any depth included; only the fields named in CLUSTER_OWNED are the cluster's."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from secureai.api import Policy, parse_workload
from secureai.judge.drift import CLUSTER_OWNED, NOT_CONTENT, Expected, differences, repaired
from secureai.render import render
from strategies import cases

REPO = Path(__file__).resolve().parents[2]
POLICY = Policy.from_yaml(REPO / "examples" / "policy.yaml")


def children(example: str) -> dict[str, dict[str, Any]]:
    cr = parse_workload(yaml.safe_load((REPO / "examples" / example).read_text()))
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in render(cr, POLICY)}


def stored(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server would keep: defaults filled, bookkeeping added."""
    live = copy.deepcopy(desired)
    live["metadata"].update(uid="u", resourceVersion="7", generation=3)
    live["metadata"]["annotations"] = {
        **(live["metadata"].get("annotations") or {}),
        "deployment.kubernetes.io/revision": "2",
    }
    live["metadata"]["managedFields"] = [{"manager": "secureai"}]
    live["status"] = {"availableReplicas": 2}
    if desired["kind"] == "Deployment":
        live["spec"].update(progressDeadlineSeconds=600, revisionHistoryLimit=10)
        live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    return live


def expected_of(desired: dict[str, Any]) -> Expected:
    return Expected.of(desired, stored(desired))


@pytest.fixture
def deployment() -> dict[str, Any]:
    return children("inference-gpu-guarded.yaml")["Deployment/chat-llm"]


def test_the_stored_form_itself_and_bookkeeping_are_not_drift(deployment: dict[str, Any]) -> None:
    live = stored(deployment)
    live["metadata"].update(resourceVersion="99", generation=7)
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "5"
    live["metadata"]["labels"]["added-by-someone"] = "x"  # not a rendered label
    live["status"] = {"replicas": 9}
    assert differences(expected_of(deployment), live) == []


def test_a_server_default_changed_is_drift(deployment: dict[str, Any]) -> None:
    """Regression: only rendered fields were compared; a defaulted one could be changed."""
    live = stored(deployment)
    live["spec"]["template"]["spec"]["dnsPolicy"] = "None"
    assert differences(expected_of(deployment), live) == ["spec.template.spec.dnsPolicy: changed"]


def test_issue_tampers_are_drift() -> None:
    """Regression (issue 13): a key added to the default-deny podSelector, to a Service's
    selector, or a label added to a pod template was not drift."""
    kids = children("inference-gpu-guarded.yaml")
    deny = kids["NetworkPolicy/chat-llm-default-deny"]
    for tamper, path in (
        (lambda s: s["podSelector"]["matchLabels"].update(x="y"), "matchLabels.x: added"),
        (
            lambda s: s["podSelector"].update(
                matchExpressions=[{"key": "x", "operator": "Exists"}]
            ),
            "spec.podSelector.matchExpressions: added",
        ),
    ):
        live = stored(deny)
        tamper(live["spec"])
        assert any(d.endswith(path) for d in differences(expected_of(deny), live)), path
    service = kids["Service/chat-llm"]
    live = stored(service)
    live["spec"]["selector"]["x"] = "y"
    assert differences(expected_of(service), live) == ["spec.selector.x: added"]
    deployment = kids["Deployment/chat-llm"]
    live = stored(deployment)
    live["spec"]["template"]["metadata"]["labels"]["x"] = "y"
    assert differences(expected_of(deployment), live) == ["spec.template.metadata.labels.x: added"]


def test_cluster_owned_fields_are_not_drift_and_are_kept_by_a_revert() -> None:
    service = children("inference-cpu.yaml")["Service/embeddings"]
    live = stored(service)
    live["spec"].update(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"])
    assert differences(expected_of(service), live) == []
    live["spec"]["ports"].append({"name": "extra", "port": 22})
    assert differences(expected_of(service), live) == ["spec.ports[extra]: added"]
    body = repaired(service, live)
    assert "resourceVersion" not in body["metadata"]  # unconditional: no conflict loop
    assert body["metadata"]["uid"] == "u"
    assert "managedFields" not in body["metadata"]
    assert body["spec"]["clusterIP"] == "10.96.0.10"
    assert [p["name"] for p in body["spec"]["ports"]] == ["https"]
    assert {o.kind for o in CLUSTER_OWNED} <= {"Service", "Job", "PersistentVolumeClaim"}
    assert all(o.reason for o in CLUSTER_OWNED)


def test_job_selector_from_its_uid_is_the_clusters() -> None:
    job = next(m for m in children("training-single-gpu.yaml").values() if m["kind"] == "Job")
    dry_run = stored(job)
    dry_run["spec"]["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": "d"}}
    dry_run["spec"]["template"]["metadata"]["labels"]["controller-uid"] = "d"
    live = copy.deepcopy(dry_run)
    live["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"] = "real"
    live["spec"]["template"]["metadata"]["labels"]["controller-uid"] = "real"
    assert differences(Expected.of(job, dry_run), live) == []
    body = repaired(job, live)
    assert body["spec"]["template"]["metadata"]["labels"]["controller-uid"] == "real"


def test_rendered_label_removed_and_service_account_flipped() -> None:
    sa = children("inference-cpu.yaml")["ServiceAccount/embeddings"]
    live = stored(sa)
    live["automountServiceAccountToken"] = True
    live["metadata"]["labels"].pop("secureai.dev/workload")
    assert sorted(differences(expected_of(sa), live)) == [
        "automountServiceAccountToken: changed",
        "metadata.labels.secureai.dev/workload: changed",
    ]


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=3))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=2),
        st.dictionaries(st.text(min_size=1, max_size=4), inner, min_size=1, max_size=2),
    ),
    max_leaves=4,
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*path, i))
    return out


def _owned(kind: str, path: tuple[Any, ...]) -> bool:
    return any(o.kind == kind and path[: len(o.path)] == o.path for o in CLUSTER_OWNED)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=(Phase.explicit, Phase.reuse, Phase.generate),  # shrinking these takes minutes
)
@given(data=st.data())
def test_any_change_to_content_is_drift(data: st.DataObject) -> None:
    """Add, remove or replace at a random path of the content: always drift, unless the
    path is cluster-owned. A repaired body is in sync again."""
    policy, manifest = data.draw(cases())
    for desired in render(parse_workload(manifest), policy):
        live = stored(desired)
        content = [p for p in _paths(live) if p and p[0] not in NOT_CONTENT]
        path = data.draw(st.sampled_from(content))
        parent: Any = live
        for step in path[:-1]:
            parent = parent[step]
        value = data.draw(VALUES)
        op = data.draw(st.sampled_from(["add", "remove", "replace"]))
        target = parent[path[-1]]
        if op == "add" and isinstance(target, dict):
            key = data.draw(st.text(min_size=1, max_size=5).filter(lambda k, t=target: k not in t))
            target[key] = value
            changed = (*path, key)
        elif op == "add" and isinstance(target, list):
            target.append(value)
            changed = path
        elif op == "remove" and len(path) > 1:
            parent.pop(path[-1])
            changed = path
        elif target != value:
            parent[path[-1]] = value
            changed = path
        else:
            continue
        if _owned(desired["kind"], changed):
            continue
        expected = expected_of(desired)
        assert differences(expected, live), (desired["kind"], op, changed)
        body = repaired(desired, live)
        assert differences(expected, stored(body) | {"metadata": live["metadata"]}) == []
