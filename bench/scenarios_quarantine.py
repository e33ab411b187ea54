"""Containment figures for `make bench`: the integration test's own scenario
(tests/integration/test_quarantine.py) at 100 workloads in 20 namespaces, against the bench's
cluster. Keys: quarantine_contain_p50_s, quarantine_contain_p99_s (Quarantine created ->
the last workload's contained policy seen by a watch), quarantine_contain_max_s,
quarantine_release_max_s, quarantine_workloads, quarantine_namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FULL = (100, 20)
QUICK = (20, 4)


def run(quick: bool) -> dict[str, Any]:
    workloads, namespaces = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="secureai-bench-quarantine-") as folder:
        report = Path(folder) / "quarantine.json"
        env = {
            **os.environ,
            "SECUREAI_QUARANTINE_REPORT": str(report),
            "SECUREAI_QUARANTINE_WORKLOADS": str(workloads),
            "SECUREAI_QUARANTINE_NAMESPACES": str(namespaces),
        }
        test = (
            "tests/integration/test_quarantine.py::"
            "test_a_quarantine_by_image_contains_every_workload_revokes_and_keeps_evidence"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        out: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
        if proc.returncode != 0:
            out["quarantine_errors"] = proc.stdout[-2000:]
    return out
