"""Children of a SecureInferenceService."""

from __future__ import annotations

import json
from typing import Any

from secureai.api import Policy, SecureInferenceService
from secureai.api.kinds import HealthCheck
from secureai.render.meta import metadata, selector
from secureai.render.pod import PodParts, helper_container, pod_template

GUARD_PORT = 8443
GUARD_METRICS_PORT = 9090
SERVICE_PORT = 443
TLS_DIR = "/etc/secureai/tls"
GUARD_DIR = "/etc/secureai/guard"
MODEL_DIR = "/models"
SIGNER_DIR = "/etc/secureai/model-signer"
ALL_REDACT_TYPES = ["email", "phone", "payment_card", "us_ssn", "ip_address", "iban", "secret"]


def tls_secret_name(cr: SecureInferenceService) -> str:
    tls = cr.spec.tls
    if tls is not None and tls.mode == "Secret" and tls.secret_name:
        return tls.secret_name
    return f"{cr.metadata.name}-tls"


def operator_issues_tls(cr: SecureInferenceService) -> bool:
    return cr.spec.tls is None or cr.spec.tls.mode == "OperatorCA"


def guard_enabled(cr: SecureInferenceService) -> bool:
    return cr.spec.guard is not None and cr.spec.guard.enabled


def serving_port(cr: SecureInferenceService) -> int:
    return GUARD_PORT if guard_enabled(cr) else cr.spec.port


def service_dns_names(
    cr: SecureInferenceService, cluster_domain: str = "cluster.local"
) -> list[str]:
    """Namespace-qualified names only: a bare ``name`` would be valid in every namespace."""
    name, ns = cr.metadata.name, cr.metadata.namespace
    return [f"{name}.{ns}.svc", f"{name}.{ns}.svc.{cluster_domain}"]


# (period, failure threshold): readiness reacts in seconds; liveness waits a minute, so a slow
# model load is not killed in a restart loop
PROBE_DEFAULTS = {"ready": (5, 3), "live": (10, 6)}


def _check(cr: SecureInferenceService, which: str) -> HealthCheck:
    probes = cr.spec.probes
    found = (probes.readiness if which == "ready" else probes.liveness) if probes else None
    return found or HealthCheck()


def upstream_checks(cr: SecureInferenceService) -> dict[str, dict[str, Any]]:
    """The model server's checks as the guard relays them (always loopback)."""
    out = {}
    for which in PROBE_DEFAULTS:
        check = _check(cr, which)
        out[which] = {"port": check.port or cr.spec.port, "path": check.path}
    return out


def model_server_probes(cr: SecureInferenceService) -> dict[str, Any]:
    """readinessProbe and livenessProbe of the model server container.

    Behind the guard the server listens on loopback, so the kubelet asks the guard's relay;
    without it the server terminates TLS itself and is asked directly.
    """
    out = {}
    for which, field_name in (("ready", "readinessProbe"), ("live", "livenessProbe")):
        check = _check(cr, which)
        period, failures = PROBE_DEFAULTS[which]
        port = check.port or cr.spec.port
        action: dict[str, Any]
        if guard_enabled(cr):
            action = {
                "httpGet": {
                    "path": f"/upstream/{which}",
                    "port": GUARD_METRICS_PORT,
                    "scheme": "HTTP",
                }
            }
        elif check.path:
            action = {"httpGet": {"path": check.path, "port": port, "scheme": "HTTPS"}}
        else:
            action = {"tcpSocket": {"port": port}}
        out[field_name] = action | {
            "initialDelaySeconds": check.initial_delay_seconds or 0,
            "periodSeconds": check.period_seconds or period,
            "timeoutSeconds": check.timeout_seconds or 1,
            "failureThreshold": check.failure_threshold or failures,
            "successThreshold": 1,
        }
    return out


def guard_config(cr: SecureInferenceService) -> dict[str, Any]:
    """The guard's configuration file (contract: secureai.guard.config.GuardConfig)."""
    guard = cr.spec.guard
    assert guard is not None
    redaction = guard.redaction
    rate = guard.rate_limit
    return {
        "listen_port": GUARD_PORT,
        "upstream": f"http://127.0.0.1:{cr.spec.port}",
        "tls_cert_file": f"{TLS_DIR}/tls.crt",
        "tls_key_file": f"{TLS_DIR}/tls.key",
        "metrics_port": GUARD_METRICS_PORT,
        "max_body_bytes": guard.max_body_bytes or 1048576,
        "rate_limit_rps": rate.requests_per_second if rate else 10.0,
        "rate_limit_burst": rate.burst if rate else 20,
        "max_concurrency": guard.max_concurrency or 64,
        "upstream_timeout_s": guard.upstream_timeout_seconds or 30.0,
        "redact_types": list(redaction.types)
        if redaction and redaction.types
        else ALL_REDACT_TYPES,
        "custom_patterns": [
            {"name": p.name, "regex": p.regex}
            for p in (redaction.custom_patterns or [] if redaction else [])
        ],
        "deny_patterns": list(guard.deny_patterns or []),
        "client_identity_header": None,
        "redact_request_bodies": bool(redaction and redaction.requests),
        "allow_uninspectable_paths": list(guard.allow_uninspectable_paths or []),
        "upstream_checks": upstream_checks(cr),
    }


