"""Issue 6 on the real control plane: the Helm chart installs into a PSS-restricted namespace,
the operator runs with exactly the chart's RBAC, the admission policies refuse bad specs, direct
edits of children and the operator's own writes outside what it owns, specs are never mutated,
and kubectl shows columns and descriptions.

Isolation from the other modules sharing the cluster: a unique release and namespaces; policies
(a) and (b) are bound only to this module's namespaces (namespaceSelector values), policy (c)
matches only this release's ServiceAccount; the operator processes watch only this module's
namespaces; the releases (with their policies and bindings) are uninstalled at the end.

The operator process runs the command line of the chart's Deployment, with a kubeconfig holding
a TokenRequest token of the chart's ServiceAccount and nothing else: no extra binding is created
for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from clusterkit import REPO, Cluster, wait_for
from operatorkit import (
    TEST_POLICY,
    OperatorProcess,
    apply_yaml,
    condition,
    example,
    free_port,
    get_json,
    model_prereqs,
    wait_ready,
)
from secureai.api import Policy
from secureai.render.validate import _check_image

CHART = REPO / "charts" / "secureai-operator"
SUFFIX = uuid.uuid4().hex[:6]
SCOPE_LABEL = "secureai.dev/chart-test"  # namespaces of this module: admission policy (a)
PROTECT_LABEL = "secureai.dev/chart-test-protect"  # ...and those under admission policy (b)
MANAGED = "app.kubernetes.io/managed-by"
PSS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
DIGEST = "@sha256:" + "ab" * 32


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str  # the operator's namespace (PSS restricted)
    install_output: str

    @property
    def fullname(self) -> str:
        return f"{self.name}-secureai-operator"

    @property
    def sa(self) -> str:
        return self.fullname

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.sa}"


@dataclass(frozen=True)
class Namespaces:
    protected: str  # admission policies (a) and (b)
    open: str  # admission policy (a) only: tampering is possible, the operator reverts it
    unscoped: str  # neither: outside both namespace selectors

    def all(self) -> tuple[str, str, str]:
        return (self.protected, self.open, self.unscoped)


@dataclass
class ChartOperator(OperatorProcess):
    """`secureai run` with the arguments of the chart's Deployment (ports and the policy path
    replaced by local ones), as the chart's ServiceAccount."""

    args: list[str] = field(default_factory=list)

    def start(self, wait: bool = True) -> ChartOperator:
        self.health_port, self.metrics_port = free_port(), free_port()
        args = _with(self.args, "--policy", str(self.policy_file))
        args = _with(args, "--health-port", str(self.health_port))
        args = _with(args, "--metrics-port", str(self.metrics_port))
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "SECUREAI_RESYNC_SECONDS": "5",
            **self.env_extra,
        }
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "secureai.cli.main", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            wait_for(self.ready, timeout=60, description="operator /readyz")
        return self

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def _with(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


# --- helpers ---------------------------------------------------------------------------------


def create_namespace(cluster: Cluster, name: str, labels: dict[str, str]) -> None:
    apply_yaml(
        cluster,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
    )
    wait_for(
        lambda: get_json(cluster, "serviceaccount", "default", "-n", name),
        timeout=30,
        description=f"ServiceAccount {name}/default",
    )


def helm_install(cluster: Cluster, name: str, namespace: str, values: dict[str, Any]) -> Release:
    proc = cluster.helm(
        "install",
        name,
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        "-",
        "--wait",
        "--timeout",
        "180s",
        input=yaml.safe_dump(values),
        timeout=240,
    )
    return Release(name, namespace, proc.stdout)


def helm_uninstall(cluster: Cluster, release: Release) -> None:
    cluster.helm("uninstall", release.name, "--namespace", release.namespace, "--wait")
    for kind in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
        left = get_json(cluster, kind, "-l", f"app.kubernetes.io/instance={release.name}")
        assert not (left or {}).get("items"), f"{kind} of {release.name} survived uninstall"


def sa_kubeconfig(cluster: Cluster, release: Release, path: Path) -> Path:
    """A kubeconfig with a TokenRequest token of the release's ServiceAccount, nothing else."""
    token = cluster.kubectl(
        "create", "token", release.sa, "-n", release.namespace, "--duration=2h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def chart_operator(
    cluster: Cluster, release: Release, folder: Path, name: str = "operator"
) -> ChartOperator:
    """An operator process configured exactly as the release's Deployment configures it."""
    deployment = cluster.kubectl_json(
        "get", "deployment", release.fullname, "-n", release.namespace
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["secureai"]
    policy = cluster.kubectl_json(
        "get", "configmap", f"{release.fullname}-policy", "-n", release.namespace
    )["data"]["policy.yaml"]
    policy_file = folder / f"{name}-policy.yaml"
    policy_file.write_text(policy)
    env = {e["name"]: e for e in container["env"]}
    assert env["SECUREAI_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    return ChartOperator(
        cluster,
        sa_kubeconfig(cluster, release, folder / f"{name}.kubeconfig"),
        policy_file,
        folder / f"{name}.log",
        env_extra={"SECUREAI_NAMESPACE": release.namespace},
        args=list(container["args"]),
    )


def can_i(cluster: Cluster, user: str, *args: str) -> bool:
    proc = cluster.kubectl("auth", "can-i", *args, f"--as={user}", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


def subject_access_review(cluster: Cluster, user: str, **attributes: str) -> bool:
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}"]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": attributes},
    }
    out = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
    return bool(json.loads(out.stdout)["status"].get("allowed"))


