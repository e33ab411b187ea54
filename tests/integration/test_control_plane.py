"""Acceptance tests for the local control plane itself (hack/cluster.sh).

Each test checks one property the operator's own tests rely on, against the real apiserver,
etcd, controller-manager, scheduler and kwok on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from clusterkit import Cluster, wait_for

K8S_VERSION = "v1.37.2"
HELM_MINOR = "v3.22"
ISSUER = "https://kubernetes.default.svc.cluster.local"
PAUSE = "registry.k8s.io/pause:3.10"


def _restricted_container(name: str = "app", **extra: Any) -> client.V1Container:
    return client.V1Container(
        name=name,
        image=PAUSE,
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            run_as_non_root=True,
            run_as_user=1000,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
        **extra,
    )


def _pod(name: str, container: client.V1Container, **spec: Any) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[container], **spec),
    )


def _message(exc: client.ApiException) -> str:
    return str(json.loads(exc.body)["message"])


def _jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


# ---- (1) the cluster itself --------------------------------------------------------------------
def test_nodes_are_ready_with_gpu_pools(cluster: Cluster, k8s: Any) -> None:
    nodes = client.CoreV1Api(k8s).list_node(label_selector="type=kwok").items
    ready = {
        n.metadata.name
        for n in nodes
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    }
    assert ready == {n.metadata.name for n in nodes}
    for pool in ("training", "inference"):
        gpu = [n for n in nodes if n.metadata.labels.get("secureai.dev/pool") == pool]
        assert len(gpu) >= 2, pool
        for n in gpu:
            assert n.status.allocatable["nvidia.com/gpu"] == "8"
            assert n.status.capacity["nvidia.com/gpu"] == "8"
            assert n.metadata.labels["nvidia.com/gpu.present"] == "true"
            assert n.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
            assert any(
                t.key == "nvidia.com/gpu" and t.value == "present" and t.effect == "NoSchedule"
                for t in n.spec.taints or []
            )
    cpu = [n for n in nodes if "nvidia.com/gpu" not in (n.status.capacity or {})]
    assert len(cpu) >= 2


# ---- (2) Pod Security admission ----------------------------------------------------------------
def test_privileged_pod_rejected_in_restricted_namespace(namespace_factory: Any, k8s: Any) -> None:
    ns = namespace_factory(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    core = client.CoreV1Api(k8s)
    privileged = client.V1Container(
        name="app", image=PAUSE, security_context=client.V1SecurityContext(privileged=True)
    )
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod(ns, _pod("privileged", privileged))
    assert err.value.status == 403
    message = _message(err.value)
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "privileged" in message
    # control: a pod meeting the restricted profile is admitted in the same namespace
    core.create_namespaced_pod(
        ns, _pod("compliant", _restricted_container(), automount_service_account_token=False)
    )


# ---- (3) TokenRequest --------------------------------------------------------------------------
def test_token_request_is_audience_bound_and_short_lived(namespace: str, k8s: Any) -> None:
    core = client.CoreV1Api(k8s)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="worker"))
    )
    req = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["secureai-test"], expiration_seconds=600)
    )
    resp = core.create_namespaced_service_account_token("worker", namespace, req)
    claims = _jwt_claims(resp.status.token)
    assert claims["exp"] - claims["iat"] <= 600
    assert claims["aud"] == ["secureai-test"]
    assert claims["iss"] == ISSUER
    assert claims["sub"] == f"system:serviceaccount:{namespace}:worker"
    # the apiserver refuses tokens shorter than its 10-minute floor
    too_short = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["secureai-test"], expiration_seconds=300)
    )
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_service_account_token("worker", namespace, too_short)
    assert err.value.status in (400, 422)


# ---- (4) encryption at rest --------------------------------------------------------------------
def test_secret_is_encrypted_in_etcd(cluster: Cluster, namespace: str, k8s: Any) -> None:
    plaintext = f"plaintext-{secrets.token_hex(12)}"
    core = client.CoreV1Api(k8s)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"key": plaintext}),
    )
    raw = cluster.etcd_get(f"/registry/secrets/{namespace}/creds")
    assert raw.startswith(b"k8s:enc:"), raw[:40]
    assert plaintext.encode() not in raw
    assert base64.b64encode(plaintext.encode()) not in raw
    # and the API still returns it decrypted
    got = core.read_namespaced_secret("creds", namespace).data["key"]
    assert base64.b64decode(got).decode() == plaintext


# ---- (5) GPU placement by the real scheduler ---------------------------------------------------
def _gpu_pod(name: str, pool: str, tolerate: bool) -> client.V1Pod:
    affinity = client.V1Affinity(
        node_affinity=client.V1NodeAffinity(
            required_during_scheduling_ignored_during_execution=client.V1NodeSelector(
                node_selector_terms=[
                    client.V1NodeSelectorTerm(
                        match_expressions=[
                            client.V1NodeSelectorRequirement(
                                key="nvidia.com/gpu.present", operator="In", values=["true"]
                            ),
                            client.V1NodeSelectorRequirement(
                                key="secureai.dev/pool", operator="In", values=[pool]
                            ),
                        ]
                    )
                ]
            )
        )
    )
    tolerations = (
        [client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
        if tolerate
        else None
    )
    container = _restricted_container(
        resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"})
    )
    return _pod(name, container, affinity=affinity, tolerations=tolerations)


def test_gpu_pod_is_scheduled_to_its_pool_and_runs(namespace: str, k8s: Any) -> None:
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(namespace, _gpu_pod("gpu", "training", tolerate=True))
    pod = wait_for(
        lambda: (p := core.read_namespaced_pod("gpu", namespace)).status.phase == "Running" and p,
        timeout=60,
        description="GPU pod Running",
    )
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["secureai.dev/pool"] == "training"
    assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
    assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def test_gpu_pod_without_toleration_stays_pending(namespace: str, k8s: Any) -> None:
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(namespace, _gpu_pod("untolerated", "training", tolerate=False))

    def unschedulable() -> Any:
        p = core.read_namespaced_pod("untolerated", namespace)
        cond = next((c for c in p.status.conditions or [] if c.type == "PodScheduled"), None)
        return cond is not None and cond.status == "False" and (p, cond)

    pod, cond = wait_for(unschedulable, timeout=60, description="PodScheduled=False")
    assert cond.reason == "Unschedulable"
    assert "untolerated taint" in cond.message
    assert pod.spec.node_name is None
    assert pod.status.phase == "Pending"


# ---- (6) Jobs complete -------------------------------------------------------------------------
def test_job_completes(namespace: str, k8s: Any) -> None:
    batch = client.BatchV1Api(k8s)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="train"),
        spec=client.V1JobSpec(
            completions=2,
            parallelism=2,
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(restart_policy="Never", containers=[_restricted_container()])
            ),
        ),
    )
    batch.create_namespaced_job(namespace, job)

    def complete() -> Any:
        j = batch.read_namespaced_job_status("train", namespace)
        conds = j.status.conditions or []
        return any(c.type == "Complete" and c.status == "True" for c in conds) and j

    done = wait_for(complete, timeout=60, description="Job Complete")
    assert done.status.succeeded == 2
    assert not done.status.failed


def _job(name: str, annotations: dict[str, str]) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations=annotations),
                spec=client.V1PodSpec(restart_policy="Never", containers=[_restricted_container()]),
            ),
        ),
    )


def test_kwok_annotations_fail_or_delay_job_pods(namespace: str, k8s: Any) -> None:
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    batch.create_namespaced_job(namespace, _job("fails", {"kwok.secureai.dev/exit-code": "3"}))
    batch.create_namespaced_job(namespace, _job("slow", {"kwok.secureai.dev/complete-after": "3s"}))

    def condition(job: str, kind: str) -> Any:
        j = batch.read_namespaced_job_status(job, namespace)
        return any(c.type == kind and c.status == "True" for c in j.status.conditions or [])

    wait_for(lambda: condition("fails", "Failed"), timeout=60, description="Job fails Failed")
    wait_for(lambda: condition("slow", "Complete"), timeout=60, description="Job slow Complete")

    def terminated(job: str) -> Any:
        (pod,) = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
        return pod.status.phase, pod.status.container_statuses[0].state.terminated

    phase, state = terminated("fails")
    assert (phase, state.exit_code) == ("Failed", 3)
    phase, state = terminated("slow")
    assert (phase, state.exit_code) == ("Succeeded", 0)
    assert (state.finished_at - state.started_at).total_seconds() >= 3


# ---- (7) garbage collection --------------------------------------------------------------------
def test_deleting_owner_garbage_collects_dependents(namespace: str, k8s: Any) -> None:
    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    labels = {"app": "web"}
    deploy = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[_restricted_container()]),
            ),
        ),
    )
    apps.create_namespaced_deployment(namespace, deploy)

    def ready() -> bool:
        status = apps.read_namespaced_deployment_status("web", namespace).status
        return (status.ready_replicas or 0) == 2

    wait_for(ready, timeout=60, description="Deployment ready")
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    assert all(p.status.phase == "Running" for p in pods)  # Deployment pods do not complete

    apps.delete_namespaced_deployment(
        "web", namespace, body=client.V1DeleteOptions(propagation_policy="Background")
    )
    wait_for(
        lambda: (
            not apps.list_namespaced_replica_set(namespace).items
            and not core.list_namespaced_pod(namespace, label_selector="app=web").items
        ),
        timeout=60,
        description="ReplicaSet and pods garbage-collected",
    )


# ---- (8) ValidatingAdmissionPolicy -------------------------------------------------------------
def test_validating_admission_policy_rejects_matching_request(namespace: str, k8s: Any) -> None:
    adm, core = client.AdmissionregistrationV1Api(k8s), client.CoreV1Api(k8s)
    name = f"t-no-forbidden-{uuid.uuid4().hex[:6]}"
    policy = client.V1ValidatingAdmissionPolicy(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ValidatingAdmissionPolicySpec(
            failure_policy="Fail",
            match_constraints=client.V1MatchResources(
                resource_rules=[
                    client.V1NamedRuleWithOperations(
                        api_groups=[""],
                        api_versions=["v1"],
                        operations=["CREATE", "UPDATE"],
                        resources=["configmaps"],
                    )
                ]
            ),
            validations=[
                client.V1Validation(
                    expression="!has(object.data) || !('forbidden' in object.data)",
                    message="configmaps may not carry a 'forbidden' key",
                )
            ],
        ),
    )
    binding = client.V1ValidatingAdmissionPolicyBinding(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ValidatingAdmissionPolicyBindingSpec(
            policy_name=name,
            validation_actions=["Deny"],
            match_resources=client.V1MatchResources(
                namespace_selector=client.V1LabelSelector(
                    match_labels={"kubernetes.io/metadata.name": namespace}
                )
            ),
        ),
    )
    adm.create_validating_admission_policy(policy)
    try:
        adm.create_validating_admission_policy_binding(binding)
        bad = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bad"), data={"forbidden": "x"})

        def rejected() -> Any:
            # the policy is loaded asynchronously: until it is, the request is admitted
            try:
                core.create_namespaced_config_map(namespace, bad)
            except client.ApiException as exc:
                return exc
            core.delete_namespaced_config_map("bad", namespace)
            return None

        exc = wait_for(rejected, timeout=60, description="policy to reject the ConfigMap")
        assert exc.status in (403, 422)
        assert "configmaps may not carry a 'forbidden' key" in _message(exc)
        assert name in _message(exc)
        core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="ok"), data={"a": "b"})
        )
    finally:
        adm.delete_validating_admission_policy_binding(name)
        adm.delete_validating_admission_policy(name)


# ---- (9) kubectl and helm ----------------------------------------------------------------------
def test_kubectl_version_matches_server(cluster: Cluster) -> None:
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == K8S_VERSION
    assert out["serverVersion"]["gitVersion"] == K8S_VERSION


def test_helm_installs_a_chart(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    assert cluster.helm("version", "--short").stdout.startswith(HELM_MINOR)
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    cluster.helm("install", "probe", str(chart), "-n", namespace, "--wait", "--timeout", "60s")
    cm = cluster.kubectl_json("-n", namespace, "get", "configmap", "probe-cm")
    assert cm["data"]["kube"] == K8S_VERSION  # helm asked this apiserver for its version
    assert "probe" in cluster.helm("list", "-n", namespace, "-q").stdout.split()
    cluster.helm("uninstall", "probe", "-n", namespace, "--wait")


# ---- storage -----------------------------------------------------------------------------------
def test_pvc_on_encrypted_storage_class_binds(namespace: str, k8s: Any) -> None:
    core, storage = client.CoreV1Api(k8s), client.StorageV1Api(k8s)
    sc = storage.read_storage_class("encrypted-ssd")
    assert sc.parameters["encrypted"] == "true"
    assert sc.volume_binding_mode == "Immediate"
    assert storage.read_storage_class("standard").parameters.get("encrypted") != "true"
    pvc = client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="output"),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            storage_class_name="encrypted-ssd",
            resources=client.V1VolumeResourceRequirements(requests={"storage": "5Gi"}),
        ),
    )
    core.create_namespaced_persistent_volume_claim(namespace, pvc)

    def is_bound() -> Any:
        claim = core.read_namespaced_persistent_volume_claim("output", namespace)
        return claim.status.phase == "Bound" and claim

    bound = wait_for(is_bound, timeout=60, description="PVC Bound")
    pv = core.read_persistent_volume(bound.spec.volume_name)
    assert pv.spec.storage_class_name == "encrypted-ssd"
    assert pv.spec.claim_ref.name == "output"
    assert pv.spec.claim_ref.namespace == namespace
    assert bound.status.capacity["storage"] == "5Gi"
    # deleting the claim releases and then deletes the volume (reclaimPolicy Delete)
    core.delete_namespaced_persistent_volume_claim("output", namespace)

    def pv_gone() -> bool:
        try:
            core.read_persistent_volume(pv.metadata.name)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(pv_gone, timeout=60, description="released PV deleted")


# ---- audit log ---------------------------------------------------------------------------------
def test_writes_are_in_the_audit_log(cluster: Cluster, namespace: str, k8s: Any) -> None:
    name = f"audited-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(k8s)
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"a": "b"})
    )
    core.read_namespaced_config_map(name, namespace)  # reads are not logged

    def mine(e: dict[str, Any]) -> bool:
        ref = e.get("objectRef", {})
        return ref.get("name") == name and ref.get("namespace") == namespace

    # audit-log-mode=blocking: the event is written while the request is handled, so it is
    # there at once; the short deadline only absorbs the response being flushed first
    events = wait_for(lambda: cluster.audit_events(mine), timeout=5, description="audit event")
    assert [(e["verb"], e["stage"], e["level"]) for e in events] == [
        ("create", "ResponseComplete", "Metadata")
    ]
    assert events[0]["user"]["username"] == "secureai-admin"
    assert "requestObject" not in events[0]
