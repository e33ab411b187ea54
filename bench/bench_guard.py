"""Guard overhead: guard vs a direct connection vs nginx, all on loopback, in one run.

    python -m bench.bench_guard [--requests N] [--streams N] [--out FILE] [--no-nginx]

Three targets in front of one upstream process (aiohttp, loopback):
  direct: plain HTTP straight to the upstream (the baseline);
  guard:  ``python -m secureai.guard`` terminating TLS, redacting, rate limiting;
  nginx:  a TLS reverse proxy (Debian ``nginx``, installed with apt-get if missing).
Workloads: a 1 KiB JSON response (sequential latency p50/p99 and concurrent requests/s) and a
2,000-token OpenAI-style SSE stream (TTFB and total time). "added" is target minus direct.
Request counts are bounded; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
SSE_TOKENS = 2000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- upstream


def _json_body() -> bytes:
    words = ("The model answered the question with a short and plain reply. " * 20).strip()
    doc = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 200, "total_tokens": 212},
    }
    base = len(json.dumps(doc).encode())
    doc["choices"][0]["message"]["content"] = words[: 1024 - base]  # type: ignore[index]
    body = json.dumps(doc).encode()
    assert len(body) == 1024, len(body)
    return body


def _sse_body() -> list[bytes]:
    events = []
    for i in range(SSE_TOKENS):
        obj = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "model": "bench",
            "choices": [{"index": 0, "delta": {"content": f" tok{i % 97}"}, "finish_reason": None}],
        }
        events.append(b"data: " + json.dumps(obj).encode() + b"\n\n")
    done = {"id": "chatcmpl-bench", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    events.append(b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n")
    return events


def serve_upstream(port: int) -> None:
    body = _json_body()
    events = _sse_body()

    async def json_handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def sse_handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for ev in events:
            await resp.write(ev)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/json", json_handler)
    app.router.add_get("/sse", sse_handler)
    web.run_app(app, host=LOOPBACK, port=port, access_log=None, print=None)


# --------------------------------------------------------------------------- TLS material


def _write_tls(tmp: Path) -> tuple[Path, Path, Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    now = dt.datetime.now(dt.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = tmp / "ca.crt", tmp / "tls.crt", tmp / "tls.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


# --------------------------------------------------------------------------- processes


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout}s")


@contextmanager
def _process(args: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        _wait_port(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _nginx_path() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def ensure_nginx() -> str | None:
    """nginx, installed from Debian's packages when missing and running as root."""
    if _nginx_path() or os.geteuid() != 0 or not shutil.which("apt-get"):
        return _nginx_path()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "nginx"]
    if subprocess.run(install, env=env, capture_output=True, check=False, timeout=600).returncode:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        subprocess.run(install, env=env, capture_output=True, check=False, timeout=600)
    return _nginx_path()


