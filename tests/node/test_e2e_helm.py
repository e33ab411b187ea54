"""The operator installed by Helm and running in the cluster, on the real node (issue 12, point 1).

`helm install` of charts/secureai-operator with the built image: two replicas start on the
real node under Pod Security "restricted", reach the API server through the `kubernetes`
Service and the chart's own NetworkPolicy, and reconcile the examples with the chart's RBAC
and admission policies. `helm upgrade` with a policy change reaches the workloads; `helm
uninstall` leaves none of the chart's objects behind.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import yaml
from nodekit import REAL_NODE_SELECTOR, REAL_NODE_TOLERATION

from clusterkit import REPO, Cluster, wait_for
from clusterkit import _read_env as read_cluster_env
from operatorkit import TEST_POLICY, apply_yaml, example, install_crds, model_prereqs, wait_ready

CHART = REPO / "charts" / "secureai-operator"
# every namespaced kind the chart renders, and the cluster-scoped ones
CHART_KINDS = (
    "deployments,replicasets,pods,serviceaccounts,configmaps,services,networkpolicies,"
    "poddisruptionbudgets,roles,rolebindings"
)
CLUSTER_KINDS = (
    "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings"
)


def _values(cluster: Cluster, watched: str, scope: str, token_seconds: int) -> dict[str, Any]:
    env = read_cluster_env(cluster.state_dir / "cluster.env")
    api_port = int(env["API_PORT"])
    return {
        "policy": TEST_POLICY | {"tokens": {"defaultSeconds": token_seconds, "maxSeconds": 3600}},
        "watchNamespaces": [watched],
        "nodeSelector": REAL_NODE_SELECTOR,
        "tolerations": [REAL_NODE_TOLERATION],
        # pods reach the API server at the node address (the `kubernetes` Service's endpoint)
        "networkPolicy": {
            "apiServer": {"cidrs": [f"{env['REAL_NODE_IP']}/32"], "ports": [api_port]}
        },
        "admissionPolicies": {
            "imagePolicy": {"namespaceSelector": {"matchLabels": {"secureai.dev/helm-e2e": scope}}},
            "protectChildren": {
                "namespaceSelector": {"matchLabels": {"secureai.dev/helm-e2e": scope}}
            },
        },
    }


def _helm(cluster: Cluster, verb: str, release: str, ns: str, values: dict[str, Any]) -> None:
    cluster.helm(
        verb,
        release,
        str(CHART),
        "--namespace",
        ns,
        "--values",
        "-",
        "--wait",
        "--timeout",
        "300s",
        input=yaml.safe_dump(values),
        timeout=360,
    )


def _ready_replicas(cluster: Cluster, ns: str, release: str) -> list[dict[str, Any]]:
    pods = cluster.kubectl_json(
        "-n", ns, "get", "pods", "-l", f"app.kubernetes.io/instance={release}"
    )["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running"
        and all(s.get("ready") for s in p["status"].get("containerStatuses") or [])
        and not p["metadata"].get("deletionTimestamp")
    ]


def _token_seconds(cluster: Cluster, ns: str, name: str) -> int:
    deployment = cluster.kubectl_json("-n", ns, "get", "deployment", name)
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tokens"
    )
    return int(volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"])


def test_helm_installed_operator_runs_on_the_real_node(
    cluster: Cluster, real_node: str, namespace_factory: Any
) -> None:
    install_crds(cluster)
    suffix = uuid.uuid4().hex[:6]
    release = f"rn-{suffix}"
    operator_ns = namespace_factory("helm-op")
    scope = suffix
    watched = namespace_factory("helm-wl", {"secureai.dev/helm-e2e": scope})

    started = time.monotonic()
    _helm(cluster, "install", release, operator_ns, _values(cluster, watched, scope, 600))
    replicas = wait_for(
        lambda: len(found := _ready_replicas(cluster, operator_ns, release)) == 2 and found,
        timeout=180,
        description="both operator replicas Ready",
    )
    both_ready = time.monotonic() - started
    for pod in replicas:
        assert pod["spec"]["nodeName"] == real_node
        assert pod["spec"]["containers"][0]["image"].startswith("secureai.local/secureai-operator@")
        sc = pod["spec"]["containers"][0]["securityContext"]
        assert sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}
    assert (
        cluster.kubectl_json("get", "namespace", operator_ns)["metadata"]["labels"][
            "pod-security.kubernetes.io/enforce"
        ]
        == "restricted"
    )

    # the in-cluster operator reconciles the examples (their pods land on the kwok nodes)
    model_prereqs(cluster, watched, ["embeddings-model"])
    apply_yaml(cluster, example("inference-cpu.yaml", watched))
    apply_yaml(cluster, example("training-single-gpu.yaml", watched))
    wait_ready(cluster, "secureinferenceservice", watched, "embeddings", timeout=180)
    first_ready = time.monotonic() - started
    wait_ready(cluster, "securetrainingjob", watched, "finetune-small", timeout=180)
    print(
        f"helm install -> both replicas Ready {both_ready:.1f}s, "
        f"-> first workload Ready {first_ready:.1f}s"
    )
    assert _token_seconds(cluster, watched, "embeddings") == 600

    # helm upgrade with a policy change: the new policy reaches the workloads
    _helm(cluster, "upgrade", release, operator_ns, _values(cluster, watched, scope, 900))
    wait_for(
        lambda: _token_seconds(cluster, watched, "embeddings") == 900,
        timeout=180,
        description="the upgraded policy rendered into the workload",
    )
    wait_for(
        lambda: len(_ready_replicas(cluster, operator_ns, release)) == 2,
        timeout=180,
        description="both replicas Ready after the upgrade",
    )

    # helm uninstall: nothing of the chart is left
    cluster.helm("uninstall", release, "--namespace", operator_ns, "--wait", timeout=180)
    selector = f"app.kubernetes.io/instance={release}"

    def leftovers() -> list[str]:
        names = cluster.kubectl(
            "get", CHART_KINDS, "-n", operator_ns, "-l", selector, "-o", "name"
        ).stdout.split()
        names += cluster.kubectl("get", CLUSTER_KINDS, "-l", selector, "-o", "name").stdout.split()
        return names

    wait_for(lambda: not leftovers(), timeout=120, description="no chart object left")