def audit_writes(
    cluster: Cluster, user: str, resource: str, namespace: str, name: str
) -> list[dict[str, Any]]:
    def match(event: dict[str, Any]) -> bool:
        ref = event.get("objectRef") or {}
        return (
            event.get("stage") == "ResponseComplete"
            and event["user"].get("username") == user
            and ref.get("resource") == resource
            and ref.get("namespace") == namespace
            and ref.get("name") == name
            and not ref.get("subresource")
            and event["verb"] in ("create", "update", "patch", "delete")
            and (event.get("responseStatus") or {}).get("code", 0) < 300
        )

    return cluster.audit_events(match)


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, f"expected a refusal, got: {proc.stdout}"
    return proc.stderr


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespaces(cluster: Cluster) -> Iterator[Namespaces]:
    ns = Namespaces(f"sai-chart-p-{SUFFIX}", f"sai-chart-o-{SUFFIX}", f"sai-chart-u-{SUFFIX}")
    create_namespace(cluster, ns.protected, {SCOPE_LABEL: SUFFIX, PROTECT_LABEL: SUFFIX})
    create_namespace(cluster, ns.open, {SCOPE_LABEL: SUFFIX})
    create_namespace(cluster, ns.unscoped, {})
    yield ns
    cluster.kubectl("delete", "namespace", *ns.all(), "--wait=false", check=False)


