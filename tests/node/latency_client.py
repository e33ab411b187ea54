"""Runs inside a client pod: N POSTs of a 1 KiB JSON body over one kept-alive TLS connection.

python3 latency_client.py HOST PORT SERVER_NAME CA_FILE N   -> one JSON line of figures
"""

import http.client
import json
import socket
import ssl
import statistics
import sys
import time


def main() -> None:
    host, port, name, ca, count = sys.argv[1:6]
    ctx = ssl.create_default_context(cafile=ca)
    # connect to HOST (the Service IP), verify the certificate for SERVER_NAME (its DNS name)
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
    raw = socket.create_connection((host, int(port)), timeout=10)
    conn.sock = ctx.wrap_socket(raw, server_hostname=name)
    body = json.dumps({"text": "x" * 1000}).encode()
    samples = []
    for _ in range(int(count)):
        start = time.perf_counter()
        conn.request("POST", "/v1/echo", body, {"Content-Type": "application/json", "Host": name})
        resp = conn.getresponse()
        resp.read()
        samples.append((time.perf_counter() - start) * 1000)
        if resp.status != 200:
            print(json.dumps({"error": resp.status}))
            return
    samples.sort()
    print(
        json.dumps(
            {
                "n": len(samples),
                "p50_ms": statistics.median(samples),
                "p99_ms": samples[max(0, int(len(samples) * 0.99) - 1)],
            }
        )
    )


if __name__ == "__main__":
    main()
