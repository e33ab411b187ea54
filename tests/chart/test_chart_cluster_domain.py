"""Issue 14, item 6: the cluster domain is a chart value, and what the operator does with it.

The chart's `clusterDomain` reaches the operator as SECUREAI_CLUSTER_DOMAIN; the operator's CA
then permits only `svc` and `svc.<clusterDomain>` (X.509 name constraints) and serving
certificates carry `<service>.<namespace>.svc[.<clusterDomain>]`. `openssl verify` accepts a
certificate for the configured domain and refuses one for the default domain that a holder of
the CA key signs with openssl itself, bypassing the operator's own name checks.

Needs the pinned helm binary (hack/build.sh) and openssl; no cluster.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_chart_offline import CHART, NAMESPACE, RELEASE, helm, one

from secureai.crypto.ca import (
    ca_permitted_domains,
    cert_dns_names,
    generate_ca,
    issue_serving_cert,
    service_dns_names,
)
from secureai.k8s.certs import CLUSTER_DOMAIN_ENV, cluster_domain_from_env

DOMAIN = "corp.example"


def deployment_env(values: dict[str, Any]) -> dict[str, str]:
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_the_chart_hands_its_cluster_domain_to_the_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert deployment_env({})[CLUSTER_DOMAIN_ENV] == "cluster.local"
    env = deployment_env({"clusterDomain": DOMAIN})
    assert env[CLUSTER_DOMAIN_ENV] == DOMAIN
    monkeypatch.setenv(CLUSTER_DOMAIN_ENV, env[CLUSTER_DOMAIN_ENV])
    assert cluster_domain_from_env() == DOMAIN


def test_values_schema_refuses_a_cluster_domain_that_is_not_a_dns_name() -> None:
    for bad in ("Corp.Example", "corp_example", "10.0.0.1", ".corp", "corp..example", ""):
        proc = helm("template", RELEASE, str(CHART), values={"clusterDomain": bad})
        assert proc.returncode != 0, bad
        assert "schema" in proc.stderr.lower(), proc.stderr


def _openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_a_ca_for_the_configured_domain_refuses_names_of_another_domain(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    ca = generate_ca("secureai-ca", now, cluster_domain=DOMAIN)
    assert ca_permitted_domains(ca) == ["svc", f"svc.{DOMAIN}"]
    names = service_dns_names("web", "team-a", DOMAIN)
    assert names == ["web.team-a.svc", f"web.team-a.svc.{DOMAIN}"]
    issued = issue_serving_cert(ca, names, now)
    assert cert_dns_names(issued.cert_pem) == names
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "ca.key").write_bytes(ca.key_pem)
    (tmp_path / "good.crt").write_bytes(issued.cert_pem)
    at = str(int(now.timestamp()))
    good = _openssl("verify", "-attime", at, "-CAfile", "ca.crt", "good.crt", cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    # A certificate for the default domain, signed with the CA key by openssl itself.
    request = _openssl(
        *("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
        *("-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=web.team-a.svc"),
        *("-addext", "subjectAltName=DNS:web.team-a.svc.cluster.local"),
        cwd=tmp_path,
    )
    assert request.returncode == 0, request.stderr
    signed = _openssl(
        *("x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-days", "1", "-copy_extensions", "copyall", "-out", "leaf.crt"),
        cwd=tmp_path,
    )
    assert signed.returncode == 0, signed.stderr
    # openssl dates the leaf from its own clock, which may have reached the next second after
    # `now`: verify a few minutes later, inside both validity periods, so that only the name
    # constraint can refuse it (the flake was "certificate is not yet valid")
    later = str(int(now.timestamp()) + 300)
    refused = _openssl("verify", "-attime", later, "-CAfile", "ca.crt", "leaf.crt", cwd=tmp_path)
    assert refused.returncode != 0
    assert "permitted subtree violation" in refused.stdout + refused.stderr
