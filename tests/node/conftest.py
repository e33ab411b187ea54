"""Fixtures for tests on the real node (hack/realnode.sh): real containers, real packets.

Every test here is marked ``integration`` and ``realnode``. Without a real node they fail,
unless SECUREAI_REAL_NODE=0 says the machine cannot run one (then they are skipped with the
reason): a CI machine that can run the node must never pass these by skipping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nodekit import TokenWatch, image, real_pod, restricted_container, start_operator

from clusterkit import REPO, Cluster, ClusterUnavailable, ensure_cluster, release_cluster, wait_for
from clusterkit import _read_env as read_cluster_env
from operatorkit import TEST_POLICY, OperatorProcess, install_crds
from secureai.api import Policy, parse_workload
from secureai.render.pod import TOKEN_DIR, token_volume

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = []
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.realnode)
            ours.append(item)
    # first, on a fresh node: the resilience tests restart the API server, and kube-router's
    # recovery from that is not what these tests measure
    others = [item for item in items if item not in ours]
    # the token rotation check waits on the kubelet (80 % of 600 s): it goes last, so the
    # rest of the suite covers the wait; the demo's operator watches the whole cluster: it
    # goes after every other real-node test, before the integration tests restart anything
    last = [item for item in ours if "test_token_rotation" in item.nodeid]
    demo = [item for item in ours if "test_demo" in item.nodeid]
    first = [item for item in ours if item not in last and item not in demo]
    items[:] = first + demo + others + last


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    try:
        c = ensure_cluster()
    except ClusterUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield c
    release_cluster(c, keep=os.environ.get("SECUREAI_KEEP_CLUSTER") == "1")


@pytest.fixture(scope="session")
def real_node(cluster: Cluster) -> str:
    env = read_cluster_env(cluster.state_dir / "cluster.env")
    if env.get("REAL_NODE") != "1":
        if os.environ.get("SECUREAI_REAL_NODE") == "0":
            pytest.skip("SECUREAI_REAL_NODE=0: this cluster has no real node")
        pytest.fail(
            "the cluster has no real node (see the 'no real node' line of hack/cluster.sh up)",
            pytrace=False,
        )
    return env["REAL_NODE_NAME"]


@pytest.fixture
def namespace_factory(cluster: Cluster, real_node: str) -> Iterator[Callable[..., str]]:
    """Fresh namespaces enforcing Pod Security "restricted", deleted after the test."""
    made: list[str] = []

    def make(prefix: str = "rn", labels: dict[str, str] | None = None) -> str:
        name = f"t-{prefix}-{uuid.uuid4().hex[:6]}"
        all_labels = {"pod-security.kubernetes.io/enforce": "restricted", **(labels or {})}
        cluster.kubectl("create", "namespace", name)
        cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in all_labels.items()))
        wait_for(
            lambda: (
                cluster.kubectl(
                    "-n", name, "get", "serviceaccount", "default", check=False
                ).returncode
                == 0
            ),
            timeout=30,
            description=f"default ServiceAccount in {name}",
        )
        made.append(name)
        return name

    yield make
    for name in made:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model-signing key pair made by `secureai model keygen`."""
    folder = tmp_path_factory.mktemp("signer")
    private, public = folder / "signer.key", folder / "signer.pub"
    subprocess.run(
        [sys.executable, "-m", "secureai.cli.main", "model", "keygen",
         "--private-key", str(private), "--public-key", str(public)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return private, public


@pytest.fixture(scope="module")
def e2e_operator(
    cluster: Cluster, real_node: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install_crds(cluster)
    process = start_operator(cluster, tmp_path_factory.mktemp("e2e-operator"), TEST_POLICY)
    yield process
    process.stop()


WATCH_TOKEN = """
import base64, json, time
seen = None
while True:
    try:
        token = open('/var/run/secrets/secureai/tokens/token').read()
        part = token.split('.')[1]
        claims = json.loads(base64.urlsafe_b64decode(part + '=' * (-len(part) % 4)))
        if claims['iat'] != seen:
            seen = claims['iat']
            print(json.dumps({'iat': claims['iat'], 'exp': claims['exp'], 'aud': claims['aud'],
                              'seen': int(time.time())}), flush=True)
    except OSError:
        pass
    time.sleep(2)
"""


@pytest.fixture(scope="session", autouse=True)
def token_watch(cluster: Cluster, real_node: str) -> Iterator[TokenWatch]:
    """A pod with the token volume the operator renders, watching its token from the first
    real-node test on (see test_token_rotation.py)."""
    policy = Policy.from_yaml(REPO / "examples" / "policy.yaml")
    cr = parse_workload(
        {
            "apiVersion": "secureai.dev/v1alpha1",
            "kind": "SecureTrainingJob",
            "metadata": {"name": "rotation", "namespace": "x"},
            "spec": {"image": image("trainer"), "resources": {"cpu": "50m", "memory": "64Mi"}},
        }
    )
    volume = token_volume(cr, policy)
    source = volume["projected"]["sources"][0]["serviceAccountToken"]
    ns = f"t-rotation-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    wait_for(
        lambda: cluster.kubectl("-n", ns, "get", "sa", "default", check=False).returncode == 0,
        timeout=30,
        description=f"default ServiceAccount in {ns}",
    )
    container = restricted_container(
        "watch", image("secureai-operator"), ["/usr/bin/python3.11", "-c", WATCH_TOKEN]
    )
    container["volumeMounts"] = [{"name": "tokens", "mountPath": TOKEN_DIR, "readOnly": True}]
    pod = real_pod("token-watch", ns, [container])
    pod["spec"]["volumes"] = [volume]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_for(
        lambda: cluster.kubectl("-n", ns, "logs", "token-watch", check=False).stdout.strip(),
        timeout=120,
        description="the token watcher's first line",
    )
    yield TokenWatch(
        ns, "token-watch", source["audience"], source["expirationSeconds"], time.monotonic()
    )
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
