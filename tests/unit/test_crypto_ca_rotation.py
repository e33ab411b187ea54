"""CA rotation with overlap on an injected clock, proven by real TLS handshakes (issue 14 item 5).

A Python ``ssl`` server on loopback presents the current serving certificate; ``openssl
s_client -attime`` (a real handshake, chain and hostname verified at the simulated time) plays
two consumers: one holding the bundle published ``propagation`` ago (the slowest consumer the
rotation promises to wait for) and one holding the current bundle. Both must succeed at every
step across several rotations.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from secureai import crypto
from secureai.crypto.ca import (
    CA,
    CLOCK_SKEW,
    CAError,
    CAState,
    RotationPolicy,
    ca_conforms,
    generate_ca,
    issue_serving_cert,
    needs_renewal,
    next_transition,
    rotate,
    verify_chain,
)
from secureai.k8s.certs import (
    CA_BUNDLE_CONFIGMAP,
    CA_SECRET,
    CertificateAuthority,
    state_from_data,
    state_to_data,
)
from secureai.k8s.client import ApiError

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")

T0 = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOST = "web.team-a.svc"
NAMES = crypto.service_dns_names("web", "team-a")
POLICY = RotationPolicy(
    ca_lifetime=30 * DAY,
    renew_before=10 * DAY,
    propagation=2 * DAY,
    max_serving_lifetime=DAY,
)


class FakeClock:
    """The injected clock: tests move it, nothing reads the wall clock."""

    def __init__(self, start: datetime) -> None:
        self.moment = start

    def now(self) -> datetime:
        return self.moment

    def advance(self, delta: timedelta) -> None:
        self.moment += delta


class TLSServer:
    """A loopback TLS server whose certificate can be swapped between handshakes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.context: ssl.SSLContext | None = None
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def use(self, key_pem: bytes, cert_pem: bytes) -> None:
        (self.tmp / "srv.key").write_bytes(key_pem)
        (self.tmp / "srv.crt").write_bytes(cert_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tmp / "srv.crt", self.tmp / "srv.key")
        self.context = ctx

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            assert self.context is not None
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                conn.close()

    def handshake(self, bundle_pem: bytes, at: datetime, host: str = HOST) -> tuple[bool, str]:
        """A client handshake verifying chain and ``host`` against ``bundle_pem`` at ``at``."""
        (self.tmp / "bundle.pem").write_bytes(bundle_pem)
        result = subprocess.run(
            [
                *("openssl", "s_client", "-connect", f"127.0.0.1:{self.port}"),
                *("-servername", host, "-verify_hostname", host, "-verify_return_error"),
                *("-CAfile", str(self.tmp / "bundle.pem"), "-attime", str(int(at.timestamp()))),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        ok = result.returncode == 0 and "Verify return code: 0 (ok)" in result.stdout
        return ok, result.stdout[-400:] + result.stderr[-400:]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TLSServer]:
    srv = TLSServer(tmp_path)
    yield srv
    srv.close()


def test_handshake_checks_are_real(server: TLSServer) -> None:
    ca = generate_ca("x", T0, 30 * DAY)
    leaf = issue_serving_cert(ca, NAMES, T0)
    server.use(leaf.key_pem, leaf.cert_pem)
    assert server.handshake(ca.cert_pem, T0)[0]
    assert not server.handshake(generate_ca("y", T0).cert_pem, T0)[0]  # untrusted
    assert not server.handshake(ca.cert_pem, T0 + 2 * DAY)[0]  # expired at that time
    assert not server.handshake(ca.cert_pem, T0, host="web.team-b.svc")[0]  # wrong name


@dataclass
class Consumers:
    """Bundles as published over time; a consumer may lag by up to ``propagation``."""

    published: list[tuple[datetime, bytes]] = field(default_factory=list)

    def publish(self, at: datetime, bundle_pem: bytes) -> None:
        if not self.published or self.published[-1][1] != bundle_pem:
            self.published.append((at, bundle_pem))

    def lagging(self, now: datetime, lag: timedelta) -> bytes:
        """The bundle of the slowest consumer the rotation waits for."""
        held = [b for at, b in self.published if at <= now - lag]
        return held[-1] if held else self.published[0][1]


def test_rotation_keeps_every_consumer_connected_at_every_step(server: TLSServer) -> None:
    clock = FakeClock(T0)
    state = CAState(active=generate_ca(crypto.ca.CA_COMMON_NAME, T0, POLICY.ca_lifetime))
    consumers = Consumers()
    leaf: crypto.ServingCert | None = None
    actives: list[str] = []
    phases: list[str] = []
    dropped_leaf: bytes | None = None
    step = timedelta(hours=12)
    end = T0 + 45 * DAY  # two complete rotations (each CA stages 20 days after its start)
    while clock.now() < end:
        now = clock.now()
        before = state
        state = rotate(state, now, POLICY)
        consumers.publish(now, state.bundle())  # the operator publishes, then records it
        state = state.mark_published(now)
        # the issuing CA never changes before its bundle has been out for `propagation`
        if state.active != before.active:
            assert before.pending == state.active and before.published_at is not None
            assert now >= before.published_at + POLICY.propagation
            assert before.active.cert_pem in state.bundle()  # old CA stays while certs live
        if len(state.retired) < len(before.retired):
            gone = {r.cert_pem for r in before.retired} - {r.cert_pem for r in state.retired}
            assert all(g not in state.bundle() for g in gone)
        if state.active.fingerprint not in actives:
            actives.append(state.active.fingerprint)
        phases.append("staged" if state.pending else "retiring" if state.retired else "steady")
        # the serving certificate is reissued as the operator does: stale, or not from `active`
        reissue = leaf is None or needs_renewal(leaf.cert_pem, now)
        if leaf is not None and not reissue:
            try:
                verify_chain(leaf.cert_pem, state.active.cert_pem, now, HOST)
            except CAError:
                reissue = True
        if reissue:
            if leaf is not None and dropped_leaf is None and before.retired:
                dropped_leaf = leaf.cert_pem
            leaf = issue_serving_cert(
                state.active, NAMES, now, min(DAY, POLICY.max_serving_lifetime)
            )
            server.use(leaf.key_pem, leaf.cert_pem)
        for who, held in (
            ("lagging consumer", consumers.lagging(now, POLICY.propagation)),
            ("current consumer", state.bundle()),
        ):
            ok, detail = server.handshake(held, now)
            assert ok, f"{who} failed at {now - T0}: {detail}"
        assert next_transition(state, POLICY) > now
        clock.advance(step)
    assert len(actives) >= 3, "expected at least two completed rotations"
    assert {"steady", "staged", "retiring"} <= set(phases)
    assert len(crypto.bundle_certs(state.bundle())) <= 2


def test_rotation_timeline() -> None:
    """The exact moments: stage at renew_before, promote after propagation, drop after the
    last certificate the old CA can have signed."""
    ca = generate_ca(crypto.ca.CA_COMMON_NAME, T0, POLICY.ca_lifetime)
    state = CAState(active=ca)
    stage_at = ca.not_after - POLICY.renew_before
    assert rotate(state, stage_at - timedelta(seconds=1), POLICY) == state
    staged = rotate(state, stage_at, POLICY)
    assert staged.active == ca and staged.pending is not None and staged.published_at is None
    # not published yet: never promoted, however long it waits
    assert rotate(staged, stage_at + 5 * DAY, POLICY).active == ca
    published = staged.mark_published(stage_at + DAY)
    assert published.mark_published(stage_at + 2 * DAY) == published
    promote_at = stage_at + DAY + POLICY.propagation
    assert rotate(published, promote_at - timedelta(seconds=1), POLICY).active == ca
    promoted = rotate(published, promote_at, POLICY)
    assert promoted.active == staged.pending and promoted.pending is None
    (retired,) = promoted.retired
    assert retired.cert_pem == ca.cert_pem
    assert retired.drop_after == promote_at + POLICY.max_serving_lifetime + CLOCK_SKEW
    assert rotate(promoted, retired.drop_after - timedelta(seconds=1), POLICY).retired
    final = rotate(promoted, retired.drop_after, POLICY)
    assert final.retired == () and crypto.bundle_certs(final.bundle()) == [
        promoted.active.certificate
    ]


def test_an_expired_ca_is_replaced_at_once() -> None:
    ca = generate_ca(crypto.ca.CA_COMMON_NAME, T0, POLICY.ca_lifetime)
    later = rotate(CAState(active=ca), ca.not_after + DAY, POLICY)
    assert later.active != ca and later.pending is None and later.retired == ()
    assert later.active.not_after == ca.not_after + DAY + POLICY.ca_lifetime


def test_a_ca_from_an_earlier_version_is_rotated_with_overlap(server: TLSServer) -> None:
    """A CA without name constraints (or with digitalSignature) is replaced the normal way."""
    ca = generate_ca(crypto.ca.CA_COMMON_NAME, T0, POLICY.ca_lifetime)
    legacy = _legacy_ca(T0)
    assert ca_conforms(ca) and not ca_conforms(legacy)
    assert not ca_conforms(ca, "corp.example")
    state = rotate(CAState(active=legacy), T0 + DAY, POLICY)
    assert state.active == legacy and state.pending is not None
    assert next_transition(CAState(active=legacy), POLICY) < T0


def _legacy_ca(now: datetime) -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secureai internal CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + POLICY.ca_lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CA(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


def test_policy_invariants() -> None:
    with pytest.raises(CAError, match="renew_before must exceed"):
        RotationPolicy(renew_before=2 * DAY, propagation=DAY, max_serving_lifetime=DAY)
    with pytest.raises(CAError, match="shorter than the CA lifetime"):
        RotationPolicy(ca_lifetime=30 * DAY, renew_before=30 * DAY)


# --- the operator's CertificateAuthority over a Kubernetes-like store ----------------------


class MemoryKube:
    """Secrets and ConfigMaps with resourceVersion conflicts, as the API server has them."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.writes = 0

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, name))
        return copy.deepcopy(obj) if obj is not None else None

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.writes += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.version)
        self.objects[(body["kind"], body["metadata"]["name"])] = body
        return copy.deepcopy(body)

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        body = kw["body"]
        assert method == "POST"
        if ("Secret", body["metadata"]["name"]) in self.objects:
            raise ApiError(409, "AlreadyExists", "exists")
        return self._store(body)

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        live = self.objects[(body["kind"], body["metadata"]["name"])]
        if body["metadata"].get("resourceVersion") != live["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        return self._store(body)

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._store(body)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_operator_ca_rotates_through_its_secret_with_two_replicas(server: TLSServer) -> None:
    kube = MemoryKube()
    clock = FakeClock(T0)
    replicas = [
        CertificateAuthority(kube, "secureai-system", clock=clock, policy=POLICY)  # type: ignore[arg-type]
        for _ in range(2)
    ]
    live: dict[str, Any] | None = None
    consumers = Consumers()
    fingerprints = set()
    while clock.now() < T0 + 45 * DAY:
        for i, ca in enumerate(replicas):
            data, _ = _run(ca.serving_secret_data(live, NAMES, DAY))
            live = {"data": data}
            bundle = kube.objects[("ConfigMap", CA_BUNDLE_CONFIGMAP)]["data"]["ca.crt"].encode()
            consumers.publish(clock.now(), bundle)
            assert base64.b64decode(data["ca.crt"]) == bundle
            cert = base64.b64decode(data["tls.crt"])
            lagging = consumers.lagging(clock.now(), POLICY.propagation)
            if i == 1:  # the second replica serves what the first issued: same verdicts
                verify_chain(cert, lagging, clock.now(), HOST)
                continue
            server.use(base64.b64decode(data["tls.key"]), cert)
            for held in (lagging, bundle):
                ok, detail = server.handshake(held, clock.now())
                assert ok, f"replica {i} at {clock.now() - T0}: {detail}"
            fingerprints.add(
                state_from_data(kube.objects[("Secret", CA_SECRET)]["data"]).active.fingerprint
            )
        clock.advance(timedelta(hours=12))
    assert len(fingerprints) >= 3
    stored = state_from_data(kube.objects[("Secret", CA_SECRET)]["data"])
    assert state_from_data(state_to_data(stored)) == stored


def test_lost_races_are_retried_and_earlier_secrets_are_read() -> None:
    kube = MemoryKube()
    clock = FakeClock(T0)
    legacy = _legacy_ca(T0)
    kube._store(
        {
            "kind": "Secret",
            "metadata": {"name": CA_SECRET},
            "data": {
                "tls.key": base64.b64encode(legacy.key_pem).decode(),
                "tls.crt": base64.b64encode(legacy.cert_pem).decode(),
                "bundle.crt": base64.b64encode(legacy.cert_pem).decode(),
            },
        }
    )
    ca = CertificateAuthority(kube, "ns", clock=clock, policy=POLICY)  # type: ignore[arg-type]
    real_replace = kube.replace
    raced: list[bool] = []

    async def racing_replace(body: dict[str, Any]) -> dict[str, Any]:
        if not raced:  # another replica writes first
            raced.append(True)
            live = kube.objects[("Secret", CA_SECRET)]
            kube._store({**live, "metadata": {**live["metadata"]}})
        return await real_replace(body)

    kube.replace = racing_replace  # type: ignore[method-assign]
    state = _run(ca.state())
    assert raced and state.active == legacy and state.pending is not None
    assert state.published_at == T0
    assert crypto.bundle_certs(state.bundle())[0] == legacy.certificate
    clock.advance(POLICY.propagation)
    assert _run(ca.state()).active == state.pending
    with pytest.raises(CAError):
        _run(ca.serving_secret_data(None, ["web"], DAY))
