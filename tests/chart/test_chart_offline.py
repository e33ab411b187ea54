"""Issue 6, offline half: the Helm chart lints, renders valid manifests, keeps the CRDs in step
with crds/, grants no wildcard, runs a PSS-restricted pod, and ships Argo CD health checks that
give the right verdict for every phase (run in Argo CD's Lua VM by tests/gitops/harness).

Needs the pinned helm binary (hack/build.sh); no cluster.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic.alias_generators import to_camel

from clusterkit import REPO, bindir
from gitopskit import argocd_health
from secureai.api import Policy
from secureai.cli.main import build_parser
from secureai.judge.pss import check_restricted

CHART = REPO / "charts" / "secureai-operator"
K8S_VERSION = "1.37"
RELEASE, NAMESPACE = "secureai", "secureai-system"
# Kinds of CRDs that kubernetes-validate cannot know: prometheus-operator's (not installed with
# this chart; no schema to check against offline).
FOREIGN_KINDS = {"ServiceMonitor", "PrometheusRule"}
MANAGED = "app.kubernetes.io/managed-by"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "monitoring": {
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    },
    "namespaced": {"watchNamespaces": ["ml-team", "ml-serving"]},
    "minimal": {
        "peering": {"enabled": False},
        "replicaCount": 1,
        "networkPolicy": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
        "admissionPolicies": {
            "imagePolicy": {"enabled": False},
            "protectChildren": {"enabled": False},
            "confineOperator": {"enabled": False},
            "quarantine": {"enabled": False},
        },
        "argocd": {"syncWaves": False},
        "rbac": {"aggregateToDefaultRoles": False},
    },
}


def helm_path() -> Path:
    path = bindir() / "helm"
    if not path.is_file():
        pytest.skip(f"helm is not built yet ({path}): run `make toolchain`")
    return path


def helm(*args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(helm_path()), *args]
    if values:
        cmd += ["--values", "-"]
    return subprocess.run(
        cmd,
        input=yaml.safe_dump(values) if values else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@cache
def _render(name: str) -> tuple[dict[str, Any], ...]:
    proc = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--include-crds",
        "--kube-version",
        K8S_VERSION,
        values=VALUE_SETS[name],
    )
    assert proc.returncode == 0, proc.stderr
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def rendered(name: str = "defaults") -> list[dict[str, Any]]:
    return list(_render(name))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def all_docs() -> Iterator[tuple[str, dict[str, Any]]]:
    for name in VALUE_SETS:
        for doc in rendered(name):
            yield name, doc


# --- 1. lint and offline validation ----------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint_strict_is_clean(name: str) -> None:
    proc = helm(
        "lint", "--strict", str(CHART), "--kube-version", K8S_VERSION, values=VALUE_SETS[name]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_rendered_manifests_validate_offline_strict(name: str) -> None:
    checked = 0
    for doc in rendered(name):
        kind = doc["kind"]
        if kind in FOREIGN_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{doc['metadata']['name']}: {exc.message}")
        checked += 1
    assert checked >= 10


def test_replicas_coordinate_through_a_lease_not_kopf_peering() -> None:
    """The leader Lease is the only coordination object: no kopf peering kinds, CRDs or
    rights (kopf runs standalone; docs/architecture.md "Leadership")."""
    for name in VALUE_SETS:
        docs = rendered(name)
        assert not [d for d in docs if d["apiVersion"].startswith("kopf.dev/")], name
        assert not [
            rule
            for d in docs
            if d["kind"] in ("ClusterRole", "Role")
            for rule in d.get("rules") or []
            if "kopf.dev" in rule.get("apiGroups", [])
        ], name
    roles = {d["metadata"]["name"]: d for d in by_kind(rendered(), "Role")}
    leader = roles[f"{RELEASE}-secureai-operator-leader"]
    args = one(rendered(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    lease = args[args.index("--peering") + 1]
    assert leader["rules"][0]["resourceNames"] == [lease]
    assert leader["rules"][0]["resources"] == ["leases"]


def test_monitoring_kinds_are_only_rendered_on_request() -> None:
    assert not [d for d in rendered() if d["kind"] in FOREIGN_KINDS]
    docs = rendered("monitoring")
    monitor, rule = one(docs, "ServiceMonitor"), one(docs, "PrometheusRule")
    service = one(docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "secureai_drift_reverts_total" in exprs["SecureAIDriftSpike"]
    assert 'secureai_reconciles_total{result="error"}' in exprs["SecureAIReconcileErrors"]
    assert "secureai_rejected_specs_total" in exprs["SecureAIRejectedSpecs"]
    assert "secureai_certificate_expiry_timestamp_seconds" in exprs["SecureAICertificateExpiring"]
    assert "secureai_quarantines_active" in exprs["SecureAIQuarantineActive"]
    assert "secureai_containment_duration_seconds_bucket" in exprs["SecureAIContainmentSlow"]
    assert "secureai_auto_quarantines_total" in exprs["SecureAIAutoQuarantine"]
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert r["annotations"]["summary"] and r["labels"]["severity"]
            # Prometheus templates survive Helm's own templating
            assert "{{" not in r["expr"]


def test_values_schema_rejects_unknown_and_bad_values() -> None:
    for bad in (
        {"replicaCount": "two"},
        {"policy": {"allowedRegistry": ["x"]}},  # typo of allowedRegistries
        {"image": {"digest": "sha256:short"}},
        {"admissionPolicies": {"protectChildren": {"validationActions": ["Block"]}}},
        {"watchNamespaces": ["Not_A_Name"]},
        {"unknownKey": 1},
    ):
        proc = helm("template", RELEASE, str(CHART), values=bad)
        assert proc.returncode != 0, bad
        assert "schema" in proc.stderr.lower(), proc.stderr


# --- 2. CRDs ---------------------------------------------------------------------------------


def test_chart_crds_are_exact_copies_of_the_repo_crds() -> None:
    repo = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert repo, "no CRDs in crds/"
    for name, data in repo.items():
        assert chart.get(name) == data, (
            f"charts/secureai-operator/crds/{name} differs from crds/{name}"
        )
    extra = set(chart) - set(repo)
    assert not extra, extra


def test_sync_waves_put_crds_first_and_the_operator_after_its_config() -> None:
    waves: dict[str, int] = {}
    for doc in rendered():
        wave = (doc["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-wave")
        assert wave is not None, f"{doc['kind']}/{doc['metadata']['name']} has no sync wave"
        waves[f"{doc['kind']}/{doc['metadata']['name']}"] = int(wave)
    crd_waves = {w for k, w in waves.items() if k.startswith("CustomResourceDefinition/")}
    others = {w for k, w in waves.items() if not k.startswith("CustomResourceDefinition/")}
    assert max(crd_waves) < min(others)
    deployment = next(w for k, w in waves.items() if k.startswith("Deployment/"))
    config = [w for k, w in waves.items() if k.split("/")[0] in ("ClusterRole", "ConfigMap")]
    assert max(config) < deployment
    assert not any(
        "argocd.argoproj.io/sync-wave" in (d["metadata"].get("annotations") or {})
        for d in rendered("minimal")
        if d["kind"] != "CustomResourceDefinition"
    )


# --- 3. RBAC ---------------------------------------------------------------------------------


def _rules(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc.get("rules") or []:
                yield f"{doc['kind']}/{doc['metadata']['name']}", rule


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_rbac_has_no_wildcards(name: str) -> None:
    for where, rule in _rules(rendered(name)):
        for key in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
            for item in rule.get(key) or []:
                assert "*" not in item, f"{where}: wildcard in {key}: {rule}"
        assert "nonResourceURLs" not in rule, where


def _operator_rules(docs: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(group, resource) -> verbs granted to the operator's ServiceAccount by any binding."""
    sa = f"{RELEASE}-secureai-operator"
    roles = {
        (d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("ClusterRole", "Role")
    }
    granted: dict[tuple[str, str], set[str]] = {}
    for binding in docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in binding["subjects"]):
            continue
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_operator_rights_are_exactly_what_the_code_uses() -> None:
    rw = {"get", "list", "watch", "create", "patch", "update", "delete"}
    expected = {
        ("secureai.dev", "securetrainingjobs"): {"get", "list", "watch"},
        ("secureai.dev", "secureinferenceservices"): {"get", "list", "watch"},
        ("secureai.dev", "securetrainingjobs/status"): {"patch"},
        ("secureai.dev", "secureinferenceservices/status"): {"patch"},
        ("secureai.dev", "securetrainingjobs/finalizers"): {"update"},
        ("secureai.dev", "secureinferenceservices/finalizers"): {"update"},
        **{("", r): rw for r in ("serviceaccounts", "services", "configmaps", "secrets")},
        ("", "persistentvolumeclaims"): rw,
        ("apps", "deployments"): rw,
        ("batch", "jobs"): rw,
        ("policy", "poddisruptionbudgets"): rw,
        ("networking.k8s.io", "networkpolicies"): rw,
        ("", "events"): {"create", "get", "patch"},  # repeated occurrences counted
        ("", "pods"): {"list", "watch"},
        ("", "pods/log"): {"get"},  # quarantine evidence
        ("secureai.dev", "quarantines"): {"get", "list", "watch", "create"},
        ("secureai.dev", "quarantines/status"): {"patch"},
        ("", "namespaces"): {"list", "watch", "patch"},
        ("", "persistentvolumes"): {"get"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("coordination.k8s.io", "leases"): {"get", "update", "patch", "create"},  # leader Lease
    }
    assert _operator_rules(rendered()) == expected
    # nothing that would let it grant itself more
    for (group, _resource), _verbs in expected.items():
        assert group != "rbac.authorization.k8s.io"


def test_namespaced_mode_grants_namespaced_rights_only_in_the_watched_namespaces() -> None:
    docs = rendered("namespaced")
    bindings = by_kind(docs, "RoleBinding")
    workloads = [b for b in bindings if b["roleRef"]["name"].endswith("-workloads")]
    assert sorted(b["metadata"]["namespace"] for b in workloads) == ["ml-serving", "ml-team"]
    cluster_bound = {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")}
    assert cluster_bound == {f"{RELEASE}-secureai-operator-cluster"}
    cluster_role = next(
        d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"].endswith("-cluster")
    )
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert cluster_resources == {
        "namespaces",
        "persistentvolumes",
        "customresourcedefinitions",
        "quarantines",
        "quarantines/status",
        "events",
    }
    (ca,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-ca")]
    assert ca["metadata"]["namespace"] == NAMESPACE
    named = {r for rule in ca["rules"] if rule.get("resourceNames") for r in rule["resourceNames"]}
    assert named == {
        "secureai-ca",
        "secureai-ca-bundle",
        "secureai-evidence-signer",
        "secureai-evidence-key",
        "secureai-evidence-signing",
        "secureai-provenance-key",
    }
    # the provenance records (one per run, names not known in advance): read and noted, never
    # deleted nor replaced; nothing in the release namespace beyond Secrets and ConfigMaps
    unnamed = [rule for rule in ca["rules"] if not rule.get("resourceNames")]
    assert {r for rule in unnamed for r in rule["resources"]} == {"secrets", "configmaps"}
    assert not any(
        "configmaps" in rule["resources"] and {"delete", "update"} & set(rule["verbs"])
        for rule in unnamed
    )
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--namespace") :].count("--namespace") == 2


# --- 4. the operator's Deployment ------------------------------------------------------------


def test_deployment_pod_passes_pss_restricted() -> None:
    for name in VALUE_SETS:
        pod = one(rendered(name), "Deployment")["spec"]["template"]["spec"]
        assert check_restricted(pod) == [], name


def test_deployment_is_ha_probed_bounded_and_spread() -> None:
    docs = rendered()
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 2
    assert container["image"].split("@")[1].startswith("sha256:")
    assert container["resources"]["requests"] and container["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    selector = spec["selector"]["matchLabels"]
    for c in pod["topologySpreadConstraints"]:
        assert c["labelSelector"]["matchLabels"] == selector
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector and pdb["spec"]["minAvailable"] == 1
    service = one(docs, "Service")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    # the command line is one `secureai run` accepts, with the chart's ports and peering name
    assert container["command"] == ["secureai"]
    args = build_parser().parse_args(container["args"])
    assert args.peering == f"{RELEASE}-secureai-operator"  # the leader Lease
    assert (args.health_port, args.metrics_port) == (ports["health"], ports["metrics"])
    assert args.policy == "/etc/secureai/policy.yaml"
    env = {e["name"]: e for e in container["env"]}
    assert env["SECUREAI_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    sa = one(docs, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    # the chart's own objects never carry the label of the operator's children
    for doc in docs:
        assert (doc["metadata"].get("labels") or {}).get(MANAGED) != "secureai", doc["kind"]


def test_policy_configmap_is_the_values_policy_and_loads() -> None:
    docs = rendered()
    cm = one(docs, "ConfigMap")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    data = yaml.safe_load(cm["data"]["policy.yaml"])
    # an empty operatorImage is the chart's own operator image, pinned by digest
    deployment = one(docs, "Deployment")
    operator_image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert values["policy"]["operatorImage"] == ""
    assert data == values["policy"] | {"operatorImage": operator_image}
    Policy(**data)
    volume = next(
        v
        for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if "configMap" in v
    )
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    # the example policy and the chart's default policy are the same document
    assert data == yaml.safe_load((REPO / "examples" / "policy.yaml").read_text()) | {
        "operatorImage": operator_image
    }


def test_values_schema_covers_exactly_the_policy_fields() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    props = set(schema["properties"]["policy"]["properties"])
    assert props == {to_camel(name) for name in Policy.model_fields}


def test_network_policy_allows_only_api_server_dns_and_scrapes() -> None:
    docs = rendered()
    netpol = one(docs, "NetworkPolicy")
    assert netpol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert netpol["spec"]["podSelector"]["matchLabels"] == selector
    ingress_ports = {p["port"] for rule in netpol["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8080}
    egress_ports = {
        (p["protocol"], p["port"]) for r in netpol["spec"]["egress"] for p in r["ports"]
    }
    assert egress_ports == {("TCP", 443), ("TCP", 6443), ("UDP", 53), ("TCP", 53)}


# --- 5. admission policies -------------------------------------------------------------------


def test_image_policy_cel_is_built_from_the_policy_values() -> None:
    docs = rendered()
    vap = next(
        d for d in by_kind(docs, "ValidatingAdmissionPolicy") if "image" in d["metadata"]["name"]
    )
    variables = {v["name"]: v["expression"] for v in vap["spec"]["variables"]}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    registries = values["policy"]["allowedRegistries"]
    assert json.loads(variables["allowedRegistries"]) == registries
    proc = helm(
        "template",
        RELEASE,
        str(CHART),
        "--show-only",
        "templates/admission-image-policy.yaml",
        values={
            "policy": {
                "allowedRegistries": ["a.example/", "b.example/team"],
                "requireDigest": False,
            }
        },
    )
    assert proc.returncode == 0, proc.stderr
    other = next(
        d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "ValidatingAdmissionPolicy"
    )
    variables = {v["name"]: v["expression"] for v in other["spec"]["variables"]}
    assert json.loads(variables["allowedRegistries"]) == ["a.example", "b.example/team"]
    assert len(other["spec"]["validations"]) == 1  # no digest rule
    assert len(vap["spec"]["validations"]) == 2
    rules = vap["spec"]["matchConstraints"]["resourceRules"]
    assert rules[0]["resources"] == ["securetrainingjobs", "secureinferenceservices"]


def test_child_protection_exempts_the_operator_and_controllers_only() -> None:
    docs = rendered()
    vap = next(
        d for d in by_kind(docs, "ValidatingAdmissionPolicy") if "protect" in d["metadata"]["name"]
    )
    variables = {v["name"]: v["expression"] for v in vap["spec"]["variables"]}
    users = json.loads(variables["exemptUsers"])
    assert users == [
        f"system:serviceaccount:{NAMESPACE}:{RELEASE}-secureai-operator",
        "system:kube-controller-manager",
    ]
    assert json.loads(variables["exemptPrefixes"]) == ["system:serviceaccount:kube-system:"]
    assert json.loads(variables["exemptGroups"]) == []
    constraints = vap["spec"]["matchConstraints"]
    assert constraints["objectSelector"] == {"matchLabels": {MANAGED: "secureai"}}
    covered = {
        (g, r)
        for rule in constraints["resourceRules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    children = {(g, r) for (g, r), verbs in _operator_rules(docs).items() if "delete" in verbs}
    assert covered == children
    for rule in constraints["resourceRules"]:
        assert rule["operations"] == ["CREATE", "UPDATE", "DELETE"]
    binding = next(
        d
        for d in by_kind(docs, "ValidatingAdmissionPolicyBinding")
        if "protect" in d["metadata"]["name"]
    )
    assert binding["spec"]["validationActions"] == ["Deny"]
    scoped = helm(
        "template",
        RELEASE,
        str(CHART),
        "--show-only",
        "templates/admission-protect-children.yaml",
        values={
            "admissionPolicies": {
                "protectChildren": {"namespaceSelector": {"matchLabels": {"team": "ml"}}}
            }
        },
    )
    assert scoped.returncode == 0, scoped.stderr
    binding = next(
        d for d in yaml.safe_load_all(scoped.stdout) if d and d["kind"].endswith("Binding")
    )
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {"matchLabels": {"team": "ml"}}


def _vap(docs: list[dict[str, Any]], part: str) -> dict[str, Any]:
    return next(
        d
        for d in by_kind(docs, "ValidatingAdmissionPolicy")
        if d["metadata"]["name"].endswith(part)
    )


def test_operator_confinement_matches_only_the_operator_and_its_writable_kinds() -> None:
    docs = rendered()
    vap = _vap(docs, "-confine-operator")
    (condition,) = vap["spec"]["matchConditions"]
    user = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-secureai-operator"
    assert condition["expression"] == f"request.userInfo.username == '{user}'"
    rules = vap["spec"]["matchConstraints"]["resourceRules"]
    covered = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    writable = {
        (g, r)
        for (g, r), verbs in _operator_rules(docs).items()
        if verbs & {"create", "update", "patch", "delete"}
        and g not in ("secureai.dev", "coordination.k8s.io")  # Lease: own-ns Role
        and r != "events"
    }
    assert covered == writable
    variables = {v["name"]: v["expression"] for v in vap["spec"]["variables"]}
    assert json.loads(variables["protectedNamespaces"]) == [
        "kube-system",
        "kube-public",
        "kube-node-lease",
    ]
    assert f"request.namespace == '{NAMESPACE}'" in variables["caObject"]
    assert variables["foreignPolicyRemoval"] == "false"
    proc = helm(
        "template",
        RELEASE,
        str(CHART),
        "--show-only",
        "templates/admission-confine-operator.yaml",
        values={"policy": {"foreignNetworkPolicy": "remove"}},
    )
    assert proc.returncode == 0, proc.stderr
    removing = next(d for d in yaml.safe_load_all(proc.stdout) if d)
    variables = {v["name"]: v["expression"] for v in removing["spec"]["variables"]}
    assert "networkpolicies" in variables["foreignPolicyRemoval"]
    binding = next(
        d
        for d in by_kind(docs, "ValidatingAdmissionPolicyBinding")
        if d["metadata"]["name"].endswith("-confine-operator")
    )
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"]  # every namespace


def test_admission_policies_can_be_switched_off() -> None:
    kinds = {d["kind"] for d in rendered("minimal")}
    assert (
        "ValidatingAdmissionPolicy" not in kinds and "ValidatingAdmissionPolicyBinding" not in kinds
    )
    assert len(by_kind(rendered(), "ValidatingAdmissionPolicy")) == 4


# --- 6. Argo CD health checks ----------------------------------------------------------------

NOW = "2025-01-01T00:00:00Z"
CONDITION_TYPES = ("Ready", "Isolated", "Hardened", "Encrypted", "Placed", "Drift")


def _conditions(ready: str, reason: str, message: str, **overrides: tuple[str, str]) -> list[Any]:
    out = [{"type": "Ready", "status": ready, "reason": reason, "message": message}]
    for ctype in CONDITION_TYPES[1:]:
        status, msg = overrides.get(ctype, ("True" if ctype != "Drift" else "False", "ok"))
        out.append({"type": ctype, "status": status, "reason": ctype, "message": msg})
    for c in out:
        c.update(observedGeneration=3, lastTransitionTime=NOW)
    return out


def cr(kind: str, phase: str | None, ready: str = "False", message: str = "", **kw: Any) -> Any:
    obj: dict[str, Any] = {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ml", "generation": 3},
        "spec": {
            "image": "registry.example.com/a@sha256:" + "0" * 64,
            "replicas": kw.pop("replicas", 1),
        },
    }
    if phase is not None:
        obj["status"] = {
            "phase": phase,
            "observedGeneration": kw.pop("observed", 3),
            "conditions": _conditions(ready, phase, message, **kw.pop("conditions", {})),
        }
    return obj


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    # in Argo CD's own Lua VM (tests/gitops/harness: gopher-lua, Argo CD's libraries)
    (hs,) = argocd_health(kind, [obj])
    assert "error" not in hs, hs
    return str(hs["status"]), str(hs.get("message") or "")


STJ, SIS = "SecureTrainingJob", "SecureInferenceService"
HEALTH_CASES = [
    # (kind, object, expected status, text the message must contain)
    (STJ, cr(STJ, None), "Progressing", "operator"),
    (STJ, cr(STJ, "Pending", message="0 of 4 workers ready"), "Progressing", "0 of 4"),
    (
        STJ,
        cr(STJ, "Pending", conditions={"Placed": ("Unknown", "waiting for GPU nodes")}),
        "Progressing",
        "GPU nodes",
    ),
    (STJ, cr(STJ, "Running", "True", "4 of 4 workers ready"), "Healthy", "4 of 4"),
    (STJ, cr(STJ, "Running", "False", "3 of 4 workers ready"), "Progressing", "3 of 4"),
    (STJ, cr(STJ, "Ready", "True", "ready"), "Healthy", "ready"),
    (STJ, cr(STJ, "Succeeded", "True", "4 of 4 workers done"), "Healthy", "done"),
    (STJ, cr(STJ, "Failed", "False", "the Job failed"), "Degraded", "failed"),
    (STJ, cr(STJ, "Rejected", "False", "spec.image: not pinned"), "Degraded", "spec.image"),
    (STJ, cr(STJ, "Degraded", "False", "children missing"), "Degraded", "children missing"),
    (STJ, cr(STJ, "Running", "True", observed=2), "Progressing", "generation 3"),
    (
        STJ,
        cr(STJ, "Running", "True", conditions={"Isolated": ("False", "widened by allow-all")}),
        "Degraded",
        "allow-all",
    ),
    (SIS, cr(SIS, None), "Progressing", "operator"),
    (SIS, cr(SIS, "Pending", message="0 of 2 replicas available"), "Progressing", "0 of 2"),
    (SIS, cr(SIS, "Ready", "True", "2 of 2 replicas available"), "Healthy", "2 of 2"),
    (SIS, cr(SIS, "Running", "True", "2 of 2 replicas available"), "Healthy", "2 of 2"),
    (SIS, cr(SIS, "Succeeded", "True", "done"), "Healthy", "done"),
    (SIS, cr(SIS, "Ready", "True", "0 of 0", replicas=0), "Suspended", "zero"),
    (SIS, cr(SIS, "Failed", "False", "crash"), "Degraded", "crash"),
    (SIS, cr(SIS, "Rejected", "False", "registry not allowed"), "Degraded", "registry"),
    (SIS, cr(SIS, "Degraded", "False", "certificate expired"), "Degraded", "certificate"),
    (
        SIS,
        cr(SIS, "Ready", "True", conditions={"Hardened": ("False", "namespace lacks enforce")}),
        "Degraded",
        "namespace lacks",
    ),
    # contained by a Quarantine: Degraded whatever else holds (the condition's message, or a
    # fallback when a client dropped it)
    (STJ, cr(STJ, "Quarantined", "False", "Quarantine/q (Stop)"), "Degraded", "Quarantined: "),
    (SIS, cr(SIS, "Quarantined", "False", "Quarantine/q"), "Degraded", "contained by a Quarantine"),
]
PHASES = {
    "Pending",
    "Running",
    "Ready",
    "Succeeded",
    "Failed",
    "Rejected",
    "Degraded",
    "Quarantined",
}


@pytest.mark.parametrize(
    ("kind", "obj", "status", "text"),
    HEALTH_CASES,
    ids=[f"{k}-{(o.get('status') or {}).get('phase', 'new')}-{s}" for k, o, s, _t in HEALTH_CASES],
)
def test_lua_health_check(kind: str, obj: dict[str, Any], status: str, text: str) -> None:
    got, message = health(kind, obj)
    assert got == status, message
    assert text in message


def test_health_fixtures_cover_every_phase_of_both_kinds() -> None:
    from typing import get_args  # noqa: PLC0415

    from secureai.api.status import Phase  # noqa: PLC0415

    assert set(get_args(Phase)) == PHASES
    for kind in (STJ, SIS):
        phases = {
            (o.get("status") or {}).get("phase") for k, o, _s, _t in HEALTH_CASES if k == kind
        }
        assert phases >= PHASES | {None}, kind
    statuses = {s for _k, _o, s, _t in HEALTH_CASES}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}


def test_argocd_cm_example_carries_the_shipped_health_checks() -> None:
    cm = yaml.safe_load((REPO / "examples" / "gitops" / "argocd-cm.yaml").read_text())
    for kind in (STJ, SIS):
        key = f"resource.customizations.health.secureai.dev_{kind}"
        assert cm["data"][key] == (CHART / "argocd" / f"{kind.lower()}-health.lua").read_text()
    assert not [k for k in cm["data"] if "ignoreDifferences" in k]
    # annotation tracking: label tracking would claim any resource labelled with an app's name
    assert cm["data"]["application.resourceTrackingMethod"] == "annotation"


def test_gitops_application_points_at_the_chart() -> None:
    apps = [
        d
        for d in yaml.safe_load_all((REPO / "examples" / "gitops" / "application.yaml").read_text())
        if d
    ]
    operator = next(
        a for a in apps if a["spec"]["source"].get("path") == "charts/secureai-operator"
    )
    values = operator["spec"]["source"]["helm"]["valuesObject"]
    proc = helm("template", RELEASE, str(CHART), values=values)
    assert proc.returncode == 0, proc.stderr
    for app in apps:
        assert "ignoreDifferences" not in app["spec"]
