"""The operator's CA in a Secret, serving certificates for TLS children, and storage checks.

The CA rotates with an overlap (``secureai.crypto.rotate``): a new CA is added to the published
bundle first, issues only once the bundle has been out for ``RotationPolicy.propagation``, and
the old one leaves the bundle after the last certificate it signed has expired. Every moment is
read from one injected clock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from secureai import crypto
from secureai.clock import Clock
from secureai.crypto.ca import CAState, Retired, RotationPolicy, permitted_domains
from secureai.k8s.client import ApiError, KubeClient, NotLeader

log = logging.getLogger("secureai")

CA_SECRET = "secureai-ca"  # noqa: S105 - a name
CA_BUNDLE_CONFIGMAP = "secureai-ca-bundle"
CA_LIFETIME = timedelta(days=365)
CLUSTER_DOMAIN_ENV = "SECUREAI_CLUSTER_DOMAIN"
_REFRESH = timedelta(seconds=60)
_WRITE_ATTEMPTS = 5


def cluster_domain_from_env() -> str:
    """The cluster's DNS domain (``SECUREAI_CLUSTER_DOMAIN``, default ``cluster.local``)."""
    return os.environ.get(CLUSTER_DOMAIN_ENV, "").strip() or crypto.DEFAULT_CLUSTER_DOMAIN


def check_cluster_domain() -> str:
    """The configured cluster domain, or ValueError with one line saying why it is unusable."""
    domain = cluster_domain_from_env()
    try:
        permitted_domains(domain)
    except crypto.CAError as exc:
        raise ValueError(f"{CLUSTER_DOMAIN_ENV}: {exc}") from None
    return domain


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(data: str | None) -> bytes:
    return base64.b64decode(data or "")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def state_to_data(state: CAState) -> dict[str, str]:
    """The CA Secret's ``data`` for a state (``tls.*``: the issuing CA, ``next.*``: staged)."""
    data = {
        "tls.key": _b64(state.active.key_pem),
        "tls.crt": _b64(state.active.cert_pem),
        "bundle.crt": _b64(state.bundle()),
        "state.json": _b64(
            json.dumps(
                {
                    "publishedAt": _iso(state.published_at) if state.published_at else None,
                    "retired": [
                        {"cert": r.cert_pem.decode("ascii"), "dropAfter": _iso(r.drop_after)}
                        for r in state.retired
                    ],
                },
                sort_keys=True,
            ).encode()
        ),
    }
    if state.pending is not None:
        data["next.key"] = _b64(state.pending.key_pem)
        data["next.crt"] = _b64(state.pending.cert_pem)
    return data


def state_from_data(data: dict[str, str]) -> CAState:
    """Parse the CA Secret's ``data`` (also the format of earlier versions, with no state)."""
    active = crypto.CA(_unb64(data.get("tls.key")), _unb64(data.get("tls.crt"))).validate()
    pending = None
    if data.get("next.key") and data.get("next.crt"):
        pending = crypto.CA(_unb64(data["next.key"]), _unb64(data["next.crt"])).validate()
    raw = json.loads(_unb64(data.get("state.json")) or b"{}")
    published = raw.get("publishedAt")
    retired = tuple(
        Retired(r["cert"].encode("ascii"), datetime.fromisoformat(r["dropAfter"]))
        for r in raw.get("retired", [])
    )
    return CAState(
        active=active,
        pending=pending,
        published_at=datetime.fromisoformat(published) if published and pending else None,
        retired=retired,
    )


