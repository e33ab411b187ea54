"""The operator survives SIGKILL mid-reconcile and an API server restart."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterkit import Cluster, cluster_ready, wait_for
from operatorkit import (
    TEST_NAMESPACES,
    OperatorProcess,
    apply_yaml,
    example,
    get_json,
    model_prereqs,
    operator_kubeconfig,
    operator_writes,
    quiet_over_a_resync,
    resyncs,
    wait_ready,
)

COUNT = 50


@pytest.fixture
def kubeconfig(cluster: Cluster, crds: None, tmp_path: Path) -> Path:
    return operator_kubeconfig(cluster, tmp_path / "kubeconfig")


def new_operator(
    cluster: Cluster, kubeconfig: Path, policy_file: Path, tmp_path: Path
) -> OperatorProcess:
    return OperatorProcess(
        cluster, kubeconfig, policy_file, tmp_path / "operator.log", namespaces=TEST_NAMESPACES
    )


def managed(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    kinds = "serviceaccounts,networkpolicies,deployments,services,secrets,pdb,configmaps"
    data = get_json(cluster, kinds, "-n", namespace, "-l", "app.kubernetes.io/managed-by=secureai")
    return list((data or {}).get("items") or [])


def test_sigkill_mid_reconcile_converges_without_duplicates_or_orphans(
    cluster: Cluster, kubeconfig: Path, policy_file: Path, namespace: str, tmp_path: Path
) -> None:
    base = example("inference-cpu.yaml", namespace)
    model_prereqs(cluster, namespace, [base["spec"]["model"]["claimName"]])
    crs = []
    for i in range(COUNT):
        cr = copy.deepcopy(base)
        cr["metadata"]["name"] = f"svc-{i:02d}"
        cr["spec"]["resources"] = {"cpu": "10m", "memory": "16Mi"}
        crs.append(cr)
    apply_yaml(cluster, crs)
    first = new_operator(cluster, kubeconfig, policy_file, tmp_path).start()
    try:
        wait_for(
            lambda: any(i["kind"] == "Deployment" for i in managed(cluster, namespace)),
            timeout=60,
            interval=0.05,
            description="the first children",
        )
    finally:
        first.kill()
    second = new_operator(cluster, kubeconfig, policy_file, tmp_path).start()
    try:
        for cr in crs:
            wait_ready(cluster, "sis", namespace, cr["metadata"]["name"], timeout=180)
    finally:
        second.stop()
    uids = {
        o["metadata"]["name"]: o["metadata"]["uid"]
        for o in get_json(cluster, "sis", "-n", namespace)["items"]
    }
    by_owner: dict[str, list[tuple[str, str]]] = {}
    for child in managed(cluster, namespace):
        owners = child["metadata"].get("ownerReferences") or []
        assert len(owners) == 1, child["metadata"]["name"]
        assert owners[0]["uid"] == uids[owners[0]["name"]], "orphan of an older owner"
        by_owner.setdefault(owners[0]["name"], []).append(
            (child["kind"], child["metadata"]["name"])
        )
    for name in uids:
        assert sorted(by_owner[name]) == sorted(
            [
                ("Deployment", name),
                ("NetworkPolicy", f"{name}-allow"),
                ("NetworkPolicy", f"{name}-default-deny"),
                ("Secret", f"{name}-tls"),
                ("Service", name),
                ("ServiceAccount", name),
            ]
        )


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state == "Z"


def restart_apiserver(cluster: Cluster) -> None:
    pid_file = cluster.state_dir / "pids" / "kube-apiserver.pid"
    pid = int(pid_file.read_text().strip())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: gone(pid), timeout=30, description="apiserver exit")
    except TimeoutError:  # a graceful drain can outlast the test: cut it short
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: gone(pid), timeout=30, description="apiserver killed")
    log = (cluster.state_dir / "logs" / "kube-apiserver.log").open("ab")
    proc = subprocess.Popen(
        [a.decode() for a in argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file.write_text(str(proc.pid))
    wait_for(
        lambda: cluster_ready(cluster.kubeconfig, cluster.bindir),
        timeout=120,
        interval=0.5,
        description="apiserver ready again",
    )


@pytest.fixture
def served(
    cluster: Cluster, kubeconfig: Path, policy_file: Path, namespace: str, tmp_path: Path
) -> Iterator[tuple[str, OperatorProcess]]:
    cr = example("inference-cpu.yaml", namespace)
    model_prereqs(cluster, namespace, [cr["spec"]["model"]["claimName"]])
    process = new_operator(cluster, kubeconfig, policy_file, tmp_path).start()
    try:
        apply_yaml(cluster, cr)
        wait_ready(cluster, "sis", namespace, cr["metadata"]["name"], timeout=90)
        yield cr["metadata"]["name"], process
    finally:
        process.stop()


def test_watches_recover_after_apiserver_restart(
    cluster: Cluster, served: tuple[str, OperatorProcess], namespace: str
) -> None:
    name, process = served
    restart_apiserver(cluster)
    assert process.proc is not None and process.proc.poll() is None, "operator died"
    cluster.kubectl("scale", f"deployment/{name}", "--replicas=4", "-n", namespace)
    wait_for(
        lambda: get_json(cluster, "deployment", name, "-n", namespace)["spec"]["replicas"] == 1,
        timeout=60,
        interval=0.2,
        description="revert after the restart",
    )
    cluster.kubectl("delete", "service", name, "-n", namespace)
    wait_for(
        lambda: get_json(cluster, "service", name, "-n", namespace) is not None,
        timeout=30,
        description="deleted Service recreated after the restart",
    )


def test_restart_in_sync_writes_nothing_and_keeps_drift_history(
    cluster: Cluster,
    served: tuple[str, OperatorProcess],
    kubeconfig: Path,
    policy_file: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Regression: a restart posted a Reconciled Event per CR and reset status.drift."""
    name, first = served
    cluster.kubectl(
        "patch",
        "serviceaccount",
        name,
        "-n",
        namespace,
        "-p",
        '{"automountServiceAccountToken":true}',
    )

    def drift() -> dict[str, Any]:
        return dict(get_json(cluster, "sis", name, "-n", namespace)["status"]["drift"])

    # at least one: CI once saw this count not reach exactly 1 within 15 s under load (cause
    # not found); what this test guards is that the recorded history survives the restart
    wait_for(lambda: drift()["revertsTotal"] >= 1, timeout=30, description="the revert counted")
    wait_for(
        lambda: quiet_over_a_resync(cluster, first, namespace),
        timeout=120,
        interval=0,
        description="a quiet operator",
    )
    recorded = drift()
    first.stop()
    writes = operator_writes(cluster, namespace)
    second = new_operator(cluster, kubeconfig, policy_file, tmp_path).start()
    try:
        wait_for(lambda: resyncs(second) >= 2, timeout=30, description="two resyncs")
        assert operator_writes(cluster, namespace)[len(writes) :] == []
        assert drift() == recorded
    finally:
        second.stop()
