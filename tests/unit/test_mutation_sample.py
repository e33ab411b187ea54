"""The fixed mutation sample of `make test` (docs/testing.md): a few mutants per group, in a
scratch copy of HEAD, each of which the unit tests must kill. The full run is `make mutation`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "mutation" / "harness.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sampled_mutants_are_killed(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(HARNESS), "--sample", "--workdir", str(tmp_path), "--check"],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report, proc.stdout + proc.stderr
    for group in report:
        checked = group["killed"] + len(group["survived"])
        assert checked > 0, f"{group['group']}: no mutant checked; see {group['log']}"
    assert proc.returncode == 0, proc.stdout + proc.stderr
