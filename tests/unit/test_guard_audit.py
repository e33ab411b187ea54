"""The audit line never carries part of a value: the path is redacted before it is cut."""

from __future__ import annotations

import io
import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from secureai.guard.audit import MAX_PATH_CHARS, AuditLog
from secureai.pii import Redactor

VALUES = ["jane.doe@example.com", "4111111111111111", "AKIAQ3EGRTVWXH7K2M4P", "123-45-6789"]


def _line(path: str) -> dict[str, object]:
    out = io.StringIO()
    AuditLog(Redactor(), out).write(
        client="c",
        method="GET",
        path=path,
        status=200,
        bytes_in=0,
        bytes_out=0,
        started=time.perf_counter(),
        redactions={},
    )
    rec: dict[str, object] = json.loads(out.getvalue())
    return rec


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(VALUES), st.integers(min_value=MAX_PATH_CHARS - 24, max_value=MAX_PATH_CHARS)
)
def test_value_straddling_the_cut_leaves_no_fragment(value: str, prefix: int) -> None:
    path = "/" + "a" * (prefix - 2) + "/" + value + "/tail"
    logged = str(_line(path)["path"])
    assert len(logged) <= MAX_PATH_CHARS
    digits = "".join(c for c in value if c.isalnum())
    # No run of 6+ characters of the value survives.
    for i in range(len(digits) - 5):
        assert (
            digits[i : i + 6] not in logged.replace("-", "").replace("/", "").replace(".", "")[1:]
        )


def test_query_string_never_logged() -> None:
    assert _line("/v1/x?key=AKIAQ3EGRTVWXH7K2M4P")["path"] == "/v1/x"
