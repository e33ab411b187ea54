"""Reachability probe for the NetworkPolicy conformance matrix (standard library only).

  probe.py serve --tcp 80,8080 --udp 53       answer on every port (TCP: one line, UDP: echo)
  probe.py connect TARGETS_JSON               try each {"host","port","protocol"} at once;
                                              print one JSON list: [{"...", "ok": bool}]

A TCP probe succeeds when the connection completes and the server's greeting arrives; a UDP
probe when the echo comes back. Both give up after --timeout seconds (a dropped packet).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor


def serve_tcp(port: int) -> None:
    srv = socket.create_server(("0.0.0.0", port), reuse_port=True)  # noqa: S104
    while True:
        conn, _ = srv.accept()
        try:
            conn.sendall(b"secureai-probe\n")
        except OSError:
            pass
        finally:
            conn.close()


def serve_udp(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))  # noqa: S104
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def probe(target: dict[str, object], timeout: float) -> dict[str, object]:
    host, port, proto = str(target["host"]), int(str(target["port"])), str(target.get("protocol", "TCP"))
    ok = False
    try:
        if proto == "UDP":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                sock.sendto(b"ping", (host, port))
                ok = sock.recvfrom(2048)[0] == b"ping"
        else:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                ok = sock.recv(64).startswith(b"secureai-probe")
    except OSError:
        ok = False
    return {**target, "ok": ok}


def main() -> int:
    parser = argparse.ArgumentParser(prog="probe")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--tcp", default="")
    s.add_argument("--udp", default="")
    c = sub.add_parser("connect")
    c.add_argument("targets")
    c.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args()
    if args.cmd == "serve":
        threads = [threading.Thread(target=serve_tcp, args=(int(p),), daemon=True) for p in args.tcp.split(",") if p]
        threads += [threading.Thread(target=serve_udp, args=(int(p),), daemon=True) for p in args.udp.split(",") if p]
        for t in threads:
            t.start()
        print(f"probe: tcp {args.tcp or '-'} udp {args.udp or '-'}", flush=True)
        threading.Event().wait()
        return 0
    targets = json.loads(args.targets)
    with ThreadPoolExecutor(max_workers=max(1, min(64, len(targets)))) as pool:
        results = list(pool.map(lambda t: probe(t, args.timeout), targets))
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
