"""Internal CA: issuance, chain verification, renewal on an injected clock, rotation overlap."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from secureai.api import SecureInferenceService, parse_workload
from secureai.crypto.ca import (
    CA,
    CLOCK_SKEW,
    CAError,
    bundle,
    bundle_certs,
    ca_permitted_domains,
    cert_dns_names,
    cert_expiry,
    fingerprint,
    generate_ca,
    issue_serving_cert,
    needs_renewal,
    prune_bundle,
    service_dns_names,
    verify_chain,
)
from secureai.render import inference as render_inference
from strategies import EXAMPLES

T0 = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
NAMES = ["web.team-a.svc", "web.team-a.svc.cluster.local"]


@pytest.fixture(scope="module")
def ca() -> CA:
    return generate_ca("secureai-ca", T0, lifetime=90 * DAY)


def test_ca_certificate(ca: CA) -> None:
    cert = ca.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "secureai-ca"
    assert cert.issuer == cert.subject
    assert cert.not_valid_before_utc == T0 - CLOCK_SKEW
    assert cert.not_valid_after_utc == T0 + 90 * DAY == ca.not_after
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert ca.validate() is ca
    assert ca.fingerprint == fingerprint(ca.cert_pem) == fingerprint(ca.private_key.public_key())
    assert fingerprint(ca.cert_pem).startswith("sha256:")


def test_serving_cert(ca: CA) -> None:
    key_pem, cert_pem, not_after = issue_serving_cert(ca, NAMES, T0 + DAY)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert not_after == T0 + 2 * DAY == cert_expiry(cert_pem)
    assert cert.not_valid_before_utc == T0 + DAY - CLOCK_SKEW
    assert cert_dns_names(cert_pem) == NAMES
    assert cert.issuer == ca.certificate.subject
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    private = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert fingerprint(private.public_key()) == fingerprint(cert_pem)
    assert verify_chain(cert_pem, ca.cert_pem, T0 + DAY) == cert
    for name in NAMES:
        verify_chain(cert_pem, ca.cert_pem, T0 + DAY, dns_name=name)


def test_serving_cert_name_handling(ca: CA) -> None:
    issued = issue_serving_cert(ca, ["Web.Team-A.SVC.", "web.team-a.svc", *NAMES], T0)
    assert cert_dns_names(issued.cert_pem) == NAMES
    long_name = ".".join(["x" * 60, "team-a", "svc", "cluster", "local"])
    issued = issue_serving_cert(ca, [long_name], T0)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    assert len(cert.subject) == 0
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    verify_chain(issued.cert_pem, ca.cert_pem, T0)


@pytest.mark.parametrize(
    "names",
    [
        [],
        ["bad name"],
        ["-x.svc"],
        ["a..b"],
        ["x" * 64 + ".svc"],
        "web.svc",
        ["web"],  # bare: the same name in every namespace
        ["www.google.com"],  # outside the CA's permitted domains
        ["10.0.0.1"],  # an IP address as a DNS name
        ["web.team-a.svc.1"],
        ["*.svc"],
        ["*.team-a.svc"],
        ["web.team-a.svc.evil.example"],
        ["web.team-a.svc.cluster.local.evil"],
    ],
)
def test_invalid_dns_names(ca: CA, names: list[str]) -> None:
    with pytest.raises(CAError, match=r"DNS name|at least one|list of names"):
        issue_serving_cert(ca, names, T0)


def test_service_names_are_namespace_qualified() -> None:
    assert service_dns_names("web", "team-a") == NAMES
    assert service_dns_names("web", "team-a", "corp.example") == [
        "web.team-a.svc",
        "web.team-a.svc.corp.example",
    ]
    for bad in (("web.x", "team-a"), ("web", "Team_A"), ("", "team-a")):
        with pytest.raises(CAError):
            service_dns_names(*bad)
    with pytest.raises(CAError, match="cluster domain"):
        service_dns_names("web", "team-a", "1.2.3.4")


def test_ca_is_name_constrained_and_only_signs_certificates(ca: CA) -> None:
    ku = ca.certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert (ku.value.key_cert_sign, ku.value.crl_sign, ku.value.digital_signature) == (
        True,
        True,
        False,
    )
    nc = ca.certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert ca_permitted_domains(ca) == ["svc", "svc.cluster.local"]
    assert nc.value.excluded_subtrees is not None and len(nc.value.excluded_subtrees) == 2
    other = generate_ca("corp", T0, cluster_domain="corp.example")
    assert ca_permitted_domains(other) == ["svc", "svc.corp.example"]
    with pytest.raises(CAError, match="outside the CA's permitted domains"):
        issue_serving_cert(other, NAMES, T0)


def _mint_unchecked(ca: CA, san: x509.GeneralName, now: datetime) -> bytes:
    """What a thief holding the CA key could sign, bypassing issue_serving_cert's checks."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([san]), critical=True)
        .sign(ca.private_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _openssl_verify(tmp_path: Path, ca_pem: bytes, leaf_pem: bytes, at: datetime) -> str:
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    (tmp_path / "leaf.pem").write_bytes(leaf_pem)
    result = subprocess.run(
        [
            *("openssl", "verify", "-attime", str(int(at.timestamp()))),
            *("-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "leaf.pem")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"{result.returncode}:{result.stdout}{result.stderr}"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_rejects_certificates_outside_the_name_constraints(ca: CA, tmp_path: Path) -> None:
    good = issue_serving_cert(ca, NAMES, T0).cert_pem
    assert _openssl_verify(tmp_path, ca.cert_pem, good, T0).startswith("0:")
    for san in (
        x509.DNSName("www.google.com"),
        x509.DNSName("web.team-a.svc.cluster.local.evil"),
        x509.DNSName("kubernetes.default"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        out = _openssl_verify(tmp_path, ca.cert_pem, _mint_unchecked(ca, san, T0), T0)
        assert not out.startswith("0:"), (san, out)
        assert "subtree violation" in out or "excluded subtree" in out, (san, out)
        with pytest.raises(CAError, match="does not verify"):
            verify_chain(_mint_unchecked(ca, san, T0), ca.cert_pem, T0, dns_name="www.google.com")
    inside = _mint_unchecked(ca, x509.DNSName("other.team-b.svc"), T0)
    assert _openssl_verify(tmp_path, ca.cert_pem, inside, T0).startswith("0:")


def test_chain_rejections(ca: CA) -> None:
    issued = issue_serving_cert(ca, NAMES, T0)
    with pytest.raises(CAError, match="does not verify"):
        verify_chain(issued.cert_pem, ca.cert_pem, T0, dns_name="other.svc")
    with pytest.raises(CAError, match="not valid"):
        verify_chain(issued.cert_pem, ca.cert_pem, T0 + DAY + timedelta(seconds=1))
    with pytest.raises(CAError, match="not valid"):
        verify_chain(issued.cert_pem, ca.cert_pem, T0 - timedelta(hours=1))
    stranger = generate_ca("secureai-ca", T0)
    with pytest.raises(CAError, match="does not verify"):
        verify_chain(issued.cert_pem, stranger.cert_pem, T0)
    with pytest.raises(CAError, match="not a PEM certificate"):
        verify_chain(b"junk", ca.cert_pem, T0)


def test_serving_cert_never_outlives_its_ca(ca: CA) -> None:
    late = ca.not_after - timedelta(hours=2)
    issued = issue_serving_cert(ca, NAMES, late)
    assert issued.not_after == ca.not_after
    with pytest.raises(CAError, match="not valid at the requested time"):
        issue_serving_cert(ca, NAMES, ca.not_after)


def test_time_is_injected_and_must_be_aware(ca: CA) -> None:
    far = datetime(2040, 1, 1, tzinfo=UTC)
    later = generate_ca("future", far, lifetime=DAY)
    assert later.certificate.not_valid_before_utc == far - CLOCK_SKEW
    naive = datetime(2031, 3, 1, 12, 0)
    with pytest.raises(CAError, match="timezone-aware"):
        generate_ca("x", naive)
    with pytest.raises(CAError, match="timezone-aware"):
        issue_serving_cert(ca, NAMES, naive)
    with pytest.raises(CAError, match="timezone-aware"):
        needs_renewal(ca.cert_pem, naive)
    with pytest.raises(CAError, match="lifetime"):
        generate_ca("x", T0, lifetime=timedelta(0))


def test_renewal_at_two_thirds_of_lifetime(ca: CA) -> None:
    issued = issue_serving_cert(ca, NAMES, T0)
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    threshold = start + (end - start) * 2 / 3
    clock = T0
    while clock < threshold:
        assert not needs_renewal(issued.cert_pem, clock), clock
        clock += timedelta(minutes=30)
    assert not needs_renewal(issued.cert_pem, threshold - timedelta(seconds=1))
    assert needs_renewal(issued.cert_pem, threshold)
    assert needs_renewal(issued.cert_pem, end + DAY)
    # the renewed certificate is fresh again at the same clock
    renewed = issue_serving_cert(ca, NAMES, threshold)
    assert not needs_renewal(renewed.cert_pem, threshold)
    assert renewed.not_after > issued.not_after
    assert not needs_renewal(issued.cert_pem, T0 + timedelta(hours=12), fraction=0.9)
    assert needs_renewal(issued.cert_pem, T0 + timedelta(hours=12), fraction=0.5)


def test_renewal_of_garbage_and_bad_fraction(ca: CA) -> None:
    assert needs_renewal(b"", T0)
    assert needs_renewal(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", T0)
    with pytest.raises(CAError, match="fraction"):
        needs_renewal(ca.cert_pem, T0, fraction=0)
    with pytest.raises(CAError, match="fraction"):
        needs_renewal(ca.cert_pem, T0, fraction=1.5)


def test_ca_rotation_with_overlapping_bundle(ca: CA) -> None:
    # At 2/3 of the old CA's life a new CA is made and published next to the old one.
    rotate_at = T0 + 60 * DAY
    old_leaf = issue_serving_cert(ca, NAMES, rotate_at - timedelta(hours=1))
    assert needs_renewal(ca.cert_pem, rotate_at)
    new = generate_ca("secureai-ca", rotate_at, lifetime=90 * DAY)
    overlap = bundle([new, ca])
    assert len(bundle_certs(overlap)) == 2
    new_leaf = issue_serving_cert(new, NAMES, rotate_at)
    now = rotate_at + timedelta(hours=1)
    verify_chain(old_leaf.cert_pem, overlap, now)
    verify_chain(new_leaf.cert_pem, overlap, now)
    # Once every old-issued leaf has expired the old CA leaves the bundle.
    trimmed = bundle([new])
    verify_chain(new_leaf.cert_pem, trimmed, now)
    with pytest.raises(CAError, match="does not verify"):
        verify_chain(old_leaf.cert_pem, trimmed, now)


def test_bundle_dedupes_and_prunes(ca: CA) -> None:
    new = generate_ca("secureai-ca-2", T0 + 60 * DAY)
    pem = bundle([ca, new.cert_pem, bundle([ca]), new])
    assert [c.subject for c in bundle_certs(pem)] == [
        ca.certificate.subject,
        new.certificate.subject,
    ]
    assert bundle_certs(prune_bundle(pem, T0 + 89 * DAY)) == bundle_certs(pem)
    assert bundle_certs(prune_bundle(pem, T0 + 91 * DAY)) == [new.certificate]
    with pytest.raises(CAError, match="expired"):
        prune_bundle(pem, T0 + 1000 * DAY)
    with pytest.raises(CAError):
        bundle([])
    with pytest.raises(CAError):
        bundle([b"not pem"])


def test_validate_detects_mismatched_pair(ca: CA) -> None:
    other = generate_ca("other", T0)
    with pytest.raises(CAError, match="does not match"):
        CA(key_pem=other.key_pem, cert_pem=ca.cert_pem).validate()
    leaf = issue_serving_cert(ca, NAMES, T0)
    with pytest.raises(CAError, match="not a CA"):
        CA(key_pem=leaf.key_pem, cert_pem=leaf.cert_pem).validate()


def test_the_operator_asks_only_for_namespace_qualified_names() -> None:
    """What the reconcile hook requests for an inference service is issuable and carries no
    bare name (a certificate for `web` would be valid for `web` in every namespace)."""
    cr = parse_workload(yaml.safe_load((EXAMPLES / "inference-cpu.yaml").read_text()))
    assert isinstance(cr, SecureInferenceService)
    name, ns = cr.metadata.name, cr.metadata.namespace
    for domain in ("cluster.local", "corp.example"):
        names = render_inference.service_dns_names(cr, domain)
        assert names == service_dns_names(name, ns, domain)
        assert all(n.startswith(f"{name}.{ns}.svc") for n in names)
        issued = issue_serving_cert(generate_ca("x", T0, cluster_domain=domain), names, T0)
        assert cert_dns_names(issued.cert_pem) == names
