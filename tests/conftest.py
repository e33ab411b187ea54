"""Hypothesis profiles shared by every test layer.

- ``ci`` (default): explores. Not derandomized, a bounded example budget, and one seed per
  run that is printed in the header and the summary, so a failure replays with
  ``--hypothesis-seed=N`` (or ``SECUREAI_HYPOTHESIS_SEED=N``).
- ``dev``: the same with a larger budget, for a deliberate hunt.
- ``mutation``: derandomized and small, so a mutant's verdict does not depend on luck.

Pick one with ``SECUREAI_HYPOTHESIS_PROFILE`` or ``--hypothesis-profile``. A test's own
``@settings(max_examples=...)`` still bounds its budget; tests no longer pin ``derandomize``.
"""

from __future__ import annotations

import os
import secrets

import pytest
from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}
settings.register_profile("ci", max_examples=100, derandomize=False, **_COMMON)
settings.register_profile("dev", max_examples=1000, derandomize=False, **_COMMON)
settings.register_profile(
    "mutation",
    max_examples=20,
    derandomize=True,
    database=None,
    **_COMMON,
)
settings.load_profile(os.environ.get("SECUREAI_HYPOTHESIS_PROFILE", "ci"))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Choose this run's seed before hypothesis' own plugin reads the option."""
    if settings.default.derandomize or config.getoption("hypothesis_seed", None) is not None:
        return
    seed = os.environ.get("SECUREAI_HYPOTHESIS_SEED") or str(secrets.randbelow(2**32))
    config.option.hypothesis_seed = seed


def _seed_line(config: pytest.Config) -> str | None:
    seed = config.getoption("hypothesis_seed", None)
    if seed is None:
        return None
    return f"hypothesis seed {seed}: replay with --hypothesis-seed={seed}"


def pytest_report_header(config: pytest.Config) -> str | None:
    return _seed_line(config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    line = _seed_line(terminalreporter.config)
    if line is not None:
        terminalreporter.write_line(line)
