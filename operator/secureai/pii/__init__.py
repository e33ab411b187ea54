"""PII and secret detection: one engine for the guard and the dataset tools.

Standard library only; imports nothing else of ``secureai`` (import-linter checks both).

API:

- ``TYPES``: the built-in type names (``email``, ``phone``, ``payment_card``, ``us_ssn``,
  ``ip_address``, ``iban``, ``secret``).
- ``detect(text, types=None) -> list[Finding]``: non-overlapping findings, sorted by start;
  ``Finding(type, start, end)`` holds character offsets into ``text`` (``text[start:end]`` is
  the value). ``types`` restricts detection to some of ``TYPES``.
- ``redact(text, types=None, replace=None) -> str``: each finding replaced by
  ``replace(finding, value)``, by default ``[REDACTED:<type>]``.
- ``replace_spans(text, findings, replace) -> str``: the same for findings you already have
  (for example after filtering them).
- ``Redactor(types, custom)``: a reusable engine, with custom ``(name, regex)`` patterns; its
  ``find(text)`` gives ``(start, end, Detector)`` triples and ``redact(text, counts)`` counts
  redactions per type. Build one and reuse it: construction compiles the detectors.
- ``StreamScanner(redactor)``: detection over text that arrives in pieces (chunks of a file,
  events of a stream). ``feed(chunk)`` returns a ``Segment(offset, text, spans)``: the text
  that can no longer be part of an unfinished match, with the matches in it at stream
  offsets; ``flush()`` returns the rest at the end. Findings are the same as for the whole
  text at once, wherever it is split, and at most a few hundred characters are held back
  (whole PEM blocks excepted).
- ``luhn_ok(digits)``, ``iban_ok(compact)``: the checksums.
- ``normalize(text)``: the view detection runs on (NFKC per character, invisible characters
  dropped, look-alikes of ``@``, ``.``, ``-`` and Latin letters mapped). Detection always
  works on this view and reports offsets into the original text, so a value written with
  full-width digits or zero-width spaces inside is found and its original span replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from secureai.pii.detectors import BUILTIN, Detector, iban_ok, luhn_ok, pattern_max_width
from secureai.pii.engine import (
    CONTEXT_CHARS,
    Redactor,
    Segment,
    StreamScanner,
    apply,
    apply_segment,
    merge_counts,
    placeholder,
)
from secureai.pii.normalize import View, normalize

TYPES: tuple[str, ...] = tuple(BUILTIN)


@dataclass(frozen=True, slots=True)
class Finding:
    """A detected value: ``text[start:end]`` is of ``type``."""

    type: str
    start: int
    end: int


Replace = Callable[[Finding, str], str]


@lru_cache(maxsize=32)
def _redactor(types: tuple[str, ...]) -> Redactor:
    unknown = set(types) - set(TYPES)
    if unknown:
        raise ValueError(f"unknown PII types: {', '.join(sorted(unknown))}")
    return Redactor(types)


def detect(text: str, types: Iterable[str] | None = None) -> list[Finding]:
    r = _redactor(TYPES if types is None else tuple(types))
    return [Finding(d.type, s, e) for s, e, d in r.find(text)]


def _placeholder(f: Finding, _value: str) -> str:
    return placeholder(f.type)


def replace_spans(text: str, findings: Sequence[Finding], replace: Replace = _placeholder) -> str:
    out: list[str] = []
    cur = 0
    for f in sorted(findings, key=lambda f: (f.start, f.end)):
        if f.start < cur:
            raise ValueError("findings overlap")
        out.append(text[cur : f.start])
        out.append(replace(f, text[f.start : f.end]))
        cur = f.end
    out.append(text[cur:])
    return "".join(out)


def redact(text: str, types: Iterable[str] | None = None, replace: Replace = _placeholder) -> str:
    return replace_spans(text, detect(text, types), replace)


__all__ = [
    "CONTEXT_CHARS",
    "TYPES",
    "Detector",
    "Finding",
    "Redactor",
    "Replace",
    "Segment",
    "StreamScanner",
    "View",
    "apply",
    "apply_segment",
    "detect",
    "iban_ok",
    "luhn_ok",
    "merge_counts",
    "normalize",
    "pattern_max_width",
    "placeholder",
    "redact",
    "replace_spans",
]
