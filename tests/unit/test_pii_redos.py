"""No detector backtracks exponentially (a ReDoS would stall the guard on one answer).

Found by the prefilter's identity property test (hypothesis seed 1061226640): 926 bytes whose
`token=` value was a long lowercase run followed by other characters kept the secret detector's
code-name check (`[a-z_]+(?:[a-z_]+|\\d+\\Z)*`) busy for minutes. Each case runs in a child
process with a deadline: a regular expression stuck in C cannot be interrupted in-process.
"""

from __future__ import annotations

import itertools
import multiprocessing
import re

import pytest

from secureai.pii import Redactor
from secureai.pii.detectors import _looks_like_code

RUNS = [
    "x token=" + "abcdefghijklmnopqrstuvwxyz" * 2 + "ghp_Bearer -8X.36_c4bddb7ZY3Z4_607fceY68",
    "password = " + "a" * 60 + "!",
    "API_KEY=" + "A" * 60 + "b",
    "secret: " + "ab_" * 30 + "Z9",
]


def _find(text: str) -> int:
    return len(Redactor().find(text))


@pytest.mark.parametrize("text", RUNS)
def test_long_name_like_values_are_judged_in_linear_time(text: str) -> None:
    with multiprocessing.get_context("fork").Pool(1) as pool:
        pending = pool.apply_async(_find, (text,))
        pending.get(timeout=20)  # exponential backtracking never returns


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("db_password", True),
        ("var2", True),
        ("DB_PASSWORD_1", True),
        ("myApiKey", True),
        ("config.secret", True),
        ("get_key(", True),
        ("a1b2c3d4e5", False),
        ("Xk9vQ2mZ7pL4", False),
        ("abc_def9x", False),
    ],
)
def test_code_names_are_still_told_from_random_values(value: str, code: bool) -> None:
    assert _looks_like_code(value) is code


def test_the_fixed_form_accepts_exactly_the_old_language() -> None:
    old = re.compile(r"[a-z_]+(?:[a-z_]+|\d+\Z)*|[A-Z_]+(?:[A-Z_]+|\d+\Z)*")
    new = re.compile(r"[a-z_]+\d*|[A-Z_]+\d*")
    alphabet = "ab_AB19"
    for n in range(1, 7):
        for chars in itertools.product(alphabet, repeat=n):
            word = "".join(chars)
            assert bool(old.fullmatch(word)) == bool(new.fullmatch(word)), word
