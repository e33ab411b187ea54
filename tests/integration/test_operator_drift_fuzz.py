"""Issue 13, drift fuzzer: random JSON patches (add, remove, replace at random paths of the
content, labels and annotations, values drawn from each field's type) on every child kind of
a served workload, applied by another field manager on the real API server. Each patch is
refused by the API server, or the child is back to its stored desired form within 1 s.

SECUREAI_FUZZ_CASES sets the number of patches (make test: 300; make bench: more).
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from clusterkit import Cluster, wait_for
from operatorkit import (
    TEST_NAMESPACES,
    TEST_POLICY,
    OperatorProcess,
    apply_yaml,
    example,
    model_prereqs,
    operator_kubeconfig,
    wait_ready,
)
from secureai.judge.drift import content
from secureai.k8s.resources import CHILD_RESOURCES

CASES = int(os.environ.get("SECUREAI_FUZZ_CASES", "300"))
DEADLINE = 1.0
NAME = "chat-llm"
# Annotations the cluster's controllers keep on the children (not rendered, not compared).
CONTROLLER_ANNOTATIONS = ("deployment.kubernetes.io/",)
RESULTS: dict[str, Any] = {"standing": [], "refused": 0, "no-op": 0, "slow": []}


@pytest.fixture(scope="module")
def local_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test policy, with the examples' registry (secureai.local) allowed."""
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    registries = sorted({*TEST_POLICY["allowedRegistries"], "secureai.local"})
    path.write_text(yaml.safe_dump({**TEST_POLICY, "allowedRegistries": registries}))
    return path


@pytest.fixture(scope="module")
def fuzzed(
    cluster: Cluster, crds: None, local_policy: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Any, dict[tuple[str, str], Any]]]:
    folder = tmp_path_factory.mktemp("fuzz")
    process = OperatorProcess(
        cluster,
        operator_kubeconfig(cluster, folder / "kubeconfig"),
        local_policy,
        folder / "operator.log",
        env_extra={"SECUREAI_RESYNC_SECONDS": "600"},  # the watch path is measured
        namespaces=TEST_NAMESPACES,
    ).start()
    ns = f"t-fuzz-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    cr = example("inference-gpu-guarded.yaml", ns)
    model_prereqs(cluster, ns, [cr["spec"]["model"]["claimName"]])
    apply_yaml(cluster, cr)
    wait_ready(cluster, "sis", ns, NAME, timeout=120)
    api = cluster.api_client()
    baseline = {}
    for kind, name in children(api, ns):
        obj = call(api, "GET", CHILD_RESOURCES[kind].path(ns, name))
        keys = rendered_keys(obj)
        # What patches are drawn from: content and rendered labels/annotations, which stay
        # as they are here (a strategy must not depend on what changes between runs).
        template = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
        template["metadata"] = {
            "labels": {k: obj["metadata"]["labels"][k] for k in sorted(keys[0])},
            "annotations": {k: obj["metadata"]["annotations"][k] for k in sorted(keys[1])},
        }
        baseline[(kind, name)] = (keys, owned(obj, keys), template)
    yield ns, api, baseline
    process.stop()
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    standing = sorted(RESULTS["standing"])
    if standing:
        summary = {
            "fuzz_cases": len(standing) + RESULTS["refused"] + RESULTS["no-op"],
            "fuzz_reverted": len(standing),
            "fuzz_refused": RESULTS["refused"],
            "fuzz_no_op": RESULTS["no-op"],  # accepted, nothing owned changed (unknown field)
            "fuzz_revert_p50_s": statistics.median(standing),
            "fuzz_revert_p99_s": standing[min(len(standing) - 1, int(0.99 * len(standing)))],
            "fuzz_revert_max_s": standing[-1],
        }
        print(f"drift fuzzer: {summary}")
        out = os.environ.get("SECUREAI_FUZZ_REPORT")
        if out:
            Path(out).write_text(json.dumps(summary))


class Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:200]}")
        self.status = status


def call(
    api: Any,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "",
    query: list[tuple[str, str]] | None = None,
) -> Any:
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    params = list(query or []) + ([("fieldManager", "fuzzer")] if method == "PATCH" else [])
    method, url, headers, body, _ = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=params,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=body)
    response.read()
    text = response.data.decode()
    if response.status >= 400:
        raise Refused(response.status, text)
    return json.loads(text)


def children(api: Any, ns: str) -> list[tuple[str, str]]:
    out = []
    for kind, resource in sorted(CHILD_RESOURCES.items()):
        selector = [("labelSelector", f"secureai.dev/workload={NAME}")]
        for item in call(api, "GET", resource.path(ns), query=selector)["items"]:
            out.append((kind, item["metadata"]["name"]))
    return out


