"""A bytes-level prefilter: run the detectors only on windows that can hold a value.

Most bytes of a dataset hold no candidate at all. Every raw match of a built-in detector holds
an *anchor* of a few kinds (a digit, ``@``, ``:``, a byte >= 0x80, ``-----BEGIN``, a run of 16
token characters, or ``=``/``>``/`` is ``/`` to `` right after a credential keyword), and lies
within a bounded distance of it (``Margin``). C-speed primitives (``bytes.translate``,
``find``, ``rfind``) locate the anchors; each anchor gives an interval wide enough for every
match that can hold it plus the context its validator reads (80 characters back at most). The
intervals are widened outward to a separator byte (so a token run is always seen whole) and
merged into windows. Between two windows lies only text no raw match can touch, so the engine
run on each window alone (a ``StreamScanner`` per window, fed as the data arrives) finds
exactly what it finds on the whole text; ``WindowScanner`` streams that over chunks in bounded
memory. The input is Latin-1 (one character per byte): the dataset tools' encoding.

Only the built-in detectors are described by these margins: ``WindowScanner`` refuses a
``Redactor`` with custom patterns.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from secureai.pii.detectors import BUILTIN, Detector
from secureai.pii.engine import Redactor, StreamScanner

ENCODING = "latin-1"
CONTEXT = 80  # the furthest a validator looks before its match (email: 80, phone/IPv4: 40)
LOOKAHEAD = 32  # the furthest a pattern or validator looks after its match (IPv6 zone + prefix)


@dataclass(frozen=True, slots=True)
class Margin:
    """How far before (``back``) and after (``fwd``) an anchor its windows reach."""

    back: int
    fwd: int


# ``back`` = how far a match may start before its anchor (its *reach*) + the context its
# validator reads before it; ``fwd`` = how far it may end after the anchor + LOOKAHEAD.
#
# Every raw match holds a digit: phone (reach 1, reads 40 back, at most 114 long), card, IPv4
# (reads 40 back), IBAN (reach 2), Telegram tokens, and the SSN after its cue (the cue starts
# at most 69 characters before the first digit).
DIGIT = Margin(back=96, fwd=120 + LOOKAHEAD)
# E-mail: at most 64 characters before the '@' (the validator reads 80 more), 415 after.
AT = Margin(back=64 + CONTEXT + 16, fwd=416 + LOOKAHEAD)
# ':' (IPv6, scheme://user:password@, hooks.slack.com, key: value) and '=' '>' ' is ' ' to '
# after a keyword: a match starts at most 25 characters before it (aws_secret_access_key" : ),
# ends at most 300 after; none of these validators reads context.
SEP = Margin(back=48, fwd=300 + LOOKAHEAD)
# A run of 16 token characters (token families, JWT, AWS ids and secrets, bearer tokens): the
# window covers the whole run (widened to separators) plus a keyword before it (at most 30).
RUN = Margin(back=48, fwd=LOOKAHEAD)
# A byte >= 0x80 may normalise to anything (a digit, a letter joining a run, a space): the
# widest bounded margin.
HIGH = Margin(back=640, fwd=640)
# A private-key block: up to 16,200 characters after its header; a soft hyphen (0xAD, dropped
# by normalisation) may hide inside the header.
PEM = Margin(back=16, fwd=16200 + 64)
# Between a credential keyword (a case-insensitive trigger, itself at most 16 long) and its
# separator: at most ``[_.-]key`` or ``_access_key`` or ``signature``, a quote and spaces.
KEYWORD_GAP = 20
KEYWORD_REACH = KEYWORD_GAP + 16
RUN_LEN = 16
MAX_BACK = max(m.back for m in (DIGIT, AT, SEP, RUN, HIGH, PEM)) + RUN_LEN

_TOKEN = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.+/~-=:"


def _table(pairs: dict[bytes, int], default: int) -> bytes:
    t = bytearray([default] * 256)
    for chars, cls in pairs.items():
        for c in chars:
            t[c] = cls
    return bytes(t)


# Byte classes: 'a' token character, '0' digit, '@', '^' non-ASCII, ' ' anything else (a
# separator: it ends every token run).
_CLASS = _table(
    {_TOKEN: ord("a"), b"0123456789": ord("0"), b"@": ord("@"), bytes(range(128, 256)): ord("^")},
    ord(" "),
)
# Lowercase, and every ASCII character ``\s`` matches as a space (for `` is ``/`` to ``).
_LOWER_WS = bytes(
    32 if c in b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f" else (c + 32 if 65 <= c <= 90 else c)
    for c in range(256)
)


def _keywords() -> tuple[bytes, ...]:
    """The credential keywords: every case-insensitive trigger of a built-in detector."""
    words: set[bytes] = set()
    for dets in BUILTIN.values():
        for d in dets:
            if d.trigger_ci and d.trigger is not None:
                words.update(t.lower().rstrip("=").encode() for t in d.trigger)
    return tuple(sorted(words))


KEYWORDS = _keywords()
_BUILTIN_IDS = frozenset(id(d) for dets in BUILTIN.values() for d in dets)


def _merged(hay: bytes, needle: bytes, m: Margin, lo: int, hi: int, out: list[list[int]]) -> None:
    """Intervals around every occurrence of ``needle`` in ``hay[lo:hi]``, neighbours merged."""
    k = len(needle)
    p = hay.find(needle, lo, hi)
    while p >= 0:
        s, e = p - m.back, p + k + m.fwd
        while True:  # the last occurrence whose interval overlaps this one
            q = hay.rfind(needle, p + 1, min(hi, e + m.back + k))
            if q < 0:
                break
            p, e = q, q + k + m.fwd
        out.append([s, e])
        p = hay.find(needle, min(hi, e + m.back), hi)


def _keyword_before(before: bytes) -> bool:
    """``before`` (lowercased) ends with a credential keyword, then at most a short suffix
    without spaces (``_key``, ``"``), then spaces: the shape of every ``key = value``."""
    for w in KEYWORDS:
        i = before.rfind(w)
        if i >= 0:
            between = before[i + len(w) :].rstrip(b" ")
            if len(between) <= KEYWORD_GAP and b" " not in between:
                return True
    return False


def _gated(low: bytes, needle: bytes, m: Margin, out: list[list[int]]) -> None:
    """Intervals around the separators of ``low`` (lowercased) that follow a credential
    keyword closely enough to be part of a ``key = value`` match."""
    k = len(needle)
    p = low.find(needle)
    while p >= 0:
        if _keyword_before(low[max(0, p - KEYWORD_REACH) : p]):
            out.append([p - m.back, p + k + m.fwd])
        p = low.find(needle, p + 1)


def windows(data: bytes) -> list[tuple[int, int]]:
    """The windows of ``data`` (a whole text): sorted, disjoint ``(start, end)`` byte ranges
    outside which no built-in detector can match."""
    return _Windows(data).merged(extra=None)


class _Windows:
    """The anchor intervals of one buffer, widened to separators."""

    __slots__ = ("cls", "data", "n", "spans")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = n = len(data)
        self.cls = cls = data.translate(_CLASS)
        spans: list[list[int]] = []
        _merged(cls, b"0", DIGIT, 0, n, spans)
        _merged(cls, b"@", AT, 0, n, spans)
        _merged(cls, b"^", HIGH, 0, n, spans)
        _merged(data, b":", SEP, 0, n, spans)
        _merged(data, b"-----BEGIN", PEM, 0, n, spans)
        _merged(data, b"\xad", PEM, 0, n, spans)
        low = data.translate(_LOWER_WS)
        for sep in (b"=", b">", b" is ", b" to "):
            _gated(low, sep, SEP, spans)
        run = b"a" * RUN_LEN
        p = cls.find(run)
        while p >= 0:
            e = cls.find(b" ", p + RUN_LEN)
            e = n if e < 0 else e
            spans.append([p - RUN.back, e + RUN.fwd])
            p = cls.find(run, e)
        self.spans = spans

    def snap_left(self, i: int) -> int:
        """The start of the token run holding ``i`` (after the separator before it)."""
        if i <= 0:
            return 0
        return self.cls.rfind(b" ", 0, i) + 1

    def snap_right(self, i: int) -> int:
        """The separator ending the run holding ``i`` (``n`` when the run reaches the end)."""
        if i >= self.n:
            return self.n
        j = self.cls.find(b" ", i)
        return self.n if j < 0 else j

    def merged(self, extra: tuple[int, int] | None) -> list[tuple[int, int]]:
        snapped = [(self.snap_left(s), self.snap_right(e)) for s, e in self.spans]
        if extra is not None:
            snapped.append(extra)
        snapped.sort()
        out: list[tuple[int, int]] = []
        for s, e in snapped:
            if out and s <= out[-1][1]:
                if e > out[-1][1]:
                    out[-1] = (out[-1][0], e)
            else:
                out.append((s, e))
        return out


Span = tuple[int, int, str]  # start, end (stream offsets), type


class WindowScanner:
    """Detection over a Latin-1 byte stream fed in chunks, through the prefilter.

    ``feed(chunk)`` and ``flush()`` return ``(offset, data, spans)``: the committed bytes that
    start at stream offset ``offset`` and the matches in them (sorted, stream offsets). The
    concatenation of every ``data`` is the input; the spans are those of
    ``Redactor.find`` on the whole stream decoded as Latin-1.
    """

    __slots__ = ("_base", "_buf", "_fed", "_r", "_scanner", "_win_start")

    def __init__(self, redactor: Redactor) -> None:
        if any(id(d) not in _BUILTIN_IDS for d in redactor.detectors):
            raise ValueError("the prefilter only knows the built-in detectors")
        self._r = redactor
        self._buf = b""  # uncommitted bytes, from stream offset _base
        self._base = 0
        self._scanner: StreamScanner | None = None  # the open window's
        self._win_start = 0  # stream offset of the open window
        self._fed = 0  # stream offset up to which the open window's scanner has its text

    def _window_spans(self, seg_spans: tuple[tuple[int, int, Detector], ...]) -> list[Span]:
        off = self._win_start
        return [(s + off, e + off, d.type) for s, e, d in seg_spans]

    def _feed_window(self, data: bytes, upto: int, spans: list[Span]) -> None:
        """Give the open window its text up to buffer index ``upto``."""
        assert self._scanner is not None
        lo = self._fed - self._base
        if upto > lo:
            seg = self._scanner.feed(data[lo:upto].decode(ENCODING))
            spans.extend(self._window_spans(seg.spans))
            self._fed = self._base + upto

    def _close_window(self, spans: list[Span]) -> None:
        assert self._scanner is not None
        spans.extend(self._window_spans(self._scanner.flush().spans))
        self._scanner = None

    def _find_whole(
        self, data: bytes, base: int, whole: list[tuple[int, int]], spans: list[Span]
    ) -> None:
        """One pass of the engine over the whole windows joined by NUL: no pattern crosses a
        NUL (no token, space or private-key class holds it; a key = value ends well inside
        its window), and every match and the context its validator reads lie inside its own
        window, so each window's matches are those it has alone."""
        starts: list[int] = []
        pos = 0
        for s, e in whole:
            starts.append(pos)
            pos += e - s + 1
        text = b"\0".join(data[s:e] for s, e in whole).decode(ENCODING)
        for a, b, d in self._r.find(text):
            i = bisect_right(starts, a) - 1
            shift = base + whole[i][0] - starts[i]
            spans.append((a + shift, b + shift, d.type))

    def _run(self, data: bytes, final: bool) -> tuple[int, bytes, list[Span]]:
        base, n = self._base, len(data)
        w = _Windows(data)
        # Intervals of anchors not seen yet start at or after ``hold`` (once widened).
        hold = n if final else w.snap_left(max(0, n - MAX_BACK))
        open_at = n if final else max(0, n - MAX_BACK)
        extra = None
        if self._scanner is not None:
            extra = (self._win_start - base, self._fed - base)
        spans: list[Span] = []
        commit = hold
        whole: list[tuple[int, int]] = []
        for s, e in w.merged(extra):
            if s > open_at or (s == open_at and not final):
                break
            if self._scanner is None and (e < hold or final):
                whole.append((max(0, s), e))  # the common case: in the buffer from end to end
                continue
            if self._scanner is None:
                self._scanner = StreamScanner(self._r)
                self._win_start = self._fed = base + max(0, s)
            self._feed_window(data, min(e, n), spans)
            if e < hold or final:
                self._close_window(spans)
                continue
            commit = self._win_start + self._scanner.committed - base
            break
        if whole:
            self._find_whole(data, base, whole, spans)
        if self._scanner is None:
            commit = hold
        commit = max(0, min(commit, n))
        self._buf = data[commit:]
        self._base = base + commit
        spans.sort()
        return base, data[:commit], spans

    def feed(self, chunk: bytes) -> tuple[int, bytes, list[Span]]:
        return self._run(self._buf + chunk, final=False)

    def flush(self) -> tuple[int, bytes, list[Span]]:
        return self._run(self._buf, final=True)
