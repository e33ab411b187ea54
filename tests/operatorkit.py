"""Run the real `secureai run` process against the local cluster, as a dedicated identity."""

from __future__ import annotations

import atexit
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterkit import REPO, Cluster, wait_for

OPERATOR_NAMESPACE = "secureai-system"
OPERATOR_SA = "secureai-test-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"


def built_image(name: str, fallback: str) -> str:
    """The digest-pinned image `make images` built (charts/secureai-operator/images.json)."""
    path = REPO / "charts" / "secureai-operator" / "images.json"
    if not path.exists():
        return fallback
    return str(json.loads(path.read_text())["images"][name]["image"])


TEST_POLICY = {
    "allowedRegistries": ["secureai.local", "registry.example.com"],
    "requireDigest": True,
    "encryptedStorageClasses": ["encrypted-ssd"],
    "gpuPools": {
        "training": {"nodeSelector": {"secureai.dev/pool": "training"}},
        "inference": {"nodeSelector": {"secureai.dev/pool": "inference"}},
    },
    "operatorImage": built_image(
        "secureai-operator", "registry.example.com/secureai/operator@sha256:" + "a" * 64
    ),
    "foreignNetworkPolicy": "report",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def apply_yaml(cluster: Cluster, docs: list[dict[str, Any]] | dict[str, Any], *args: str) -> str:
    text = yaml.safe_dump_all(docs if isinstance(docs, list) else [docs])
    proc = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", *args, input=text
    )
    return proc.stdout


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in (
        "securetrainingjobs.secureai.dev",
        "secureinferenceservices.secureai.dev",
        "quarantines.secureai.dev",
    ):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


def operator_kubeconfig(
    cluster: Cluster,
    path: Path,
    cluster_role: str = "cluster-admin",
    service_account: str = OPERATOR_SA,
) -> Path:
    """A kubeconfig holding a TokenRequest token of a dedicated ServiceAccount."""
    apply_yaml(
        cluster,
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": service_account, "namespace": OPERATOR_NAMESPACE},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{service_account}-{cluster_role}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": cluster_role,
                },
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": service_account,
                        "namespace": OPERATOR_NAMESPACE,
                    }
                ],
            },
        ],
    )
    token = cluster.kubectl(
        "create", "token", service_account, "-n", OPERATOR_NAMESPACE, "--duration=24h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class OperatorProcess:
    cluster: Cluster
    kubeconfig: Path
    policy_file: Path
    log_file: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    namespaces: tuple[str, ...] = ()
    args: tuple[str, ...] = ()  # more `secureai run` arguments (say, --peering NAME)
    proc: subprocess.Popen[bytes] | None = None
    health_port: int = 0
    metrics_port: int = 0

    def start(self) -> OperatorProcess:
        self.health_port, self.metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "SECUREAI_NAMESPACE": OPERATOR_NAMESPACE,
            "SECUREAI_RESYNC_SECONDS": "5",
            **self.env_extra,
        }
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "secureai.cli.main",
                "run",
                "--policy",
                str(self.policy_file),
                "--health-port",
                str(self.health_port),
                "--metrics-port",
                str(self.metrics_port),
                *(arg for ns in self.namespaces for arg in ("--namespace", ns)),
                *self.args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)  # never leave an operator behind, whatever fails
        wait_for(self.ready, timeout=60, description="operator /readyz")
        return self

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"operator exited; see {self.log_file}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/readyz", timeout=2
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as resp:
            text: str = resp.read().decode()
            return text

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    install_crds(cluster)


@pytest.fixture(scope="session")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(yaml.safe_dump(TEST_POLICY))
    return path