def _parts(cr: SecureInferenceService, policy: Policy) -> PodParts:
    spec = cr.spec
    model = spec.model
    bundle = model.bundle_file or "model.sig.json"
    parts = PodParts()
    model_volume: dict[str, Any] = {"name": "model", "mountPath": MODEL_DIR, "readOnly": True}
    if model.sub_path:
        model_volume["subPath"] = model.sub_path
    parts.volumes += [
        {
            "name": "model",
            "persistentVolumeClaim": {"claimName": model.claim_name, "readOnly": True},
        },
        {"name": "model-signer", "configMap": {"name": model.signer_key_config_map}},
        {"name": "tls", "secret": {"secretName": tls_secret_name(cr), "defaultMode": 0o440}},
    ]
    parts.init_containers.append(
        helper_container(
            "model-verify",
            policy,
            [
                "model",
                "verify",
                "--model",
                MODEL_DIR,
                "--public-key",
                f"{SIGNER_DIR}/signer.pub",
                "--bundle",
                f"{MODEL_DIR}/{bundle}",
                "--report",
                "/dev/termination-log",
            ],
            [model_volume, {"name": "model-signer", "mountPath": SIGNER_DIR, "readOnly": True}],
        )
    )
    parts.mounts.append(model_volume)
    parts.ports.append({"name": "http", "containerPort": spec.port, "protocol": "TCP"})
    parts.probes = model_server_probes(cr)
    parts.env.append({"name": "SECUREAI_MODEL_DIR", "value": MODEL_DIR})
    parts.env.append({"name": "SECUREAI_PORT", "value": str(spec.port)})
    tls_mount = {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}
    if guard_enabled(cr):
        parts.env.append({"name": "SECUREAI_LISTEN_HOST", "value": "127.0.0.1"})
        parts.volumes.append(
            {"name": "guard-config", "configMap": {"name": f"{cr.metadata.name}-guard"}}
        )
        guard = helper_container(
            "guard",
            policy,
            ["guard", "--config", f"{GUARD_DIR}/guard.json"],
            [tls_mount, {"name": "guard-config", "mountPath": GUARD_DIR, "readOnly": True}],
        )
        guard["ports"] = [
            {"name": "https", "containerPort": GUARD_PORT, "protocol": "TCP"},
            {"name": "guard-metrics", "containerPort": GUARD_METRICS_PORT, "protocol": "TCP"},
        ]
        guard["readinessProbe"] = {
            "httpGet": {"path": "/readyz", "port": GUARD_METRICS_PORT},
            "periodSeconds": 5,
        }
        parts.sidecars.append(guard)
    else:
        parts.env.append({"name": "SECUREAI_TLS_DIR", "value": TLS_DIR})
        parts.mounts.append(tls_mount)
    return parts


def render_inference(cr: SecureInferenceService, policy: Policy) -> list[dict[str, Any]]:
    spec = cr.spec
    name = cr.metadata.name
    out: list[dict[str, Any]] = []
    if operator_issues_tls(cr):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata(cr, tls_secret_name(cr), "tls"),
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": "", "tls.key": "", "ca.crt": ""},
            }
        )
    if guard_enabled(cr):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(cr, f"{name}-guard", "guard"),
                "data": {"guard.json": json.dumps(guard_config(cr), indent=2, sort_keys=True)},
            }
        )
    out.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(cr, name, "server"),
            "spec": {
                "replicas": spec.replicas,
                "revisionHistoryLimit": 3,
                "selector": {"matchLabels": selector(cr)},
                "template": pod_template(cr, policy, "server", _parts(cr, policy)),
            },
        }
    )
    out.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(cr, name, "service"),
            "spec": {
                "type": "ClusterIP",
                "selector": selector(cr),
                "ports": [
                    {
                        "name": "https",
                        "port": SERVICE_PORT,
                        "targetPort": serving_port(cr),
                        "protocol": "TCP",
                    }
                ],
            },
        }
    )
    if spec.replicas > 1:
        out.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": metadata(cr, name, "disruption-budget"),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(cr)}},
            }
        )
    return out