@pytest.fixture(scope="module")
def release(cluster: Cluster, namespaces: Namespaces) -> Iterator[Release]:
    """The chart, cluster-wide, both admission policies bound to this module's namespaces."""
    namespace = f"sai-chart-{SUFFIX}"
    create_namespace(cluster, namespace, PSS)
    values = {
        "policy": TEST_POLICY,
        "admissionPolicies": {
            "imagePolicy": {"namespaceSelector": {"matchLabels": {SCOPE_LABEL: SUFFIX}}},
            "protectChildren": {"namespaceSelector": {"matchLabels": {PROTECT_LABEL: SUFFIX}}},
        },
    }
    rel = helm_install(cluster, f"sai{SUFFIX}", namespace, values)
    for crd in ("securetrainingjobs.secureai.dev", "secureinferenceservices.secureai.dev"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    yield rel
    helm_uninstall(cluster, rel)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def chart_op(
    cluster: Cluster,
    release: Release,
    namespaces: Namespaces,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChartOperator]:
    """The chart's command line and RBAC, with one change: the cluster is shared with other
    test modules, so instead of cluster-wide peering the process watches only this module's
    namespaces (`--namespace`, standalone). Its rights are still the chart's cluster-wide ones;
    the Lease rights are checked on their own (test_leader_lease_rights)."""
    process = chart_operator(cluster, release, tmp_path_factory.mktemp("chart-operator"))
    args = list(process.args)
    peering = args.index("--peering")
    del args[peering : peering + 2]
    process.args = args + [arg for ns in namespaces.all() for arg in ("--namespace", ns)]
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def workloads(
    cluster: Cluster, namespaces: Namespaces, chart_op: ChartOperator
) -> dict[str, dict[str, Any]]:
    """The four examples, applied as a user would, Ready under the chart's RBAC."""
    placed = {
        "training-single-gpu.yaml": namespaces.protected,
        "inference-gpu-guarded.yaml": namespaces.protected,
        "training-distributed.yaml": namespaces.open,
        "inference-cpu.yaml": namespaces.open,
    }
    applied: dict[str, dict[str, Any]] = {}
    for file, ns in placed.items():
        cr = example(file, ns)
        if cr["kind"] == "SecureInferenceService":
            model_prereqs(cluster, ns, [cr["spec"]["model"]["claimName"]])
        apply_yaml(cluster, cr)
        applied[cr["metadata"]["name"]] = cr
    for cr in applied.values():
        meta = cr["metadata"]
        wait_ready(cluster, cr["kind"], meta["namespace"], meta["name"], timeout=120)
    return applied


# --- namespaced mode, first (no other operator runs yet): no rights outside its namespaces -


@pytest.fixture(scope="module")
def namespaced(cluster: Cluster) -> Iterator[tuple[Release, str]]:
    watched = f"sai-chart-w-{SUFFIX}"
    create_namespace(cluster, watched, {SCOPE_LABEL: SUFFIX})
    namespace = f"sai-chart-n-{SUFFIX}"
    create_namespace(cluster, namespace, PSS)
    values = {
        "policy": TEST_POLICY,
        "watchNamespaces": [watched],
        "admissionPolicies": {
            "imagePolicy": {"enabled": False},
            "protectChildren": {"enabled": False},
        },
        "rbac": {"aggregateToDefaultRoles": False},
    }
    rel = helm_install(cluster, f"sain{SUFFIX}", namespace, values)
    yield rel, watched
    helm_uninstall(cluster, rel)
    cluster.kubectl("delete", "namespace", namespace, watched, "--wait=false", check=False)


def test_namespaced_mode_cannot_read_secrets_outside_its_namespaces(
    cluster: Cluster, namespaced: tuple[Release, str]
) -> None:
    rel, watched = namespaced
    assert not subject_access_review(
        cluster, rel.user, namespace="kube-system", verb="list", resource="secrets"
    )
    assert not can_i(cluster, rel.user, "list", "secrets", "-n", "kube-system")
    assert not can_i(cluster, rel.user, "get", "secrets", "-n", "kube-system")
    assert not can_i(cluster, rel.user, "list", "secrets", "-A")
    assert not can_i(cluster, rel.user, "list", "secrets", "-n", rel.namespace)
    assert can_i(cluster, rel.user, "list", "secrets", "-n", watched)
    assert can_i(cluster, rel.user, "get", "secrets/secureai-ca", "-n", rel.namespace)
    assert not can_i(cluster, rel.user, "get", "secrets/other", "-n", rel.namespace)
    for args in FORBIDDEN_FOR_THE_OPERATOR:
        assert not can_i(cluster, rel.user, *args), args


def start_namespaced(process: ChartOperator) -> None:
    """Start; a start-up refused at the cluster scope fails the test like any other failure."""
    process.start(wait=False)

    def settled() -> bool:
        return process.ready() or "startup' failed" in process.log()

    wait_for(settled, timeout=60, description="start-up")
    if process.ready():
        return
    process.stop()
    if "at the cluster scope" in process.log():
        pytest.fail(
            "in namespaced mode (--namespace) the start-up still lists cluster-wide "
            f"(403 at the cluster scope):\n{process.log()[-3000:]}"
        )
    pytest.fail(f"operator start-up failed:\n{process.log()[-3000:]}")


def test_namespaced_mode_operator_reconciles_in_its_namespace(
    cluster: Cluster, namespaced: tuple[Release, str], tmp_path: Path
) -> None:
    rel, watched = namespaced
    process = chart_operator(cluster, rel, tmp_path, name="namespaced")
    assert process.args.count("--namespace") == 1 and watched in process.args
    start_namespaced(process)
    try:
        cr = example("inference-cpu.yaml", watched)
        model_prereqs(cluster, watched, [cr["spec"]["model"]["claimName"]])
        apply_yaml(cluster, cr)
        wait_ready(cluster, "sis", watched, cr["metadata"]["name"])
        assert audit_writes(cluster, rel.user, "deployments", watched, cr["metadata"]["name"])
        success = 'secureai_reconciles_total{kind="SecureInferenceService",result="success"}'
        assert success in process.metrics()
        assert "Forbidden" not in process.log()
    finally:
        process.stop()


def metric_value(text: str, name: str, **labels: str) -> float:
    """A sample's value from a /metrics page (0 when absent): counters are compared by value,
    since a label set can be present at 0."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def reconciles(process: ChartOperator) -> float:
    """Successful SecureTrainingJob reconciles this process has counted."""
    return metric_value(
        process.metrics(), "secureai_reconciles_total", kind="SecureTrainingJob", result="success"
    )


def test_two_replicas_share_one_peering(
    cluster: Cluster, namespaced: tuple[Release, str], tmp_path: Path
) -> None:
    """The Deployment's two replicas with the chart's `--peering`: one handles events, the other
    waits, and takes over when the first stops."""
    rel, watched = namespaced
    replicas = [chart_operator(cluster, rel, tmp_path, name=f"replica-{i}") for i in (1, 2)]
    assert all("--peering" in r.args for r in replicas)
    image = "registry.example.com/ml/trainer" + DIGEST
    try:
        for replica in replicas:
            start_namespaced(replica)
        apply_yaml(cluster, _cr(watched, image, name="ha-1"))
        conflict = "Possibly conflicting operators with the same priority"

        def settled() -> str | None:
            if any(conflict in r.log() for r in replicas):
                return "conflict"
            ready = condition(get_json(cluster, "stj", "ha-1", "-n", watched), "Ready")
            return "ready" if ready and ready["status"] == "True" else None

        if wait_for(settled, timeout=60, description="ha-1 Ready") == "conflict":
            pytest.fail(f"replicas peer with the same priority, so both pause ({conflict!r})")
        # exactly one replica reconciled it (each process counts its own reconciles)
        active = [r for r in replicas if reconciles(r) > 0]
        assert len(active) == 1, "both replicas reconciled: peering elected no one"
        (standby,) = [r for r in replicas if r is not active[0]]
        active[0].stop()  # a clean exit withdraws its keep-alive: the standby resumes
        apply_yaml(cluster, _cr(watched, image, name="ha-2"))
        wait_ready(cluster, "stj", watched, "ha-2", timeout=90)
        assert reconciles(standby) > 0
    finally:
        for replica in replicas:
            replica.stop()


# --- (2) install into a PSS-restricted namespace ---------------------------------------------


def test_install_into_a_pss_restricted_namespace(cluster: Cluster, release: Release) -> None:
    ns = cluster.kubectl_json("get", "namespace", release.namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # enforcement is on: a pod that breaks the profile is refused in that namespace
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-privileged", "namespace": release.namespace},
        "spec": {"containers": [{"name": "c", "image": "registry.example.com/x" + DIGEST}]},
    }
    proc = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False
    )
    assert "violates PodSecurity" in refused(proc)
    # ... and the chart's two operator pods were admitted and run, on different nodes
    selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=operator"
    pods = cluster.kubectl_json("get", "pods", "-n", release.namespace, "-l", selector)["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running", pod["status"]
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"
    assert len({p["spec"]["nodeName"] for p in pods}) == 2, "replicas share a node"
    deployment = cluster.kubectl_json(
        "get", "deployment", release.fullname, "-n", release.namespace
    )
    assert deployment["status"]["availableReplicas"] == 2
    assert "kubectl get stj -o wide" in release.install_output  # NOTES.txt
    assert release.user in release.install_output


# --- (3) the operator under the chart's RBAC -------------------------------------------------


def test_operator_token_is_the_charts_service_account(
    cluster: Cluster, release: Release, chart_op: ChartOperator
) -> None:
    proc = cluster.kubectl("--kubeconfig", str(chart_op.kubeconfig), "auth", "whoami", "-o", "json")
    assert json.loads(proc.stdout)["status"]["userInfo"]["username"] == release.user
    # nothing but the chart binds this ServiceAccount
    for kind in ("clusterrolebindings", "rolebindings"):
        items = cluster.kubectl_json("get", kind, "-A")["items"]
        bound = [
            b["metadata"]["name"]
            for b in items
            if any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == release.sa
                and s.get("namespace") == release.namespace
                for s in b.get("subjects") or []
            )
        ]
        labels = [
            (b["metadata"].get("labels") or {}).get("app.kubernetes.io/instance")
            for b in items
            if b["metadata"]["name"] in bound
        ]
        assert all(label == release.name for label in labels), (kind, bound)


def test_examples_reach_ready_under_the_charts_rbac(
    cluster: Cluster, release: Release, chart_op: ChartOperator, workloads: dict[str, Any]
) -> None:
    for name, cr in workloads.items():
        ns = cr["metadata"]["namespace"]
        # the children were written by the chart's ServiceAccount (audit log: user per request)
        child = ("jobs", name) if cr["kind"] == "SecureTrainingJob" else ("deployments", name)
        assert audit_writes(cluster, release.user, child[0], ns, child[1]), (name, child)
        status_writes = cluster.audit_events(
            lambda e, ns=ns, name=name: (
                e["user"].get("username") == release.user
                and (e.get("objectRef") or {}).get("name") == name
                and (e.get("objectRef") or {}).get("namespace") == ns
                and (e.get("objectRef") or {}).get("subresource") == "status"
            )
        )
        assert status_writes, name
    assert reconciles(chart_op) > 0


def test_tampering_is_reverted_by_the_charts_service_account(
    cluster: Cluster,
    namespaces: Namespaces,
    release: Release,
    chart_op: ChartOperator,
    workloads: dict[str, Any],
) -> None:
    ns, name = namespaces.open, "embeddings"
    before = len(audit_writes(cluster, release.user, "deployments", ns, name))
    reverts = "secureai_drift_reverts_total"
    counted = metric_value(chart_op.metrics(), reverts, child_kind="Deployment")
    cluster.kubectl(
        "patch", "deployment", name, "-n", ns, "--type=json",
        "-p", json.dumps([{"op": "replace", "path": "/spec/replicas", "value": 5}]),
    )  # fmt: skip

    def reverted() -> bool:
        live = cluster.kubectl_json("get", "deployment", name, "-n", ns)
        return bool(live["spec"]["replicas"] == 1)

    wait_for(reverted, timeout=20, interval=0.2, description="revert of spec.replicas")
    assert len(audit_writes(cluster, release.user, "deployments", ns, name)) > before
    # a deleted child comes back as well
    policy = f"{name}-default-deny"
    assert get_json(cluster, "networkpolicy", policy, "-n", ns) is not None
    cluster.kubectl("delete", "networkpolicy", policy, "-n", ns)
    wait_for(
        lambda: get_json(cluster, "networkpolicy", policy, "-n", ns),
        timeout=20,
        description=f"NetworkPolicy {policy} recreated",
    )
    assert metric_value(chart_op.metrics(), reverts, child_kind="Deployment") > counted


FORBIDDEN_FOR_THE_OPERATOR = [
    ("create", "clusterrolebindings"),
    ("create", "rolebindings", "-n", "kube-system"),
    ("create", "roles", "-n", "kube-system"),
    ("escalate", "clusterroles"),
    ("bind", "clusterroles"),
    ("escalate", "roles", "-n", "default"),
    ("bind", "roles", "-n", "default"),
    ("impersonate", "users"),
    ("impersonate", "serviceaccounts", "-n", "kube-system"),
    ("create", "pods", "-n", "default"),
    ("create", "pods", "--subresource=exec", "-n", "default"),
    ("create", "serviceaccounts", "--subresource=token", "-n", "kube-system"),
    ("get", "nodes"),
    ("create", "namespaces"),
    ("delete", "namespaces"),
    ("update", "securetrainingjobs", "-n", "default"),
    ("patch", "secureinferenceservices", "-n", "default"),
    ("delete", "securetrainingjobs", "-n", "default"),
    ("create", "validatingadmissionpolicybindings"),
    ("delete", "validatingadmissionpolicies"),
    ("create", "mutatingwebhookconfigurations"),
    ("create", "customresourcedefinitions"),
    ("delete", "persistentvolumes"),
    ("deletecollection", "secrets", "-n", "default"),
]
ALLOWED_FOR_THE_OPERATOR = [
    ("patch", "securetrainingjobs", "--subresource=status", "-n", "default"),
    ("list", "networkpolicies", "-A"),
    ("patch", "namespaces"),
    ("create", "events", "-n", "default"),
    ("get", "persistentvolumes"),
]


def test_service_account_cannot_escalate(cluster: Cluster, release: Release) -> None:
    for args in FORBIDDEN_FOR_THE_OPERATOR:
        assert not can_i(cluster, release.user, *args), args
    for args in ALLOWED_FOR_THE_OPERATOR:
        assert can_i(cluster, release.user, *args), args


def test_service_account_cannot_grant_itself_more(
    cluster: Cluster, release: Release, chart_op: ChartOperator
) -> None:
    """Not just can-i: the real token's attempts to escalate are refused by the API server."""
    as_operator = ("--kubeconfig", str(chart_op.kubeconfig))
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"escalate-{SUFFIX}"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": release.sa, "namespace": release.namespace}
        ],
    }
    proc = cluster.kubectl(
        *as_operator, "create", "-f", "-", input=json.dumps(binding), check=False
    )
    assert "forbidden" in refused(proc).lower()
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": f"escalate-{SUFFIX}", "namespace": "kube-system"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }
    proc = cluster.kubectl(*as_operator, "create", "-f", "-", input=json.dumps(role), check=False)
    assert "forbidden" in refused(proc).lower()
    proc = cluster.kubectl(
        *as_operator, "create", "token", "default", "-n", "kube-system", check=False
    )
    assert "forbidden" in refused(proc).lower()


