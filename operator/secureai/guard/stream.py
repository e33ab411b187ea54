"""Streaming redaction of response bodies.

``TextStream`` holds back only the tail of the text that could still grow into a match (see
``Redactor.hold_point``) and emits everything before it at once, so a secret split across chunks
is caught while time-to-first-byte stays low. ``SSEStream`` and ``NDJSONStream`` apply it to the
text fragments of JSON events (OpenAI/Anthropic-style deltas), carrying held text from one
event into the next one for the same choice/field, so structure and event count stay the same.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any, Protocol

from secureai.guard.jsonredact import redact_json_bytes
from secureai.pii import Redactor, StreamScanner, apply_segment

MAX_EVENT_BYTES = 1 << 20

# Streamed JSON events: every string value is taken as a fragment of one growing text per
# JSON path (list elements keyed by their "index" when they have one), whatever the field is
# called, except these fields, which describe the event rather than carry its text. A wrong
# guess either way costs layout, never a leak: a fragment field taken for metadata would
# still be redacted, but only within one event; metadata taken for text keeps its content
# and order, only shifted into the next event.
META_FIELDS = frozenset(
    {
        "id",
        "object",
        "model",
        "model_name",
        "model_version",
        "role",
        "type",
        "finish_reason",
        "stop_reason",
        "stop_sequence",
        "done_reason",
        "system_fingerprint",
        "created",
        "created_at",
        "name",
        "datatype",
        "status",
        "item_id",
        "response_id",
        "call_id",
        "event",
        "service_tier",
    }
)
_TERMINAL_TYPES = ("_stop", ".done", ".completed", ".failed", ".incomplete")

Key = tuple[Any, ...]


class StreamError(Exception):
    """The body cannot be redacted safely (e.g. an unterminated oversized event)."""


class BodyFilter(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class TextStream:
    """Incremental redaction of a text that arrives in pieces."""

    __slots__ = ("_counts", "_scan")

    def __init__(self, redactor: Redactor, counts: dict[str, int]) -> None:
        self._scan = StreamScanner(redactor)
        self._counts = counts

    @property
    def pending(self) -> int:
        return self._scan.pending

    def feed(self, chunk: str) -> str:
        return apply_segment(self._scan.feed(chunk), self._counts)

    def flush(self) -> str:
        return apply_segment(self._scan.flush(), self._counts)


def _wide(charset: str) -> bool:
    return charset.replace("-", "").replace("_", "").startswith(("utf16", "utf32"))


class ByteStream:
    """TextStream over bytes in a given charset; undecodable bytes pass through unchanged.

    NUL bytes in a narrow charset mean binary content under a text type: refused.
    """

    def __init__(self, redactor: Redactor, counts: dict[str, int], charset: str = "utf-8") -> None:
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = "utf-8"
        self._charset = charset
        self._nul_ok = _wide(charset)
        self._dec = codecs.getincrementaldecoder(charset)("surrogateescape")
        self._text = TextStream(redactor, counts)

    def feed(self, data: bytes) -> bytes:
        if not self._nul_ok and b"\x00" in data:
            raise StreamError("binary content under a text content type")
        out = self._text.feed(self._dec.decode(data))
        return out.encode(self._charset, "surrogateescape")

    def flush(self) -> bytes:
        out = self._text.feed(self._dec.decode(b"", final=True)) + self._text.flush()
        return out.encode(self._charset, "surrogateescape")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class _Ctx:
    __slots__ = ("changed", "meta", "payload", "terminal", "top")

    def __init__(self, top: Key, terminal: list[Key], meta: list[str], payload: str) -> None:
        self.top = top
        self.terminal = terminal
        self.meta = meta
        self.payload = payload
        self.changed = False


class JsonFragments:
    """Cross-event redaction state for a stream of JSON events."""

    def __init__(self, redactor: Redactor, counts: dict[str, int]) -> None:
        self._r = redactor
        self._counts = counts
        self._streams: dict[Key, TextStream] = {}
        self._templates: dict[Key, tuple[list[str], str]] = {}

    @staticmethod
    def _top(obj: Any) -> Key:
        # Top-level counters are not stream ids: TGI's "index" counts tokens, and Anthropic's
        # blocks and OpenAI Responses' outputs follow each other, each closed by its own
        # terminal event. Interleaved streams live in lists (choices[].index).
        return ()

    @staticmethod
    def _elem(v: Any, i: int) -> Any:
        if isinstance(v, dict):
            idx = v.get("index")
            if isinstance(idx, int) and not isinstance(idx, bool):
                return ("#", idx)
        return i

    def _terminals(self, obj: Any, top: Key) -> list[Key]:
        res: list[Key] = []
        if isinstance(obj, dict):
            if obj.get("done") is True:
                res.append(top)
            t = obj.get("type")
            if isinstance(t, str) and t.endswith(_TERMINAL_TYPES):
                res.append(top)

        def visit(v: Any, path: Key) -> None:
            if isinstance(v, dict):
                if v.get("finish_reason") is not None:
                    res.append(top + path if path and isinstance(path[-1], tuple) else top)
                if v.get("stop_reason") is not None:
                    res.append(top)
                for k, x in v.items():
                    if isinstance(x, dict | list):
                        visit(x, (*path, k))
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    visit(x, (*path, self._elem(x, i)))

        visit(obj, ())
        return res

    @staticmethod
    def _matches(key: Key, prefixes: list[Key]) -> bool:
        return any(key[: len(p)] == p for p in prefixes)

    def _walk(self, v: Any, path: Key, ctx: _Ctx) -> Any:
        if isinstance(v, dict):
            out: dict[str, Any] = {}
            for k, x in v.items():
                nk = self._r.redact_short(k, self._counts)
                if nk != k:
                    ctx.changed = True
                p = (*path, k)
                if isinstance(x, str):
                    if k not in META_FIELDS:
                        out[nk] = self._fragment(ctx.top + p, x, ctx)
                    else:
                        red = self._r.redact_short(x, self._counts)
                        if red != x:
                            ctx.changed = True
                        out[nk] = red
                else:
                    out[nk] = self._walk(x, p, ctx)
            return out
        if isinstance(v, list):
            text_list = not path or path[-1] not in META_FIELDS
            return [
                self._fragment((*ctx.top, *path, i), x, ctx)
                if text_list and isinstance(x, str)
                else self._walk(x, (*path, self._elem(x, i)), ctx)
                for i, x in enumerate(v)
            ]
        if isinstance(v, str):
            red = self._r.redact(v, self._counts)
            if red != v:
                ctx.changed = True
            return red
        return v

    def _fragment(self, key: Key, value: str, ctx: _Ctx) -> str:
        st = self._streams.get(key)
        if st is None:
            st = self._streams[key] = TextStream(self._r, self._counts)
        out = st.feed(value)
        if self._matches(key, ctx.terminal):
            out += st.flush()
            del self._streams[key]
            self._templates.pop(key, None)
        else:
            self._templates[key] = (ctx.meta, ctx.payload)
        if out != value:
            ctx.changed = True
        return out

    def _synth(self, key: Key, text: str) -> tuple[list[str], str]:
        meta, payload = self._templates.pop(key)
        scratch: dict[str, int] = {}
        top = self._top(json.loads(payload))

        def fill(v: Any, path: Key) -> Any:
            if isinstance(v, dict):
                out: dict[str, Any] = {}
                for k, x in v.items():
                    p = (*path, k)
                    if isinstance(x, str) and k not in META_FIELDS:
                        out[k] = text if top + p == key else ""
                    else:
                        out[self._r.redact_short(k, scratch)] = fill(x, p)
                return out
            if isinstance(v, list):
                text_list = not path or path[-1] not in META_FIELDS
                return [
                    (text if (*top, *path, i) == key else "")
                    if text_list and isinstance(x, str)
                    else fill(x, (*path, self._elem(x, i)))
                    for i, x in enumerate(v)
                ]
            if isinstance(v, str):
                return self._r.redact_short(v, scratch)
            return v

        return meta, _dumps(fill(json.loads(payload), ()))

    def _flush_keys(self, keys: list[Key]) -> list[tuple[list[str], str]]:
        out: list[tuple[list[str], str]] = []
        for key in keys:
            text = self._streams.pop(key).flush()
            if text:
                out.append(self._synth(key, text))
            else:
                self._templates.pop(key, None)
        return out

    def process(
        self, obj: Any, payload: str, meta: list[str]
    ) -> tuple[list[tuple[list[str], str]], str | None]:
        """Synthetic events to send first, and the new payload (None: unchanged)."""
        top = self._top(obj)
        ctx = _Ctx(top, self._terminals(obj, top), meta, payload)
        new = self._walk(obj, (), ctx)
        before: list[tuple[list[str], str]] = []
        if ctx.terminal and self._streams:
            done = [k for k in self._streams if self._matches(k, ctx.terminal)]
            before = self._flush_keys(done)
        return before, (_dumps(new) if ctx.changed else None)

    def flush_all(self) -> list[tuple[list[str], str]]:
        return self._flush_keys(list(self._streams))


_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(r"\r\n|\n|\r")


def _parse_json(payload: str) -> Any:
    s = payload.lstrip()
    if not s or s[0] not in "{[":
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return None


class SSEStream:
    """Redacts ``text/event-stream`` bodies event by event."""

    def __init__(
        self, redactor: Redactor, counts: dict[str, int], max_event: int = MAX_EVENT_BYTES
    ) -> None:
        self._r = redactor
        self._pending = b""
        self._max_event = max_event
        self._json = JsonFragments(redactor, counts)
        self._raw = TextStream(redactor, counts)
        self._raw_meta: list[str] = []

    @staticmethod
    def _render(meta: list[str], payload: str) -> bytes:
        lines = [*meta, *("data: " + p for p in _LINE.split(payload))]
        return ("\n".join(lines) + "\n\n").encode("utf-8", "surrogateescape")

    def _synth(self, events: list[tuple[list[str], str]]) -> list[bytes]:
        return [self._render(m, p) for m, p in events]

    def _flush_all(self) -> list[bytes]:
        out = self._synth(self._json.flush_all())
        rest = self._raw.flush()
        if rest:
            out.append(self._render(self._raw_meta, rest))
        return out

    def _event(self, raw: bytes, term_len: int) -> list[bytes]:
        text = raw[: len(raw) - term_len].decode("utf-8", "surrogateescape")
        data: list[str] = []
        meta: list[str] = []
        for line in _LINE.split(text):
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value[1:] if value.startswith(" ") else value)
            elif line:
                meta.append(line)
        if not data:
            return [raw]
        payload = "\n".join(data)
        if payload.strip() == "[DONE]":
            return [*self._flush_all(), raw]
        obj = _parse_json(payload)
        if obj is not None:
            synth_meta = [m for m in meta if not m.startswith("id:")]
            before, new = self._json.process(obj, payload, synth_meta)
            out = self._synth(before)
            out.append(raw if new is None else self._render(meta, new))
            return out
        self._raw_meta = [m for m in meta if not m.startswith("id:")]
        red = self._raw.feed(payload)
        return [raw if red == payload else self._render(meta, red)]

    def feed(self, data: bytes) -> bytes:
        buf = self._pending + data
        scan_from = max(0, len(self._pending) - 3)
        out: list[bytes] = []
        start = 0
        for m in _EVENT_END.finditer(buf, scan_from):
            if m.start() < start:
                continue
            out.extend(self._event(buf[start : m.end()], m.end() - m.start()))
            start = m.end()
        self._pending = buf[start:]
        if len(self._pending) > self._max_event:
            raise StreamError("server-sent event exceeds the size limit")
        return b"".join(out)

    def flush(self) -> bytes:
        out: list[bytes] = []
        if self._pending:
            out.extend(self._event(self._pending, 0))
            self._pending = b""
        out.extend(self._flush_all())
        return b"".join(out)


class NDJSONStream:
    """Redacts newline-delimited JSON streams (e.g. Ollama) line by line."""

    def __init__(
        self, redactor: Redactor, counts: dict[str, int], max_line: int = MAX_EVENT_BYTES
    ) -> None:
        self._r = redactor
        self._counts = counts
        self._pending = b""
        self._max_line = max_line
        self._json = JsonFragments(redactor, counts)

    def _line(self, raw: bytes) -> list[bytes]:
        body = raw.rstrip(b"\r\n")
        nl = raw[len(body) :]
        text = body.decode("utf-8", "surrogateescape")
        obj = _parse_json(text)
        if obj is None:
            red = self._r.redact(text, self._counts)
            return [raw if red == text else red.encode("utf-8", "surrogateescape") + nl]
        before, new = self._json.process(obj, text, [])
        out = [p.encode("utf-8", "surrogateescape") + b"\n" for _, p in before]
        out.append(raw if new is None else new.encode("utf-8", "surrogateescape") + nl)
        return out

    def feed(self, data: bytes) -> bytes:
        buf = self._pending + data
        out: list[bytes] = []
        start = 0
        while (i := buf.find(b"\n", start)) >= 0:
            out.extend(self._line(buf[start : i + 1]))
            start = i + 1
        self._pending = buf[start:]
        if len(self._pending) > self._max_line:
            raise StreamError("JSON line exceeds the size limit")
        return b"".join(out)

    def flush(self) -> bytes:
        out: list[bytes] = []
        if self._pending:
            out.extend(self._line(self._pending))
            self._pending = b""
        out.extend(p.encode("utf-8", "surrogateescape") + b"\n" for _, p in self._json.flush_all())
        return b"".join(out)


class JsonDocument:
    """Buffers a JSON document (up to ``cap`` bytes) and redacts its strings structurally.

    Past the cap, or if the body is not JSON, it falls back to text redaction.
    """

    def __init__(self, redactor: Redactor, counts: dict[str, int], cap: int) -> None:
        self._r = redactor
        self._counts = counts
        self._cap = cap
        self._parts: list[bytes] = []
        self._size = 0
        self._text: ByteStream | None = None

    def feed(self, data: bytes) -> bytes:
        if self._text is not None:
            return self._text.feed(data)
        self._parts.append(data)
        self._size += len(data)
        if self._size <= self._cap:
            return b""
        self._text = ByteStream(self._r, self._counts)
        body = b"".join(self._parts)
        self._parts = []
        return self._text.feed(body)

    def flush(self) -> bytes:
        if self._text is not None:
            return self._text.flush()
        body = b"".join(self._parts)
        self._parts = []
        red = redact_json_bytes(body, self._r, self._counts)
        if red is not None:
            return red
        if b"\n" in body.strip():  # JSON lines under a JSON or text type
            nd = NDJSONStream(self._r, self._counts)
            try:
                lines = [json.loads(x) for x in body.splitlines() if x.strip()]
            except ValueError:
                lines = []
            if lines:
                return nd.feed(body) + nd.flush()
        text = ByteStream(self._r, self._counts)
        return text.feed(body) + text.flush()


_TEXTUAL = frozenset(
    {
        "",
        "application/xml",
        "application/javascript",
        "application/x-www-form-urlencoded",
        "application/yaml",
        "application/x-yaml",
        "application/graphql",
    }
)
_NDJSON = frozenset({"application/x-ndjson", "application/jsonl", "application/jsonlines"})


def parse_content_type(value: str | None) -> tuple[str, str]:
    if not value:
        return "", "utf-8"
    mime, _, params = value.partition(";")
    charset = "utf-8"
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "charset" and v:
            charset = v.strip('"').lower()
    return mime.strip().lower(), charset


_SSE_START = (b"data:", b"event:", b"id:", b"retry:", b":")


class Sniff:
    """text/plain (or no type): decided by the first bytes, so SSE or JSON sent as plain text
    is still reassembled by structure."""

    def __init__(
        self, redactor: Redactor, counts: dict[str, int], charset: str, buffer_cap: int
    ) -> None:
        self._args = (redactor, counts)
        self._charset = charset
        self._cap = buffer_cap
        self._head = b""
        self._inner: BodyFilter | None = None

    def _choose(self) -> BodyFilter:
        head = self._head.lstrip()
        r, c = self._args
        if not _wide(self._charset):
            if head.startswith(_SSE_START):
                return SSEStream(r, c)
            if head[:1] in (b"{", b"["):
                return JsonDocument(r, c, self._cap)
        return ByteStream(r, c, self._charset)

    def feed(self, data: bytes) -> bytes:
        if self._inner is None:
            self._head += data
            if len(self._head.lstrip()) < 8:
                return b""
            self._inner = self._choose()
            data, self._head = self._head, b""
        return self._inner.feed(data)

    def flush(self) -> bytes:
        if self._inner is None:
            self._inner = self._choose()
            data, self._head = self._head, b""
            return self._inner.feed(data) + self._inner.flush()
        return self._inner.flush()


def body_filter(
    content_type: str | None, redactor: Redactor, counts: dict[str, int], buffer_cap: int
) -> BodyFilter | None:
    """The redacting filter for a response body, or None when it cannot be inspected."""
    mime, charset = parse_content_type(content_type)
    if mime == "text/event-stream":
        return SSEStream(redactor, counts)
    if mime in _NDJSON:
        return NDJSONStream(redactor, counts)
    if mime == "application/json" or mime.endswith("+json"):
        return JsonDocument(redactor, counts, buffer_cap)
    if mime in ("", "text/plain"):
        return Sniff(redactor, counts, charset, buffer_cap)
    if mime.startswith("text/") or mime in _TEXTUAL or mime.endswith("+xml"):
        return ByteStream(redactor, counts, charset)
    return None
