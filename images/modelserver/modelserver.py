"""A small model server for secureai's real-node tests (standard library only).

GET  /healthz          200 once the process serves (liveness)
GET  /ready            200 once the model is loaded, 503 before (readiness); loading takes
                       --load-seconds, or waits for the file --ready-file to exist
GET  /v1/models        the model directory: files with size and sha256
GET  /files/NAME       one model file
POST /v1/echo          answers with the request body, same content type (redaction tests)
POST /v1/generate      JSON {"prompt": ...} -> {"text": ...}: the prompt echoed back
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def model_listing(root: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    if not root.is_dir():
        return out
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        out.append({"name": str(path.relative_to(root)), "size": path.stat().st_size, "sha256": digest})
    return out


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], model_dir: Path) -> None:
        super().__init__(addr, Handler)
        self.model_dir = model_dir
        self.ready = threading.Event()


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    # headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the peer's delayed ACK add ~40 ms to every kept-alive answer
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        sys.stderr.write("%s %s\n" % (self.command, self.path.split("?", 1)[0]))

    def reply(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self.reply(200, b'{"status":"alive"}')
        elif path == "/ready":
            ok = self.server.ready.is_set()
            self.reply(200 if ok else 503, json.dumps({"ready": ok}).encode())
        elif path == "/v1/models":
            self.reply(200, json.dumps(model_listing(self.server.model_dir)).encode())
        elif path.startswith("/files/"):
            target = (self.server.model_dir / path[len("/files/"):]).resolve()
            if self.server.model_dir.resolve() not in target.parents or not target.is_file():
                self.reply(404, b'{"error":"not found"}')
            else:
                self.reply(200, target.read_bytes(), "application/octet-stream")
        else:
            self.reply(404, b'{"error":"not found"}')

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?", 1)[0]
        if path == "/v1/echo":
            self.reply(200, body, self.headers.get("Content-Type") or "text/plain")
        elif path == "/v1/generate":
            try:
                prompt = str(json.loads(body or b"{}").get("prompt", ""))
            except (ValueError, AttributeError):
                self.reply(400, b'{"error":"body must be a JSON object"}')
                return
            self.reply(200, json.dumps({"text": prompt}).encode())
        else:
            self.reply(404, b'{"error":"not found"}')


def load(server: Server, seconds: float, ready_file: str | None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or (ready_file and not os.path.exists(ready_file)):
        time.sleep(0.1)
    server.ready.set()


def main() -> int:
    # defaults from the environment the operator renders (SECUREAI_MODEL_DIR, SECUREAI_PORT,
    # SECUREAI_LISTEN_HOST: loopback behind the guard, SECUREAI_TLS_DIR: serve TLS without one)
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="modelserver")
    parser.add_argument("--model-dir", default=env("SECUREAI_MODEL_DIR", "/models"))
    parser.add_argument("--port", type=int, default=int(env("SECUREAI_PORT", "8080")))
    parser.add_argument("--host", default=env("SECUREAI_LISTEN_HOST", "0.0.0.0"))  # noqa: S104
    parser.add_argument("--tls-dir", default=env("SECUREAI_TLS_DIR"))
    parser.add_argument("--load-seconds", type=float, default=0.0)
    parser.add_argument("--ready-file")
    args = parser.parse_args()
    server = Server((args.host, args.port), Path(args.model_dir))
    if args.tls_dir:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(f"{args.tls_dir}/tls.crt", f"{args.tls_dir}/tls.key")
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=load, args=(server, args.load_seconds, args.ready_file), daemon=True).start()
    print(f"modelserver: serving {args.model_dir} on {args.host}:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
