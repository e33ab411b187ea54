"""Streaming edges of the PII engine and its prefilter: nothing escapes a chunk boundary, and
no more is held back than an unfinished value needs.

- Custom patterns, one per regex construct: wherever the text is cut, the stream finds what
  the whole text has; text that cannot start or continue a match is emitted at once.
- Keyword-led detectors cut inside their keyword: the partial keyword is held, and only it.
- The prefilter (``WindowScanner``): values at the very start or end of the data, a private
  key whose header is its only anchor, and every match inside the bytes committed with it.
- Normalisation in a fresh process (its per-character memo cold).

Every engine is built inside its test (see ``test_pii_edges.py``).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secureai.pii import Redactor, StreamScanner, View, normalize, redact
from secureai.pii.prefilter import WindowScanner

REPO = Path(__file__).resolve().parents[2]
DIGITS = "0123456789"
WORD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_" + DIGITS
ANY = None  # the pattern can hold any character

# (regex, a text holding one match, the characters a match can be made of)
CUSTOM = [
    (r"EMP-\d{6}", "badge EMP-004211 used", "EMP-" + DIGITS),
    (r"TCK[\d]{5}", "ticket TCK12345 open", "TCK" + DIGITS),
    (r"(?:AB|CD)-\d{4}", "code CD-1234 set", "ABCD-" + DIGITS),
    (r"(?i)zz[0-9a-f]{6}", "ref ZZ00beef done", "zZ" + DIGITS + "abcdefABCDEF"),
    (r"(<)?\d{5}(?(1)>)", "box <12345> here", "<>" + DIGITS),
    (r"(?>ab)+c", "see ababc now", "abc"),
    (r"K\w{4}\s\d{2}", "key Kab_9 42 end", WORD + " \t\n\r\f\v"),
    (r"(?<=id )\d{7}", "id 1234567 ok", DIGITS),
    (r"TCK-.{6}", "ticket TCK-12ab34 open", ANY),
    (r"ID-(.{4})", "see ID-ab12 now", ANY),
    (r"x[^y]{3}z", "say xabcz ok", ANY),
    (r"(q\d)\1", "q1q1 twice", ANY),
]


def _stream(r: Redactor, text: str, cuts: list[int]) -> list[tuple[int, int, str]]:
    scanner = StreamScanner(r)
    spans: list[tuple[int, int, str]] = []
    prev = 0
    for c in [*cuts, len(text)]:
        spans += [(s, e, d.type) for s, e, d in scanner.feed(text[prev:c]).spans]
        prev = c
    spans += [(s, e, d.type) for s, e, d in scanner.flush().spans]
    return spans


@pytest.mark.parametrize(("regex", "text", "chars"), CUSTOM)
def test_a_custom_match_cut_anywhere_is_found(regex: str, text: str, chars: str | None) -> None:
    r = Redactor(types=[], custom=[("custom", regex)])
    whole = [(s, e, d.type) for s, e, d in r.find(text)]
    assert len(whole) == 1
    for i in range(len(text) + 1):
        assert _stream(r, text, [i]) == whole, i
    assert _stream(r, text, list(range(1, len(text)))) == whole


@pytest.mark.parametrize(("regex", "text", "chars"), CUSTOM)
@pytest.mark.parametrize(
    "tail", ["plain words ", "lower", "ZZ TOP", "12", "XXXX", "id 12", "<1", "a\n", "-", "ab"]
)
def test_custom_patterns_hold_back_only_what_could_still_match(
    regex: str, text: str, chars: str | None, tail: str
) -> None:
    """At most the run at the end made of the pattern's characters is held back."""
    scanner = StreamScanner(Redactor(types=[], custom=[("custom", regex)]))
    scanner.feed(tail)
    run = len(tail) if chars is ANY else len(tail) - len(tail.rstrip(chars))
    assert scanner.pending <= run


def test_an_any_character_pattern_holds_back_one_less_than_its_longest_match() -> None:
    r = Redactor(types=[], custom=[("ticket", r"TCK-.{6}")])  # 10 characters
    scanner = StreamScanner(r)
    text = "plain words, nothing here"
    assert scanner.feed(text).text == text[:-9]
    assert scanner.pending == 9


# Keyword-led detectors: a value announced by a word ("Bearer", "AccountKey=", "ssn") that the
# cut splits inside the word.
KEYWORD_LED = [
    ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz123456 end", "Bearer"),
    ("conn AccountKey=abcdefghijklmnopqrstuvwxyz0123456789ABCD==;x", "AccountKey"),
    (
        "url https://a.blob.core.windows.net/c?sv=1&sig=abcdefghijklmnopqrstuvwxyz0123456789 x",
        "sig=",
    ),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYz8Qk2Lm4Pw x", "aws_secret"),
    ("my SSN: 123 45 6789 on file", "SSN"),
    ("password = Xy7!k2Qz#Lm9 end", "password"),
    ("ftp://admin:Xy7!k2Qz#Lm9@host x", "://"),
]


