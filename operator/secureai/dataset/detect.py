"""The dataset tools' view of the shared detection engine (``secureai.pii``).

Everything the dataset tools need from detection goes through this module, so a change of the
engine's API touches one file. Text is handled as Latin-1: one character per byte, so character
offsets are byte offsets, any byte sequence decodes, and the (ASCII) pseudonyms written back
leave every other byte as it was.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from secureai.pii import TYPES, Redactor
from secureai.pii.prefilter import WindowScanner

__all__ = ["TYPES", "Match", "Stream", "build", "is_reserved", "parse_types"]

ENCODING = "latin-1"

# Address spaces that are never assigned to anyone: pseudonyms are drawn from them, and a value
# inside them is not counted as personal data (it cannot designate a person).
_RESERVED_V4 = ipaddress.ip_network("240.0.0.0/4")  # RFC 1112 "reserved for future use"
_RESERVED_V6 = ipaddress.ip_network("2001:db8::/32")  # RFC 3849 documentation prefix
RESERVED_EMAIL_TLD = ".invalid"  # RFC 6761: never resolves, never delivered


@dataclass(frozen=True, slots=True)
class Match:
    """A detected value at ``start:end`` (stream offsets) of ``type``."""

    type: str
    start: int
    end: int


def parse_types(text: str | None) -> tuple[str, ...]:
    """``a,b`` -> the detector types (all when None); ValueError names unknown ones."""
    if text is None:
        return TYPES
    wanted = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [t for t in wanted if t not in TYPES]
    if unknown:
        raise ValueError(f"unknown type(s) {', '.join(unknown)} (known: {', '.join(TYPES)})")
    return wanted


def is_reserved(kind: str, value: str) -> bool:
    """A value in a never-assigned space (where pseudonyms live): not personal data."""
    if kind == "email":
        return value.lower().endswith(RESERVED_EMAIL_TLD)
    if kind == "ip_address":
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            return False
        net = _RESERVED_V4 if addr.version == 4 else _RESERVED_V6
        return addr in net
    return False


class Engine:
    """A compiled detector set; build once, use for many streams."""

    def __init__(self, types: Iterable[str]) -> None:
        self.types = tuple(types)
        self._redactor = Redactor(self.types)

    def stream(self) -> Stream:
        return Stream(self)

    def find(self, text: str) -> list[Match]:
        """Findings in a whole text (a cell, a pseudonym), reserved values left out."""
        return [
            Match(d.type, s, e)
            for s, e, d in self._redactor.find(text)
            if not is_reserved(d.type, text[s:e])
        ]


def build(types: Iterable[str]) -> Engine:
    return Engine(types)


class Stream:
    """Detection over a byte stream (Latin-1) fed in pieces: values split across pieces are
    still found whole.

    ``feed``/``flush`` return ``(offset, data, matches)``: the committed bytes that start at
    stream offset ``offset`` and the matches inside them (sorted, stream offsets). The
    concatenation of every returned ``data`` is the input. The engine runs only on the
    prefilter's windows (``secureai.pii.prefilter``): the matches are those of the engine on
    the whole stream.
    """

    __slots__ = ("_scanner",)

    def __init__(self, engine: Engine) -> None:
        self._scanner = WindowScanner(engine._redactor)

    @staticmethod
    def _out(
        piece: tuple[int, bytes, list[tuple[int, int, str]]],
    ) -> tuple[int, bytes, list[Match]]:
        offset, data, spans = piece
        matches = [
            Match(kind, s, e)
            for s, e, kind in spans
            if not is_reserved(kind, data[s - offset : e - offset].decode(ENCODING))
        ]
        return offset, data, matches

    def feed(self, data: bytes) -> tuple[int, bytes, list[Match]]:
        return self._out(self._scanner.feed(data))

    def flush(self) -> tuple[int, bytes, list[Match]]:
        return self._out(self._scanner.flush())
