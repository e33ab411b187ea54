"""The guard relays the model server's readiness and liveness for the kubelet.

Behind the guard the model server listens on loopback only, out of the kubelet's reach; the
server container's probes ask the guard's metrics port, which asks the server.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import LOOPBACK, free_port, start_guard


class _Server(ThreadingHTTPServer):
    ready = False


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/ready":
            code = 200 if self.server.ready else 503
        elif self.path == "/healthz":
            code = 200
        else:
            code = 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def model_server() -> Iterator[_Server]:
    server = _Server((LOOPBACK, free_port()), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_relay_follows_the_model_servers_own_answers(model_server: _Server, tmp_path: Path) -> None:
    port = model_server.server_address[1]
    g = start_guard(
        tmp_path,
        port,
        tls=False,
        ready_path="/healthz",
        upstream_checks={
            "ready": {"port": port, "path": "/ready"},
            "live": {"port": port, "path": "/healthz"},
        },
    )
    try:
        assert _status(g.metrics_port, "/upstream/ready") == 503
        assert _status(g.metrics_port, "/upstream/live") == 200
        model_server.ready = True
        assert _status(g.metrics_port, "/upstream/ready") == 200
        assert _status(g.metrics_port, "/upstream/other") == 404
    finally:
        g.stop()


def test_tcp_check_without_a_path_and_a_closed_port(tmp_path: Path) -> None:
    closed = free_port()
    g = start_guard(
        tmp_path,
        closed,
        tls=False,
        ready_path="/healthz",
        upstream_checks={"ready": {"port": closed, "path": None}},
    )
    try:
        assert _status(g.metrics_port, "/upstream/ready") == 503
        # no liveness check configured: the relay says so rather than passing
        assert _status(g.metrics_port, "/upstream/live") == 404
    finally:
        g.stop()