def test_operator_writes_are_confined_to_what_it_owns(
    cluster: Cluster,
    release: Release,
    namespaces: Namespaces,
    chart_op: ChartOperator,
    workloads: dict[str, Any],
) -> None:
    """Admission policy (c): RBAC lets a cluster-wide operator write Deployments, Secrets and
    ConfigMaps anywhere; the policy refuses every write of its token to objects it does not
    own. Server-side dry runs go through admission and change nothing."""
    ns = namespaces.open
    vap = f"ValidatingAdmissionPolicy '{release.fullname}-confine-operator'"

    def as_operator(*args: str, body: dict[str, Any] | None = None) -> Any:
        return cluster.kubectl(
            "--kubeconfig", str(chart_op.kubeconfig), *args, "--dry-run=server",
            input=json.dumps(body) if body else None, check=False,
        )  # fmt: skip

    def configmap(namespace: str, labels: dict[str, str]) -> dict[str, Any]:
        meta = {"name": f"probe-{SUFFIX}", "namespace": namespace, "labels": labels}
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "b"}}

    managed = {MANAGED: "secureai"}
    for namespace in ("kube-system", "kube-public"):
        assert can_i(cluster, release.user, "create", "configmaps", "-n", namespace)  # RBAC: yes
        err = refused(as_operator("create", "-f", "-", body=configmap(namespace, managed)))
        assert vap in err and f"may not write to namespace {namespace}" in err
    err = refused(as_operator("create", "-f", "-", body=configmap(ns, {})))
    assert vap in err and "may only write objects labelled" in err
    assert as_operator("create", "-f", "-", body=configmap(ns, managed)).returncode == 0
    # the user's own objects next to the workload are out of reach
    err = refused(as_operator("label", "configmap", "model-signer", "-n", ns, "x=y"))
    assert vap in err and "configmaps " + ns + "/model-signer is not one" in err
    err = refused(as_operator("delete", "pvc", "embeddings-model", "-n", ns))
    assert vap in err
    err = refused(
        as_operator(
            "label", "configmap", f"{release.fullname}-policy", "-n", release.namespace, "x=y"
        )
    )
    assert vap in err

    # namespaces: its Pod Security labels, nothing else
    def ns_patch(labels: dict[str, str]) -> Any:  # as the operator does: server-side apply
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
        return as_operator(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=probe",
            "-f",
            "-",
            body=body,
        )

    err = refused(ns_patch({"team": "evil"}))
    assert vap in err and f"only add its Pod Security labels to namespace {ns}" in err
    err = refused(ns_patch({"pod-security.kubernetes.io/enforce": "privileged"}))
    assert vap in err
    assert ns_patch({"pod-security.kubernetes.io/enforce": "restricted"}).returncode == 0
    assert as_operator("annotate", "service", "embeddings", "-n", ns, "probe=x").returncode == 0

    # provenance records (docs/provenance.md): the operator writes them and notes a deletion,
    # but never changes a signed statement nor deletes a record
    record = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"secureai-provenance-probe-{SUFFIX}", "namespace": release.namespace},
        "data": {"provenance.dsse.json": "{}"},
    }
    create = cluster.kubectl("--kubeconfig", str(chart_op.kubeconfig), "create", "-f", "-",
                             input=json.dumps(record))  # fmt: skip
    assert create.returncode == 0
    try:
        name = record["metadata"]["name"]
        changed = {"data": {"provenance.dsse.json": "{ }"}}
        err = refused(
            as_operator(
                "patch", "configmap", name, "-n", release.namespace, "-p", json.dumps(changed)
            )
        )
        assert vap in err
        noted = {"data": {"output-deleted.dsse.json": "{}"}}
        assert (
            as_operator(
                "patch", "configmap", name, "-n", release.namespace, "-p", json.dumps(noted)
            ).returncode
            == 0
        )
        assert vap in refused(as_operator("delete", "configmap", name, "-n", release.namespace))
    finally:
        cluster.kubectl("delete", "configmap", record["metadata"]["name"], "-n", release.namespace)


