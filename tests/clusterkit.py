"""Helpers for tests that run against the real local control plane (hack/cluster.sh).

    cluster = ensure_cluster()          # reuse a running cluster, or start one
    cluster.kubectl("get", "nodes")     # kubectl of the pinned version, admin kubeconfig
    wait_for(lambda: ..., timeout=30)   # poll with a deadline
    if cluster.started_here:
        cluster.down()

Nothing here mocks the API: every call goes to the apiserver (or etcd) on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class ClusterUnavailable(RuntimeError):
    """The local control plane could not be found or started."""


def repo_root() -> Path:
    return REPO


def state_dir() -> Path:
    return Path(os.environ.get("SECUREAI_CLUSTER_DIR", REPO / ".cluster"))


def bindir() -> Path:
    out = subprocess.run(
        [str(REPO / "hack" / "build.sh"), "--print-bindir"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.2,
    description: str = "condition",
) -> T:
    """Call ``predicate`` until it returns something truthy and return that value.

    Exceptions raised by the predicate count as "not yet". At the deadline a TimeoutError
    names ``description`` and the last value or exception seen.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # polling: any failure means "not yet"
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for {description}; last: {last!r}"
            )
        time.sleep(interval)


def _read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key] = value
    return env


@dataclass
class Cluster:
    """A running local control plane, as described by ``.cluster/``."""

    state_dir: Path
    kubeconfig: Path
    bindir: Path
    audit_log: Path
    api_server: str
    etcd_endpoint: str
    etcd_cacert: Path
    etcd_cert: Path
    etcd_key: Path
    started_here: bool = False
    _api_client: Any = field(default=None, repr=False)

    @classmethod
    def from_state(cls, state: Path | None = None, started_here: bool = False) -> Cluster:
        state = state or state_dir()
        env = _read_env(state / "cluster.env")
        pki = state / "pki"
        return cls(
            state_dir=state,
            kubeconfig=state / "kubeconfig",
            bindir=Path(env["BINDIR"]),
            audit_log=state / "audit.log",
            api_server=env["API_SERVER"],
            etcd_endpoint=env["ETCD_ENDPOINT"],
            etcd_cacert=pki / "ca.crt",
            etcd_cert=pki / "etcd-client.crt",
            etcd_key=pki / "etcd-client.key",
            started_here=started_here,
        )

    # ---- command-line tools of the pinned versions --------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bindir}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("HELM_CACHE_HOME", str(self.state_dir / "helm" / "cache"))
        env.setdefault("HELM_CONFIG_HOME", str(self.state_dir / "helm" / "config"))
        env.setdefault("HELM_DATA_HOME", str(self.state_dir / "helm" / "data"))
        return env

    def run(
        self,
        tool: str,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bindir / tool), *args],
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, proc.stdout, f"{tool} failed: {proc.stderr}"
            )
        return proc

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", "--kubeconfig", str(self.kubeconfig), *args, **kw)

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def helm(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", "--kubeconfig", str(self.kubeconfig), *args, **kw)

    def etcdctl(self, *args: str, timeout: float = 30) -> bytes:
        """Run etcdctl against the cluster's etcd; returns raw stdout bytes."""
        proc = subprocess.run(
            [
                str(self.bindir / "etcdctl"),
                f"--endpoints={self.etcd_endpoint}",
                f"--cacert={self.etcd_cacert}",
                f"--cert={self.etcd_cert}",
                f"--key={self.etcd_key}",
                *args,
            ],
            capture_output=True,
            timeout=timeout,
            check=True,
        )
        return proc.stdout

    def etcd_get(self, key: str) -> bytes:
        """The raw stored value of an etcd key (b"" when absent), as the apiserver wrote it."""
        return self.etcdctl("get", key, "--print-value-only")

    # ---- API ----------------------------------------------------------------------------
    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for the admin kubeconfig (cached)."""
        if self._api_client is None:
            from kubernetes import config  # noqa: PLC0415 - optional for pure helpers

            self._api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._api_client

    def ready(self) -> bool:
        return cluster_ready(self.kubeconfig, self.bindir)

    def audit_events(
        self, predicate: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        """Audit events (write requests, Metadata level) logged so far, optionally filtered."""
        return list(iter_audit_events(self.audit_log, predicate))

    def down(self) -> None:
        subprocess.run([str(REPO / "hack" / "cluster.sh"), "down"], check=True)


def iter_audit_events(
    path: Path, predicate: Callable[[dict[str, Any]], bool] | None = None
) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open() as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # a line being written right now
                continue
            if predicate is None or predicate(event):
                yield event


def cluster_ready(kubeconfig: Path, bin_dir: Path) -> bool:
    if not kubeconfig.exists() or not (bin_dir / "kubectl").exists():
        return False
    proc = subprocess.run(
        [
            str(bin_dir / "kubectl"),
            "--kubeconfig",
            str(kubeconfig),
            "get",
            "--raw=/readyz",
            "--request-timeout=5s",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.returncode == 0 and proc.stdout.strip() == "ok"


def ensure_cluster() -> Cluster:
    """Use the running cluster if ``.cluster/kubeconfig`` answers /readyz; else start one.

    The returned Cluster has ``started_here=True`` only if this call started it, so a caller
    tears down only what it started.
    """
    state = state_dir()
    if (state / "cluster.env").exists():
        existing = Cluster.from_state(state)
        if existing.ready():
            return existing
    bins = bindir()
    needed = ("etcd", "etcdctl", "kube-apiserver", "kubectl", "kwok", "helm")
    missing = [b for b in needed if not (bins / b).exists()]
    if missing:
        raise ClusterUnavailable(
            f"toolchain not built ({', '.join(missing)} missing in {bins}): run `make toolchain`"
        )
    proc = subprocess.run(
        [str(REPO / "hack" / "cluster.sh"), "up"], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise ClusterUnavailable(f"hack/cluster.sh up failed:\n{proc.stdout}\n{proc.stderr}")
    return Cluster.from_state(state, started_here=True)


def kubectl(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """kubectl against the local cluster (which must be up)."""
    return Cluster.from_state().kubectl(*args, **kw)
