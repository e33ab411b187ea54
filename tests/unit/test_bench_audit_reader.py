"""The benchmark's audit-log reader follows the API server's log rotation.

Regression: a rotation during a full run made every later audit count read 0 (the burst's
write breakdown, the idle window and the restart writes).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.scenarios_proc import AuditReader


def append(path: Path, n: int, jti: str = "JTI=a") -> None:
    with path.open("a") as fh:
        fh.write(json.dumps({"n": n, "user": jti}) + "\n")


def test_reads_across_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, 1)
    reader = AuditReader(log, "JTI=a")
    reader.mark()
    append(log, 2)
    append(log, 3, "JTI=b")
    os.rename(log, tmp_path / "audit-2026-11-26T02-23-59.298.log")
    append(log, 4)
    assert [e["n"] for e in reader.read_new()] == [2, 4]
    append(log, 5)
    assert [e["n"] for e in reader.read_new()] == [5]


def test_a_partial_line_waits_for_the_next_read(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("")
    reader = AuditReader(log, "JTI=a")
    reader.mark()
    with log.open("a") as fh:
        fh.write('{"n": 1, "user": "JTI=a"')
    assert reader.read_new() == []
    with log.open("a") as fh:
        fh.write("}\n")
    assert [e["n"] for e in reader.read_new()] == [1]
