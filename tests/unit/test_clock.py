"""One clock (issue 14, item 11): the operator reads wall-clock time only through
`secureai.clock`, and the process makes that clock in one place."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import secureai
from secureai.clock import (
    TEST_OFFSET_ENV,
    FakeClock,
    OffsetClock,
    SystemClock,
    micro_iso,
    process_clock,
)

PACKAGE = Path(secureai.__file__).parent

# Calls that read the wall clock. time.monotonic (intervals, timeouts) is not one of them.
WALL_CLOCK_READS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "gmtime"),
    ("time", "localtime"),
    ("time", "ctime"),
    ("time", "asctime"),
    ("time", "strftime"),
}

# The guard is a separate process (a sidecar in workload Pods, not the operator): its audit
# records carry the time of the Pod it runs in.
OWN_CLOCK = {"clock.py", "guard/audit.py"}


def wall_clock_reads(path: Path, root: Path = PACKAGE) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
        if (name, node.func.attr) in WALL_CLOCK_READS:
            found.append(f"{path.relative_to(root)}:{node.lineno} {name}.{node.func.attr}()")
    return found


def test_nothing_in_the_operator_reads_the_wall_clock_but_secureai_clock() -> None:
    reads = [
        read
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).as_posix() not in OWN_CLOCK
        for read in wall_clock_reads(path)
    ]
    assert reads == []


def test_the_scan_sees_each_form_of_a_wall_clock_read(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import datetime, time\n"
        "a = datetime.datetime.now()\n"
        "b = datetime.now(UTC)\n"
        "c = time.time()\n"
        "d = time.monotonic()\n"
    )
    assert wall_clock_reads(sample, tmp_path) == [
        "sample.py:2 datetime.now()",
        "sample.py:3 datetime.now()",
        "sample.py:4 time.time()",
    ]


def test_the_process_clock_is_the_system_clock_unless_a_test_moves_it() -> None:
    assert isinstance(process_clock({}), SystemClock)
    assert isinstance(process_clock({TEST_OFFSET_ENV: " "}), SystemClock)
    assert isinstance(process_clock({TEST_OFFSET_ENV: "0"}), SystemClock)
    moved = process_clock({TEST_OFFSET_ENV: "61200"})
    assert isinstance(moved, OffsetClock)
    ahead = moved.now() - datetime.now(UTC)
    assert timedelta(seconds=61199) < ahead < timedelta(seconds=61201)


@pytest.mark.parametrize("value", ["17h", "nan", "inf", "-inf", "1e400"])
def test_a_bad_test_offset_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match=f"^{TEST_OFFSET_ENV}: expected a number of seconds"):
        process_clock({TEST_OFFSET_ENV: value})


def test_offset_and_fake_clocks() -> None:
    fake = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    ahead = OffsetClock(fake, timedelta(hours=1))
    fake.advance(30)
    assert ahead.now() == datetime(2030, 1, 1, 1, 0, 30, tzinfo=UTC)
    assert micro_iso(ahead.now()) == "2030-01-01T01:00:30.000000Z"