def test_leader_lease_rights(cluster: Cluster, release: Release, chart_op: ChartOperator) -> None:
    """The leader Lease (k8s/lease.py): the operator may read, renew and create its own Lease in
    its namespace, and touch no other Lease."""
    lease = release.fullname
    ns = release.namespace
    for verb in ("get", "update", "patch"):
        assert can_i(cluster, release.user, verb, f"leases.coordination.k8s.io/{lease}", "-n", ns)
        assert not can_i(cluster, release.user, verb, "leases.coordination.k8s.io/other", "-n", ns)
    assert can_i(cluster, release.user, "create", "leases.coordination.k8s.io", "-n", ns)
    assert not can_i(
        cluster, release.user, "update", f"leases.coordination.k8s.io/{lease}", "-n", "default"
    )
    assert not can_i(
        cluster, release.user, "delete", f"leases.coordination.k8s.io/{lease}", "-n", ns
    )


def test_cluster_wide_mode_reads_secrets_everywhere_as_documented(
    cluster: Cluster, release: Release
) -> None:
    """Cluster-wide mode (the default) must watch its TLS Secrets in every namespace, and RBAC
    cannot filter by label: kube-system is included. docs/helm.md says so; the namespaced mode
    below is the answer where that is not acceptable."""
    assert subject_access_review(
        cluster, release.user, namespace="kube-system", verb="list", resource="secrets"
    )


