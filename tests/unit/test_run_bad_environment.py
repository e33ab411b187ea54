"""`secureai run` refuses an unusable environment with exit 2 and one line, before any I/O."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("domain", ["bad domain!", "10.0.0.1", "-x.local", "a" * 300])
def test_a_bad_cluster_domain_exits_2_with_one_line(domain: str) -> None:
    env = {**os.environ, "SECUREAI_CLUSTER_DOMAIN": domain, "KUBECONFIG": "/nonexistent"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "secureai.cli.main",
            "run",
            "--policy",
            str(REPO / "examples" / "policy.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("secureai: SECUREAI_CLUSTER_DOMAIN: "), lines
    assert "Traceback" not in proc.stderr
