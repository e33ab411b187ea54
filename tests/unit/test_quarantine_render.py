"""Quarantine: the contained form of every rendered workload, foreign-policy exclusion, and
matching (pure: render/containment.py, judge/quarantine.py)."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from secureai.api import parse_workload
from secureai.api.quarantine import Quarantine
from secureai.judge.isolation import allows_some, judge, selects
from secureai.judge.quarantine import blocked_by, containment, facts_of, matched_by
from secureai.render import Containment, render
from secureai.render.containment import exclude_workloads, excluded
from secureai.render.meta import LABEL_KIND, LABEL_WORKLOAD
from strategies import cases, label_maps

ISOLATE = Containment(("incident-1",), stop=False, message="Quarantine/incident-1: test")
STOP = Containment(("incident-1",), stop=True, message="Quarantine/incident-1: test")


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def quarantine(
    name: str = "incident-1", created: str = "2026-01-01T00:00:00Z", **spec: Any
) -> Quarantine:
    body = {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": "Quarantine",
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"reason": "test", **spec},
    }
    return Quarantine.model_validate(body)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_contained_form_allows_no_traffic_and_holds_no_credentials(
    case: tuple[Any, dict[str, Any]],
) -> None:
    policy, manifest = case
    cr = parse_workload(manifest)
    plain = render(cr, policy)
    for how in (ISOLATE, STOP):
        contained = render(cr, policy, how)
        kinds = [m["kind"] for m in contained]
        assert "ServiceAccount" not in kinds
        assert not [m for m in contained if m.get("type") == "kubernetes.io/tls"]
        policies = {m["metadata"]["name"]: m for m in contained if m["kind"] == "NetworkPolicy"}
        assert policies, "the default-deny stays"
        for body in policies.values():
            assert allows_some(body["spec"]) == []
        # the live pods (from the template labels) are isolated by the contained policies alone
        pods = {
            f"{m['kind']}/{m['metadata']['name']}": dict(
                m["spec"]["template"]["metadata"]["labels"]
            )
            for m in contained
            if m["kind"] in ("Deployment", "Job")
        }
        assert judge(pods, policies, policies).isolated
        plain_replicas = {
            (m["kind"], m["metadata"]["name"]): (m.get("spec") or {}).get("replicas") for m in plain
        }
        for m in contained:
            if m["kind"] == "Deployment":
                want = 0 if how.stop else plain_replicas[("Deployment", m["metadata"]["name"])]
                assert m["spec"]["replicas"] == want
            if m["kind"] == "Job":
                assert bool(m["spec"].get("suspend")) is how.stop
        # nothing else changes: the pods are kept for forensics (same templates)
        rest = [m for m in plain if m["kind"] not in ("ServiceAccount", "NetworkPolicy")]
        rest = [m for m in rest if m.get("type") != "kubernetes.io/tls"]
        kept = [m for m in contained if m["kind"] != "NetworkPolicy"]
        assert [m["metadata"]["name"] for m in kept] == [m["metadata"]["name"] for m in rest]
        for before, after in zip(rest, kept, strict=True):
            if before["kind"] in ("Deployment", "Job"):
                assert before["spec"]["template"] == after["spec"]["template"]
            elif before["kind"] not in ("Deployment", "Job"):
                assert before == after
    assert render(cr, policy) == plain  # rendering contained did not touch the plain form


selectors = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": label_maps(),
        "matchExpressions": st.lists(
            st.fixed_dictionaries(
                {
                    "key": st.sampled_from(["app", "tier", LABEL_WORKLOAD]),
                    "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
                },
                optional={"values": st.lists(st.sampled_from(["a", "b", "web"]), max_size=2)},
            ),
            max_size=2,
        ),
    },
)
pod_labels = st.fixed_dictionaries(
    {LABEL_WORKLOAD: st.sampled_from(["a", "b", "web", "db"])},
    optional={"app": st.sampled_from(["a", "web"]), "tier": st.sampled_from(["b", "web"])},
)


@settings(max_examples=300, deadline=None)
@given(selectors, st.sets(st.sampled_from(["a", "b", "web"])), st.lists(pod_labels, max_size=6))
def test_exclusion_removes_exactly_the_quarantined_workloads(
    selector: dict[str, Any], names: set[str], pods: list[dict[str, str]]
) -> None:
    policy = {"metadata": {"name": "foreign"}, "spec": {"podSelector": selector}}
    narrowed = exclude_workloads(policy, names)
    assert excluded(narrowed) == names
    for labels in pods:
        before = selects(selector, labels)
        after = selects(narrowed["spec"]["podSelector"], labels)
        if labels[LABEL_WORKLOAD] in names:
            assert not after
        else:
            assert after == before
    restored = exclude_workloads(narrowed, set())
    assert excluded(restored) == set()
    for labels in pods:
        assert selects(restored["spec"]["podSelector"], labels) == selects(selector, labels)
    assert policy == {"metadata": {"name": "foreign"}, "spec": {"podSelector": selector}}


def workload(image_digest: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": "SecureInferenceService",
        "metadata": {
            "name": "chat",
            "namespace": "ml",
            "labels": {"team": "x"},
            "creationTimestamp": "2026-01-02T00:00:00Z",
            **meta,
        },
        "spec": {"image": f"registry.example.com/m@{image_digest}"},
        "status": {"lineage": {"modelDigest": digest_of("model")}},
    }


def test_matching_by_each_entry_of_the_spec() -> None:
    image = digest_of("image")
    facts = facts_of(workload(image), model_digest=None)
    assert matched_by(quarantine(match={"modelDigests": [digest_of("model")]}), facts) == (
        f"model {digest_of('model')}"
    )
    assert matched_by(quarantine(match={"imageDigests": [image]}), facts) == f"image {image}"
    assert matched_by(quarantine(match={"namespaces": ["ml"]}), facts) == "namespace ml"
    assert matched_by(quarantine(match={"workloads": [{"namespace": "ml", "name": "chat"}]}), facts)
    assert matched_by(quarantine(match={"selector": {"matchLabels": {"team": "x"}}}), facts)
    for miss in (
        {"modelDigests": [digest_of("other")]},
        {"imageDigests": [digest_of("other")]},
        {"namespaces": ["other"]},
        {"workloads": [{"namespace": "ml", "name": "chat", "kind": "SecureTrainingJob"}]},
        {"selector": {"matchLabels": {"team": "y"}}},
        {"datasetDigests": [digest_of("model")]},
    ):
        assert matched_by(quarantine(match=miss), facts) is None, miss


def test_containment_is_sticky_until_release_and_stop_waits_for_evidence() -> None:
    facts = facts_of(workload(digest_of("image")))
    q = quarantine(match={"modelDigests": [digest_of("model")]}, action="Stop")
    got = containment([q], facts, {}, {})
    assert got is not None and got.quarantines == ("incident-1",) and not got.stop
    assert containment([q], facts, {}, {"incident-1": True}) == Containment(
        ("incident-1",), True, got.message
    )
    moved = facts_of({**workload(digest_of("image")), "status": {}})  # a new model, unverified
    assert containment([q], moved, {}, {}) is None
    assert containment([q], moved, {"incident-1": {moved.ref}}, {}) is not None  # sticky
    released = quarantine(match={"modelDigests": [digest_of("model")]}, released=True)
    assert containment([released], facts, {"incident-1": {facts.ref}}, {}) is None


def test_only_new_workloads_with_a_quarantined_image_are_refused() -> None:
    image = digest_of("image")
    q = quarantine(match={"imageDigests": [image]}, created="2026-01-01T12:00:00Z")
    newer = facts_of(workload(image, creationTimestamp="2026-01-01T12:00:05Z"))
    older = facts_of(workload(image, creationTimestamp="2026-01-01T11:00:00Z"))
    assert blocked_by(q, newer) is not None and "Quarantine/incident-1" in str(blocked_by(q, newer))
    assert blocked_by(q, older) is None  # it existed before: contained, not refused
    off = quarantine(match={"imageDigests": [image]}, blockAdmission=False)
    assert blocked_by(off, newer) is None
    by_model = quarantine(match={"modelDigests": [digest_of("model")]})
    assert blocked_by(by_model, newer) is None  # known only after verification: contained


def test_every_image_of_the_rendered_pods_counts() -> None:
    image = digest_of("guard")
    children = [
        {
            "kind": "Deployment",
            "spec": {
                "template": {
                    "spec": {
                        "initContainers": [{"image": f"r.example/op@{image}"}],
                        "containers": [{"image": "r.example/app:latest"}],
                    }
                }
            },
        }
    ]
    facts = facts_of(workload(digest_of("image")), children)
    assert image in facts.image_digests
    assert facts.labels == {"team": "x"} and LABEL_KIND not in facts.labels
