"""How drift is described (judge.drift.differences): the exact path and verb of each tamper.
Detection is a comparison of canonical texts; these strings are what Events and status say,
so a wrong path would send an operator to the wrong field. Written from surviving mutants."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from secureai.judge.drift import Expected, differences

DESIRED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "replicas": 1,
        "template": {
            "spec": {
                "containers": [
                    {"name": "main", "image": "i@sha256:1", "args": ["a", "b"]},
                    {"name": "guard", "image": "g@sha256:2"},
                ],
                "volumes": [{"emptyDir": {}}, {"emptyDir": {"medium": "Memory"}}],
            }
        },
    },
}
C = "spec.template.spec.containers"
V = "spec.template.spec.volumes"


def _edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    live = copy.deepcopy(DESIRED)
    change(live)
    return live


def _spec(live: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = live["spec"]["template"]["spec"]
    return spec


CASES: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    ("in sync", lambda live: None, []),
    ("scalar", lambda live: live["spec"].update(replicas=5), ["spec.replicas: changed"]),
    ("type", lambda live: live["spec"].update(replicas="1"), ["spec.replicas: changed"]),
    ("key added", lambda live: live["spec"].update(paused=True), ["spec.paused: added"]),
    ("key removed", lambda live: live["spec"].pop("replicas"), ["spec.replicas: removed"]),
    ("label", lambda live: live["metadata"]["labels"].update(app="x"),
     ["metadata.labels.app: changed"]),
    ("named item changed", lambda live: _spec(live)["containers"][1].update(image="evil"),
     [f"{C}[guard].image: changed"]),
    ("named item removed", lambda live: _spec(live)["containers"].pop(1),
     [f"{C}[guard]: removed"]),
    ("named item added", lambda live: _spec(live)["containers"].append({"name": "x"}),
     [f"{C}[x]: added"]),
    ("reordered", lambda live: _spec(live)["containers"].reverse(), [f"{C}: reordered"]),
    ("unnamed item changed", lambda live: _spec(live)["volumes"][1]["emptyDir"].clear(),
     [f"{V}[1].emptyDir.medium: removed"]),
    ("unnamed list grown", lambda live: _spec(live)["volumes"].append({"emptyDir": {}}),
     [f"{V}: 3 items instead of 2"]),
    ("scalar list", lambda live: _spec(live)["containers"][0]["args"].append("c"),
     [f"{C}[main].args: 3 items instead of 2"]),
    ("names repeated live", lambda live: _spec(live)["containers"][1].update(name="main"),
     [f"{C}[1].name: changed"]),
    ("one name missing live", lambda live: _spec(live)["containers"][1].pop("name"),
     [f"{C}[1].name: removed"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_tamper_is_described_by_its_path(
    case: str, change: Callable[[dict[str, Any]], None], expected: list[str]
) -> None:
    assert differences(Expected.of(DESIRED, DESIRED), _edit(change)) == expected