@pytest.mark.parametrize(("text", "keyword"), KEYWORD_LED)
def test_a_value_whose_keyword_is_cut_is_found(text: str, keyword: str) -> None:
    r = Redactor()
    whole = [(s, e, d.type) for s, e, d in r.find(text)]
    assert whole
    k = text.index(keyword)
    for i in range(k + 1, k + len(keyword)):
        scanner = StreamScanner(r)
        seg = scanner.feed(text[:i])
        # the partial keyword is held back, so that the value after it is seen whole
        assert seg.text == text[: len(seg.text)] and len(seg.text) <= k, (i, seg.text)
        assert _stream(r, text, [i]) == whole, i


def test_long_texts_count_their_redactions_too() -> None:
    """``redact_short`` memoises short strings; longer ones are redacted and counted alike."""
    r = Redactor()
    short, long_ = "x@example.com", "mail x@example.com or y@example.org " + "words " * 20
    counts: dict[str, int] = {}
    assert r.redact_short(short, counts) == "[REDACTED:email]"
    assert r.redact_short(short, counts) == "[REDACTED:email]"
    assert r.redact_short(long_, counts) == r.redact(long_)
    assert counts == {"email": 4}


# --------------------------------------------------------------------------- normalisation

FRESH = """
import json, sys
from secureai.pii import normalize, redact
texts = json.loads(sys.stdin.read())
print(json.dumps([[normalize(t), redact(t)] for t in texts]))
"""
# (text, its normalised view, its redaction)
LOOKALIKES = [
    (
        "call \uff0b\uff14\uff14 \uff12\uff10 \uff17\uff19\uff14\uff16 \uff10\uff19\uff15\uff18",
        "call +44 20 7946 0958",
        "call [REDACTED:phone]",
    ),
    (
        "mail jane\u200b.doe\uff20example\u3002com",
        "mail jane.doe@example.com",
        "mail [REDACTED:email]",
    ),
    ("host \u0441\u0430f\u0435 ok", "host cafe ok", "host \u0441\u0430f\u0435 ok"),
]


def test_normalisation_is_the_same_in_a_fresh_process() -> None:
    """The first text a process sees is normalised like every later one (the per-character
    memo starts empty): full-width forms become ASCII, invisible characters go, look-alikes
    become the letters they imitate, and values written so are redacted."""
    texts = [t for t, _, _ in LOOKALIKES]
    out = subprocess.run(
        [sys.executable, "-c", FRESH],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=120,
    )
    cold = json.loads(out.stdout)
    assert cold == [[view, redacted] for _, view, redacted in LOOKALIKES]
    assert cold == [[normalize(t), redact(t)] for t in texts]  # this process: warm


def test_an_ascii_view_maps_offsets_to_themselves() -> None:
    v = View("plain ascii text")
    assert v.identity and v.text == "plain ascii text"
    assert [v.pos(i) for i in range(5)] == [0, 1, 2, 3, 4]
    assert [v.start(i) for i in range(5)] == [0, 1, 2, 3, 4]
    assert [v.end(i) for i in range(5)] == [0, 1, 2, 3, 4]


def test_a_view_maps_dropped_characters_into_the_span_they_hide_in() -> None:
    text = "a\u200bb\uff43"  # a, zero-width space, b, full-width c
    v = View(text)
    assert v.text == "abc"
    assert (v.start(0), v.end(0)) == (0, 0)
    assert (v.start(1), v.end(1)) == (2, 1)  # b comes from index 2; a ends at 1
    assert v.end(3) == len(text)


# --------------------------------------------------------------------------- prefilter

# Values whose only anchor is one of: a credential keyword before a separator, a token run,
# a private-key header. None holds a digit, ':', '@' or a non-ASCII byte.
LONE = [
    "password = Xy!kQz#Lm_Pw",
    "token is Xy!kQz#Lm_Pw",
    "Bearer AbCdEfGhIjKlMnOpQrStUvWxYz",
    "?sp=r&sig=abcDEFghiJ%ABklmNOPqrS%CDtuvWXYzab%EF",  # a SAS signature: '%' breaks the runs
    # the key line (a token run) is too far from the header for its window to reach back
    "-----BEGIN PRIVATE KEY-----\n"
    + "QUJD REVG SUpL\n" * 12
    + "QUJDREVGSUpLQUJDREVGSUpLQUJDREVGSUpL\n-----END PRIVATE KEY-----",
]
FILLER = "lorem ipsum dolor sit amet " * 8


