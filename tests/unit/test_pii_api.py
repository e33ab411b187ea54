"""The shared detection engine's public API (secureai.pii), used by the guard and dataset tools."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secureai import pii

REPO = Path(__file__).resolve().parents[2]
SAMPLE = (
    "Mail jane.doe@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111, "
    "SSN 123-45-6789, host 10.0.0.7, IBAN DE89370400440532013000, key AKIAQ3EGRTVWXH7K2M4P."
)


def test_detect_returns_typed_spans_in_order() -> None:
    found = pii.detect(SAMPLE)
    assert [f.type for f in found] == [
        "email",
        "phone",
        "payment_card",
        "us_ssn",
        "ip_address",
        "iban",
        "secret",
    ]
    assert SAMPLE[found[0].start : found[0].end] == "jane.doe@example.com"
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))
    assert set(pii.TYPES) == {f.type for f in found}


def test_types_filter_and_unknown_type() -> None:
    assert [f.type for f in pii.detect(SAMPLE, ["email", "iban"])] == ["email", "iban"]
    with pytest.raises(ValueError, match="unknown PII types: nope"):
        pii.detect(SAMPLE, ["nope"])


def test_redact_default_and_custom_replacement() -> None:
    assert pii.redact("a x@example.org b") == "a [REDACTED:email] b"
    out = pii.redact("a x@example.org b", replace=lambda f, v: f"<{f.type}:{len(v)}>")
    assert out == "a <email:13> b"


def test_replace_spans_refuses_overlaps() -> None:
    f1, f2 = pii.Finding("email", 0, 5), pii.Finding("email", 3, 8)
    with pytest.raises(ValueError, match="overlap"):
        pii.replace_spans("0123456789", [f1, f2])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=12))
def test_stream_scanner_finds_the_same_spans_wherever_split(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(SAMPLE)]
    scanner = pii.StreamScanner(pii.Redactor())
    spans: list[tuple[int, int, str]] = []
    text = []
    for a, b in itertools.pairwise(bounds):
        seg = scanner.feed(SAMPLE[a:b])
        text.append(seg.text)
        spans += [(s, e, d.type) for s, e, d in seg.spans]
    seg = scanner.flush()
    text.append(seg.text)
    spans += [(s, e, d.type) for s, e, d in seg.spans]
    assert "".join(text) == SAMPLE
    assert spans == [(f.start, f.end, f.type) for f in pii.detect(SAMPLE)]


def test_pii_imports_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import secureai.pii\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "bad = sorted(m for m in new - {'secureai'} if m not in sys.stdlib_module_names)\n"
        "assert not bad, bad\n"
        "inner = sorted(m for m in sys.modules if m.startswith('secureai.')"
        " and not m.startswith('secureai.pii'))\n"
        "assert not inner, inner\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
