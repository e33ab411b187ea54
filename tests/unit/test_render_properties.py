"""Issue 2, items 2 and 3 on generated specs (hypothesis): every admissible spec renders hardened.

The strategies in tests/strategies.py draw a policy and a spec that is admissible under it;
each property runs on ~100 of them. The last section holds regression tests of renderer
bugs found while writing these properties (specs the policy admits but the API server or the
runtime would reject).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from invariants import CHECKERS, apiserver_problems, of_kind
from secureai.api import Policy, SecureInferenceService, SecureTrainingJob, parse_workload
from secureai.render import render, to_yaml, violations
from secureai.render.meta import selector
from strategies import EXAMPLE_POLICY, EXAMPLES, cases

PROPERTY = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(cases())
def test_generated_specs_are_admissible(case: tuple[Policy, dict[str, Any]]) -> None:
    policy, manifest = case
    cr = parse_workload(manifest)
    assert violations(cr, policy) == []
    assert parse_workload(cr.wire()) == cr  # the wire form round-trips


@PROPERTY
@given(cases())
def test_rendered_pods_satisfy_every_invariant(case: tuple[Policy, dict[str, Any]]) -> None:
    """PSS restricted, default-deny isolation, no automount and bounded tokens, requests ==
    limits, digests, GPU placement, encrypted PVCs, API-server validity (tests/invariants.py)."""
    policy, manifest = case
    cr = parse_workload(manifest)
    manifests = render(cr, policy)
    problems = {
        name: found for name, check in CHECKERS.items() if (found := check(cr, policy, manifests))
    }
    assert problems == {}


@PROPERTY
@given(cases())
def test_render_is_deterministic_and_pure(case: tuple[Policy, dict[str, Any]]) -> None:
    policy, manifest = case
    before = copy.deepcopy(manifest)
    first = to_yaml(render(parse_workload(manifest), policy))
    # a fresh parse of the same document, as after a round trip through the API server
    again = parse_workload(json.loads(json.dumps(manifest)))
    assert to_yaml(render(again, policy)) == first
    assert manifest == before


@PROPERTY
@given(cases("SecureTrainingJob"))
def test_training_children_follow_the_spec(case: tuple[Policy, dict[str, Any]]) -> None:
    policy, manifest = case
    cr = parse_workload(manifest)
    assert isinstance(cr, SecureTrainingJob)
    manifests = render(cr, policy)
    workers = cr.spec.workers
    (job,) = of_kind(manifests, "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == workers
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    headless = [s for s in of_kind(manifests, "Service") if s["spec"].get("clusterIP") == "None"]
    assert len(headless) == (1 if workers > 1 else 0)
    if headless:
        assert job["spec"]["template"]["spec"]["subdomain"] == headless[0]["metadata"]["name"]
    pvcs = of_kind(manifests, "PersistentVolumeClaim")
    if cr.spec.output is None:
        assert pvcs == []
    else:
        (pvc,) = pvcs
        wanted = cr.spec.output.storage_class_name or policy.encrypted_storage_classes[0]
        assert pvc["spec"]["storageClassName"] == wanted
        assert pvc["spec"]["resources"]["requests"]["storage"] == cr.spec.output.size
    (allow,) = [n for n in of_kind(manifests, "NetworkPolicy") if "egress" in n["spec"]]
    own = {"podSelector": {"matchLabels": selector(cr)}}
    assert ({"from": [own]} in allow["spec"]["ingress"]) == (workers > 1)
    assert ({"to": [own]} in allow["spec"]["egress"]) == (workers > 1)


@PROPERTY
@given(cases("SecureInferenceService"))
def test_inference_children_follow_the_spec(case: tuple[Policy, dict[str, Any]]) -> None:
    policy, manifest = case
    cr = parse_workload(manifest)
    assert isinstance(cr, SecureInferenceService)
    manifests = render(cr, policy)
    (deploy,) = of_kind(manifests, "Deployment")
    assert deploy["spec"]["replicas"] == cr.spec.replicas
    assert len(of_kind(manifests, "PodDisruptionBudget")) == (1 if cr.spec.replicas > 1 else 0)
    guarded = cr.spec.guard is not None and cr.spec.guard.enabled
    spec = deploy["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == (
        ["server", "guard"] if guarded else ["server"]
    )
    assert [c["name"] for c in spec["initContainers"]] == ["model-verify"]
    assert len(of_kind(manifests, "ConfigMap")) == (1 if guarded else 0)
    byo = cr.spec.tls is not None and cr.spec.tls.mode == "Secret"
    assert len(of_kind(manifests, "Secret")) == (0 if byo else 1)
    (svc,) = of_kind(manifests, "Service")
    target = svc["spec"]["ports"][0]["targetPort"]
    assert target == (8443 if guarded else cr.spec.port)
    # spec ingress rules only ever open the serving port unless they name their own ports
    (allow,) = [n for n in of_kind(manifests, "NetworkPolicy") if "ingress" in n["spec"]]
    peers = cr.spec.network.ingress or [] if cr.spec.network else []
    for rule, peer in zip(allow["spec"]["ingress"], peers, strict=True):
        wanted = [p.port for p in peer.ports] if peer.ports else [target]
        assert [p["port"] for p in rule["ports"]] == wanted


@PROPERTY
@given(cases())
def test_network_holes_are_exactly_the_spec(case: tuple[Policy, dict[str, Any]]) -> None:
    policy, manifest = case
    cr = parse_workload(manifest)
    manifests = render(cr, policy)
    nps = of_kind(manifests, "NetworkPolicy")
    assert len(nps) == 2
    (allow,) = [n for n in nps if "egress" in n["spec"]]
    network = cr.spec.network
    ingress = network.ingress or [] if network else []
    egress = network.egress or [] if network else []
    dns = network is None or network.allow_dns
    intra = isinstance(cr, SecureTrainingJob) and cr.spec.workers > 1
    assert len(allow["spec"]["ingress"]) == len(ingress) + intra
    assert len(allow["spec"]["egress"]) == len(egress) + dns + intra
    dns_rules = [
        r
        for r in allow["spec"]["egress"]
        if any(p.get("port") == policy.dns.port for p in r.get("ports") or [])
        and r["to"][0].get("namespaceSelector")
        == {"matchLabels": {"kubernetes.io/metadata.name": policy.dns.namespace}}
    ]
    assert len(dns_rules) == dns
    for rule in allow["spec"]["ingress"] + allow["spec"]["egress"]:
        for peer in rule.get("from", []) + rule.get("to", []):
            assert peer, "an empty peer would allow everything"
            if "ipBlock" in peer:
                assert peer["ipBlock"]["cidr"] not in ("0.0.0.0/0", "::/0") or any(
                    p.cidr == peer["ipBlock"]["cidr"] for p in ingress + egress
                )


# ---------------------------------------------------------------------------- regression tests


def _cpu_inference() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "inference-cpu.yaml").read_text())
    return doc


def _training() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "training-single-gpu.yaml").read_text())
    return doc


def _with(doc: dict[str, Any], **spec: Any) -> dict[str, Any]:
    doc["spec"].update(spec)
    return doc


ADMITTED_BUT_BROKEN = {
    # render/pod.py: a Secret named "tokens" mounts at the token directory
    "secret-named-tokens": _with(_cpu_inference(), secrets=[{"name": "tokens"}]),
    "secret-on-tmp": _with(_cpu_inference(), secrets=[{"name": "s", "mountPath": "/tmp"}]),
    "secret-on-model-dir": _with(_cpu_inference(), secrets=[{"name": "s", "mountPath": "/models"}]),
    "two-secrets-one-path": _with(
        _cpu_inference(),
        secrets=[{"name": "a", "mountPath": "/x"}, {"name": "b", "mountPath": "/x"}],
    ),
    "scratch-on-dataset": _with(
        _training(),
        datasets=[{"claimName": "d", "mountPath": "/data"}],
        scratch={"sizeLimit": "1Gi", "mountPath": "/data"},
    ),
    # render/inference.py: the guard listens on 8443 and 9090 in the same pod
    "server-port-is-guard-port": _with(_cpu_inference(), port=8443, guard={"enabled": True}),
    "server-port-is-guard-metrics": _with(_cpu_inference(), port=9090, guard={"enabled": True}),
}


def _digit_name() -> dict[str, Any]:
    doc = _cpu_inference()
    doc["metadata"]["name"] = "1embeddings"  # a Service name must start with a letter
    return doc


ADMITTED_BUT_BROKEN["name-starts-with-digit"] = _digit_name()


@pytest.mark.parametrize("name", sorted(ADMITTED_BUT_BROKEN))
def test_admitted_specs_render_what_the_apiserver_accepts(name: str) -> None:
    """Fail closed: a spec is either rejected up front or renders valid children.

    Each case here was admitted by the models and the policy checks while its children are
    rejected by the API server (or cannot run): the fix is a violation (or a tighter model
    pattern), so that the CR gets a Rejected condition instead of a failing apply.
    """
    try:
        cr = parse_workload(copy.deepcopy(ADMITTED_BUT_BROKEN[name]))
    except ValueError:
        return  # rejected by the model: fine
    if violations(cr, EXAMPLE_POLICY):
        return  # rejected by policy: fine
    problems = apiserver_problems(cr, EXAMPLE_POLICY, render(cr, EXAMPLE_POLICY))
    assert problems == [], f"admitted, but the API server would refuse it: {problems}"
