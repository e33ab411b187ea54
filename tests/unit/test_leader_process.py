"""The Lease keeper process starts from any main module: the operator image's launcher has no
`if __name__ == "__main__"` guard, and a spawned child that re-imported it ran the CLI again and
died, so a replica never led (the Helm install on the real node found no leader)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_the_keeper_lives_when_started_from_a_main_module_without_a_guard(tmp_path: Path) -> None:
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    script = tmp_path / "launcher.py"
    script.write_text(
        textwrap.dedent(
            """\
            import sys, time
            from secureai.controllers.leader import LeaseSpec, ProcessKeeper
            keeper = ProcessKeeper(LeaseSpec("ns", "l", "me", 1))
            keeper.start()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and keeper.alive():
                if time.monotonic() > deadline - 17:  # alive 3 s after its start
                    break
                time.sleep(0.1)
            alive = keeper.alive()
            keeper.shared.stopping.value = 1
            keeper.join(5)
            sys.exit(0 if alive else 1)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        env={"KUBECONFIG": str(tmp_path / "kubeconfig"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
