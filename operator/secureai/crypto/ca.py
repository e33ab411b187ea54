"""The operator's internal CA: ECDSA P-256 root, short-lived serving certificates, rotation.

Time is always injected (``now``); nothing here reads the clock.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Final, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

__all__ = [
    "CA",
    "CA_COMMON_NAME",
    "CLOCK_SKEW",
    "DEFAULT_CA_LIFETIME",
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_SERVING_LIFETIME",
    "CAError",
    "CAState",
    "Retired",
    "RotationPolicy",
    "ServingCert",
    "bundle",
    "bundle_certs",
    "ca_conforms",
    "ca_permitted_domains",
    "cert_dns_names",
    "cert_expiry",
    "fingerprint",
    "generate_ca",
    "issue_serving_cert",
    "needs_renewal",
    "next_transition",
    "permitted_domains",
    "prune_bundle",
    "rotate",
    "service_dns_names",
    "verify_chain",
]

DEFAULT_CA_LIFETIME: Final = timedelta(days=365)
DEFAULT_SERVING_LIFETIME: Final = timedelta(hours=24)
DEFAULT_CLUSTER_DOMAIN: Final = "cluster.local"
CLOCK_SKEW: Final = timedelta(minutes=5)
"""Certificates are back-dated by this much so peers with a slightly late clock accept them."""

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MAX_CN: Final = 64


class CAError(ValueError):
    """Invalid CA input, or a certificate that does not verify. The message is user-safe."""


@dataclass(frozen=True)
class CA:
    """A CA key pair, both PEM encoded (the key as unencrypted PKCS#8: keep it in a Secret)."""

    key_pem: bytes
    cert_pem: bytes

    @cached_property
    def certificate(self) -> x509.Certificate:
        return _load_cert(self.cert_pem)

    @cached_property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError("CA key is not an EC key")
        return key

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate.public_key())

    def validate(self) -> CA:
        """Check that the key matches the certificate and that it is a CA; return self."""
        if fingerprint(self.private_key.public_key()) != self.fingerprint:
            raise CAError("CA key does not match the CA certificate")
        try:
            bc = self.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            raise CAError("CA certificate has no basicConstraints") from None
        if not bc.value.ca:
            raise CAError("certificate is not a CA")
        return self


class ServingCert(NamedTuple):
    """A serving key pair; unpacks as ``key_pem, cert_pem, not_after``."""

    key_pem: bytes
    cert_pem: bytes
    not_after: datetime


def _require_aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise CAError("now must be a timezone-aware datetime")
    return now


def _load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CAError("not a PEM certificate") from None


def fingerprint(public_key: PublicKeyTypes | x509.Certificate | bytes) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo.

    Accepts a public key, a certificate, or PEM bytes of either.
    """
    if isinstance(public_key, bytes):
        if b"CERTIFICATE" in public_key:
            public_key = _load_cert(public_key)
        else:
            try:
                public_key = serialization.load_pem_public_key(public_key)
            except ValueError:
                raise CAError("not a PEM public key or certificate") from None
    if isinstance(public_key, x509.Certificate):
        public_key = public_key.public_key()
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _check_lifetime(lifetime: timedelta) -> None:
    if lifetime <= timedelta(0):
        raise CAError("lifetime must be positive")


def permitted_domains(cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> list[str]:
    """The DNS subtrees a CA for this cluster may issue in: Service names only."""
    domain = _check_dns_name(cluster_domain, "cluster domain")
    return ["svc", f"svc.{domain}"]


def service_dns_names(
    service: str, namespace: str, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
) -> list[str]:
    """The namespace-qualified DNS names of a Service (never the bare, namespace-less name)."""
    for value, what in ((service, "service name"), (namespace, "namespace")):
        if not _DNS_LABEL.match(value):
            raise CAError(f"invalid {what}: {value!r} (must be a DNS-1123 label)")
    domain = _check_dns_name(cluster_domain, "cluster domain")
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.{domain}"]


def _check_dns_name(raw: str, what: str) -> str:
    name = raw.lower().rstrip(".") if isinstance(raw, str) else ""
    labels = name.split(".")
    if len(name) > 253 or not all(_DNS_LABEL.match(lbl) for lbl in labels):
        raise CAError(f"invalid {what}: {raw!r}")
    if labels[-1].isdigit():
        raise CAError(f"invalid {what}: {raw!r} (looks like an IP address)")
    return name


def ca_permitted_domains(ca: CA | x509.Certificate) -> list[str] | None:
    """The CA's permitted DNS subtrees (name constraints), or None if it has none."""
    cert = ca.certificate if isinstance(ca, CA) else ca
    try:
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    return sorted(n.value for n in nc.permitted_subtrees or [] if isinstance(n, x509.DNSName))