# --- (4) admission policy (a): registry and digest at apply time -----------------------------


def _cr(namespace: str, image: str, name: str = "bad") -> dict[str, Any]:
    doc = example("training-single-gpu.yaml", namespace, image=image)
    doc["metadata"]["name"] = name
    return doc


def test_image_policy_rejects_bad_specs_at_apply_time(
    cluster: Cluster, release: Release, namespaces: Namespaces
) -> None:
    ns = namespaces.open
    text = yaml.safe_dump(_cr(ns, "registry.example.com/ml/trainer:latest"))
    err = refused(cluster.kubectl("apply", "--server-side", "-f", "-", input=text, check=False))
    assert f"ValidatingAdmissionPolicy '{release.fullname}-image-policy'" in err
    assert (
        "secureai policy: spec.image: image 'registry.example.com/ml/trainer:latest' "
        "is not pinned by digest (@sha256:<64 hex>)" in err
    )
    text = yaml.safe_dump(_cr(ns, "evil.example.net/miner" + DIGEST))
    err = refused(cluster.kubectl("apply", "--server-side", "-f", "-", input=text, check=False))
    assert (
        "secureai policy: spec.image: registry of 'evil.example.net/miner' is not allowed "
        "(allowed: secureai.local, registry.example.com)" in err
    )
    assert get_json(cluster, "stj", "bad", "-n", ns) is None
    # an update that breaks the policy is refused too
    good = _cr(ns, "registry.example.com/ml/trainer" + DIGEST, name="good")
    apply_yaml(cluster, good, "--dry-run=server")
    # SecureInferenceService is covered as well
    sis = example("inference-cpu.yaml", ns, image="docker.io/library/nginx" + DIGEST)
    err = refused(
        cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(sis), check=False)
    )
    assert "registry of 'docker.io/library/nginx' is not allowed" in err


