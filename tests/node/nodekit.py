"""Helpers for tests on the real node: probe pods, reachability and what a spec promises.

A probe pod runs `probe.py serve` from the modelserver test image on the real node (its
nodeSelector and toleration); `probe(cluster, src, targets)` runs `probe.py connect` inside a
pod with `kubectl exec` and returns which (host, port, protocol) answered. Every connection
goes pod to pod on the node's bridge: nothing is sent anywhere else.

`promised()` is the reachability a workload's spec promises, written from the NetworkPolicy
semantics (SPEC §4), independently of the renderer: the tests compare it with real packets.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clusterkit import REPO, Cluster, wait_for
from operatorkit import OperatorProcess, operator_kubeconfig

REAL_NODE_SELECTOR = {"secureai.dev/node": "real"}
REAL_NODE_TOLERATION = {
    "key": "secureai.dev/real-node",
    "operator": "Exists",
    "effect": "NoSchedule",
}
TCP_PORTS = (7000, 8080, 9000)
UDP_PORTS = (5353,)
DNS_PORT = 53
UID = 65532


def built_images() -> dict[str, Any]:
    data = json.loads((REPO / "charts" / "secureai-operator" / "images.json").read_text())
    return dict(data["images"])


def image(name: str) -> str:
    return str(built_images()[name]["image"])


def restricted_container(
    name: str, img: str, command: list[str], cpu: str = "50m", memory: str = "64Mi"
) -> dict[str, Any]:
    return {
        "name": name,
        "image": img,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        },
    }


def real_pod(
    name: str,
    namespace: str,
    containers: list[dict[str, Any]],
    labels: dict[str, str] | None = None,
    restart: str = "Always",
    sysctls: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A pod for the real node, compliant with Pod Security "restricted"."""
    security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if sysctls:
        security["sysctls"] = sysctls
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "nodeSelector": REAL_NODE_SELECTOR,
            "tolerations": [REAL_NODE_TOLERATION],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "restartPolicy": restart,
            "securityContext": security,
            "containers": containers,
        },
    }


@dataclass
class ProbePod:
    name: str
    namespace: str
    labels: dict[str, str]
    tcp: tuple[int, ...] = TCP_PORTS
    udp: tuple[int, ...] = UDP_PORTS
    ip: str = ""
    workload: str | None = None  # the workload whose pod this stands for

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def manifest(self) -> dict[str, Any]:
        command = [
            "/usr/bin/python3.11",
            "/app/probe.py",
            "serve",
            "--tcp",
            ",".join(map(str, self.tcp)),
            "--udp",
            ",".join(map(str, self.udp)),
        ]
        low = any(p < 1024 for p in (*self.tcp, *self.udp))
        sysctls = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}] if low else None
        return real_pod(
            self.name,
            self.namespace,
            [restricted_container("probe", image("modelserver"), command)],
            self.labels,
            sysctls=sysctls,
        )


def start_probes(cluster: Cluster, pods: Iterable[ProbePod], timeout: float = 120) -> None:
    pods = list(pods)
    docs = [p.manifest() for p in pods]
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )
    for pod in pods:
        pod.ip = wait_for(
            lambda pod=pod: _running_ip(cluster, pod),
            timeout=timeout,
            description=f"probe pod {pod.key} Running on the real node",
        )


def _running_ip(cluster: Cluster, pod: ProbePod) -> str:
    obj = cluster.kubectl_json("-n", pod.namespace, "get", "pod", pod.name)
    statuses = obj.get("status", {}).get("containerStatuses") or []
    if (
        obj["status"].get("phase") == "Running"
        and statuses
        and all(s.get("ready") for s in statuses)
    ):
        return str(obj["status"]["podIP"])
    return ""


@dataclass(frozen=True)
class Pair:
    src: str
    dst: str
    port: int
    protocol: str


def probe(
    cluster: Cluster, src: ProbePod, targets: list[tuple[ProbePod, int, str]]
) -> dict[Pair, bool]:
    """Connect from `src` to every (pod, port, protocol) at once; what answered."""
    payload = [
        {"host": t.ip, "port": port, "protocol": proto, "key": t.key} for t, port, proto in targets
    ]
    out = cluster.kubectl(
        "-n",
        src.namespace,
        "exec",
        src.name,
        "--",
        "/usr/bin/python3.11",
        "/app/probe.py",
        "connect",
        "--timeout",
        "0.5",
        json.dumps(payload),
        timeout=60,
    ).stdout
    return {
        Pair(src.key, r["key"], int(r["port"]), r["protocol"]): bool(r["ok"])
        for r in json.loads(out)
    }


def all_targets(dst: ProbePod) -> list[tuple[int, str]]:
    return [(p, "TCP") for p in dst.tcp] + [(p, "UDP") for p in dst.udp]


def probe_from(
    cluster: Cluster, plan: list[tuple[ProbePod, list[tuple[ProbePod, int, str]]]]
) -> dict[Pair, bool]:
    """`probe` from several sources at once (four `kubectl exec` in flight)."""
    seen: dict[Pair, bool] = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        for part in pool.map(lambda step: probe(cluster, *step), plan):
            seen.update(part)
    return seen


