"""Runs inside a client pod: one HTTPS POST to /v1/echo, verifying the CA and the DNS name.

python3 tls_client.py HOST PORT SERVER_NAME CA_FILE BODY   -> one JSON line
"""

import json
import socket
import ssl
import sys


def main() -> None:
    host, port, name, ca, body = sys.argv[1:6]
    ctx = ssl.create_default_context(cafile=ca)
    try:
        raw = socket.create_connection((host, int(port)), timeout=5)
    except OSError as exc:
        print(json.dumps({"connected": False, "error": type(exc).__name__}))
        return
    data = body.encode()
    request = (
        f"POST /v1/echo HTTP/1.1\r\nHost: {name}\r\nContent-Type: text/plain\r\n"
        f"Connection: close\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    with ctx.wrap_socket(raw, server_hostname=name) as conn:
        conn.sendall(request)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    status = head.split(b" ")[1].decode()
    print(json.dumps({"connected": True, "status": status, "body": payload.decode()}))


if __name__ == "__main__":
    main()
