"""The internal CA, serving certificates and workload tokens on the real control plane."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clusterkit import Cluster, wait_for
from operatorkit import (
    OPERATOR_USER,
    OperatorProcess,
    apply_yaml,
    example,
    get_json,
    model_prereqs,
    operator_kubeconfig,
    wait_ready,
)
from secureai import crypto

RENEWAL_SKEW = str(17 * 3600)  # past 2/3 of the 24 h certificate lifetime


@pytest.fixture
def operator_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-op-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def start_operator(
    cluster: Cluster, kubeconfig: Path, policy: Path, log: Path, op_ns: str, watch: str, **env: str
) -> OperatorProcess:
    process = OperatorProcess(
        cluster,
        kubeconfig,
        policy,
        log,
        env_extra={"SECUREAI_NAMESPACE": op_ns, **env},
        namespaces=(watch,),
    )
    return process


def secret_data(cluster: Cluster, namespace: str, name: str) -> dict[str, bytes]:
    data = get_json(cluster, "secret", name, "-n", namespace)["data"]
    return {k: base64.b64decode(v) for k, v in data.items()}


def test_ca_is_created_once_by_two_operators_starting_together(
    cluster: Cluster, crds: None, policy_file: Path, operator_namespace: str, tmp_path: Path
) -> None:
    kubeconfig = operator_kubeconfig(cluster, tmp_path / "kubeconfig")
    processes = [
        start_operator(
            cluster,
            kubeconfig,
            policy_file,
            tmp_path / f"op{i}.log",
            operator_namespace,
            operator_namespace,
        )
        for i in range(2)
    ]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: p.start(), processes))
        created = cluster.audit_events(
            lambda e: (
                e.get("verb") == "create"
                and e.get("user", {}).get("username") == OPERATOR_USER
                and e.get("objectRef", {}).get("namespace") == operator_namespace
                and e.get("objectRef", {}).get("resource") == "secrets"
                and e.get("stage") == "ResponseComplete"
                and e.get("responseStatus", {}).get("code") == 201
            )
        )
        # each key the operator keeps (its CA, its provenance signing key) is created once
        names = sorted(e["objectRef"]["name"] for e in created)
        assert names == ["secureai-ca", "secureai-provenance-key"], names
        ca = secret_data(cluster, operator_namespace, "secureai-ca")
        crypto.CA(ca["tls.key"], ca["tls.crt"]).validate()
        bundle = get_json(cluster, "configmap", "secureai-ca-bundle", "-n", operator_namespace)
        assert bundle["data"]["ca.crt"].encode() == ca["tls.crt"]
    finally:
        for process in processes:
            process.stop()


def test_serving_certificate_chains_to_the_published_ca_and_renews(
    cluster: Cluster,
    crds: None,
    policy_file: Path,
    operator_namespace: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    kubeconfig = operator_kubeconfig(cluster, tmp_path / "kubeconfig")
    cr = example("inference-cpu.yaml", namespace)
    name = cr["metadata"]["name"]
    model_prereqs(cluster, namespace, [cr["spec"]["model"]["claimName"]])
    apply_yaml(cluster, cr)
    first = start_operator(
        cluster, kubeconfig, policy_file, tmp_path / "a.log", operator_namespace, namespace
    ).start()
    try:
        obj = wait_ready(cluster, "sis", namespace, name, timeout=90)
    finally:
        first.stop()
    tls = secret_data(cluster, namespace, f"{name}-tls")
    bundle = get_json(cluster, "configmap", "secureai-ca-bundle", "-n", operator_namespace)
    now = datetime.now(UTC)
    crypto.verify_chain(
        tls["tls.crt"], bundle["data"]["ca.crt"].encode(), now, f"{name}.{namespace}.svc"
    )
    assert f"{name}.{namespace}.svc.cluster.local" in crypto.cert_dns_names(tls["tls.crt"])
    expiry = crypto.cert_expiry(tls["tls.crt"])
    assert obj["status"]["tls"]["notAfter"] == expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert tls["ca.crt"] == bundle["data"]["ca.crt"].encode()

    later = start_operator(
        cluster,
        kubeconfig,
        policy_file,
        tmp_path / "b.log",
        operator_namespace,
        namespace,
        SECUREAI_TEST_CLOCK_OFFSET_SECONDS=RENEWAL_SKEW,
    ).start()
    try:
        renewed = wait_for(
            lambda: (
                (d := secret_data(cluster, namespace, f"{name}-tls"))["tls.crt"] != tls["tls.crt"]
                and d
            ),
            timeout=60,
            description="certificate renewed after the clock advanced",
        )
    finally:
        later.stop()
    assert crypto.cert_expiry(renewed["tls.crt"]) > expiry
    crypto.verify_chain(
        renewed["tls.crt"],
        bundle["data"]["ca.crt"].encode(),
        now + timedelta(seconds=int(RENEWAL_SKEW)),
        f"{name}.{namespace}.svc",
    )


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def test_workload_token_is_audience_bound_and_short_lived(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    cr = example("inference-cpu.yaml", namespace)
    name = cr["metadata"]["name"]
    model_prereqs(cluster, namespace, [cr["spec"]["model"]["claimName"]])
    apply_yaml(cluster, cr)
    wait_ready(cluster, "sis", namespace, name, timeout=90)
    pod = get_json(cluster, "deployment", name, "-n", namespace)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (projected,) = [v for v in pod["volumes"] if v["name"] == "tokens"]
    source = projected["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "secureai" and source["expirationSeconds"] == 600
    token = cluster.kubectl(
        "create", "token", name, "-n", namespace, "--audience", "secureai", "--duration", "600s"
    ).stdout.strip()
    claims = _claims(token)
    assert claims["aud"] == ["secureai"]
    assert claims["exp"] - claims["iat"] <= 600
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == name


def test_tampered_model_never_becomes_ready_and_says_why(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    """kwok runs no containers: for the claim `tampered-model` the simulated kubelet reports
    the model-verify init container exiting 2, as `secureai model verify` does on a tampered
    model (that command's verdicts are unit-tested in test_crypto_signing/test_crypto_cli)."""
    cr = example("inference-cpu.yaml", namespace)
    cr["spec"]["model"]["claimName"] = "tampered-model"
    name = cr["metadata"]["name"]
    model_prereqs(cluster, namespace, ["tampered-model"])
    apply_yaml(cluster, cr)
    seen: list[str] = []

    def verdict() -> dict[str, Any] | None:
        obj = get_json(cluster, "sis", name, "-n", namespace)
        ready = next(
            (
                c
                for c in (obj or {}).get("status", {}).get("conditions", [])
                if c["type"] == "Ready"
            ),
            None,
        )
        if ready is not None:
            seen.append(ready["status"])
        return obj if ready and ready["reason"] == "ModelVerificationFailed" else None

    obj = wait_for(verdict, timeout=90, description="ModelVerificationFailed")
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and obj["status"]["phase"] == "Degraded"
    assert "model-verify failed" in ready["message"]
    assert "does not match the signed manifest" in ready["message"]
    assert "True" not in seen
    wait_for(
        lambda: [
            e
            for e in get_json(cluster, "events", "-n", namespace)["items"]
            if e["reason"] == "ModelVerificationFailed"
        ],
        timeout=30,
        description="a ModelVerificationFailed event",
    )
    assert (
        get_json(cluster, "deployment", name, "-n", namespace)["status"].get("availableReplicas", 0)
        == 0
    )