class CertificateAuthority:
    """Keeps one CA per operator namespace and rotates it; replicas coordinate through the
    Secret's resourceVersion (a lost race re-reads and recomputes)."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        *,
        clock: Clock,
        policy: RotationPolicy | None = None,
        cluster_domain: str | None = None,
        refresh: timedelta = _REFRESH,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.clock = clock
        self.policy = policy or RotationPolicy(ca_lifetime=CA_LIFETIME)
        domain = cluster_domain or cluster_domain_from_env()
        crypto.ca.permitted_domains(domain)  # validates it
        self.cluster_domain = domain.lower().rstrip(".")
        self.refresh = refresh
        self._state: CAState | None = None
        self._loaded_at: datetime | None = None
        self._lock = asyncio.Lock()

    def now(self) -> datetime:
        return self.clock.now()

    async def ensure(self) -> crypto.CA:
        """The CA that issues now (rotating first if a step is due)."""
        return (await self.state()).active

    async def state(self) -> CAState:
        """The current CA state: cached, re-read every ``refresh`` or when a step is due."""
        if self._fresh():
            assert self._state is not None
            return self._state
        async with self._lock:
            if self._fresh():
                assert self._state is not None
                return self._state
            return await self.maintain()

    def _fresh(self) -> bool:
        if self._state is None or self._loaded_at is None:
            return False
        now = self.now()
        due = crypto.ca.next_transition(self._state, self.policy, self.cluster_domain)
        return now < due and self._loaded_at <= now < self._loaded_at + self.refresh

    async def maintain(self) -> CAState:
        """Read the CA Secret, take every rotation step due now, publish the bundle."""
        for _ in range(_WRITE_ATTEMPTS):
            secret = await self.kube.get("Secret", self.namespace, CA_SECRET)
            now = self.now()
            if secret is None:
                state = crypto.ca.rotate(self._initial(now), now, self.policy, self.cluster_domain)
                if not await self._write(None, state):
                    continue
            else:
                state = state_from_data(secret.get("data") or {})
                stepped = crypto.ca.rotate(state, now, self.policy, self.cluster_domain)
                if stepped != state:
                    self._log_step(state, stepped)
                    if not await self._write(secret, stepped):
                        continue
                    state = stepped
            await self._publish_bundle(state.bundle())
            if state.pending is not None and state.published_at is None:
                published = state.mark_published(self.now())
                secret = await self.kube.get("Secret", self.namespace, CA_SECRET)
                if secret is None or state_from_data(secret.get("data") or {}) != state:
                    continue
                if not await self._write(secret, published):
                    continue
                state = published
            self._state, self._loaded_at = state, now
            return state
        raise ApiError(409, "Conflict", "the CA Secret kept changing; retry later")

    def _initial(self, now: datetime) -> CAState:
        ca = crypto.generate_ca(
            crypto.ca.CA_COMMON_NAME,
            now,
            self.policy.ca_lifetime,
            cluster_domain=self.cluster_domain,
        )
        return CAState(active=ca)

    @staticmethod
    def _log_step(before: CAState, after: CAState) -> None:
        if after.active != before.active:
            log.info("CA rotation: new CA %s now issues", after.active.fingerprint)
        elif after.pending is not None and after.pending != before.pending:
            log.info("CA rotation: staged CA %s in the bundle", after.pending.fingerprint)
        if len(after.retired) < len(before.retired):
            log.info("CA rotation: dropped an expired CA from the bundle")

    async def _write(self, live: dict[str, Any] | None, state: CAState) -> bool:
        """Create or replace the CA Secret; False if another replica changed it first.

        A standby replica (``NotLeader``) never writes: it waits for the leader's Secret."""
        meta: dict[str, Any] = {
            "name": CA_SECRET,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/part-of": "secureai"},
        }
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": "Opaque",
            "data": state_to_data(state),
        }
        try:
            if live is None:
                await self.kube.request(
                    "POST", f"/api/v1/namespaces/{self.namespace}/secrets", body=body
                )
            else:
                meta["resourceVersion"] = live["metadata"]["resourceVersion"]
                meta["labels"] = {**(live["metadata"].get("labels") or {}), **meta["labels"]}
                await self.kube.replace(body)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        except NotLeader:
            raise ApiError(503, "NotLeader", "the CA Secret is maintained by the leader") from None
        return True

    async def _publish_bundle(self, bundle: bytes) -> None:
        with contextlib.suppress(NotLeader):
            await self.kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": CA_BUNDLE_CONFIGMAP,
                        "namespace": self.namespace,
                        "labels": {"app.kubernetes.io/part-of": "secureai"},
                    },
                    "data": {"ca.crt": bundle.decode("ascii")},
                }
            )

    @property
    def bundle(self) -> bytes:
        return self._state.bundle() if self._state is not None else b""

    async def serving_secret_data(
        self,
        live: dict[str, Any] | None,
        dns_names: list[str],
        lifetime: timedelta,
    ) -> tuple[dict[str, str], datetime]:
        """Reuse the live certificate while it chains to the issuing CA and is fresh; otherwise
        issue a new one. ``ca.crt`` is always the current bundle."""
        state = await self.state()
        now = self.now()
        bundle = state.bundle()
        data = (live or {}).get("data") or {}
        cert = _unb64(data.get("tls.crt"))
        if cert and data.get("tls.key"):
            try:
                crypto.verify_chain(cert, state.active.cert_pem, now, dns_names[0])
                fresh = not crypto.needs_renewal(cert, now)
                same_names = sorted(crypto.cert_dns_names(cert)) == sorted(dns_names)
                if fresh and same_names:
                    return {**data, "ca.crt": _b64(bundle)}, crypto.cert_expiry(cert)
            except (crypto.CAError, ValueError) as exc:
                log.info("serving certificate does not verify (%s); issuing a new one", exc)
        lifetime = min(lifetime, self.policy.max_serving_lifetime)
        issued = crypto.issue_serving_cert(state.active, dns_names, now, lifetime)
        return (
            {
                "tls.crt": _b64(issued.cert_pem),
                "tls.key": _b64(issued.key_pem),
                "ca.crt": _b64(bundle),
            },
            issued.not_after,
        )


async def storage_class_of_claim(kube: KubeClient, namespace: str, claim: str) -> str | None:
    """The StorageClass behind a PVC: its bound PV's class, else its own. None if missing."""
    pvc = await kube.get("PersistentVolumeClaim", namespace, claim)
    if pvc is None:
        return None
    volume = pvc.get("spec", {}).get("volumeName")
    if volume:
        pv = await kube.get("PersistentVolume", None, volume)
        if pv is not None and pv.get("spec", {}).get("storageClassName") is not None:
            return str(pv["spec"]["storageClassName"])
    return str(pvc.get("spec", {}).get("storageClassName") or "")
