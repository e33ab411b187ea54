"""A stored live copy is projected onto what drift comparison reads: it must judge the same."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_drift_compare import TAMPERS, children, with_server_defaults

from secureai.api import parse_workload
from secureai.render import render
from secureai.render.drift import SECURITY_KEYS, differences, projected, repaired
from strategies import cases

PROTECTED = frozenset({"apiVersion", "kind", "metadata"})
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["x", "1Gi"]))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["name", "a", *sorted(SECURITY_KEYS)[:6]]), inner, max_size=3
        ),
    ),
    max_leaves=6,
)


def _containers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a dict or a list inside `node`."""
    out: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        out.append(path)
        for key, value in node.items():
            out += _containers(value, (*path, key))
    elif isinstance(node, list):
        out.append(path)
        for i, value in enumerate(node):
            out += _containers(value, (*path, i))
    return out


@st.composite
def tampered(draw: st.DrawFn, desired: dict[str, Any]) -> dict[str, Any]:
    live = copy.deepcopy(desired)
    live["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_containers(live)))
        node = live
        for step in path:
            node = node[step]
        op = draw(st.sampled_from(["set", "delete", "add"]))
        if isinstance(node, dict):
            removable = sorted(k for k in node if path or k not in PROTECTED)
            if op == "delete" and removable:
                node.pop(draw(st.sampled_from(removable)))
            else:
                key = draw(st.sampled_from(["name", "extra", "image", *sorted(SECURITY_KEYS)]))
                node[key] = draw(VALUES)
        elif op == "delete" and node:
            node.pop(draw(st.integers(0, len(node) - 1)))
        elif op == "set" and node:
            node[draw(st.integers(0, len(node) - 1))] = draw(VALUES)
        else:
            node.append(draw(VALUES))
    return live


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_projection_keeps_every_difference(data: st.DataObject) -> None:
    policy, manifest = data.draw(cases())
    for desired in render(parse_workload(manifest), policy):
        live = data.draw(tampered(desired))
        copy_ = projected(desired, live)
        assert sorted(differences(desired, copy_)) == sorted(differences(desired, live))
        assert repaired(desired, copy_) == repaired(desired, live)
        assert "managedFields" not in copy_["metadata"]


def test_projection_drops_server_defaults_and_keeps_tampers() -> None:
    deployment = children("inference-gpu-guarded.yaml")["Deployment/chat-llm"]
    live = with_server_defaults(deployment)
    slim = projected(deployment, live)
    assert "progressDeadlineSeconds" not in slim["spec"]
    assert "dnsPolicy" not in slim["spec"]["template"]["spec"]
    assert slim["status"] == live["status"]
    assert slim["metadata"]["resourceVersion"] == "7"
    for name, tamper in TAMPERS.items():
        bad = with_server_defaults(deployment)
        tamper(bad["spec"]["template"]["spec"])
        assert differences(deployment, projected(deployment, bad)) == differences(
            deployment, bad
        ), name


def test_projection_keeps_a_service_address() -> None:
    service = children("inference-cpu.yaml")["Service/embeddings"]
    live = copy.deepcopy(service)
    live["spec"].update(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"], sessionAffinity="None")
    slim = projected(service, live)
    assert slim["spec"]["clusterIPs"] == ["10.96.0.10"]
    assert "sessionAffinity" not in slim["spec"]
