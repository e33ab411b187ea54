"""Helpers for tests that run against the real local control plane (hack/cluster.sh).

    cluster = ensure_cluster()          # reuse a running cluster, or start one
    cluster.kubectl("get", "nodes")     # kubectl of the pinned version, admin kubeconfig
    wait_for(lambda: ..., timeout=30)   # poll with a deadline
    release_cluster(cluster)            # at the end: stops it only if tests started it
                                        # and no other test session still uses it

A cluster someone started with `make cluster` is never stopped by tests. One started by a
test session is stopped by the last test session using it (sessions register under
``.cluster/users/``; `up`, `down` and that bookkeeping share one lock with hack/cluster.sh).
Nothing here mocks the API: every call goes to the apiserver (or etcd) on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
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
        """Stop the cluster unconditionally (prefer :func:`release_cluster`)."""
        with _cluster_lock(self.state_dir):
            proc = _cluster_sh(self.state_dir, "down")
        if proc.returncode != 0:
            raise ClusterUnavailable(f"hack/cluster.sh down failed:\n{proc.stderr}")


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


STARTED_BY_TESTS = "started-by-tests"


@contextlib.contextmanager
def _cluster_lock(state: Path) -> Iterator[None]:
    """The lock hack/cluster.sh takes for up/down (same path derivation)."""
    digest = hashlib.sha1(str(state).encode()).hexdigest()[:12]  # only names a file
    tmp = os.environ.get("TMPDIR") or "/tmp"  # as ${TMPDIR:-/tmp} in hack/cluster.sh
    path = Path(tmp) / f"secureai-cluster-{digest}.lock"
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cluster_sh(state: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SECUREAI_CLUSTER_DIR=str(state), SECUREAI_CLUSTER_LOCK_HELD="1")
    return subprocess.run(
        [str(REPO / "hack" / "cluster.sh"), command],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _live_users(state: Path) -> list[Path]:
    users = state / "users"
    live = []
    for f in users.glob("*") if users.is_dir() else []:
        try:
            os.kill(int(f.name), 0)
            live.append(f)
        except (ValueError, ProcessLookupError):
            f.unlink(missing_ok=True)  # a session that died without releasing
        except PermissionError:
            live.append(f)
    return live


def ensure_cluster() -> Cluster:
    """Use the running cluster if ``.cluster/kubeconfig`` answers /readyz; else start one.

    ``started_here`` is True only if this call started it. Either way this process is
    registered as a user until :func:`release_cluster`.
    """
    state = state_dir()
    with _cluster_lock(state):
        if (state / "cluster.env").exists():
            existing = Cluster.from_state(state)
            if existing.ready():
                _register(state)
                return existing
        bins = bindir()
        needed = ("etcd", "etcdctl", "kube-apiserver", "kubectl", "kwok", "helm")
        missing = [b for b in needed if not (bins / b).exists()]
        if missing:
            raise ClusterUnavailable(
                f"toolchain not built ({', '.join(missing)} missing in {bins}): "
                "run `make toolchain`"
            )
        proc = _cluster_sh(state, "up")
        if proc.returncode != 0:
            raise ClusterUnavailable(f"hack/cluster.sh up failed:\n{proc.stdout}\n{proc.stderr}")
        (state / STARTED_BY_TESTS).write_text(f"{os.getpid()}\n")
        _register(state)
        return Cluster.from_state(state, started_here=True)


def _register(state: Path) -> None:
    (state / "users").mkdir(exist_ok=True)
    (state / "users" / str(os.getpid())).touch()


def release_cluster(cluster: Cluster, keep: bool = False) -> bool:
    """Unregister this process; stop the cluster if tests started it and nobody else uses it.

    Returns True if it stopped the cluster.
    """
    state = cluster.state_dir
    with _cluster_lock(state):
        (state / "users" / str(os.getpid())).unlink(missing_ok=True)
        if keep or not (state / STARTED_BY_TESTS).exists() or _live_users(state):
            return False
        proc = _cluster_sh(state, "down")
        if proc.returncode != 0:
            raise ClusterUnavailable(f"hack/cluster.sh down failed:\n{proc.stderr}")
        return True


def kubectl(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """kubectl against the local cluster (which must be up)."""
    return Cluster.from_state().kubectl(*args, **kw)
