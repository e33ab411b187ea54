"""The operator's CA in a Secret, serving certificates for TLS children, and storage checks."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from secureai import crypto
from secureai.k8s.client import ApiError, KubeClient

log = logging.getLogger("secureai")

CA_SECRET = "secureai-ca"  # noqa: S105 - a name
CA_BUNDLE_CONFIGMAP = "secureai-ca-bundle"
CA_LIFETIME = timedelta(days=365)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(data: str | None) -> bytes:
    return base64.b64decode(data or "")


def utc_now() -> datetime:
    return datetime.now(UTC)


class CertificateAuthority:
    """Keeps one CA per operator namespace; replicas race safely through create-or-read."""

    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        *,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.now = now
        self._ca: crypto.CA | None = None
        self._bundle: bytes = b""
        self._lock = asyncio.Lock()

    async def ensure(self) -> crypto.CA:
        """Load the CA, creating it once; replicas race safely through create-or-read."""
        if self._ca is not None:
            return self._ca
        async with self._lock:
            if self._ca is not None:
                return self._ca
            return await self._load_or_create()

    async def _load_or_create(self) -> crypto.CA:
        secret = await self.kube.get("Secret", self.namespace, CA_SECRET)
        if secret is None:
            ca = crypto.generate_ca("secureai internal CA", self.now(), CA_LIFETIME)
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": CA_SECRET,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/part-of": "secureai"},
                },
                "type": "Opaque",
                "data": {
                    "tls.key": _b64(ca.key_pem),
                    "tls.crt": _b64(ca.cert_pem),
                    "bundle.crt": _b64(ca.cert_pem),
                },
            }
            try:
                secret = await self.kube.request(
                    "POST", f"/api/v1/namespaces/{self.namespace}/secrets", body=body
                )
            except ApiError as exc:
                if exc.status != 409:
                    raise
                secret = await self.kube.get("Secret", self.namespace, CA_SECRET)
                if secret is None:
                    raise
        data = secret.get("data") or {}
        ca = crypto.CA(_unb64(data.get("tls.key")), _unb64(data.get("tls.crt"))).validate()
        self._ca = ca
        self._bundle = _unb64(data.get("bundle.crt")) or ca.cert_pem
        await self._publish_bundle()
        return ca

    async def _publish_bundle(self) -> None:
        await self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": CA_BUNDLE_CONFIGMAP,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/part-of": "secureai"},
                },
                "data": {"ca.crt": self._bundle.decode("ascii")},
            }
        )

    @property
    def bundle(self) -> bytes:
        return self._bundle

    async def serving_secret_data(
        self,
        live: dict[str, Any] | None,
        dns_names: list[str],
        lifetime: timedelta,
    ) -> tuple[dict[str, str], datetime]:
        """Reuse the live certificate while valid and fresh; otherwise issue a new one."""
        ca = await self.ensure()
        now = self.now()
        data = (live or {}).get("data") or {}
        cert = _unb64(data.get("tls.crt"))
        if cert and data.get("tls.key"):
            try:
                crypto.verify_chain(cert, self._bundle, now, dns_names[0])
                fresh = not crypto.needs_renewal(cert, now)
                same_names = sorted(crypto.cert_dns_names(cert)) == sorted(dns_names)
                if fresh and same_names:
                    return dict(data), crypto.cert_expiry(cert)
            except (crypto.CAError, ValueError) as exc:
                log.info("serving certificate does not verify (%s); issuing a new one", exc)
        issued = crypto.issue_serving_cert(ca, dns_names, now, lifetime)
        return (
            {
                "tls.crt": _b64(issued.cert_pem),
                "tls.key": _b64(issued.key_pem),
                "ca.crt": _b64(self._bundle),
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