def _within(name: str, subtree: str) -> bool:
    return name == subtree or name.endswith("." + subtree)


def generate_ca(
    common_name: str,
    now: datetime,
    lifetime: timedelta = DEFAULT_CA_LIFETIME,
    *,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> CA:
    """A new self-signed ECDSA P-256 root valid from ``now - CLOCK_SKEW`` to ``now + lifetime``.

    Critical X.509 name constraints limit it to :func:`permitted_domains` (Service names of the
    cluster) and exclude every IP address, so even its leaked key cannot mint a certificate a
    verifier accepts for any other name.
    """
    _require_aware(now)
    _check_lifetime(lifetime)
    if not common_name or len(common_name) > _MAX_CN:
        raise CAError("CA common name must be 1 to 64 characters")
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(d) for d in permitted_domains(cluster_domain)],
        excluded_subtrees=[
            x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.ip_network("::/0")),
        ],
    )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(constraints, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return CA(key_pem=_key_pem(key), cert_pem=_pem(cert))


def _validate_dns_names(dns_names: Sequence[str], permitted: list[str] | None) -> list[str]:
    """Lower-cased, de-duplicated names; each a multi-label DNS name (no wildcard, no IP) inside
    the CA's permitted subtrees."""
    if isinstance(dns_names, str):
        raise CAError("dns_names must be a list of names, not a string")
    names: list[str] = []
    for raw in dns_names:
        name = _check_dns_name(raw, "DNS name")
        if "." not in name:
            raise CAError(f"invalid DNS name: {raw!r} (a bare name is the same in every namespace)")
        if permitted is not None and not any(_within(name, d) for d in permitted):
            raise CAError(
                f"invalid DNS name: {raw!r} is outside the CA's permitted domains "
                f"({', '.join(permitted)})"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise CAError("at least one DNS name is required")
    return names


def issue_serving_cert(
    ca: CA,
    dns_names: Sequence[str],
    now: datetime,
    lifetime: timedelta = DEFAULT_SERVING_LIFETIME,
) -> ServingCert:
    """Issue a TLS server certificate (ECDSA P-256, serverAuth, SANs = ``dns_names``).

    It is valid from ``now - CLOCK_SKEW`` to ``now + lifetime``, never past the CA's own expiry.
    Unpacks as ``key_pem, cert_pem, not_after``.
    """
    _require_aware(now)
    _check_lifetime(lifetime)
    names = _validate_dns_names(dns_names, ca_permitted_domains(ca))
    ca_cert = ca.certificate
    if now >= ca.not_after or now < ca_cert.not_valid_before_utc:
        raise CAError("CA certificate is not valid at the requested time")
    not_after = min(now + lifetime, ca.not_after)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        if len(names[0]) <= _MAX_CN
        else x509.Name([])
    )
    issuer_key: CertificateIssuerPrivateKeyTypes = ca.private_key
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - CLOCK_SKEW, ca_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
            critical=len(subject) == 0,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return ServingCert(key_pem=_key_pem(key), cert_pem=_pem(cert), not_after=not_after)


def cert_expiry(cert_pem: bytes) -> datetime:
    """The certificate's notAfter (timezone-aware, UTC)."""
    return _load_cert(cert_pem).not_valid_after_utc


def cert_dns_names(cert_pem: bytes) -> list[str]:
    """The DNS subjectAltNames of a certificate."""
    try:
        san = _load_cert(cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.DNSName)


def needs_renewal(cert_pem: bytes, now: datetime, fraction: float = 2 / 3) -> bool:
    """True once ``fraction`` of the certificate's validity period has elapsed at ``now``.

    An unparsable certificate also needs renewal (it must be replaced).
    """
    _require_aware(now)
    if not 0 < fraction <= 1:
        raise CAError("fraction must be in (0, 1]")
    try:
        cert = _load_cert(cert_pem)
    except CAError:
        return True
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * fraction


def bundle_certs(bundle_pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM bundle, in order."""
    try:
        certs = x509.load_pem_x509_certificates(bundle_pem)
    except ValueError:
        raise CAError("CA bundle is not a list of PEM certificates") from None
    return certs


def bundle(cas: Iterable[CA | bytes]) -> bytes:
    """Concatenate CA certificates (``CA`` objects or PEM) into one trust bundle.

    Order is kept and duplicates are dropped, so ``bundle([new, *old_bundle])`` is the overlap
    step of a rotation.
    """
    seen: set[bytes] = set()
    out: list[bytes] = []
    for item in cas:
        pem = item.cert_pem if isinstance(item, CA) else item
        for cert in bundle_certs(pem):
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                out.append(_pem(cert))
    if not out:
        raise CAError("a CA bundle needs at least one certificate")
    return b"".join(out)


def prune_bundle(bundle_pem: bytes, now: datetime) -> bytes:
    """Drop CA certificates that have expired at ``now`` (the last step of a rotation)."""
    _require_aware(now)
    keep = [c for c in bundle_certs(bundle_pem) if c.not_valid_after_utc > now]
    if not keep:
        raise CAError("every CA certificate in the bundle has expired")
    return b"".join(_pem(c) for c in keep)


def verify_chain(
    cert_pem: bytes, bundle_pem: bytes, now: datetime, dns_name: str | None = None
) -> x509.Certificate:
    """Verify a serving certificate against a CA bundle at time ``now``; return it.

    Checks signature, validity period, CA constraints and the serverAuth EKU, and the name
    ``dns_name`` (default: the certificate's first DNS SAN). Raises ``CAError`` on failure.
    """
    _require_aware(now)
    leaf = _load_cert(cert_pem)
    roots = bundle_certs(bundle_pem)
    if not roots:
        raise CAError("CA bundle is empty")
    if dns_name is None:
        names = cert_dns_names(cert_pem)
        if not names:
            raise CAError("certificate has no DNS subjectAltName")
        dns_name = names[0].replace("*", "wildcard", 1) if names[0].startswith("*.") else names[0]
    verifier = (
        PolicyBuilder().store(Store(roots)).time(now).build_server_verifier(x509.DNSName(dns_name))
    )
    try:
        verifier.verify(leaf, [])
    except VerificationError as exc:
        reason = str(exc).split(" (encountered processing", 1)[0]
        raise CAError(f"certificate does not verify against the CA bundle: {reason}") from None
    return leaf


# --- rotation ---------------------------------------------------------------------------------

CA_COMMON_NAME: Final = "secureai internal CA"


@dataclass(frozen=True)
class RotationPolicy:
    """When the CA rotates; every duration is measured on the injected clock.

    A new CA is staged (added to the published bundle, not yet issuing) once the active one has
    less than ``renew_before`` left; it starts issuing ``propagation`` after the bundle holding
    it was published; the old CA leaves the bundle once the last certificate it can have signed
    has expired (issuance is capped at ``max_serving_lifetime``).
    """

    ca_lifetime: timedelta = DEFAULT_CA_LIFETIME
    renew_before: timedelta = timedelta(days=60)
    propagation: timedelta = timedelta(days=1)
    max_serving_lifetime: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        for value in (self.ca_lifetime, self.propagation, self.max_serving_lifetime):
            _check_lifetime(value)
        if self.renew_before <= self.propagation + self.max_serving_lifetime + CLOCK_SKEW:
            raise CAError("renew_before must exceed propagation + max_serving_lifetime + skew")
        if self.renew_before >= self.ca_lifetime:
            raise CAError("renew_before must be shorter than the CA lifetime")


@dataclass(frozen=True)
class Retired:
    """A former CA kept in the bundle until ``drop_after`` (its last certificate's expiry)."""

    cert_pem: bytes
    drop_after: datetime


@dataclass(frozen=True)
class CAState:
    """The CA that issues, the CA waiting for its bundle to propagate, and former CAs."""

    active: CA
    pending: CA | None = None
    published_at: datetime | None = None
    """When the bundle holding ``pending`` was first published (None: not yet)."""
    retired: tuple[Retired, ...] = ()

    def bundle(self) -> bytes:
        """The trust bundle to publish: every CA whose certificates may still be presented."""
        staged = [self.pending] if self.pending is not None else []
        return bundle([self.active, *staged, *(r.cert_pem for r in self.retired)])

    def mark_published(self, now: datetime) -> CAState:
        """Record that the bundle holding ``pending`` is published (idempotent)."""
        if self.pending is None or self.published_at is not None:
            return self
        return replace(self, published_at=_require_aware(now))


def ca_conforms(ca: CA, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> bool:
    """True if the CA has this version's name constraints and key usage (else it is rotated)."""
    if ca_permitted_domains(ca) != sorted(permitted_domains(cluster_domain)):
        return False
    ku = ca.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    return ku.key_cert_sign and ku.crl_sign and not ku.digital_signature


def next_transition(
    state: CAState, policy: RotationPolicy, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
) -> datetime:
    """The earliest time at which :func:`rotate` would change ``state``."""
    due = [r.drop_after for r in state.retired] + [state.active.not_after]
    if state.pending is None:
        if not ca_conforms(state.active, cluster_domain):
            return datetime.min.replace(tzinfo=UTC)
        due.append(state.active.not_after - policy.renew_before)
    elif state.published_at is None:
        return datetime.min.replace(tzinfo=UTC)
    else:
        due += [state.published_at + policy.propagation, state.pending.not_after]
    return min(due)


def rotate(
    state: CAState,
    now: datetime,
    policy: RotationPolicy,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    *,
    new_ca: Callable[[datetime], CA] | None = None,
) -> CAState:
    """The CA state at ``now`` (pure except for generating a key when a new CA is staged).

    Steps: stage a new CA (when the active one nears expiry or does not conform); promote it
    once its bundle has been published for ``policy.propagation``; keep the old CA as retired
    until its last certificate expired, then drop it. An expired active CA cannot overlap: it
    is replaced at once.
    """
    _require_aware(now)

    def make(at: datetime) -> CA:
        if new_ca is not None:
            return new_ca(at)
        return generate_ca(CA_COMMON_NAME, at, policy.ca_lifetime, cluster_domain=cluster_domain)

    retired = tuple(r for r in state.retired if r.drop_after > now)
    active, pending, published = state.active, state.pending, state.published_at
    if pending is not None and now >= pending.not_after:
        pending, published = None, None
    if now >= active.not_after:  # no overlap is possible any more
        active = pending if pending is not None else make(now)
        return CAState(active=active, retired=retired)
    if pending is None:
        if now >= active.not_after - policy.renew_before or not ca_conforms(active, cluster_domain):
            pending, published = make(now), None
    elif published is not None and now >= published + policy.propagation:
        last = min(active.not_after, now + policy.max_serving_lifetime + CLOCK_SKEW)
        retired = (*retired, Retired(active.cert_pem, last))
        active, pending, published = pending, None, None
    return CAState(active=active, pending=pending, published_at=published, retired=retired)
