"""Issue 14 items 8 and 13 on the real API server.

- The CRDs refuse at admission (CEL, patterns, maxLength) every spec whose values the API
  server would refuse in a child, naming the field, so `kubectl apply` fails at once.
- The children rendered from generated valid specs pass a server-side dry run: what the
  operator's validators accept, the API server accepts in the children.
- A workload has `status.observedGeneration: 0` from its creation (the CRD's status default),
  so kstatus reads it as InProgress before the operator has acted, never as Current.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from kubernetes import client

from childcases import CASES, STJ, set_field
from gitopskit import kstatus
from secureai.api import KINDS, parse_workload
from secureai.render import render
from strategies import cases

GROUP, VERSION = "secureai.dev", "v1alpha1"


def _create(k8s: Any, namespace: str, obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    body = copy.deepcopy(obj)
    body["metadata"] = {"name": body["metadata"]["name"], "namespace": namespace}
    plural = KINDS[body["kind"]].PLURAL
    api = client.CustomObjectsApi(k8s)
    result: dict[str, Any] = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body, dry_run="All" if dry_run else None
    )
    return result


@pytest.mark.parametrize(("obj", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_admission_refuses_what_a_child_could_not_hold(
    k8s: Any, crds: None, namespace: str, obj: dict[str, Any], field: str
) -> None:
    with pytest.raises(client.ApiException) as caught:
        _create(k8s, namespace, obj, dry_run=True)
    assert caught.value.status == 422, caught.value.body
    # the API server names the field (a CEL rule on a list item or map: that item or map)
    assert field.split("[", maxsplit=1)[0] in str(caught.value.body), caught.value.body


def test_admission_accepts_the_valid_neighbours(k8s: Any, crds: None, namespace: str) -> None:
    ok = set_field(
        STJ,
        "network",
        {
            "ingress": [{"podSelector": {"example.com/tier": "a" * 63, "app": ""}}],
            "egress": [
                {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.3.0/24"]},
                {"cidr": "fd00::/8", "except": ["fd00:1::/32"]},
            ],
        },
    )
    ok["spec"]["secrets"] = [{"name": "hf.token"}]
    ok["spec"]["output"] = {"size": "1Gi"}
    _create(k8s, namespace, ok, dry_run=True)


def _dry_run_children(k8s: Any, namespace: str, manifests: list[dict[str, Any]]) -> list[str]:
    apis = {
        "ServiceAccount": lambda b: client.CoreV1Api(k8s).create_namespaced_service_account(
            namespace, b, dry_run="All"
        ),
        "Secret": lambda b: client.CoreV1Api(k8s).create_namespaced_secret(
            namespace, b, dry_run="All"
        ),
        "ConfigMap": lambda b: client.CoreV1Api(k8s).create_namespaced_config_map(
            namespace, b, dry_run="All"
        ),
        "Service": lambda b: client.CoreV1Api(k8s).create_namespaced_service(
            namespace, b, dry_run="All"
        ),
        "PersistentVolumeClaim": lambda b: client.CoreV1Api(
            k8s
        ).create_namespaced_persistent_volume_claim(namespace, b, dry_run="All"),
        "NetworkPolicy": lambda b: client.NetworkingV1Api(k8s).create_namespaced_network_policy(
            namespace, b, dry_run="All"
        ),
        "Job": lambda b: client.BatchV1Api(k8s).create_namespaced_job(namespace, b, dry_run="All"),
        "Deployment": lambda b: client.AppsV1Api(k8s).create_namespaced_deployment(
            namespace, b, dry_run="All"
        ),
        "PodDisruptionBudget": lambda b: client.PolicyV1Api(
            k8s
        ).create_namespaced_pod_disruption_budget(namespace, b, dry_run="All"),
    }
    refused = []
    for manifest in manifests:
        try:
            apis[manifest["kind"]](manifest)
        except client.ApiException as exc:
            if exc.status == 422:
                refused.append(f"{manifest['kind']}: {exc.body}")
            else:
                raise
    return refused


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases())
def test_children_of_valid_specs_pass_a_server_dry_run(
    k8s: Any, crds: None, namespace: str, case: tuple[Any, dict[str, Any]]
) -> None:
    policy, obj = case
    obj = copy.deepcopy(obj)
    obj["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()))
    _create(k8s, namespace, obj, dry_run=True)  # admitted
    manifests = render(parse_workload(obj), policy)
    assert _dry_run_children(k8s, namespace, manifests) == []


def test_a_new_workload_reads_in_progress_before_the_operator_acts(
    k8s: Any, crds: None, namespace: str
) -> None:
    created = _create(k8s, namespace, STJ, dry_run=False)
    # the create response is the stored object, before any operator could act
    assert created["status"] == {"observedGeneration": 0}
    assert created["metadata"]["generation"] == 1
    (verdict,) = kstatus([created])
    assert verdict["status"] == "InProgress", verdict
    read = client.CustomObjectsApi(k8s).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "securetrainingjobs", STJ["metadata"]["name"]
    )
    assert "observedGeneration" in read["status"]  # 0, or the operator's once it has acted
