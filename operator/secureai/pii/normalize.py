"""The normalised view detection runs on, with a map back to the original text.

Full-width and other compatibility forms become ASCII (NFKC, per character), invisible
characters (format controls such as zero-width spaces, joiners, soft hyphens, bidi marks) are
dropped, and look-alikes of the characters values are made of (``@``, ``.``, ``-``, Latin
letters written in Cyrillic or Greek) become those characters. A match in the view maps back
to the original span that produced it, so redaction replaces the original characters,
invisible ones included.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left

_CONFUSABLE = str.maketrans(
    {
        "\u3002": ".",  # ideographic full stop
        "\uff61": ".",
        "\u2024": ".",
        "\ua4f8": ".",
        "\u0701": ".",
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u2043": "-",
        # Cyrillic and Greek letters that look like Latin ones
        "\u0430": "a",
        "\u0435": "e",
        "\u043e": "o",
        "\u0440": "p",
        "\u0441": "c",
        "\u0443": "y",
        "\u0445": "x",
        "\u0456": "i",
        "\u0458": "j",
        "\u0455": "s",
        "\u0501": "d",
        "\u0410": "A",
        "\u0412": "B",
        "\u0415": "E",
        "\u041a": "K",
        "\u041c": "M",
        "\u041d": "H",
        "\u041e": "O",
        "\u0420": "P",
        "\u0421": "C",
        "\u0422": "T",
        "\u0425": "X",
        "\u03bf": "o",
        "\u039f": "O",
        "\u0391": "A",
        "\u0392": "B",
        "\u0395": "E",
        "\u0396": "Z",
        "\u0397": "H",
        "\u0399": "I",
        "\u039a": "K",
        "\u039c": "M",
        "\u039d": "N",
        "\u03a1": "P",
        "\u03a4": "T",
        "\u03a7": "X",
        "\u03a5": "Y",
    }
)
# Invisible characters that are not format controls (Cf).
_INVISIBLE = frozenset("\u034f\u115f\u1160\u3164\uffa0\u180e")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_CACHE: dict[str, str] = {}


def _char(c: str) -> str:
    hit = _CACHE.get(c)
    if hit is None:
        if c in _INVISIBLE or unicodedata.category(c) == "Cf":
            hit = ""
        else:
            hit = unicodedata.normalize("NFKC", c).translate(_CONFUSABLE)
        if len(_CACHE) < 65536:
            _CACHE[c] = hit
    return hit


class View:
    """``text`` as detection sees it; ``span`` maps a view span back to the original."""

    __slots__ = ("_src", "text")

    def __init__(self, text: str) -> None:
        if text.isascii():
            self.text = text
            self._src: list[int] | None = None
            return
        parts: list[str] = []
        src: list[int] = []
        cur = 0
        for m in _NON_ASCII.finditer(text):
            i = m.start()
            if i > cur:
                parts.append(text[cur:i])
                src.extend(range(cur, i))
            n = _char(m.group(0))
            if n:
                parts.append(n)
                src.extend([i] * len(n))
            cur = i + 1
        parts.append(text[cur:])
        src.extend(range(cur, len(text)))
        view = "".join(parts)
        if view == text:
            self.text = text
            self._src = None
            return
        src.append(len(text))
        self.text = view
        self._src = src

    @property
    def identity(self) -> bool:
        return self._src is None

    def pos(self, orig: int) -> int:
        """The view offset of the first view character at or after original offset ``orig``."""
        if self._src is None:
            return orig
        return bisect_left(self._src, orig)

    def start(self, j: int) -> int:
        """Original offset where view character ``j`` (or the end, ``len(view)``) comes from."""
        return j if self._src is None else self._src[j]

    def end(self, j: int) -> int:
        """Original offset just after the character that view character ``j - 1`` came from."""
        if self._src is None or j == 0:
            return j if self._src is None else self._src[0]
        return self._src[j - 1] + 1


def normalize(text: str) -> str:
    """The normalised view of ``text`` (what detectors and deny patterns see)."""
    return View(text).text
