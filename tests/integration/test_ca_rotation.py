"""CA rotation on the real control plane, served by the real guard (issue 14 item 5).

The operator's ``CertificateAuthority`` keeps its state in a real Secret (resourceVersion
conflicts and all) and publishes the real bundle ConfigMap; an injected clock is moved day by
day through two complete rotations. At every step the serving certificate it returns is
installed in a running ``secureai guard`` (which reloads it from disk), and two consumers make
real TLS handshakes to the guard with ``openssl s_client -attime`` (chain and hostname checked
at the simulated time): one holding the bundle read from the ConfigMap now, one holding the
bundle read ``propagation`` ago. Every certificate issued earlier that has not expired yet (a
Service whose Secret was not refreshed) must still verify against the bundle published now:
the old CA leaves the bundle only after the last certificate it signed has expired.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clusterkit import Cluster
from secureai import crypto
from secureai.clock import FakeClock
from secureai.crypto.ca import RotationPolicy
from secureai.k8s.certs import CA_BUNDLE_CONFIGMAP, CA_SECRET, CertificateAuthority, state_from_data
from secureai.k8s.client import KubeClient, load_credentials

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")

DAY = timedelta(days=1)
POLICY = RotationPolicy(
    ca_lifetime=30 * DAY, renew_before=10 * DAY, propagation=2 * DAY, max_serving_lifetime=DAY
)
NAMES = crypto.service_dns_names("web", "team-a")
HOST = NAMES[0]
DEADLINE = 30.0
STEP = DAY / 3  # a third of a serving certificate's life: the one in use outlives a promotion


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _served_cert(port: int) -> bytes | None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            ctx.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            return tls.getpeercert(binary_form=True)
    except OSError:
        return None


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A running guard on loopback whose TLS files live in ``tmp_path/tls``."""
    tls = tmp_path / "tls"
    tls.mkdir()
    bootstrap = crypto.generate_ca("bootstrap", datetime.now(UTC))
    first = crypto.issue_serving_cert(bootstrap, NAMES, datetime.now(UTC))
    (tls / "tls.crt").write_bytes(first.cert_pem)
    (tls / "tls.key").write_bytes(first.key_pem)
    port = _free_port()
    config = {
        "listen_host": "127.0.0.1",
        "listen_port": port,
        "metrics_port": _free_port(),
        "upstream": f"http://127.0.0.1:{_free_port()}",
        "tls_cert_file": str(tls / "tls.crt"),
        "tls_key_file": str(tls / "tls.key"),
        "tls_reload_interval_s": 0.1,
    }
    (tmp_path / "guard.json").write_text(json.dumps(config))
    proc = subprocess.Popen(
        [
            *(
                sys.executable,
                "-c",
                "import sys; from secureai.guard import main; sys.exit(main())",
            ),
            *("--config", str(tmp_path / "guard.json")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "guard.log").open("wb"),
    )
    try:
        _poll(lambda: _served_cert(port) is not None, "the guard to listen", proc)
        yield port, tls
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE)


def _poll(cond: Any, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _handshake(port: int, bundle_pem: bytes, at: datetime, tmp: Path) -> tuple[bool, str]:
    (tmp / "bundle.pem").write_bytes(bundle_pem)
    result = subprocess.run(
        [
            *("openssl", "s_client", "-connect", f"127.0.0.1:{port}"),
            *("-servername", HOST, "-verify_hostname", HOST, "-verify_return_error"),
            *("-CAfile", str(tmp / "bundle.pem"), "-attime", str(int(at.timestamp()))),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    ok = result.returncode == 0 and "Verify return code: 0 (ok)" in result.stdout
    return ok, result.stdout[-400:] + result.stderr[-400:]


def test_ca_rotates_with_overlap_and_the_guard_stays_reachable(
    cluster: Cluster, guard: tuple[int, Path], tmp_path: Path
) -> None:
    port, tls = guard
    op_ns = f"t-ca-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", op_ns)
    try:
        asyncio.run(_rotate(cluster, op_ns, port, tls, tmp_path))
    finally:
        cluster.kubectl("delete", "namespace", op_ns, "--wait=false")


async def _rotate(cluster: Cluster, op_ns: str, port: int, tls: Path, tmp: Path) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    clock = FakeClock(start)
    published: list[tuple[datetime, bytes]] = []
    actives: list[str] = []
    issued: list[bytes] = []
    overlapped = 0  # checks of a still-valid certificate signed by a CA that no longer issues
    resource_versions: set[str] = set()
    async with KubeClient(load_credentials(str(cluster.kubeconfig))) as kube:
        replicas = [CertificateAuthority(kube, op_ns, clock=clock, policy=POLICY) for _ in range(2)]
        live: dict[str, Any] | None = None
        while clock.now() < start + 45 * DAY:
            now = clock.now()
            for replica in replicas:  # both replicas run; the Secret arbitrates
                data, _ = await replica.serving_secret_data(live, NAMES, DAY)
                live = {"data": data}
            secret = await kube.get("Secret", op_ns, CA_SECRET)
            configmap = await kube.get("ConfigMap", op_ns, CA_BUNDLE_CONFIGMAP)
            assert secret is not None and configmap is not None
            resource_versions.add(secret["metadata"]["resourceVersion"])
            state = state_from_data(secret["data"])
            bundle = configmap["data"]["ca.crt"].encode()
            assert bundle == state.bundle() == base64.b64decode(data["ca.crt"])
            if not published or published[-1][1] != bundle:
                published.append((now, bundle))
            if state.active.fingerprint not in actives:
                actives.append(state.active.fingerprint)
            cert = base64.b64decode(data["tls.crt"])
            if _served_cert(port) != _der(cert):
                (tls / "tls.key").write_bytes(base64.b64decode(data["tls.key"]))
                (tls / "tls.crt").write_bytes(cert)
                _poll(lambda c=cert: _served_cert(port) == _der(c), "the guard to reload")
            held = [b for at, b in published if at <= now - POLICY.propagation]
            lagging = held[-1] if held else published[0][1]
            for who, trusted in (("lagging", lagging), ("current", bundle)):
                ok, detail = _handshake(port, trusted, now, tmp)
                assert ok, f"{who} consumer at day {(now - start) / DAY:.1f}: {detail}"
            if cert not in issued:
                issued.append(cert)
            for earlier in issued:
                if now < crypto.cert_expiry(earlier):
                    crypto.verify_chain(earlier, bundle, now, HOST)  # raises CAError
                    overlapped += not _chains(earlier, state.active.cert_pem, now)
            clock.advance(STEP.total_seconds())
    assert len(actives) >= 3, "expected two completed rotations"
    assert overlapped >= 2, "no certificate outlived a promotion: the overlap was not tested"
    assert len(crypto.bundle_certs(bundle)) <= 2
    assert len(resource_versions) > 4


def _chains(cert: bytes, ca_pem: bytes, at: datetime) -> bool:
    """Whether ``cert`` chains to ``ca_pem`` at ``at``."""
    try:
        crypto.verify_chain(cert, ca_pem, at)
    except crypto.CAError:
        return False
    return True


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