def _prefiltered(data: bytes, cuts: list[int]) -> list[tuple[int, int, str]]:
    scanner = WindowScanner(Redactor())
    spans: list[tuple[int, int, str]] = []
    pos = 0
    for c in [*cuts, len(data)]:
        offset, out, found = scanner.feed(data[pos:c])
        assert all(offset <= s < e <= offset + len(out) for s, e, _ in found)
        spans += found
        pos = c
    offset, out, found = scanner.flush()
    assert all(offset <= s < e <= offset + len(out) for s, e, _ in found)
    return spans + found


def _engine(data: bytes) -> list[tuple[int, int, str]]:
    return [(s, e, d.type) for s, e, d in Redactor().find(data.decode("latin-1"))]


@pytest.mark.parametrize("value", LONE)
@pytest.mark.parametrize(
    "layout",
    [
        "{v}",  # the whole data
        "{v}\n{f}",  # at the very start
        "{f}{v}",  # at the very end, no newline after it
        "AbCdEfGhIjKlMnOpQr {f}{v}\n{f}",  # after a token run at the start
        "{f}{v} {f}",
    ],
)
def test_prefilter_finds_lone_values_at_the_edges_of_the_data(value: str, layout: str) -> None:
    data = layout.format(v=value, f=FILLER).encode("latin-1")
    expected = _engine(data)
    assert any(data[s:e].decode("latin-1") in value for s, e, _ in expected)
    assert _prefiltered(data, []) == expected
    assert _prefiltered(data, [len(data) // 2]) == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.sampled_from([*LONE, FILLER, "x@example.com ", "AKIAQ3EGRTVWXH7K2M4P\n"])),
    cuts=st.lists(st.integers(1, 3000), max_size=6),
)
def test_prefilter_reports_each_match_with_the_bytes_that_hold_it(
    parts: list[str], cuts: list[int]
) -> None:
    """A consumer writes each call's bytes with that call's matches redacted: a match must
    never arrive after the bytes it covers were handed out (``_prefiltered`` checks it)."""
    data = "".join(parts).encode("latin-1")
    assert _prefiltered(data, sorted(c for c in set(cuts) if c < len(data))) == _engine(data)


def test_prefilter_refuses_custom_patterns_in_one_line() -> None:
    with pytest.raises(ValueError) as exc:
        WindowScanner(Redactor(custom=[("ticket", r"TCK-\d{6}")]))
    assert str(exc.value) == "the prefilter only knows the built-in detectors"


def test_an_empty_chunk_commits_nothing_at_the_current_offset() -> None:
    scanner = StreamScanner(Redactor())
    first = scanner.feed("plain words. ")
    empty = scanner.feed("")
    assert (empty.offset, empty.text, empty.spans) == (len(first.text), "", ())


def test_a_private_key_cut_far_from_its_header_is_not_handed_out_before_its_match() -> None:
    """A key block longer than the prefilter's look-back, cut by a read boundary in its body:
    the bytes handed out with the first chunk stop before the block, and the block comes
    with its match once it is complete."""
    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    lines = ["".join(rng.choice(alphabet) for _ in range(64)) for _ in range(40)]
    pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----"
    data = (FILLER + pem + "\n" + FILLER).encode("latin-1")
    start = len(FILLER)
    expected = [(start, start + len(pem), "secret")]
    assert _engine(data) == expected
    for cut in (start + 1500, start + 2000, start + len(pem) - 10):
        scanner = WindowScanner(Redactor())
        offset, out, found = scanner.feed(data[:cut])
        assert (offset, found) == (0, []) and len(out) <= start, cut
        assert _prefiltered(data, [cut]) == expected


@pytest.mark.parametrize(
    "pattern", [r"(?i:emp)-\d{6}", r"x?(?:(?i:emp)|zz)-\d{6}", r"(?i)emp-\d{6}"]
)
def test_a_case_insensitive_custom_pattern_cut_anywhere_is_found(pattern: str) -> None:
    """A scoped `(?i:…)` folds case in the hold-back class as a global `(?i)` does (a chunk
    ending after `E` of `EMP-004211` once let it stream through)."""
    r = Redactor(types=[], custom=[("employee_id", pattern)])
    text = "badge EMP-004211 used"
    whole = [(s, e, d.type) for s, e, d in r.find(text)]
    assert whole
    for i in range(len(text) + 1):
        assert _stream(r, text, [i]) == whole, i