IMAGES = [
    "registry.example.com/ml/trainer" + DIGEST,
    "registry.example.com/trainer:1.0" + DIGEST,
    "registry.example.com:5000/trainer" + DIGEST,
    "registry.example.com.evil.net/trainer" + DIGEST,
    "registry.example.comx/trainer" + DIGEST,
    "REGISTRY.example.com/trainer" + DIGEST,
    "trainer" + DIGEST,
    "library/trainer" + DIGEST,
    "localhost/trainer" + DIGEST,
    "registry.example.com/ml/trainer:latest",
    "registry.example.com/ml/trainer@sha256:" + "A" * 64,
    "registry.example.com/ml/trainer@sha256:" + "a" * 63,
    "registry.example.com/ml/trainer@sha512:" + "a" * 64,
    "registry.example.com" + DIGEST,
    "registry.example.com/a/b/c/d:tag" + DIGEST,
]


def test_image_policy_agrees_with_the_operator_on_every_image(
    cluster: Cluster, release: Release, namespaces: Namespaces
) -> None:
    """The CEL of policy (a) and the operator's own check give the same verdict."""
    policy = Policy(**TEST_POLICY)
    for image in IMAGES:
        operator_ok = not _check_image("spec.image", image, policy)
        proc = cluster.kubectl(
            "create", "--dry-run=server", "-f", "-",
            input=json.dumps(_cr(namespaces.open, image, name="probe")), check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            assert "ValidatingAdmissionPolicy" in proc.stderr, proc.stderr
        assert (proc.returncode == 0) == operator_ok, (image, proc.stderr)


def test_image_policy_is_scoped_by_its_namespace_selector(
    cluster: Cluster, release: Release, namespaces: Namespaces, chart_op: ChartOperator
) -> None:
    """Outside the selected namespaces the API server lets the spec in; the operator still
    rejects it (phase Rejected): the admission policy is the first line, not the only one."""
    namespace = namespaces.unscoped
    cr = _cr(namespace, "registry.example.com/ml/trainer:latest", name="unpinned")
    apply_yaml(cluster, cr)

    def rejected() -> Any:
        obj = get_json(cluster, "stj", "unpinned", "-n", namespace)
        return obj if ((obj or {}).get("status") or {}).get("phase") == "Rejected" else None

    obj = wait_for(rejected, timeout=30, description="phase Rejected")
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert "not pinned by digest" in ready["message"]


# --- (5) admission policy (b): children are changed only by the operator ---------------------


def test_direct_edits_of_children_are_denied(
    cluster: Cluster, release: Release, namespaces: Namespaces, workloads: dict[str, Any]
) -> None:
    ns, name = namespaces.protected, "chat-llm"
    vap = f"ValidatingAdmissionPolicy '{release.fullname}-protect-children'"
    message = (
        "is managed by secureai (app.kubernetes.io/managed-by=secureai) and may be created or "
        f"changed only by the operator; change SecureInferenceService/{name} instead"
    )
    patch = json.dumps([{"op": "replace", "path": "/spec/replicas", "value": 5}])
    err = refused(
        cluster.kubectl(
            "patch", "deployment", name, "-n", ns, "--type=json", "-p", patch, check=False
        )
    )
    assert vap in err and f"Deployment {ns}/{name} {message}" in err
    children = cluster.kubectl_json(
        "get", "networkpolicy,secret,service", "-n", ns, "-l", f"{MANAGED}=secureai"
    )
    kinds = set()
    for child in children["items"]:
        kind, child_name = child["kind"], child["metadata"]["name"]
        kinds.add(kind)
        err = refused(
            cluster.kubectl(
                "delete", kind.lower(), child_name, "-n", ns, "--wait=false", check=False
            )
        )
        assert vap in err, err
        err = refused(
            cluster.kubectl(
                "label", kind.lower(), child_name, "-n", ns, "tampered=yes", check=False
            )
        )
        assert vap in err, err
    assert kinds >= {"NetworkPolicy", "Secret", "Service"}
    # a namespace admin is refused just the same (RBAC would allow it)
    cluster.kubectl(
        "create", "rolebinding", "alice-admin", "-n", ns, "--clusterrole=admin", "--user=alice"
    )
    err = refused(
        cluster.kubectl(
            "patch", "deployment", name, "-n", ns, "--type=json", "-p", patch,
            "--as=alice", check=False,
        )
    )  # fmt: skip
    assert vap in err
    assert cluster.kubectl_json("get", "deployment", name, "-n", ns)["spec"]["replicas"] == 2
    # nor can anyone forge a "child": a permissive NetworkPolicy carrying the operator's labels
    # would pass for one of its own instead of being reported as foreign
    forged = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "allow-all",
            "namespace": ns,
            "labels": {MANAGED: "secureai", "secureai.dev/workload": name},
        },
        "spec": {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]},
    }
    err = refused(cluster.kubectl("create", "-f", "-", input=json.dumps(forged), check=False))
    assert vap in err and f"NetworkPolicy {ns}/allow-all {message.partition(';')[0]}" in err


