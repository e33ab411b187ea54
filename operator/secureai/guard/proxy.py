"""The guard: a TLS-terminating reverse proxy in front of a loopback model server.

Per request, in order: rate limit (429 + Retry-After), concurrency cap (503 + Retry-After, no
queue: shedding keeps latency bounded and lets the client or load balancer retry elsewhere),
body cap (413), deny patterns (400), then the upstream call (502 on connect/protocol errors,
504 when the upstream sends no headers within ``upstream_timeout_s``). Responses are redacted
by content type; a failure after the headers went out aborts the connection, so a client never
mistakes a truncated body for a complete one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from secureai.guard import bodies
from secureai.guard.audit import AuditLog, ClientHasher
from secureai.guard.config import GuardConfig
from secureai.guard.metrics import CONTENT_TYPE, GuardMetrics
from secureai.guard.stream import BodyFilter, StreamError, body_filter
from secureai.pii import Redactor, normalize

log = logging.getLogger("secureai.guard")

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Connection",
    )
)
_DROP_REQUEST = HOP_BY_HOP | {"host", "content-length", "accept-encoding", "expect"}
_DROP_RESPONSE = HOP_BY_HOP | {"content-length", "content-encoding", "content-md5", "digest"}
_DECODABLE = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
# Headers with no room for personal data: not worth scanning.
_PLAIN_HEADERS = frozenset({"content-type", "content-length", "date", "cache-control", "vary"})
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
_CHUNK = 64 * 1024
_SLICE = 1024
_SMALL_BODY = 256 * 1024


class StartupError(Exception):
    """The guard cannot start; the message is one line."""


# --------------------------------------------------------------------------- TLS


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def _cert_not_after(cert_file: str) -> float | None:
    try:
        from cryptography import x509  # noqa: PLC0415 - only for the expiry gauge

        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
        return cert.not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        return None


class TlsReloader:
    """Serves the newest valid certificate to new connections; live ones keep theirs.

    The listening context never changes: its SNI callback (run on every ClientHello, with or
    without SNI) switches each new connection to the current context. A reload builds a fresh
    context from the files and only replaces the current one if cert and key load as a pair,
    so a half-written rotation is retried on the next check instead of breaking handshakes.
    """

    def __init__(self, cert_file: str, key_file: str, metrics: GuardMetrics) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._metrics = metrics
        self._fingerprint = self._stat()
        self._failed: tuple[Any, ...] | None = None
        self.current = server_context(cert_file, key_file)
        self.listening = server_context(cert_file, key_file)
        self.listening.sni_callback = self._sni
        self.generation = 0
        self._set_expiry()

    def _sni(self, sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self.current

    def _stat(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for f in (self.cert_file, self.key_file):
            try:
                st = os.stat(f)
                out.extend((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
            except OSError:
                out.append(None)
        return tuple(out)

    def _set_expiry(self) -> None:
        not_after = _cert_not_after(self.cert_file)
        if not_after is not None:
            self._metrics.cert_not_after.set(not_after)

    def check(self) -> bool:
        """Reload if the files changed; True when a new certificate is now served."""
        fp = self._stat()
        if fp in (self._fingerprint, self._failed):
            return False
        try:
            ctx = server_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._failed = fp
            self._metrics.tls_reloads.labels(result="error").inc()
            log.warning(
                "certificate reload failed, still serving the previous one: %s", type(exc).__name__
            )
            return False
        self.current = ctx
        self._fingerprint = fp
        self._failed = None
        self.generation += 1
        self._metrics.tls_reloads.labels(result="ok").inc()
        self._set_expiry()
        log.info("certificate reloaded (generation %d)", self.generation)
        return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check()


# --------------------------------------------------------------------------- rate limit


class RateLimiter:
    """Token bucket per client key. Full buckets are dropped when the table grows."""

    def __init__(self, rps: float, burst: int, max_keys: int = 100_000) -> None:
        self.rps = rps
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 when allowed, else the seconds until a token is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rps)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_keys:
                self._evict(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rps

    def _evict(self, now: float) -> None:
        refill = self.burst / self.rps
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}
        while len(self._buckets) > self.max_keys:
            self._buckets.pop(next(iter(self._buckets)))


# --------------------------------------------------------------------------- deny patterns


class DenyList:
    """Heuristic screen for known prompt-injection strings: not a defence on its own."""

    def __init__(self, patterns: list[str]) -> None:
        import re  # noqa: PLC0415

        self._patterns = [re.compile(p) for p in patterns]

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def denied(self, body: bytes, query: str, content_type: str | None = None) -> bool:
        texts = [*bodies.texts(body, content_type), unquote(query)]
        for t in texts:
            variants = {t, normalize(t)}
            for v in variants:
                if any(p.search(v) for p in self._patterns):
                    return True
        return False


# --------------------------------------------------------------------------- the proxy


@dataclass(slots=True)
class _Outcome:
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    rejected: str | None = None
    upstream_error: str | None = None


class _Reject(Exception):
    def __init__(self, status: int, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


_MESSAGES = {
    "rate_limited": "rate limit exceeded",
    "overloaded": "too many concurrent requests",
    "body_too_large": "request body too large",
    "denied_pattern": "request refused by policy",
    "bad_request": "malformed request",
    "connect": "upstream unavailable",
    "protocol": "bad upstream response",
    "timeout": "upstream timed out",
    "uninspectable_response": "the model's response cannot be inspected and was refused",
}


def _error_response(status: int, reason: str, retry_after: float | None = None) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    body = json.dumps({"error": _MESSAGES.get(reason, reason), "reason": reason})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


class Guard:
    def __init__(self, cfg: GuardConfig, *, audit_out: Any = None) -> None:
        self.cfg = cfg
        self.redactor = Redactor(cfg.redact_types, [(p.name, p.regex) for p in cfg.custom_patterns])
        self.metrics = GuardMetrics(self.redactor.types)
        self.audit = AuditLog(self.redactor, audit_out)
        self.hasher = ClientHasher()
        self.limiter = RateLimiter(cfg.rate_limit_rps, cfg.rate_limit_burst)
        self.deny = DenyList(cfg.deny_patterns)
        self.upstream = URL(cfg.upstream)
        self.active = 0
        self.ready = False
        self.session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=cfg.upstream_timeout_s, sock_read=cfg.upstream_timeout_s
        )
        self._upstream_ok_at = -math.inf

    async def start_session(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.cfg.max_concurrency, keepalive_timeout=30, force_close=False
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            trust_env=False,
            timeout=self._timeout,
            skip_auto_headers=("User-Agent",),
        )

    async def close_session(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _identity(self, request: web.Request) -> str:
        name = self.cfg.client_identity_header
        if name:
            value = request.headers.get(name)
            if value:
                return "h:" + value.strip()[:256]
        return "ip:" + (request.remote or "unknown")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        client = self.hasher(self._identity(request))
        counts: dict[str, int] = {}
        out = _Outcome()
        slot = False
        try:
            wait = self.limiter.take(client)
            if wait > 0:
                raise _Reject(429, "rate_limited", wait)
            if self.active >= self.cfg.max_concurrency:
                raise _Reject(503, "overloaded", 1.0)
            self.active += 1
            slot = True
            self.metrics.in_flight.inc()
            body = await self._read_body(request, out)
            ctype = request.headers.get("Content-Type")
            if self.deny and self.deny.denied(body, request.query_string, ctype):
                raise _Reject(400, "denied_pattern")
            if self.cfg.redact_request_bodies and body:
                body = bodies.redact_request(body, ctype, self.redactor, counts)
            return await self._forward(request, body, counts, out)
        except _Reject as rej:
            out.status = rej.status
            out.rejected = rej.reason
            self.metrics.rejections.labels(reason=rej.reason).inc()
            resp = _error_response(rej.status, rej.reason, rej.retry_after)
            if rej.reason == "body_too_large":
                resp.force_close()
            return resp
        finally:
            if slot:
                self.active -= 1
                self.metrics.in_flight.dec()
            self.metrics.observe(out.status, time.perf_counter() - started, counts)
            self.audit.write(
                client=client,
                method=request.method,
                path=request.path,
                status=out.status,
                bytes_in=out.bytes_in,
                bytes_out=out.bytes_out,
                started=started,
                redactions=counts,
                rejected=out.rejected,
                upstream_error=out.upstream_error,
            )

    async def _read_body(self, request: web.Request, out: _Outcome) -> bytes:
        cap = self.cfg.max_body_bytes
        if request.content_length is not None and request.content_length > cap:
            raise _Reject(413, "body_too_large")
        parts: list[bytes] = []
        size = 0
        try:
            while chunk := await request.content.read(_CHUNK):
                size += len(chunk)
                if size > cap:
                    raise _Reject(413, "body_too_large")
                parts.append(chunk)
        except aiohttp.http_exceptions.HttpProcessingError:
            raise _Reject(400, "bad_request") from None
        out.bytes_in = size
        return b"".join(parts)

    def _upstream_headers(self, request: web.Request) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for k, v in request.headers.items():
            if k.lower() not in _DROP_REQUEST:
                headers.add(k, v)
        headers["Accept-Encoding"] = "identity"
        headers["X-Forwarded-Proto"] = "https" if request.secure else "http"
        if request.remote:
            headers["X-Forwarded-For"] = request.remote
        return headers

    def _upstream_error(self, out: _Outcome, kind: str, status: int) -> web.Response:
        out.status = status
        out.upstream_error = kind
        self.metrics.upstream_errors.labels(kind=kind).inc()
        return _error_response(status, kind)

    async def _forward(
        self, request: web.Request, body: bytes, counts: dict[str, int], out: _Outcome
    ) -> web.StreamResponse:
        assert self.session is not None
        url = self.upstream.join(URL(request.raw_path, encoded=True))
        try:
            up = await self.session.request(
                request.method,
                url,
                headers=self._upstream_headers(request),
                data=body if body else None,
                allow_redirects=False,
                timeout=self._timeout,
            )
        except TimeoutError:
            return self._upstream_error(out, "timeout", 504)
        except aiohttp.ClientConnectorError:
            return self._upstream_error(out, "connect", 502)
        except aiohttp.ClientError:
            return self._upstream_error(out, "protocol", 502)
        async with up:
            return await self._relay(request, up, counts, out)

    async def _relay(
        self,
        request: web.Request,
        up: aiohttp.ClientResponse,
        counts: dict[str, int],
        out: _Outcome,
    ) -> web.StreamResponse:
        encoding = up.headers.get("Content-Encoding", "").strip().lower()
        no_body = request.method == "HEAD" or up.status in (204, 304) or 100 <= up.status < 200
        flt = (
            None
            if no_body or encoding not in _DECODABLE
            else body_filter(
                up.headers.get("Content-Type"),
                self.redactor,
                counts,
                self.cfg.max_response_buffer_bytes,
            )
        )
        if flt is None and not no_body:
            # Binary, unknown or undecodable: fail closed unless this path is allowed.
            if not self._uninspectable_allowed(request.path):
                return self._refuse(out, "uninspectable_response", 502)
            encoding = "" if encoding in _DECODABLE else encoding
        out.status = up.status
        length = up.content_length
        if not no_body and length is not None and length <= _SMALL_BODY and not encoding:
            return await self._relay_small(up, flt, counts, out)
        headers = self._response_headers(
            up.headers, counts, keep_length=flt is None and not encoding, raw=bool(encoding)
        )
        resp = web.StreamResponse(status=up.status, reason=up.reason, headers=headers)
        await resp.prepare(request)
        try:
            if not no_body:
                async for chunk in up.content.iter_any():
                    if flt is None:
                        out.bytes_out += len(chunk)
                        await resp.write(chunk)
                        continue
                    # Redact big reads in slices so the first bytes leave early.
                    for i in range(0, len(chunk), _SLICE):
                        if i:
                            await asyncio.sleep(0)  # let other requests run between slices
                        data = flt.feed(chunk[i : i + _SLICE])
                        if data:
                            out.bytes_out += len(data)
                            await resp.write(data)
                if flt is not None:
                    tail = flt.flush()
                    if tail:
                        out.bytes_out += len(tail)
                        await resp.write(tail)
            await resp.write_eof()
        except (TimeoutError, aiohttp.ClientError, StreamError) as exc:
            kind = (
                "timeout"
                if isinstance(exc, TimeoutError)
                else "redaction"
                if isinstance(exc, StreamError)
                else "protocol"
            )
            out.upstream_error = kind
            self.metrics.upstream_errors.labels(kind=kind).inc()
            if request.transport is not None:
                request.transport.abort()
        except ConnectionError:
            out.upstream_error = "client_gone"
        return resp

    async def _relay_small(
        self,
        up: aiohttp.ClientResponse,
        flt: BodyFilter | None,
        counts: dict[str, int],
        out: _Outcome,
    ) -> web.StreamResponse:
        """A small body of known length: read, redact, answer in one write."""
        try:
            body = await up.read()
            if flt is not None:
                body = flt.feed(body) + flt.flush()
        except TimeoutError:
            return self._upstream_error(out, "timeout", 504)
        except aiohttp.ClientError:
            return self._upstream_error(out, "protocol", 502)
        except StreamError:
            return self._upstream_error(out, "redaction", 502)
        out.bytes_out = len(body)
        headers = self._response_headers(up.headers, counts, keep_length=False)
        return web.Response(status=up.status, reason=up.reason, headers=headers, body=body)

    def _uninspectable_allowed(self, path: str) -> bool:
        return any(fnmatchcase(path, p) for p in self.cfg.allow_uninspectable_paths)

    def _refuse(self, out: _Outcome, reason: str, status: int) -> web.Response:
        out.status = status
        out.rejected = reason
        self.metrics.rejections.labels(reason=reason).inc()
        return _error_response(status, reason)

    def _response_headers(
        self,
        src: CIMultiDictProxy[str],
        counts: dict[str, int],
        *,
        keep_length: bool,
        raw: bool = False,
    ) -> CIMultiDict[str]:
        """Upstream headers minus hop-by-hop and length/encoding ones, values redacted."""
        headers: CIMultiDict[str] = CIMultiDict()
        for k, v in src.items():
            kl = k.lower()
            if kl in _DROP_RESPONSE and not (
                (keep_length and kl == "content-length") or (raw and kl == "content-encoding")
            ):
                continue
            headers.add(k, v if kl in _PLAIN_HEADERS else self.redactor.redact_short(v, counts))
        return headers

    async def upstream_reachable(self) -> bool:
        now = time.monotonic()
        if now - self._upstream_ok_at < 1.0:
            return True
        host = self.upstream.host or "127.0.0.1"
        port = self.upstream.port or 80
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        self._upstream_ok_at = now
        return True

    async def upstream_check(self, which: str) -> tuple[int, str]:
        """Run the model server's own check (`ready` or `live`) from inside the pod."""
        check = self.cfg.upstream_checks.get(which)  # type: ignore[call-overload]
        if check is None:
            return 404, f"no {which} check configured"
        if check.path is None:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", check.port), 1.0
                )
            except (OSError, TimeoutError):
                return 503, "model server port closed"
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return 200, "ok"
        url = f"http://127.0.0.1:{check.port}{check.path}"
        timeout = aiohttp.ClientTimeout(total=self.cfg.upstream_timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, allow_redirects=False) as resp,
            ):
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError):
            return 503, "model server unreachable"
        if 200 <= status < 400:
            return 200, "ok"
        return 503, f"model server answered {status}"

    # ------------------------------------------------------------------ apps

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def metrics_app(self) -> web.Application:
        app = web.Application()

        async def metrics(_: web.Request) -> web.Response:
            resp = web.Response(body=self.metrics.render())
            resp.headers["Content-Type"] = CONTENT_TYPE
            return resp

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def readyz(_: web.Request) -> web.Response:
            if not self.ready:
                return web.json_response({"status": "not ready"}, status=503)
            if not await self.upstream_reachable():
                return web.json_response({"status": "upstream unreachable"}, status=503)
            return web.json_response({"status": "ready"})

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)

        async def upstream(request: web.Request) -> web.Response:
            status, reason = await self.upstream_check(request.match_info["which"])
            return web.json_response({"status": reason}, status=status)

        app.router.add_get("/readyz", readyz)
        app.router.add_get("/upstream/{which:ready|live}", upstream)
        return app


