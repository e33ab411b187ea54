"""Precision and recall on the broad generated corpus (tests/data/guard_corpus_v2.jsonl).

The corpus was split once by a fixed seed (tests/data/make_guard_corpus.py). The detectors were
tuned on the ``tune`` part only; the ``heldout`` part is scored here and in docs/guard.md.
``python tests/unit/test_guard_corpus.py [tune|heldout] [-v]`` prints the table (and misses).
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from secureai.pii import TYPES, Redactor, StreamScanner

DATA = Path(__file__).resolve().parents[1] / "data"
CORPORA = {
    "tune": "guard_corpus_v2.jsonl",
    "heldout": "guard_corpus_v2.jsonl",
    "fresh": "guard_corpus_fresh.jsonl",
    # classes found missing on the public suites (bench/public_suites.py), written after the
    # fixes: a regression part, not an unseen one
    "classes": "guard_corpus_classes.jsonl",
}
TARGET = 0.97
REDACTOR = Redactor()


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def load(split: str) -> list[dict[str, Any]]:
    text = (DATA / CORPORA[split]).read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in rows if r["split"] == split]


def evaluate(rows: list[dict[str, Any]]) -> dict[str, Score]:
    """Exact spans: a detection counts only with the right type and bounds."""
    scores: dict[str, Score] = {}
    for row in rows:
        text = row["text"]
        found = {(s, e, d.type) for s, e, d in REDACTOR.find(text)}
        expected = {(lab["start"], lab["end"], lab["type"]) for lab in row["labels"]}
        for s, e, t in expected:
            sc = scores.setdefault(t, Score())
            if (s, e, t) in found:
                sc.tp += 1
            else:
                sc.fn += 1
                sc.misses.append(f"FN [{row['class']}] {text[s:e]!r} in {text!r}")
        for s, e, t in found - expected:
            sc = scores.setdefault(t, Score())
            sc.fp += 1
            sc.misses.append(f"FP [{row['class']}] {text[s:e]!r} in {text!r}")
    return dict(sorted(scores.items()))


def table(split: str) -> str:
    rows = load(split)
    lines = [
        f"{split}: {len(rows)} snippets, {sum(not r['labels'] for r in rows)} without a value",
        "| type | values | tp | fp | fn | precision | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for t, sc in evaluate(rows).items():
        lines.append(
            f"| {t} | {sc.tp + sc.fn} | {sc.tp} | {sc.fp} | {sc.fn} "
            f"| {sc.precision:.3f} | {sc.recall:.3f} |"
        )
    return "\n".join(lines)


@pytest.mark.parametrize("split", ["tune", "heldout", "fresh", "classes"])
def test_every_type_meets_the_target(split: str) -> None:
    scores = evaluate(load(split))
    # the classes part has no card or IP classes
    absent = {"payment_card", "ip_address"} if split == "classes" else set()
    assert set(scores) == set(TYPES) - absent
    bad = {
        t: (round(sc.precision, 3), round(sc.recall, 3), sc.misses[:5])
        for t, sc in scores.items()
        if sc.precision < TARGET or sc.recall < TARGET
    }
    assert not bad, bad


@pytest.mark.parametrize("split", ["tune", "heldout", "fresh", "classes"])
def test_streamed_in_random_chunks_equals_batch(split: str) -> None:
    rng = random.Random(7)
    for row in load(split):
        text = row["text"]
        st = StreamScanner(REDACTOR)
        spans: list[tuple[int, int, str]] = []
        i = 0
        while i < len(text):
            n = rng.randint(1, 9)
            spans += [(s, e, d.type) for s, e, d in st.feed(text[i : i + n]).spans]
            i += n
        spans += [(s, e, d.type) for s, e, d in st.flush().spans]
        assert spans == [(s, e, d.type) for s, e, d in REDACTOR.find(text)], text


def test_split_is_fixed_and_both_parts_are_large() -> None:
    tune, held = load("tune"), load("heldout")
    assert len(held) >= 700 and len(tune) >= 1000
    for part in (tune, held):
        assert sum(not r["labels"] for r in part) >= 150


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "tune"
    print(table(which))
    if "-v" in sys.argv:
        for sc in evaluate(load(which)).values():
            print("\n".join(sc.misses))
