"""The model server's readiness and liveness (issue 12, point 7) as rendered.

Behind the guard the model server listens on loopback, so its probes go through the guard's
relay; without the guard they go to the server directly (it terminates TLS itself).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from secureai.api import Policy, SecureInferenceService, parse_workload
from secureai.guard.config import parse_config
from secureai.render import render
from secureai.render.inference import GUARD_METRICS_PORT, guard_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POLICY = Policy.from_yaml(EXAMPLES / "policy.yaml")


def _cr(name: str, **spec: Any) -> SecureInferenceService:
    body = yaml.safe_load((EXAMPLES / name).read_text())
    body["spec"].update(spec)
    cr = parse_workload(body)
    assert isinstance(cr, SecureInferenceService)
    return cr


def _server(cr: SecureInferenceService) -> dict[str, Any]:
    deployment = next(m for m in render(cr, POLICY) if m["kind"] == "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "server")


def test_guarded_server_is_probed_through_the_guard_relay() -> None:
    cr = _cr(
        "inference-gpu-guarded.yaml",
        probes={"readiness": {"path": "/ready", "periodSeconds": 2}, "liveness": {"port": 9001}},
    )
    server = _server(cr)
    ready, live = server["readinessProbe"], server["livenessProbe"]
    assert ready["httpGet"] == {
        "path": "/upstream/ready",
        "port": GUARD_METRICS_PORT,
        "scheme": "HTTP",
    }
    assert ready["periodSeconds"] == 2
    assert live["httpGet"]["path"] == "/upstream/live"
    checks = guard_config(cr)["upstream_checks"]
    assert checks == {
        "ready": {"port": cr.spec.port, "path": "/ready"},
        "live": {"port": 9001, "path": None},
    }
    parsed = parse_config(json.dumps(guard_config(cr)))
    assert parsed.upstream_checks["ready"].path == "/ready"


def test_unguarded_server_is_probed_directly() -> None:
    cr = _cr("inference-cpu.yaml", probes={"readiness": {"path": "/ready"}})
    server = _server(cr)
    assert server["readinessProbe"]["httpGet"] == {
        "path": "/ready",
        "port": cr.spec.port,
        "scheme": "HTTPS",
    }
    assert server["livenessProbe"]["tcpSocket"] == {"port": cr.spec.port}


def test_safe_defaults_never_kill_a_slow_model_load_quickly() -> None:
    server = _server(_cr("inference-cpu.yaml"))
    ready, live = server["readinessProbe"], server["livenessProbe"]
    assert ready["tcpSocket"] == live["tcpSocket"] == {"port": 8080}
    assert ready["periodSeconds"] * ready["failureThreshold"] == 15
    assert live["periodSeconds"] * live["failureThreshold"] >= 60


def test_a_probe_path_must_be_an_absolute_http_path() -> None:
    for bad in ("ready", "/a b", "/\u00e9"):
        with pytest.raises(ValidationError, match="path"):
            _cr("inference-cpu.yaml", probes={"readiness": {"path": bad}})