def rendered_keys(obj: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    """The labels and annotations of a child as the operator left it (controllers' excepted)."""
    meta = obj.get("metadata", {})
    annotations = {
        k for k in meta.get("annotations") or {} if not k.startswith(CONTROLLER_ANNOTATIONS)
    }
    return frozenset(meta.get("labels") or {}), frozenset(annotations)


def owned(obj: dict[str, Any], keys: tuple[frozenset[str], frozenset[str]]) -> Any:
    """What the operator owns of a child: its content and its rendered labels/annotations."""
    meta = obj.get("metadata", {})
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    return (
        content(obj),
        {k: labels.get(k) for k in sorted(keys[0])},
        {k: annotations.get(k) for k in sorted(keys[1])},
    )


def _paths(node: Any, path: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*path, i))
    return out


def pointer(path: tuple[Any, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


LABEL = st.from_regex(r"\A[a-z]([a-z0-9-]{0,8}[a-z0-9])?\Z")


def value_like(old: Any) -> st.SearchStrategy[Any]:
    """A value of the same type as the field's (plus, sometimes, any JSON)."""
    anything = st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-5, 10), LABEL),
        lambda inner: st.one_of(
            st.lists(inner, max_size=2), st.dictionaries(LABEL, inner, max_size=2)
        ),
        max_leaves=3,
    )
    if isinstance(old, bool):
        typed: st.SearchStrategy[Any] = st.booleans()
    elif isinstance(old, int):
        typed = st.one_of(st.integers(0, 10), st.sampled_from([80, 65535, 70000]))
    elif isinstance(old, str):
        typed = LABEL
    elif isinstance(old, dict):
        typed = st.dictionaries(LABEL, LABEL, min_size=1, max_size=2)
    elif isinstance(old, list):
        typed = st.lists(st.dictionaries(LABEL, LABEL, max_size=2), max_size=2)
    else:
        typed = anything
    return st.one_of(typed, typed, typed, anything)


@st.composite
def patches(draw: st.DrawFn, live: dict[str, Any]) -> list[dict[str, Any]]:
    roots = [k for k in live if k not in ("apiVersion", "kind", "metadata", "status")]
    candidates = [p for r in roots for p in _paths(live[r], (r,))]
    meta = live["metadata"]
    for key in ("labels", "annotations"):
        candidates += [("metadata", key, k) for k in meta[key]]
        if meta[key]:
            candidates.append(("metadata", key))
    path = draw(st.sampled_from(candidates))
    node: Any = live
    for step in path:
        node = node[step]
    op = draw(st.sampled_from(["add", "remove", "replace"]))
    if op == "add" and isinstance(node, dict):
        return [{"op": "add", "path": pointer((*path, draw(LABEL))), "value": draw(value_like(""))}]
    if op == "add" and isinstance(node, list):
        item = node[0] if node else {}
        return [{"op": "add", "path": pointer(path) + "/-", "value": draw(value_like(item))}]
    if op == "remove" and len(path) > 1:
        return [{"op": "remove", "path": pointer(path)}]
    return [{"op": "replace", "path": pointer(path), "value": draw(value_like(node))}]


@settings(
    max_examples=CASES,
    deadline=None,
    phases=(Phase.generate,),  # every case is a real API round trip: no shrinking
    suppress_health_check=list(HealthCheck),
    database=None,
)
@given(data=st.data())
def test_random_patches_are_refused_or_reverted_within_a_second(
    fuzzed: tuple[str, Any, dict[tuple[str, str], Any]], data: st.DataObject
) -> None:
    ns, api, baseline = fuzzed
    kind, name = data.draw(st.sampled_from(sorted(baseline)))
    path = CHILD_RESOURCES[kind].path(ns, name)
    keys, want, template = baseline[(kind, name)]  # the stored desired form, as first seen
    wait_for(
        lambda: owned(call(api, "GET", path), keys) == want,
        timeout=10,
        description=f"{kind}/{name} in sync before the next patch",
    )
    ops = data.draw(patches(template))
    try:
        patched = call(api, "PATCH", path, ops, "application/json-patch+json")
    except Refused as exc:  # refused by the API server (validation, immutability)
        assert exc.status in (400, 403, 409, 422), exc
        RESULTS["refused"] += 1
        return
    started = time.monotonic()
    if owned(patched, keys) == want:
        RESULTS["no-op"] += 1
        return
    while True:
        current = call(api, "GET", path)
        elapsed = time.monotonic() - started
        if owned(current, keys) == want:
            break
        if elapsed > DEADLINE:
            RESULTS["slow"].append((kind, name, ops))
            raise AssertionError(f"{kind}/{name} still tampered after {DEADLINE} s: {ops}")
        time.sleep(0.01)
    RESULTS["standing"].append(elapsed)
