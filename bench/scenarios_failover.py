"""Failover and drift-fuzzer figures for `make bench`: the integration tests' own scenarios
(tests/integration/test_operator_failover.py, test_operator_drift_fuzz.py) run against the
bench's cluster, longer than in `make test`, and report their keys:
failover_revert_p99_s (tamper right after SIGKILL of the leader -> revert), fuzz_revert_p99_s,
fuzz_cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FULL_FUZZ_CASES = 2000
QUICK_FUZZ_CASES = 50


def run(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="secureai-bench-ha-") as folder:
        reports = {
            "SECUREAI_FAILOVER_REPORT": Path(folder) / "failover.json",
            "SECUREAI_FUZZ_REPORT": Path(folder) / "fuzz.json",
        }
        env = {
            **os.environ,
            **{k: str(v) for k, v in reports.items()},
            "SECUREAI_FUZZ_CASES": str(QUICK_FUZZ_CASES if quick else FULL_FUZZ_CASES),
        }
        tests = ["tests/integration/test_operator_drift_fuzz.py"]
        if not quick:
            tests.append(
                "tests/integration/test_operator_failover.py::"
                "test_ten_sigkills_under_tampering_leave_no_tamper_standing_two_seconds"
            )
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        for path in reports.values():
            if path.exists():
                out.update(json.loads(path.read_text()))
        if proc.returncode != 0:
            out["ha_errors"] = proc.stdout[-2000:]
    return out
