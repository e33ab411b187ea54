"""Evidence collection of container logs, which the kwok cluster cannot serve.

A small HTTP server on loopback answers the few API paths ``collect`` reads, with a pod whose
``guard`` sidecar restarted once: the current and previous logs are both collected, the guard's
audit lines (as ``secureai.guard.audit`` writes them) are extracted, a long log keeps its newest
bytes and says so, and a failing log read is an error entry. The rest of collection runs on the
real API server in tests/integration/test_evidence.py.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from secureai.guard.audit import AuditLog
from secureai.k8s import evidence as kev
from secureai.k8s.client import Credentials, KubeClient
from secureai.pii import Redactor

NS = "team-a"
NAME = "web"
POD = "web-0"
LIMIT = 4096


def _audit_line(path: str) -> str:
    out = io.StringIO()
    AuditLog(Redactor(), out).write(
        client="ab12",
        method="POST",
        path=path,
        status=200,
        bytes_in=1,
        bytes_out=2,
        started=0.0,
        redactions={},
    )
    return out.getvalue()


GUARD_LOG = ("guard listening\n" + _audit_line("/v1/now")).encode()
GUARD_PREVIOUS = _audit_line("/v1/before").encode() + b"guard crashed\n"
LONG_LOG = b"".join(b"line %06d\n" % i for i in range(2000))  # 24 000 bytes


def _pod() -> dict[str, Any]:
    labels = {"secureai.dev/workload": NAME, "secureai.dev/kind": "inference"}
    return {
        "metadata": {"name": POD, "namespace": NS, "uid": "pod-uid", "labels": labels},
        "spec": {
            "initContainers": [{"name": "guard", "restartPolicy": "Always"}],
            "containers": [{"name": "server"}, {"name": "broken"}],
        },
        "status": {
            "initContainerStatuses": [{"name": "guard", "restartCount": 1}],
            "containerStatuses": [
                {"name": "server", "restartCount": 0},
                {"name": "broken", "restartCount": 0},
            ],
        },
    }


SEEN: list[str] = []


async def _handler(request: web.Request) -> web.StreamResponse:
    path = request.path
    SEEN.append(request.path_qs)
    if path.endswith(f"/pods/{POD}/log"):
        container = request.query["container"]
        previous = request.query.get("previous") == "true"
        if container == "broken":
            return web.json_response(
                {"kind": "Status", "message": "container broken is waiting"}, status=400
            )
        body = {
            ("guard", False): GUARD_LOG,
            ("guard", True): GUARD_PREVIOUS,
            ("server", False): LONG_LOG,
        }.get((container, previous))
        if body is None:
            return web.json_response({"message": "no such log"}, status=404)
        return web.Response(body=body, content_type="text/plain")
    if path.endswith(f"/secureinferenceservices/{NAME}"):
        return web.json_response(
            {"kind": "SecureInferenceService", "metadata": {"name": NAME, "uid": "cr-uid"}}
        )
    if "/secureinferenceservices/" in path:
        return web.json_response({"message": "not found"}, status=404)
    if path.endswith("/pods"):
        return web.json_response({"items": [_pod()]})
    return web.json_response({"items": []})  # children, events, policies


@pytest.fixture
async def kube() -> AsyncIterator[KubeClient]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", _handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = KubeClient(Credentials(f"http://127.0.0.1:{port}", False, None, None))
    yield client
    await client.close()
    await runner.cleanup()


async def test_logs_previous_logs_audit_lines_tail_and_errors(kube: KubeClient) -> None:
    files = await kev.collect(kube, [("SecureInferenceService", NS, NAME)], log_limit_bytes=LIMIT)
    base = f"{NS}/SecureInferenceService/{NAME}"
    logs = f"{base}/logs/{POD}"
    assert files[f"{logs}/guard.log"] == GUARD_LOG
    assert files[f"{logs}/guard.previous.log"] == GUARD_PREVIOUS
    assert files[f"{logs}/server.log"] == LONG_LOG[-LIMIT:]
    assert f"{logs}/server.previous.log" not in files  # no restart, no previous log
    audit = [json.loads(line) for line in files[f"{base}/guard-audit.jsonl"].splitlines()]
    assert sorted((a["previous"], json.loads(a["line"])["path"]) for a in audit) == [
        (False, "/v1/now"),
        (True, "/v1/before"),
    ]
    assert all(a["pod"] == POD and a["container"] == "guard" for a in audit)
    index = json.loads(files["index.json"])
    entry = index["workloads"][0]
    assert entry["truncated"] == [
        {"item": f"{logs}/server.log", "bytes": len(LONG_LOG), "kept": LIMIT}
    ]
    assert entry["errors"] == [
        {
            "item": f"{logs}/broken.log",
            "status": 400,
            "reason": "Bad Request",
            "message": "container broken is waiting",
        }
    ]


def test_audit_lines_are_recognised_among_other_output() -> None:
    mixed = b"starting\n" + _audit_line("/v1/predict?x=1").encode() + b'{"level":"info"}\nnot {\n'
    lines = kev.audit_lines(mixed)
    assert len(lines) == 1
    assert json.loads(lines[0])["path"] == "/v1/predict"


async def test_namespace_wide_lists_are_read_once_per_namespace(kube: KubeClient) -> None:
    SEEN.clear()
    workloads = [("SecureInferenceService", NS, n) for n in (NAME, "other", "third")]
    files = await kev.collect(kube, workloads)
    assert SEEN.count(f"/api/v1/namespaces/{NS}/events") == 1
    assert SEEN.count(f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies") == 1
    for name in (NAME, "other", "third"):
        assert f"{NS}/SecureInferenceService/{name}/events.json" in files


def test_secret_values_and_their_last_applied_copy_are_replaced_by_digests() -> None:
    secret = {
        "kind": "Secret",
        "metadata": {
            "name": "tls",
            "annotations": {
                kev.LAST_APPLIED: '{"data":{"tls.key":"c2VjcmV0"}}',
                "other": "kept",
            },
            "managedFields": [{"manager": "kubectl"}],
        },
        "data": {"tls.key": "c2VjcmV0"},
    }
    out = kev._redact_secret(secret)
    assert out["data"] == {"tls.key": "sha256:" + hashlib.sha256(b"secret").hexdigest()}
    assert out["metadata"]["annotations"][kev.LAST_APPLIED].startswith("sha256:")
    assert out["metadata"]["annotations"]["other"] == "kept"
    assert out["metadata"]["managedFields"] == [{"manager": "kubectl"}]
    assert "c2VjcmV0" not in json.dumps(out)
    assert secret["data"] == {"tls.key": "c2VjcmV0"}  # the input is left alone
