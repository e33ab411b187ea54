"""The operator's internal CA: ECDSA P-256 root, short-lived serving certificates, rotation.

Time is always injected (``now``); nothing here reads the clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    "CLOCK_SKEW",
    "DEFAULT_CA_LIFETIME",
    "DEFAULT_SERVING_LIFETIME",
    "CAError",
    "ServingCert",
    "bundle",
    "bundle_certs",
    "cert_dns_names",
    "cert_expiry",
    "fingerprint",
    "generate_ca",
    "issue_serving_cert",
    "needs_renewal",
    "prune_bundle",
    "verify_chain",
]

DEFAULT_CA_LIFETIME: Final = timedelta(days=365)
DEFAULT_SERVING_LIFETIME: Final = timedelta(hours=24)
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


def generate_ca(common_name: str, now: datetime, lifetime: timedelta = DEFAULT_CA_LIFETIME) -> CA:
    """A new self-signed ECDSA P-256 root valid from ``now - CLOCK_SKEW`` to ``now + lifetime``."""
    _require_aware(now)
    _check_lifetime(lifetime)
    if not common_name or len(common_name) > _MAX_CN:
        raise CAError("CA common name must be 1 to 64 characters")
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
                digital_signature=True,
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
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return CA(key_pem=_key_pem(key), cert_pem=_pem(cert))


def _validate_dns_names(dns_names: Sequence[str]) -> list[str]:
    if isinstance(dns_names, str):
        raise CAError("dns_names must be a list of names, not a string")
    names: list[str] = []
    for raw in dns_names:
        name = raw.lower().rstrip(".")
        labels = name.split(".")
        body = labels[1:] if labels[0] == "*" else labels
        if len(name) > 253 or not body or not all(_DNS_LABEL.match(lbl) for lbl in body):
            raise CAError(f"invalid DNS name: {raw!r}")
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
    names = _validate_dns_names(dns_names)
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
