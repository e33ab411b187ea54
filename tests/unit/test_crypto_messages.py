"""The CA's refusals say what was refused, and the leftover lock is never taken through a link.

A mutation sample of `crypto/` (docs/testing.md) left these alive: each CA error could lose
or garble its one-line reason (the operator puts it in the CR's status and its log), and
`_try_lock` could open a symlink planted in an output directory.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from secureai.crypto import envelope, signing
from secureai.crypto.ca import (
    CAError,
    bundle,
    generate_ca,
    issue_serving_cert,
    permitted_domains,
    prune_bundle,
    service_dns_names,
    verify_chain,
)

T0 = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _refusal(call: object, *args: object, **kwargs: object) -> str:
    assert callable(call)
    with pytest.raises(CAError) as err:
        call(*args, **kwargs)
    return str(err.value)


def test_names_are_refused_with_what_and_why() -> None:
    assert _refusal(permitted_domains, "bad_domain") == "invalid cluster domain: 'bad_domain'"
    assert (
        _refusal(permitted_domains, "cluster.10")
        == "invalid cluster domain: 'cluster.10' (looks like an IP address)"
    )
    assert (
        _refusal(service_dns_names, "Web", "ns")
        == "invalid service name: 'Web' (must be a DNS-1123 label)"
    )
    assert (
        _refusal(service_dns_names, "web", "a.b")
        == "invalid namespace: 'a.b' (must be a DNS-1123 label)"
    )
    # a trailing dot and capitals are the same name
    assert permitted_domains("Cluster.Local.") == ["svc", "svc.cluster.local"]


def test_ca_refusals_name_the_problem() -> None:
    assert _refusal(generate_ca, "", T0) == "CA common name must be 1 to 64 characters"
    assert _refusal(generate_ca, "x" * 65, T0) == "CA common name must be 1 to 64 characters"
    ca = generate_ca("secureai-ca", T0, lifetime=10 * DAY)
    pem = bundle([ca])
    assert (
        _refusal(prune_bundle, pem, T0 + 11 * DAY)
        == "every CA certificate in the bundle has expired"
    )
    serving = issue_serving_cert(ca, service_dns_names("web", "ns"), T0, lifetime=DAY)
    # an empty bundle is refused before verify_chain's own emptiness check can see it
    assert (
        _refusal(verify_chain, serving.cert_pem, b"", T0)
        == "CA bundle is not a list of PEM certificates"
    )


def test_a_statement_of_another_type_is_named_as_such() -> None:
    # reached only once the signature verified: the signer signed something else
    for statement in ({}, {"_type": "https://in-toto.io/Statement/v0.1"}):
        with pytest.raises(signing.SignatureError) as err:
            signing._expected_digests(statement)
        assert str(err.value) == "malformed bundle: not an in-toto v1 statement"


def test_a_symlinked_partial_is_never_locked(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert envelope._try_lock(link) is None
    fd = envelope._try_lock(target)
    assert fd is not None
    os.close(fd)
