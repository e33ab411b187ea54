"""The real node: it runs the project's images under Pod Security "restricted", and no packet
from the pod or Service ranges can leave the machine (checked by reading routes and rules,
never by sending traffic anywhere)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

from nodekit import image, real_pod, restricted_container

from clusterkit import REPO, Cluster, wait_for

POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")


def _pod_done(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    pod = cluster.kubectl_json("-n", ns, "get", "pod", name)
    return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None


def test_node_is_real_and_ready(cluster: Cluster, real_node: str) -> None:
    node = cluster.kubectl_json("get", "node", real_node)
    assert node["metadata"]["labels"]["type"] == "real"
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.37.2"
    assert info["containerRuntimeVersion"].startswith("containerd://2.")
    # the kwok nodes are still there, for GPUs and scale
    kwok = cluster.kubectl_json("get", "nodes", "-l", "type=kwok")["items"]
    assert any("nvidia.com/gpu" in n["status"]["capacity"] for n in kwok)


def test_operator_image_runs_under_restricted(cluster: Cluster, namespace_factory: Any) -> None:
    ns = namespace_factory("version")
    container = restricted_container(
        "secureai", image("secureai-operator"), ["secureai", "--version"], cpu="1", memory="256Mi"
    )
    pod = real_pod("version", ns, [container], restart="Never")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    done = wait_for(
        lambda: _pod_done(cluster, ns, "version"), timeout=120, description="pod finished"
    )
    state = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0, state
    assert cluster.kubectl("-n", ns, "logs", "version").stdout.strip() == "secureai 0.1.0"
    # what enforced "restricted" saw: non-root, read-only root, RuntimeDefault, no capabilities
    spec = done["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = spec["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]


def test_restricted_namespace_refuses_a_root_pod(cluster: Cluster, namespace_factory: Any) -> None:
    ns = namespace_factory("root")
    pod = real_pod(
        "root",
        ns,
        [restricted_container("c", image("secureai-operator"), ["secureai", "--version"])],
    )
    pod["spec"]["securityContext"]["runAsUser"] = 0
    pod["spec"]["securityContext"]["runAsNonRoot"] = False
    pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = False
    proc = cluster.kubectl("apply", "-f", "-", input=json.dumps(pod), check=False)
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr


def test_pod_network_has_no_way_out(cluster: Cluster, namespace_factory: Any) -> None:
    """Routes in the pod, and the node's guard: nothing from the pod or Service ranges leaves."""
    ns = namespace_factory("routes")
    reader = (
        "import json; "
        "print(json.dumps([l.split() for l in open('/proc/net/route').read().splitlines()[1:]]))"
    )
    pod = real_pod(
        "routes",
        ns,
        [restricted_container("c", image("modelserver"), ["/usr/bin/python3.11", "-c", reader])],
        restart="Never",
    )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_for(lambda: _pod_done(cluster, ns, "routes"), timeout=120, description="pod finished")
    routes = json.loads(cluster.kubectl("-n", ns, "logs", "routes").stdout)
    destinations = []
    for fields in routes:
        dest = ipaddress.ip_address(int(fields[1], 16).to_bytes(4, "little"))
        mask = ipaddress.ip_address(int(fields[7], 16).to_bytes(4, "little"))
        destinations.append(ipaddress.ip_network(f"{dest}/{mask}"))
    assert ipaddress.ip_network("0.0.0.0/0") not in destinations, "a pod has a default route"
    for net in destinations:
        assert net.subnet_of(POD_CIDR) or net.subnet_of(SERVICE_CIDR), f"pod route to {net}"

    # the node: the guard check of hack/cluster.sh, then the rules themselves
    status = subprocess.run(
        [str(REPO / "hack" / "cluster.sh"), "status"],
        capture_output=True,
        text=True,
        env=cluster.env(),
    )
    assert "network guard             ok" in status.stdout, status.stdout
    uplinks = {
        line.split()[4] for line in _ip("route", "show", "default").splitlines() if " dev " in line
    }
    assert uplinks, "no default route on the host: nothing to guard against"
    mangle = _iptables("-t", "mangle", "-S")
    assert mangle.index("-A POSTROUTING -j SECUREAI-GUARD") < min(
        (
            i
            for i, line in enumerate(mangle)
            if line.startswith("-A POSTROUTING") and "SECUREAI-GUARD" not in line
        ),
        default=len(mangle),
    )
    assert mangle.index("-A PREROUTING -j SECUREAI-GUARD-IN") < min(
        (
            i
            for i, line in enumerate(mangle)
            if line.startswith("-A PREROUTING") and "SECUREAI-GUARD-IN" not in line
        ),
        default=len(mangle),
    )
    for chain in ("SECUREAI-GUARD", "SECUREAI-GUARD-IN"):
        guard = [line for line in mangle if line.startswith(f"-A {chain} ")]
        # only the bridge and loopback are exempt; then both ranges are dropped, either way
        exempt = [line.split()[3] for line in guard if line.endswith("-j RETURN")]
        assert sorted(exempt) == ["lo", "sai0"] and not set(exempt) & uplinks
        assert all(line.endswith("-j RETURN") for line in guard[:2])
        for cidr in (POD_CIDR, SERVICE_CIDR):
            assert f"-A {chain} -s {cidr} -j DROP" in guard
            assert f"-A {chain} -d {cidr} -j DROP" in guard
    # no NAT towards the uplink, and the host forwards only what arrives on the bridge
    nat = _iptables("-t", "nat", "-S")
    for line in nat:
        if "MASQUERADE" in line or "SNAT" in line:
            assert "KUBE-" in line, f"NAT rule outside kube-proxy's chains: {line}"
    for dev in uplinks | {"all"}:
        assert _sysctl(f"net/ipv4/conf/{dev}/forwarding") == "0", dev
    # kube-proxy's masquerade only applies to marked Service traffic, still inside the guard
    assert not any("-o " + u in line for u in uplinks for line in nat)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def _iptables(*args: str) -> list[str]:
    return subprocess.run(
        ["iptables", "-w", *args], capture_output=True, text=True, check=True
    ).stdout.splitlines()


def _sysctl(path: str) -> str:
    with open(f"/proc/sys/{path}") as fh:
        return fh.read().strip()
