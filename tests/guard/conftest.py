"""Fixtures for running the real guard process in front of a loopback test upstream."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
LOOPBACK = "127.0.0.1"

# PII and secrets the upstream puts in its responses.
EMAIL = "jane.doe@example.com"
AWS_KEY = "AKIAQ3EGRTVWXH7K2M4P"
CARD = "4111 1111 1111 1111"
PHONE = "+1 415-555-0132"
SECRET_TEXT = f"Contact {EMAIL} or {PHONE}; card {CARD}; key {AWS_KEY}."


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --------------------------------------------------------------------------- certificates


@dataclass
class TestCA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls) -> TestCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secureai guard test CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return cls(key, cert)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cert_path: Path, key_path: Path) -> int:
        """Write a fresh leaf for 127.0.0.1/localhost atomically; return its serial."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "guard")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Key first, then cert, each via rename: the guard may see a mismatched pair for a
        # moment and must keep serving the old one.
        for path, data in (
            (key_path, key_pem),
            (cert_path, cert.public_bytes(serialization.Encoding.PEM)),
        ):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return serial

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.pem().decode())
        return ctx


def peer_serial(port: int, ctx: ssl.SSLContext) -> int:
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


# --------------------------------------------------------------------------- upstream


def _sse_chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


@dataclass
class Upstream:
    port: int = 0
    loop: asyncio.AbstractEventLoop | None = None
    releases: dict[str, asyncio.Event] = field(default_factory=dict)
    held: dict[str, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Request bodies as the model server received them, by X-Probe header.
    seen: dict[str, bytes] = field(default_factory=dict)

    def hold_started(self, name: str) -> threading.Event:
        with self.lock:
            return self.held.setdefault(name, threading.Event())

    def release_hold(self, name: str) -> None:
        assert self.loop is not None

        def _set() -> None:
            self.releases.setdefault(name, asyncio.Event()).set()

        self.loop.call_soon_threadsafe(_set)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)

        async def echo(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                canary = json.loads(body).get("canary", "")
            except ValueError:
                canary = ""
            return web.json_response(
                {
                    "id": "resp-1",
                    "echo": canary,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": SECRET_TEXT}}
                    ],
                    "usage": {"total_tokens": 7},
                }
            )

        async def plain(_: web.Request) -> web.Response:
            return web.Response(text=SECRET_TEXT, content_type="text/plain")

        async def chunked(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            data = SECRET_TEXT.encode()
            for i in range(0, len(data), 3):
                await resp.write(data[i : i + 3])
                await asyncio.sleep(0)
            await resp.write_eof()
            return resp

        async def sse(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for ch in SECRET_TEXT:
                await resp.write(_sse_chunk(ch))
            await resp.write(_sse_chunk(None, "stop"))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp

        async def slow(request: web.Request) -> web.Response:
            await asyncio.sleep(float(request.query.get("delay", "5")))
            return web.Response(text="late")

        async def hold(request: web.Request) -> web.StreamResponse:
            name = request.query["id"]
            release = self.releases.setdefault(name, asyncio.Event())
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            self.hold_started(name).set()
            await resp.write(b"first part;")
            await release.wait()
            await resp.write(b"second part")
            await resp.write_eof()
            return resp

        async def ok(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def record(request: web.Request) -> web.Response:
            self.seen[request.headers.get("X-Probe", "")] = await request.read()
            return web.json_response({"ok": True})

        async def replay(request: web.Request) -> web.StreamResponse:
            """Send the posted text back in the transport named by ?as=."""
            text = (await request.read()).decode()
            how = request.query.get("as", "json")
            if how == "json":
                return web.json_response({"choices": [{"message": {"content": text}}]})
            ctype = {"sse": "text/event-stream", "ndjson": "application/x-ndjson"}.get(
                how, "text/plain"
            )
            resp = web.StreamResponse(headers={"Content-Type": ctype})
            await resp.prepare(request)
            for i in range(0, len(text), 2):
                piece = text[i : i + 2]
                if how == "sse":
                    await resp.write(_sse_chunk(piece))
                elif how == "ndjson":
                    line = {"model": "m", "response": piece, "done": False}
                    await resp.write(json.dumps(line).encode() + b"\n")
                else:
                    await resp.write(piece.encode())
            if how == "sse":
                await resp.write(_sse_chunk(None, "stop") + b"data: [DONE]\n\n")
            elif how == "ndjson":
                await resp.write(b'{"model": "m", "response": "", "done": true}\n')
            await resp.write_eof()
            return resp

        async def binary(_: web.Request) -> web.Response:
            return web.Response(
                body=b"\x00\x01" + SECRET_TEXT.encode(), content_type="application/octet-stream"
            )

        async def mislabelled(_: web.Request) -> web.Response:
            return web.Response(
                body=b"\x00\x01\x02" + SECRET_TEXT.encode(), content_type="application/json"
            )

        async def encoded(_: web.Request) -> web.Response:
            return web.Response(
                body=SECRET_TEXT.encode(),
                headers={"Content-Type": "text/plain", "Content-Encoding": "x-unknown"},
            )

        async def leaky_headers(_: web.Request) -> web.Response:
            return web.json_response(
                {"ok": True}, headers={"X-Debug-User": EMAIL, "X-Trace": f"key={AWS_KEY}"}
            )

        async def plain_sse(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            for ch in SECRET_TEXT:
                await resp.write(_sse_chunk(ch))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp

        async def plain_json_escapes(_: web.Request) -> web.Response:
            escaped = "".join(f"\\u{ord(c):04x}" for c in CARD)
            return web.Response(text='{"card": "' + escaped + '"}', content_type="text/plain")

        app.router.add_route("*", "/echo", echo)
        app.router.add_get("/plain", plain)
        app.router.add_get("/chunked", chunked)
        app.router.add_get("/sse", sse)
        app.router.add_get("/slow", slow)
        app.router.add_get("/hold", hold)
        app.router.add_get("/ok", ok)
        app.router.add_post("/record", record)
        app.router.add_post("/replay", replay)
        app.router.add_get("/binary", binary)
        app.router.add_get("/v2/models/m/infer", binary)
        app.router.add_get("/mislabelled", mislabelled)
        app.router.add_get("/encoded", encoded)
        app.router.add_get("/leaky-headers", leaky_headers)
        app.router.add_get("/plain-sse", plain_sse)
        app.router.add_get("/plain-json-escapes", plain_json_escapes)
        return app


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    started = threading.Event()
    stopping: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        up.loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            runner = web.AppRunner(up.app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, LOOPBACK, 0)
            await site.start()
            server = site._server
            assert server is not None and server.sockets
            up.port = server.sockets[0].getsockname()[1]
            stop = asyncio.Event()
            stopping["stop"] = stop
            started.set()
            await stop.wait()
            await runner.cleanup()

        loop.run_until_complete(main())
        loop.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10), "test upstream did not start"
    yield up
    assert up.loop is not None
    up.loop.call_soon_threadsafe(stopping["stop"].set)
    t.join(10)


# --------------------------------------------------------------------------- guard process


@dataclass
class GuardProc:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    stdout: Path
    stderr: Path
    cert: Path
    key: Path
    ca: TestCA | None

    @property
    def url(self) -> str:
        scheme = "https" if self.ca else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def audit_lines(self) -> list[dict[str, Any]]:
        lines = self.stdout.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(5)
        return self.proc.returncode


def _ready(metrics_port: int, path: str = "/readyz") -> bool:
    try:
        with socket.create_connection((LOOPBACK, metrics_port), timeout=1) as s:
            s.sendall(
                b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start_guard(
    tmp: Path,
    upstream_port: int,
    *,
    tls: bool = True,
    ready_path: str = "/readyz",
    **overrides: Any,
) -> GuardProc:
    tmp.mkdir(parents=True, exist_ok=True)
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    ca = None
    if tls:
        ca = TestCA.create()
        ca.issue(cert, key)
    port, metrics_port = free_port(), free_port()
    cfg: dict[str, Any] = {
        "listen_port": port,
        "upstream": f"http://{LOOPBACK}:{upstream_port}",
        "tls_cert_file": str(cert),
        "tls_key_file": str(key),
        "metrics_port": metrics_port,
        "max_body_bytes": 65536,
        "rate_limit_rps": 50.0,
        "rate_limit_burst": 100,
        "max_concurrency": 16,
        "upstream_timeout_s": 10.0,
        "redact_types": [
            "email",
            "phone",
            "payment_card",
            "us_ssn",
            "ip_address",
            "iban",
            "secret",
        ],
        "custom_patterns": [{"name": "employee_id", "regex": "EMP-[0-9]{6}"}],
        "deny_patterns": ["(?i)ignore (all )?previous instructions"],
        "client_identity_header": "X-Client-Id",
        "listen_host": LOOPBACK,
        "tls_reload_interval_s": 0.1,
        "shutdown_grace_s": 5.0,
    }
    cfg.update(overrides)
    cfg_path = tmp / "guard.json"
    cfg_path.write_text(json.dumps(cfg))
    stdout, stderr = tmp / "stdout.log", tmp / "stderr.log"
    args = [str(PYTHON), "-m", "secureai.guard", "--config", str(cfg_path)]
    if not tls:
        args.append("--insecure-listen")
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=REPO)
    g = GuardProc(proc, port, metrics_port, stdout, stderr, cert, key, ca)
    try:
        wait_until(
            lambda: proc.poll() is not None or _ready(metrics_port, ready_path),
            30,
            "guard readiness",
        )
    except AssertionError:
        g.stop()
        raise
    if proc.poll() is not None:
        raise AssertionError(f"guard exited {proc.returncode}: {g.output()[-2000:]}")
    return g


@pytest.fixture(scope="module")
def guard(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardProc]:
    g = start_guard(tmp_path_factory.mktemp("guard"), upstream.port)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def strict_guard(
    upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuardProc]:
    """Short timeout, one request at a time, small burst: for 504/503/429."""
    g = start_guard(
        tmp_path_factory.mktemp("strict"),
        upstream.port,
        upstream_timeout_s=1.5,
        max_concurrency=1,
        rate_limit_rps=0.5,
        rate_limit_burst=3,
    )
    yield g
    g.stop()


@pytest.fixture(scope="session")
def python_exe() -> str:
    return str(PYTHON) if PYTHON.exists() else sys.executable