def _nginx_conf(tmp: Path, port: int, upstream_port: int, cert: Path, key: Path) -> Path:
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = f"""{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  upstream model {{ server {LOOPBACK}:{upstream_port}; keepalive 64; }}
  server {{
    listen {LOOPBACK}:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 100000;
    location / {{
      proxy_pass http://model;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""
    path = tmp / "nginx.conf"
    path.write_text(conf)
    return path


# --------------------------------------------------------------------------- measurement


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _latency(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url) as r:
            await r.read()
            assert r.status == 200, r.status
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _throughput(session: aiohttp.ClientSession, url: str, n: int, conc: int) -> float:
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.get(url) as r:
                await r.read()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return n / (time.perf_counter() - t0)


async def _stream(session: aiohttp.ClientSession, url: str, n: int) -> dict[str, float]:
    ttfb, total = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url) as r:
            first = await r.content.readany()
            ttfb.append((time.perf_counter() - t0) * 1000)
            size = len(first)
            while chunk := await r.content.readany():
                size += len(chunk)
            total.append((time.perf_counter() - t0) * 1000)
            assert size > SSE_TOKENS * 50, size
    return {
        "ttfb_ms_p50": round(statistics.median(ttfb), 3),
        "total_ms_p50": round(statistics.median(total), 3),
        "total_ms_p99": round(_pct(total, 0.99), 3),
    }


async def _measure(base: str, ca: Path | None, requests: int, streams: int) -> dict[str, Any]:
    ctx: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else False
    conn = aiohttp.TCPConnector(ssl=ctx, limit=64)
    async with aiohttp.ClientSession(connector=conn) as s:
        await _latency(s, base + "/json", min(200, requests))  # warm-up
        lat = await _latency(s, base + "/json", requests)
        rps = await _throughput(s, base + "/json", requests, 16)
        await _stream(s, base + "/sse", 2)
        sse = await _stream(s, base + "/sse", streams)
    return {
        "json_1k": {
            "p50_ms": round(statistics.median(lat), 3),
            "p99_ms": round(_pct(lat, 0.99), 3),
            "requests_per_s": round(rps, 1),
        },
        "sse_2000_tokens": sse,
    }


def _added(target: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    return {
        "json_p50_ms": round(target["json_1k"]["p50_ms"] - base["json_1k"]["p50_ms"], 3),
        "json_p99_ms": round(target["json_1k"]["p99_ms"] - base["json_1k"]["p99_ms"], 3),
        "sse_ttfb_p50_ms": round(
            target["sse_2000_tokens"]["ttfb_ms_p50"] - base["sse_2000_tokens"]["ttfb_ms_p50"], 3
        ),
        "sse_total_p50_ms": round(
            target["sse_2000_tokens"]["total_ms_p50"] - base["sse_2000_tokens"]["total_ms_p50"], 3
        ),
        "sse_per_event_us": round(
            (target["sse_2000_tokens"]["total_ms_p50"] - base["sse_2000_tokens"]["total_ms_p50"])
            * 1000
            / SSE_TOKENS,
            1,
        ),
    }


def in_process(rounds: int = 2000) -> dict[str, float]:
    """Redaction alone, without sockets: a 1 KiB JSON answer and one streamed SSE event."""
    from secureai.guard.jsonredact import redact_json_bytes  # noqa: PLC0415
    from secureai.guard.stream import SSEStream  # noqa: PLC0415
    from secureai.pii import Redactor  # noqa: PLC0415

    r = Redactor(custom=[("employee_id", "EMP-[0-9]{6}")])
    body = _json_body()
    events = _sse_body()[:-1]
    for _ in range(50):
        redact_json_bytes(body, r, {})
    t0 = time.perf_counter()
    for _ in range(rounds):
        redact_json_bytes(body, r, {})
    json_us = (time.perf_counter() - t0) / rounds * 1e6
    flt = SSEStream(r, {})
    t0 = time.perf_counter()
    for e in events:
        flt.feed(e)
    sse_us = (time.perf_counter() - t0) / len(events) * 1e6
    return {"json_1k_redaction_us": round(json_us, 1), "sse_event_us": round(sse_us, 1)}


def run(requests: int = 2000, streams: int = 20, nginx: bool = True) -> dict[str, Any]:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-guard-")))
        ca, cert, key = _write_tls(tmp)
        up_port = _free_port()
        py = sys.executable
        stack.enter_context(
            _process(
                [py, "-m", "bench.bench_guard", "--serve-upstream", str(up_port)],
                up_port,
                tmp / "upstream.log",
            )
        )
        g_port, m_port = _free_port(), _free_port()
        cfg = {
            "listen_port": g_port,
            "upstream": f"http://{LOOPBACK}:{up_port}",
            "tls_cert_file": str(cert),
            "tls_key_file": str(key),
            "metrics_port": m_port,
            "rate_limit_rps": 1e6,
            "rate_limit_burst": 1000000,
            "max_concurrency": 256,
            "custom_patterns": [{"name": "employee_id", "regex": "EMP-[0-9]{6}"}],
            "deny_patterns": ["(?i)ignore (all )?previous instructions"],
            "listen_host": LOOPBACK,
        }
        (tmp / "guard.json").write_text(json.dumps(cfg))
        stack.enter_context(  # its audit lines (one per request) go to guard.log
            _process(
                [py, "-m", "secureai.guard", "--config", str(tmp / "guard.json")],
                g_port,
                tmp / "guard.log",
            )
        )
        results: dict[str, Any] = {
            "config": {"requests": requests, "sse_streams": streams, "sse_tokens": SSE_TOKENS}
        }
        results["direct"] = asyncio.run(
            _measure(f"http://{LOOPBACK}:{up_port}", None, requests, streams)
        )
        results["guard"] = asyncio.run(
            _measure(f"https://{LOOPBACK}:{g_port}", ca, requests, streams)
        )
        results["guard"]["added"] = _added(results["guard"], results["direct"])
        nginx_bin = ensure_nginx() if nginx else None
        if nginx_bin:
            n_port = _free_port()
            for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (tmp / d).mkdir()
            conf = _nginx_conf(tmp, n_port, up_port, cert, key)
            stack.enter_context(
                _process([nginx_bin, "-c", str(conf), "-p", str(tmp)], n_port, tmp / "nginx.log")
            )
            results["nginx"] = asyncio.run(
                _measure(f"https://{LOOPBACK}:{n_port}", ca, requests, streams)
            )
            results["nginx"]["added"] = _added(results["nginx"], results["direct"])
        else:
            results["nginx"] = {"skipped": "nginx not installed (apt-get install -y nginx)"}
        results["guard"]["in_process"] = in_process()
        results["target_added_ms"] = {"json_p50": 2.0, "json_p99": 5.0}
        added = results["guard"]["added"]
        results["meets_target"] = added["json_p50_ms"] < 2.0 and added["json_p99_ms"] < 5.0
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_guard", description=__doc__)
    p.add_argument("--requests", type=int, default=2000, help="JSON requests per target")
    p.add_argument("--streams", type=int, default=20, help="SSE streams per target")
    p.add_argument("--no-nginx", action="store_true", help="skip the nginx comparison")
    p.add_argument("--out", type=Path, help="also write the results JSON here")
    p.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    res = run(args.requests, args.streams, nginx=not args.no_nginx)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
