"""The guard's TLS floor, with a client that really offers TLS 1.0/1.1.

A default client context refuses TLS <= 1.1 by itself (OpenSSL security level), so a guard
accepting TLS 1.0 would still "fail" the handshake. This client lowers its own floor and
security level; a loopback control server that speaks only TLS 1.0/1.1 proves it can.
"""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import conftest as guardkit
from conftest import LOOPBACK, GuardProc, peer_serial


def _old_only(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Offer TLS 1.0 and 1.1 only, whatever OpenSSL's default security level says."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def _old_client(ca: guardkit.TestCA) -> ssl.SSLContext:
    return _old_only(ca.client_context())


def _handshake(port: int, ctx: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version()


@pytest.fixture
def old_tls_server(tmp_path: Path) -> Iterator[tuple[guardkit.TestCA, int]]:
    """A loopback server that accepts TLS 1.0/1.1 only: the client's positive control."""
    ca = guardkit.TestCA.create()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ca.issue(cert, key)
    ctx = _old_only(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server((LOOPBACK, 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield ca, port
    listener.close()
    thread.join(timeout=10)


def test_the_client_really_speaks_tls_1_0_or_1_1(
    old_tls_server: tuple[guardkit.TestCA, int],
) -> None:
    ca, port = old_tls_server
    assert _handshake(port, _old_client(ca)) in ("TLSv1", "TLSv1.1")


async def test_guard_refuses_a_client_offering_only_tls_1_0_and_1_1(guard: GuardProc) -> None:
    assert guard.ca is not None
    # the client side is proven able to (test above): the refusal is the guard's
    with pytest.raises(ssl.SSLError):
        _handshake(guard.port, _old_client(guard.ca))
    modern = guard.ca.client_context()
    modern.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(guard.port, modern) == "TLSv1.2"
    assert peer_serial(guard.port, guard.ca.client_context()) > 0
