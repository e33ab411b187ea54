"""The prefilter (secureai.pii.prefilter) finds exactly what the full engine finds.

The engine run on the whole text is the reference; the prefiltered stream must report the same
spans, wherever the text is cut into chunks, on random text built from planted values of every
type, credential shapes, long token runs, private-key blocks, separators and non-ASCII bytes
(which normalise to digits, letters or spaces) placed next to each other.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasetgen import KINDS, PEM, text_with, value
from secureai.pii import Redactor
from secureai.pii.prefilter import WindowScanner, windows

REDACTOR = Redactor()

FRAGMENTS = (
    "the model data ",
    "loss token rate ",
    "\n",
    "\r\n",
    "\t",
    ", ",
    "; ",
    ": ",
    "=",
    " => ",
    ">",
    "@",
    " is ",
    " to ",
    "password",
    "api_key",
    "PASSWORD IS ",
    "my secret is ",
    "Authorization: Bearer ",
    "token=",
    "aws_secret_access_key = ",
    "AccountKey=",
    "?sig=",
    "https://user:",
    "://",
    "ssn ",
    "social security number: ",
    "phone: ",
    "version ",
    "+",
    "(",
    "-",
    ".",
    "/",
    "0",
    "7",
    "12",
    "555",
    "2001:",
    "fe80::",
    "ab:cd",
    "\xa0",
    "\xad",
    "\xb2",
    "\xe9",
    "\xff",
    "ghp_",
    "eyJhbGciOiJIUzI1NiJ9",
    ".eyJzdWIiOiIxMjMifQ.",
    "-----BEGIN",
    " PRIVATE KEY-----\n",
    "aB3dE5gH7jK9mN1pQ2rS4tU6vW8xY0zA",
    "abcdefghijklmnopqrstuvwxyzabcdefghij",
    "x" * 40,
)


# Values whose only anchor is a separator after a keyword, or a non-ASCII byte that normalises
# to a digit or a space (superscript digits, no-break space).
SHAPED = (
    "password = Xy!kQz#Lm_Pw",
    "api_key: Xy!kQz#Lm_Pw",
    "the password is Xy!kQz#Lm_Pw",
    "PASSWORD\tTO Xy!kQz#Lm_Pw",
    "password\xa0is\xa0Xy!kQz#Lm_Pw",
    "ssn \xb9\xb2\xb3-\xb2\xb3-\xb3\xb2\xb9\xb9",
    "+\xb3\xb3 \xb9\xb2\xb3 \xb2\xb3\xb9 \xb3\xb2\xb9\xb9",
    "call +44\xa020\xa07946\xa00123",
    "dead:beef::cafe",
    "ftp://admin:Xy!kQz#Lm_Pw@host",
)


def _planted(rng: random.Random, i: int) -> str:
    kind = rng.choice((*KINDS, "pem", "jwt", "gh", "generic", "bearer", "shaped"))
    if kind == "shaped":
        return rng.choice(SHAPED)
    if kind == "pem":
        return PEM
    if kind == "jwt":
        return "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1g"
    if kind == "gh":
        return "ghp_" + "".join(rng.choice("abcXYZ0123456789") for _ in range(36))
    if kind == "generic":
        return "password = Xy7!k2Qz#Lm9"
    if kind == "bearer":
        return "Bearer " + "".join(rng.choice("abcdefXYZ0123456789_-.") for _ in range(40))
    return value(kind, rng, i)


@st.composite
def texts(draw: st.DrawFn) -> bytes:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    parts: list[str] = []
    for i in range(draw(st.integers(1, 60))):
        r = rng.random()
        if r < 0.25:
            parts.append(_planted(rng, i))
        elif r < 0.5:  # anchor-free filler, so that values also stand alone
            parts.append(
                " ".join(rng.choice(("lorem", "ipsum", "data")) for _ in range(rng.randint(0, 80)))
            )
            parts.append(rng.choice((" ", "\n")))
        else:
            parts.append(rng.choice(FRAGMENTS))
    return "".join(parts).encode("latin-1")


def _prefiltered(data: bytes, cuts: list[int]) -> list[tuple[int, int, str]]:
    scanner = WindowScanner(REDACTOR)
    spans: list[tuple[int, int, str]] = []
    pieces: list[bytes] = []
    pos = 0
    for c in [*sorted(set(cuts)), len(data)]:
        if c <= pos or c > len(data):
            continue
        offset, out, found = scanner.feed(data[pos:c])
        assert offset == sum(map(len, pieces))
        pieces.append(out)
        spans += found
        pos = c
    offset, out, found = scanner.flush()
    pieces.append(out)
    spans += found
    assert b"".join(pieces) == data  # every byte handed back, once, in order
    return spans


def _reference(data: bytes) -> list[tuple[int, int, str]]:
    return [(s, e, d.type) for s, e, d in REDACTOR.find(data.decode("latin-1"))]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=texts(), cuts=st.lists(st.integers(1, 40000), max_size=12))
def test_prefiltered_equals_full_engine(data: bytes, cuts: list[int]) -> None:
    assert _prefiltered(data, cuts) == _reference(data)


@pytest.mark.parametrize("shaped", SHAPED)
def test_values_with_a_single_weak_anchor_stand_alone(shaped: str) -> None:
    filler = "lorem ipsum " * 60
    data = (filler + shaped + " " + filler).encode("latin-1")
    assert _reference(data)  # the engine finds it ...
    assert _prefiltered(data, [len(filler) + 3]) == _reference(data)  # ... and so does this


@pytest.mark.parametrize("chunk", [997, 65536, 1 << 20])
def test_generated_dataset_with_values_across_boundaries(chunk: int) -> None:
    rng = random.Random(11)
    data, planted = text_with(rng, 300_000, 700, across=tuple(range(chunk, 300_000, chunk)))
    spans = _prefiltered(data, list(range(chunk, len(data), chunk)))
    assert spans == _reference(data)
    found = {(s, e) for s, e, _ in spans}
    missing = [p for p in planted if (p.offset, p.offset + len(p.value)) not in found]
    assert len(missing) <= len(planted) // 100  # placeholder-looking generated keys only
    assert all(p.type == "secret" for p in missing)


def test_windows_cover_a_small_part_of_sparse_text() -> None:
    data, _ = text_with(random.Random(3), 200_000, 2000)
    covered = sum(e - s for s, e in windows(data))
    assert covered < len(data) // 3
    assert windows(b"plain words only, nothing to see here\n" * 100) == []


def test_custom_patterns_are_refused() -> None:
    with pytest.raises(ValueError, match="built-in"):
        WindowScanner(Redactor(custom=[("ticket", r"TCK-\d{6}")]))