# --------------------------------------------------------------------------- logging


class _NoContentFilter(logging.Filter):
    """Library records can quote raw request bytes; keep only their kind."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("secureai"):
            kind = type(record.exc_info[1]).__name__ if record.exc_info else "event"
            record.msg = "%s: %s"
            record.args = (record.name, kind)
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(_NoContentFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").disabled = True


# --------------------------------------------------------------------------- run


def check_tls_files(cfg: GuardConfig) -> None:
    for label, f in (("tls_cert_file", cfg.tls_cert_file), ("tls_key_file", cfg.tls_key_file)):
        if not Path(f).is_file():
            raise StartupError(
                f"{label} {f} does not exist (refusing to serve without TLS; "
                "--insecure-listen is for tests only)"
            )


async def serve(
    cfg: GuardConfig,
    *,
    insecure_listen: bool = False,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Guard], Awaitable[None]] | None = None,
) -> None:
    guard = Guard(cfg)
    tls: TlsReloader | None = None
    if not insecure_listen:
        check_tls_files(cfg)
        try:
            tls = TlsReloader(cfg.tls_cert_file, cfg.tls_key_file, guard.metrics)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot load TLS certificate/key: {exc}") from None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    await guard.start_session()
    main_runner = web.AppRunner(guard.app(), access_log=None, handler_cancellation=True)
    metrics_runner = web.AppRunner(guard.metrics_app(), access_log=None)
    await main_runner.setup()
    await metrics_runner.setup()
    watcher: asyncio.Task[None] | None = None
    try:
        host = cfg.listen_host
        try:
            await web.TCPSite(metrics_runner, host, cfg.metrics_port).start()
            await web.TCPSite(
                main_runner,
                host,
                cfg.listen_port,
                ssl_context=tls.listening if tls else None,
                shutdown_timeout=cfg.shutdown_grace_s,
                backlog=1024,
            ).start()
        except OSError as exc:
            raise StartupError(f"cannot listen: {exc.strerror or exc}") from None
        if tls is not None:
            watcher = asyncio.create_task(tls.watch(cfg.tls_reload_interval_s))
        guard.ready = True
        log.info(
            "guard listening on port %d (%s), metrics on port %d, upstream %s",
            cfg.listen_port,
            "TLS" if tls else "INSECURE plain HTTP",
            cfg.metrics_port,
            cfg.upstream,
        )
        if on_ready is not None:
            await on_ready(guard)
        await stop.wait()
        log.info("shutting down: draining in-flight requests")
        guard.ready = False
    finally:
        if watcher is not None:
            watcher.cancel()
        await main_runner.cleanup()
        await metrics_runner.cleanup()
        await guard.close_session()
