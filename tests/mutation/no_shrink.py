"""A pytest plugin the harness loads (``-p``) into every mutmut run: hypothesis stops at the
first failing example instead of shrinking it.

A mutant that breaks a property test is killed by the first failure; shrinking only makes
the report readable, and on a loaded machine it outlasted mutmut's wall-clock timeout, so
killed mutants were counted as timeouts (and each cost the full timeout). The profile is
loaded before collection, so the ``@settings`` of the test modules inherit it.
"""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings

PROFILE = "mutation-no-shrink"


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    base = settings.get_profile("mutation")
    settings.register_profile(
        PROFILE, parent=base, phases=(Phase.explicit, Phase.reuse, Phase.generate)
    )
    settings.load_profile(PROFILE)
