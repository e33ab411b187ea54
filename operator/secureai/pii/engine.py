"""The detection engine: candidate matches, overlap resolution, streaming hold-back, redaction."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from secureai.pii.detectors import BUILTIN, Detector, custom_detector
from secureai.pii.normalize import View

# The shortest token run that ``Detector.min_token_run`` detectors need.
_LONG_RUN = re.compile(r"[A-Za-z0-9_.+/=~:-]{16}")
_MEMO_MAX_LEN = 64
_SHORT = 1024  # texts up to this long look for their triggers with one regex per group
_MEMO_SIZE = 4096


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


@dataclass(slots=True)
class _HoldGroup:
    back: re.Pattern[str]  # matches the run of class chars at the start of reversed text
    last: re.Pattern[str]  # the class itself, to test the final char first
    window: int


class Redactor:
    """Finds and replaces PII/secrets. Thread-safe and stateless after construction."""

    def __init__(
        self,
        types: Iterable[str] = tuple(BUILTIN),
        custom: Sequence[tuple[str, str]] = (),
    ) -> None:
        dets: list[Detector] = []
        for t in types:
            dets.extend(BUILTIN[t])
        dets.extend(custom_detector(n, r) for n, r in custom)
        self.detectors: tuple[Detector, ...] = tuple(dets)
        self.types: tuple[str, ...] = tuple(dict.fromkeys(d.type for d in dets))
        groups: dict[str | None, _HoldGroup] = {}
        self._tails: list[Detector] = []
        self._any_window = 0
        for d in dets:
            if d.tail is not None:
                self._tails.append(d)
            elif d.charset is None:
                self._any_window = max(self._any_window, d.max_len - 1)
            else:
                g = groups.setdefault(
                    d.charset, _HoldGroup(re.compile(d.charset + "*"), re.compile(d.charset), 0)
                )
                g.window = max(g.window, d.max_len - 1)
        self._groups = list(groups.values())
        self._tail_window = max((d.max_len for d in self._tails), default=0)
        self._tail_key_len = {id(d): max(map(len, d.tail_keys or ("",))) for d in self._tails}
        self.max_len = max((d.max_len for d in dets), default=1)
        self._memo: dict[str, tuple[str, dict[str, int]]] = {}
        self._index_triggers()

    def _index_triggers(self) -> None:
        """Detectors grouped by trigger, so each distinct trigger is looked for once per text.
        Detectors whose every match is a long token skip texts without one (most prose)."""
        groups: dict[tuple[tuple[str, ...] | None, bool, bool], list[int]] = {}
        for i, d in enumerate(self.detectors):
            key = (d.trigger, d.trigger_ci, d.min_token_run > 0)
            groups.setdefault(key, []).append(i)
        self._trigger_groups = [
            (t, ci, long, idx, None if t is None else re.compile("|".join(map(re.escape, t))))
            for (t, ci, long), idx in groups.items()
        ]
        self._last_char_groups: dict[str, list[_HoldGroup]] = {}

    def _active(self, text: str, low: str) -> list[int]:
        has_run: bool | None = None
        out: list[int] = []
        short = len(text) <= _SHORT
        for trig, ci, long, idx, either in self._trigger_groups:
            if long:
                if has_run is None:
                    has_run = _LONG_RUN.search(text) is not None
                if not has_run:
                    continue
            if trig is not None:
                hay = low if ci else text
                # One regex call beats a generator of ``in`` tests on a short text only.
                if short and either is not None:
                    if either.search(hay) is None:
                        continue
                elif not any(t in hay for t in trig):
                    continue
            out.extend(idx)
        out.sort()
        return out

    def candidates(self, text: str, pos: int = 0) -> list[tuple[int, int, int, Detector, int]]:
        """(start, end, priority, detector, anchor): anchor is where the regex match began.

        Detection runs on the normalised view of ``text``; offsets are the original text's.
        """
        return self.candidates_in(View(text), pos)

    def candidates_in(self, v: View, pos: int) -> list[tuple[int, int, int, Detector, int]]:
        if v.identity:
            return self._candidates(v.text, pos)
        return [
            (v.start(s), v.end(e), p, d, v.start(a))
            for s, e, p, d, a in self._candidates(v.text, v.pos(pos))
        ]

    def hold_point(self, text: str, pos: int) -> int:
        """Earliest index from which the end of ``text`` may still be an unfinished match."""
        return self.hold_in(View(text), pos)

    def hold_in(self, v: View, pos: int) -> int:
        if v.identity:
            return self._hold(v.text, pos)
        return max(pos, v.start(self._hold(v.text, v.pos(pos))))

    def _candidates(self, text: str, pos: int) -> list[tuple[int, int, int, Detector, int]]:
        out: list[tuple[int, int, int, Detector, int]] = []
        low = text.lower()
        for di in self._active(text, low):
            d = self.detectors[di]
            validate = d.validate
            if d.seek is not None:
                # Keyword-led detectors: find the keywords in the lowercased text, then try
                # the pattern only there (lowercasing keeps offsets for this text).
                if low is None:
                    low = text.lower()
                if len(low) == len(text):
                    match = d.pattern.match
                    for k in d.seek.finditer(low, pos):
                        m = match(text, k.start())
                        if m is None:
                            continue
                        sp = (
                            validate(text, m)
                            if validate is not None
                            else m.span((m.lastindex or 0) if d.group < 0 else d.group)
                        )
                        if sp is not None and sp[1] > sp[0]:
                            out.append((sp[0], sp[1], d.priority, d, m.start()))
                    continue
            i = pos
            search = d.pattern.search
            while True:
                m = search(text, i)
                if m is None:
                    break
                if validate is not None:
                    span = validate(text, m)
                    if span is None:
                        i = m.start() + 1
                        continue
                else:
                    g = (m.lastindex or 0) if d.group < 0 else d.group
                    span = m.span(g)
                if span[1] > span[0]:
                    out.append((span[0], span[1], d.priority, d, m.start()))
                i = max(m.end(), m.start() + 1)
        return out

    @staticmethod
    def select(
        cands: list[tuple[int, int, int, Detector, int]],
    ) -> list[tuple[int, int, Detector, int]]:
        """Non-overlapping matches: earliest first, then longest, then highest priority."""
        cands.sort(key=lambda c: (c[0], -c[1], -c[2]))
        chosen: list[tuple[int, int, Detector, int]] = []
        last_end = -1
        for s, e, _, d, anchor in cands:
            if s >= last_end:
                chosen.append((s, e, d, anchor))
                last_end = e
        return chosen

    def scan(self, text: str, pos: int = 0) -> list[tuple[int, int, Detector, int]]:
        cands = self.candidates(text, pos)
        return self.select(cands) if cands else []

    def find(self, text: str, pos: int = 0) -> list[tuple[int, int, Detector]]:
        return [(s, e, d) for s, e, d, _ in self.scan(text, pos)]

    def _hold(self, text: str, pos: int) -> int:
        n = len(text)
        h = n
        if self._any_window:
            h = min(h, n - self._any_window)
        if n == 0:
            return pos
        last = text[-1]
        groups = self._last_char_groups.get(last)
        if groups is None:
            groups = [g for g in self._groups if g.last.match(last)]
            if len(self._last_char_groups) < 4096:
                self._last_char_groups[last] = groups
        for g in groups:
            lo = max(pos, n - g.window)
            if lo >= n:
                continue
            m = g.back.match(text[n - 1 : lo - 1 if lo > 0 else None : -1])
            run = m.end() if m else 0
            if run:
                h = min(h, n - min(run, g.window))
        low: str | None = None
        low_start = max(pos, n - self._tail_window)
        for d in self._tails:
            lo = max(pos, n - d.max_len)
            if d.tail_keys is not None:
                if low is None:
                    low = text[low_start:].lower()
                window = low[lo - low_start :]
                if not any(k in window for k in d.tail_keys):
                    lo = max(lo, n - self._tail_key_len[id(d)])
            m = d.tail.search(text, lo) if d.tail is not None else None
            if m is not None:
                h = min(h, m.start())
        return max(h, pos)

    def redact(self, text: str, counts: dict[str, int] | None = None) -> str:
        spans = self.find(text)
        if not spans:
            return text
        return apply(text, 0, len(text), spans, counts)

    def redact_short(self, text: str, counts: dict[str, int]) -> str:
        """``redact`` with a bounded memo for short strings (JSON keys, ids, model names)."""
        if len(text) > _MEMO_MAX_LEN:
            return self.redact(text, counts)
        hit = self._memo.get(text)
        if hit is None:
            delta: dict[str, int] = {}
            hit = (self.redact(text, delta), delta)
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[text] = hit
        for k, v in hit[1].items():
            counts[k] = counts.get(k, 0) + v
        return hit[0]


def apply(
    text: str,
    start: int,
    end: int,
    spans: Sequence[tuple[int, int, Detector]],
    counts: dict[str, int] | None,
) -> str:
    """text[start:end] with the spans (all inside it, sorted) replaced."""
    out: list[str] = []
    cur = start
    for s, e, d in spans:
        out.append(text[cur:s])
        out.append(placeholder(d.type))
        if counts is not None:
            counts[d.type] = counts.get(d.type, 0) + 1
        cur = e
    out.append(text[cur:end])
    return "".join(out)


def merge_counts(into: dict[str, int], other: dict[str, int]) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


CONTEXT_CHARS = 64  # committed text kept as look-behind context for the next scan


@dataclass(frozen=True, slots=True)
class Segment:
    """A committed stretch of a stream: ``text`` starts at character ``offset`` of the stream;
    ``spans`` (absolute offsets, sorted, inside the segment) are the matches in it."""

    offset: int
    text: str
    spans: tuple[tuple[int, int, Detector], ...]


class StreamScanner:
    """Incremental detection over a text that arrives in pieces.

    ``feed`` commits everything that can no longer grow into a match and returns it with its
    matches; it holds back only the tail that could (see ``Redactor.hold_point``). The spans
    found equal those of scanning the whole text at once, wherever the text is split.
    """

    __slots__ = ("_base", "_buf", "_pos", "_r")

    def __init__(self, redactor: Redactor) -> None:
        self._r = redactor
        self._buf = ""
        self._pos = 0  # index in _buf where the uncommitted text starts
        self._base = 0  # stream offset of _buf[0]

    @property
    def pending(self) -> int:
        return len(self._buf) - self._pos

    @property
    def committed(self) -> int:
        """Stream offset up to which text has been committed."""
        return self._base + self._pos

    def _segment(
        self, buf: str, pos: int, end: int, spans: Sequence[tuple[int, int, Detector]]
    ) -> Segment:
        base = self._base
        return Segment(
            base + pos, buf[pos:end], tuple((s + base, e + base, d) for s, e, d in spans)
        )

    def feed(self, chunk: str) -> Segment:
        buf = self._buf + chunk
        pos = self._pos
        if not chunk:
            return Segment(self._base + pos, "", ())
        n = len(buf)
        r = self._r
        v = View(buf)
        cands = r.candidates_in(v, pos)
        e = r.hold_in(v, pos)
        spans: list[tuple[int, int, Detector]] = []
        if cands:
            h = e
            for s, end, _, d, anchor in cands:
                if end > h or (d.end_slack and end + d.end_slack >= n):
                    e = min(e, s, anchor)
            # No candidate may straddle the cut: rescans start at the cut and must see it whole.
            moved = True
            while moved:
                moved = False
                for s, end, _, _, anchor in cands:
                    start = min(s, anchor)
                    if start < e < end:
                        e = start
                        moved = True
            spans = [(s, end, d) for s, end, d, _ in r.select(cands) if end <= e]
        seg = self._segment(buf, pos, e, spans)
        keep = max(0, e - CONTEXT_CHARS)
        self._buf = buf[keep:]
        self._base += keep
        self._pos = e - keep
        return seg

    def flush(self) -> Segment:
        buf, pos = self._buf, self._pos
        seg = self._segment(buf, pos, len(buf), self._r.find(buf, pos) if pos < len(buf) else [])
        self._base += len(buf)
        self._buf, self._pos = "", 0
        return seg


def apply_segment(
    seg: Segment,
    counts: dict[str, int] | None,
) -> str:
    """The segment's text with its spans replaced by placeholders."""
    if not seg.spans:
        return seg.text
    shifted = [(s - seg.offset, e - seg.offset, d) for s, e, d in seg.spans]
    return apply(seg.text, 0, len(seg.text), shifted, counts)
