"""One clock for the whole operator, injected wherever wall-clock time matters (status times,
Events, Lease times, certificate issuance, renewal and CA rotation), so that tests move time by
handing in a `FakeClock` instead of shifting the process's clock.

The operator process makes its clock once (`process_clock`) and hands it to everything it
builds. Intervals and timeouts measure with `time.monotonic`, which no wall-clock change moves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

TEST_OFFSET_ENV = "SECUREAI_TEST_CLOCK_OFFSET_SECONDS"
"""Test-only: the operator process's clock runs this many seconds ahead of the system clock.

The one way to move the clock of an operator run as a separate process (the certificate
renewal test); in-process tests hand in a `FakeClock`. Read once, by `process_clock`.
"""


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class OffsetClock:
    """Another clock moved by a fixed offset (the test-only process clock)."""

    base: Clock
    offset: timedelta

    def now(self) -> datetime:
        return self.base.now() + self.offset


@dataclass
class FakeClock:
    """A clock that moves only when told to."""

    current: datetime = field(default_factory=lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


def process_clock(environ: Mapping[str, str]) -> Clock:
    """The operator process's one clock: the system clock, or, for tests only, the system
    clock moved by `SECUREAI_TEST_CLOCK_OFFSET_SECONDS`. Raises ValueError naming the variable
    when its value is not a finite number of seconds."""
    raw = environ.get(TEST_OFFSET_ENV, "").strip()
    if not raw:
        return SystemClock()
    try:
        offset = float(raw)
    except ValueError:
        offset = math.nan
    if not math.isfinite(offset):
        raise ValueError(f"{TEST_OFFSET_ENV}: expected a number of seconds, got {raw[:40]!r}")
    return OffsetClock(SystemClock(), timedelta(seconds=offset)) if offset else SystemClock()


def iso(moment: datetime) -> str:
    """RFC 3339 with seconds, as Kubernetes' metav1.Time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_iso(moment: datetime) -> str:
    """RFC 3339 with microseconds, as Kubernetes' metav1.MicroTime (Lease times)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