TEST_NAMESPACES = ("t-*",)


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, crds: None, policy_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator per test module, watching only test namespaces (`t-*`)."""
    folder = tmp_path_factory.mktemp("operator")
    kubeconfig = operator_kubeconfig(cluster, folder / "kubeconfig")
    process = OperatorProcess(
        cluster, kubeconfig, policy_file, folder / "operator.log", namespaces=TEST_NAMESPACES
    ).start()
    yield process
    process.stop()


# --- helpers for tests ---------------------------------------------------------------------


def example(name: str, namespace: str, **spec_overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())
    doc["metadata"]["namespace"] = namespace
    doc["spec"].update(spec_overrides)
    return doc


def get_json(cluster: Cluster, *args: str) -> Any:
    proc = cluster.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def wait_ready(cluster: Cluster, kind: str, namespace: str, name: str, timeout: float = 90) -> Any:
    def ready() -> Any:
        obj = get_json(cluster, kind, name, "-n", namespace)
        cond = condition(obj, "Ready")
        return obj if cond and cond["status"] == "True" else None

    return wait_for(ready, timeout=timeout, description=f"{kind} {namespace}/{name} Ready")


def events_for(
    cluster: Cluster,
    namespace: str,
    name: str,
    reason: str,
    *,
    since: datetime | None = None,
    uid: str | None = None,
) -> list[dict[str, Any]]:
    """Events about `name` with `reason`. Pass `uid` (the object's metadata.uid) and `since`
    (a UTC time taken before the action) so Events left by earlier tests, or about an earlier
    object of the same name, do not count."""
    selector = f"involvedObject.name={name},reason={reason}"
    if uid is not None:
        selector += f",involvedObject.uid={uid}"
    data = get_json(cluster, "events", "-n", namespace, "--field-selector", selector)
    items = list((data or {}).get("items") or [])
    if since is not None:
        floor = since.replace(microsecond=0)  # Event times have second precision
        items = [e for e in items if (last_seen(e) or floor - timedelta(seconds=1)) >= floor]
    return items


def last_seen(event: dict[str, Any]) -> datetime | None:
    """When an Event last happened (core/v1 or events/v1 style fields)."""
    for stamp in (
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if stamp:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return None


def utc_now() -> datetime:
    return datetime.now(UTC)


def model_prereqs(cluster: Cluster, namespace: str, claims: list[str]) -> None:
    """What an inference example expects to exist: model PVCs and the signer ConfigMap."""
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "model-signer", "namespace": namespace},
            "data": {"signer.pub": base64.b64encode(b"test").decode()},
        }
    ]
    for claim in claims:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": namespace},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "encrypted-ssd",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
    apply_yaml(cluster, docs)


def operator_writes(cluster: Cluster, namespace: str, *, events: bool = True) -> list[str]:
    """Write requests the test operator made in `namespace`, from the audit log."""
    return [
        f"{e.get('verb')} {e.get('requestURI')}"
        for e in cluster.audit_events(
            lambda e: (
                e.get("user", {}).get("username") == OPERATOR_USER
                and e.get("verb") in ("create", "update", "patch", "delete")
                and e.get("stage") == "ResponseComplete"
                and (events or "/events" not in e.get("requestURI", ""))
                and "dryRun=" not in e.get("requestURI", "")  # persists nothing
                and f"/namespaces/{namespace}/" in e.get("requestURI", "")
            )
        )
    ]


_CONTROLLED: set[tuple[int, str]] = set()


def audit_control(
    cluster: Cluster, operator: OperatorProcess, namespace: str, *, timeout: float = 30
) -> None:
    """Positive control for `operator_writes`: a known write as the operator's identity must
    show up in it, or a "wrote nothing" check would pass on a filter that matches nothing.
    Once per operator and namespace."""
    if (id(operator), namespace) in _CONTROLLED:
        return

    def creates() -> int:
        writes = operator_writes(cluster, namespace, events=False)
        return sum(w.startswith("create ") and "/configmaps" in w for w in writes)

    before = creates()
    name = f"audit-control-{os.urandom(4).hex()}"
    kubeconfig = str(operator.kubeconfig)
    cluster.run("kubectl", "--kubeconfig", kubeconfig, "create", "configmap", name, "-n", namespace)
    wait_for(lambda: creates() > before, timeout=timeout, description="a known write audited")
    _CONTROLLED.add((id(operator), namespace))


def resyncs(operator: OperatorProcess) -> float:
    """Completed periodic resyncs, from the operator's /metrics."""
    for line in operator.metrics().splitlines():
        if line.startswith("secureai_resyncs_total "):
            return float(line.split()[1])
    return 0.0


def quiet_over_a_resync(
    cluster: Cluster, operator: OperatorProcess, namespace: str, *, events: bool = True
) -> bool:
    """Whether the operator wrote nothing in `namespace` while one resync ran."""
    audit_control(cluster, operator, namespace)
    before, count = len(operator_writes(cluster, namespace, events=events)), resyncs(operator)
    wait_for(lambda: resyncs(operator) > count, timeout=30, description="a resync")
    return len(operator_writes(cluster, namespace, events=events)) == before


def now() -> float:
    return time.monotonic()
