"""`make demo` shows the real thing (issue 12, point 8): run hack/demo.sh against the test
cluster and check what it shows. It runs after the other real-node tests: its operator watches
the whole cluster, so it must not meet their operators."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from clusterkit import REPO, Cluster


def test_demo_shows_the_guarded_call_and_the_reverted_tamper(
    cluster: Cluster, real_node: str
) -> None:
    env = {**os.environ, "SECUREAI_CLUSTER_DIR": str(cluster.state_dir)}
    started = time.monotonic()
    proc = subprocess.run(
        [str(REPO / "hack" / "demo.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    took = time.monotonic() - started
    pid_file = cluster.state_dir / "operator.pid"
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = proc.stdout
        print(f"demo on a running cluster: {took:.0f}s")
        # pods listed on the real node, the guarded answer redacted, the tamper reverted
        assert "chat-" in out and real_node in out
        assert "[REDACTED:email]" in out and "[REDACTED:payment_card]" in out
        answer = next(line for line in out.splitlines() if '"status": "200"' in line)
        assert "jane.doe@example.org" not in answer and "4111 1111" not in answer
        assert "the operator reverted chat-allow after" in out
        assert "outsider blocked again" in out
        assert "signed by    sha256:" in out
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            pid_file.unlink()
        for ns in ("ml-demo", "ml-team", "ml-serving"):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