def observe(
    cluster: Cluster, pods: list[ProbePod], sources: list[ProbePod] | None = None
) -> dict[Pair, bool]:
    def targets(src: ProbePod) -> list[tuple[ProbePod, int, str]]:
        return [
            (dst, port, proto) for dst in pods if dst is not src for port, proto in all_targets(dst)
        ]

    return probe_from(cluster, [(src, targets(src)) for src in sources or pods])


# ---- what a spec promises ------------------------------------------------------------------
@dataclass
class Promise:
    """A workload's network spec, read as the API documents it (docs/api.md)."""

    name: str
    namespace: str
    kind: str  # "training" or "inference"
    workers: int = 1
    serving_port: int | None = None
    ingress: list[dict[str, Any]] = field(default_factory=list)
    egress: list[dict[str, Any]] = field(default_factory=list)
    allow_dns: bool = True
    dns: tuple[str, dict[str, str], int] = ("kube-system", {"k8s-app": "kube-dns"}, DNS_PORT)


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _peer_matches(
    peer: dict[str, Any], home_ns: str, other: ProbePod, ns_labels: dict[str, dict[str, str]]
) -> bool:
    if "cidr" in peer:
        ip = ipaddress.ip_address(other.ip)
        if ip not in ipaddress.ip_network(peer["cidr"]):
            return False
        return not any(ip in ipaddress.ip_network(e) for e in peer.get("except") or [])
    if "namespaceSelector" in peer:
        if not _labels_match(peer["namespaceSelector"], ns_labels.get(other.namespace, {})):
            return False
    elif other.namespace != home_ns:
        return False
    return _labels_match(peer.get("podSelector") or {}, other.labels)


def _port_ok(
    peer: dict[str, Any], port: int, proto: str, default: list[tuple[int, str]] | None
) -> bool:
    ports = [(int(p["port"]), p.get("protocol", "TCP")) for p in peer.get("ports") or []] or default
    return ports is None or (port, proto) in ports


def promised(
    pair: Pair,
    pods: dict[str, ProbePod],
    workloads: dict[str, Promise],
    ns_labels: dict[str, dict[str, str]],
) -> bool:
    src, dst = pods[pair.src], pods[pair.dst]
    if src.workload is not None:
        w = workloads[src.workload]
        ok = any(
            _peer_matches(r, w.namespace, dst, ns_labels)
            and _port_ok(r, pair.port, pair.protocol, None)
            for r in w.egress
        )
        dns_ns, dns_sel, dns_port = w.dns
        ok = ok or (
            w.allow_dns
            and dst.namespace == dns_ns
            and _labels_match(dns_sel, dst.labels)
            and pair.port == dns_port
        )
        ok = ok or (w.kind == "training" and w.workers > 1 and dst.workload == src.workload)
        if not ok:
            return False
    if dst.workload is not None:
        w = workloads[dst.workload]
        default = None if w.kind == "training" else [(w.serving_port or 0, "TCP")]
        ok = any(
            _peer_matches(r, w.namespace, src, ns_labels)
            and _port_ok(r, pair.port, pair.protocol, default)
            for r in w.ingress
        )
        ok = ok or (w.kind == "training" and w.workers > 1 and src.workload == dst.workload)
        if not ok:
            return False
    return True


def short_id() -> str:
    return uuid.uuid4().hex[:6]


def pin_to_real_node(cluster: Cluster, ns: str) -> None:
    """Every pod of `ns` lands on the real node (PodNodeSelector, PodTolerationRestriction)."""
    selector = ",".join(f"{k}={v}" for k, v in REAL_NODE_SELECTOR.items())
    cluster.kubectl(
        "annotate",
        "namespace",
        ns,
        f"scheduler.alpha.kubernetes.io/node-selector={selector}",
        "scheduler.alpha.kubernetes.io/defaultTolerations=" + json.dumps([REAL_NODE_TOLERATION]),
        "--overwrite",
    )


def volume_dir(cluster: Cluster, ns: str, claim: str) -> Path:
    def bound() -> str:
        pvc = cluster.kubectl_json("-n", ns, "get", "pvc", claim)
        return (
            str(pvc["spec"].get("volumeName") or "")
            if pvc["status"].get("phase") == "Bound"
            else ""
        )

    pv = cluster.kubectl_json(
        "get", "pv", wait_for(bound, timeout=60, description=f"{claim} Bound")
    )
    return Path(pv["spec"]["hostPath"]["path"])


@dataclass
class TokenWatch:
    """A pod logging each projected token it sees (test_token_rotation.py)."""

    namespace: str
    pod: str
    audience: str
    lifetime: int
    started: float


def start_operator(cluster: Cluster, folder: Path, policy: dict[str, Any]) -> OperatorProcess:
    """`secureai run` on the host with `policy`, as its own identity, watching `t-*`."""
    policy_file = folder / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    return OperatorProcess(
        cluster,
        operator_kubeconfig(cluster, folder / "kubeconfig"),
        policy_file,
        folder / "operator.log",
        namespaces=("t-*",),
    ).start()


def read_only_claim(name: str, namespace: str) -> dict[str, Any]:
    """A PVC on the local provisioner's class; on the real node its volume is a real dir."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "encrypted-ssd",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