def test_the_operator_and_the_cluster_controllers_still_change_children(
    cluster: Cluster,
    release: Release,
    namespaces: Namespaces,
    chart_op: ChartOperator,
    workloads: dict[str, Any],
) -> None:
    ns, name = namespaces.protected, "chat-llm"
    # the operator's identity passes the policy (server-side dry run through admission)
    proc = cluster.kubectl(
        "--kubeconfig", str(chart_op.kubeconfig), "patch", "deployment", name, "-n", ns,
        "--type=merge", "-p", '{"metadata":{"annotations":{"probe":"x"}}}', "--dry-run=server",
    )  # fmt: skip
    assert proc.returncode == 0
    # a spec change flows through the operator into the protected Deployment (an UPDATE)
    cr = dict(workloads[name])
    cr = {**cr, "spec": {**cr["spec"], "args": ["--model-dir", "/models", "--workers", "2"]}}
    apply_yaml(cluster, cr)

    def updated() -> bool:
        live = cluster.kubectl_json("get", "deployment", name, "-n", ns)
        args = live["spec"]["template"]["spec"]["containers"][0].get("args") or []
        return "--workers" in args

    wait_for(updated, timeout=30, description="Deployment updated by the operator")
    obj = wait_ready(cluster, "sis", ns, name)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
    # the garbage collector (kube-system) deletes the children of a deleted workload
    cluster.kubectl("delete", "stj", "finetune-small", "-n", ns, "--wait=true")
    wait_for(
        lambda: get_json(cluster, "job", "finetune-small", "-n", ns) is None,
        timeout=60,
        description="Job deleted by the garbage collector",
    )


# --- (7) GitOps: the spec read back is the spec applied --------------------------------------


def test_spec_read_back_after_ready_equals_the_applied_spec(
    cluster: Cluster, chart_op: ChartOperator, workloads: dict[str, Any]
) -> None:
    for name in ("embeddings", "pretrain-4x"):
        applied = workloads[name]
        ns = applied["metadata"]["namespace"]
        live = wait_ready(cluster, applied["kind"], ns, name)
        assert live["spec"] == applied["spec"], name
        assert live["metadata"]["generation"] == 1
        live = cluster.kubectl_json("get", applied["kind"], name, "-n", ns, "--show-managed-fields")
        assert {e["manager"] for e in live["metadata"]["managedFields"]} >= {"kubectl", "secureai"}
        for entry in live["metadata"]["managedFields"]:
            if entry["manager"] == "secureai":
                assert entry.get("subresource") == "status", entry
            else:
                assert "f:status" not in entry.get("fieldsV1", {}), entry
        # what Argo CD does: a server-side diff of the Git manifest finds nothing
        proc = cluster.kubectl(
            "diff", "--server-side", "--force-conflicts", "-f", "-",
            input=yaml.safe_dump(applied), check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr


# --- (8) kubectl experience ------------------------------------------------------------------


def test_printer_columns_and_explain(
    cluster: Cluster, namespaces: Namespaces, workloads: dict[str, Any]
) -> None:
    out = cluster.kubectl("get", "stj", "-o", "wide", "-n", namespaces.open).stdout
    header, *rows = out.splitlines()
    assert header.split() == [
        "NAME", "PHASE", "GPUS", "READY", "DRIFT", "AGE", "WORKERS", "REASON", "IMAGE",
    ]  # fmt: skip
    row = next(r.split() for r in rows if r.startswith("pretrain-4x"))
    assert row[1] == "Succeeded" and row[2] == "8" and row[3] == "True" and row[6] == "4"
    assert row[8] == workloads["pretrain-4x"]["spec"]["image"]
    out = cluster.kubectl("get", "sis", "-n", namespaces.open).stdout
    assert out.splitlines()[0].split() == ["NAME", "PHASE", "GPUS", "READY", "DRIFT", "AGE"]
    explained = cluster.kubectl("explain", "securetrainingjob.spec").stdout
    assert "Desired state of the SecureTrainingJob. The operator never writes it." in explained
    assert "Container image, pinned by digest" in explained
    assert "CPU and memory of each pod." in explained
    explained = cluster.kubectl("explain", "secureinferenceservice.spec.replicas").stdout
    assert "Model server pods." in explained


# --- last: the operator never hit a permission it lacks --------------------------------------


def test_operator_never_met_a_forbidden_request(chart_op: ChartOperator) -> None:
    log = chart_op.log()
    assert "Forbidden" not in log and " 403 " not in log, log[-3000:]
    assert "Failed to post an event" not in log
    assert "Not enough permissions" not in log
