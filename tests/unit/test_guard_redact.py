"""Guard redaction: labelled corpus precision/recall, streaming splits, SSE/NDJSON/JSON bodies.

Run with ``-s`` to see the precision/recall table; ``precision_recall_table()`` returns it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secureai.guard.config import ConfigError, parse_config
from secureai.guard.jsonredact import redact_json_text
from secureai.guard.proxy import DenyList, RateLimiter, server_context
from secureai.guard.stream import (
    ByteStream,
    JsonDocument,
    NDJSONStream,
    Sniff,
    SSEStream,
    StreamError,
    TextStream,
    body_filter,
)
from secureai.pii import Redactor, iban_ok, luhn_ok

CORPUS = Path(__file__).resolve().parents[1] / "data" / "guard_corpus.jsonl"
CUSTOM = [("employee_id", "EMP-[0-9]{6}")]
MIN_RECALL = 0.98
MIN_PRECISION = 0.95

REDACTOR = Redactor(custom=CUSTOM)


def load_corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def _expected(row: dict[str, Any]) -> set[tuple[int, int, str]]:
    out = set()
    for lab in row["labels"]:
        i = row["text"].index(lab["value"])
        out.add((i, i + len(lab["value"]), lab["type"]))
    return out


def evaluate(rows: list[dict[str, Any]], redactor: Redactor = REDACTOR) -> dict[str, Score]:
    """Exact-span scoring per type: a detection counts only with the right type and bounds."""
    scores: dict[str, Score] = {}
    for row in rows:
        found = {(s, e, d.type) for s, e, d in redactor.find(row["text"])}
        expected = _expected(row)
        for s, e, t in expected:
            sc = scores.setdefault(t, Score())
            if (s, e, t) in found:
                sc.tp += 1
            else:
                sc.fn += 1
        for _s, _e, t in found - expected:
            scores.setdefault(t, Score()).fp += 1
    return dict(sorted(scores.items()))


def precision_recall_table() -> list[dict[str, Any]]:
    """Per type: positives, negatives-with-look-alikes, tp/fp/fn, precision and recall."""
    rows = load_corpus()
    measured = [r for r in rows if not r.get("gap")]
    gaps = evaluate([r for r in rows if r.get("gap")])
    table = []
    for t, sc in evaluate(measured).items():
        table.append(
            {
                "type": t,
                "tp": sc.tp,
                "fp": sc.fp,
                "fn": sc.fn,
                "precision": round(sc.precision, 3),
                "recall": round(sc.recall, 3),
                "known_gaps_missed": gaps[t].fn if t in gaps else 0,
            }
        )
    return table


def format_table(table: list[dict[str, Any]]) -> str:
    head = f"{'type':<14}{'tp':>5}{'fp':>5}{'fn':>5}{'precision':>11}{'recall':>8}{'gaps':>6}"
    lines = [head, "-" * len(head)]
    for r in table:
        lines.append(
            f"{r['type']:<14}{r['tp']:>5}{r['fp']:>5}{r['fn']:>5}"
            f"{r['precision']:>11.3f}{r['recall']:>8.3f}{r['known_gaps_missed']:>6}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- corpus


def test_corpus_is_large_and_balanced() -> None:
    rows = load_corpus()
    assert len(rows) >= 300
    negatives = [r for r in rows if not r["labels"]]
    assert len(negatives) >= 100
    notes = {r.get("note") for r in negatives}
    for kind in ("phone look-alike", "non-Luhn digit run", "ip look-alike", "secret look-alike"):
        assert kind in notes
    types = {lab["type"] for r in rows for lab in r["labels"]}
    assert types >= {"email", "phone", "payment_card", "us_ssn", "ip_address", "iban", "secret"}


def test_precision_and_recall_per_type() -> None:
    table = precision_recall_table()
    print("\n" + format_table(table))
    assert {r["type"] for r in table} >= {"email", "phone", "payment_card", "secret"}
    for r in table:
        assert r["recall"] >= MIN_RECALL, r
        assert r["precision"] >= MIN_PRECISION, r


def test_placeholders_and_counts() -> None:
    counts: dict[str, int] = {}
    out = REDACTOR.redact("mail a.b@example.com and c@example.org, EMP-000001", counts)
    assert out == "mail [REDACTED:email] and [REDACTED:email], [REDACTED:employee_id]"
    assert counts == {"email": 2, "employee_id": 1}


def test_only_configured_types_are_redacted() -> None:
    r = Redactor(types=["email"])
    assert r.redact("x@example.com 4111111111111111") == "[REDACTED:email] 4111111111111111"


def test_validators() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE88370400440532013000")


# --------------------------------------------------------------------------- streaming

SPLIT_SAMPLES = [
    "Reach jane.doe@example.com today",
    "call +1 (415) 555-0132 now",
    "card 4111-1111-1111-1111 ok",
    "ssn 123-45-6789.",
    "SSN: 123456789 on file",
    "peer 2001:db8::7 and 10.1.2.3",
    "IBAN DE89 3704 0044 0532 0130 00 EUR",
    "key AKIAQ3EGRTVWXH7K2M4P end",
    "tok ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 end",
    "Authorization: Bearer abcdefghijklmnopqrstuvwxyz123456 end",
    "AccountKey=abcdefghijklmnopqrstuvwxyz0123456789ABCD==;x",
    "jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end",
    "k\n-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\n"
    "-----END EC PRIVATE KEY-----\nbye",
    "badge EMP-004211 used",
]


def _stream(text: str, cuts: list[int]) -> str:
    s = TextStream(REDACTOR, {})
    out = []
    prev = 0
    for c in [*cuts, len(text)]:
        out.append(s.feed(text[prev:c]))
        prev = c
    out.append(s.flush())
    return "".join(out)


@pytest.mark.parametrize("text", SPLIT_SAMPLES)
def test_every_split_position_is_redacted(text: str) -> None:
    whole = REDACTOR.redact(text)
    assert "[REDACTED:" in whole
    for i in range(len(text) + 1):
        assert _stream(text, [i]) == whole, i
    assert _stream(text, list(range(1, len(text)))) == whole  # 1-char chunks


def test_every_byte_split_of_utf8_text() -> None:
    text = "Grüße — écrivez à jane.doe@example.com ☃ ou appelez +33 1 42 68 53 00 ✓"
    data = text.encode()
    whole = REDACTOR.redact(text).encode()
    for i in range(len(data) + 1):
        s = ByteStream(REDACTOR, {})
        assert s.feed(data[:i]) + s.feed(data[i:]) + s.flush() == whole, i
    s = ByteStream(REDACTOR, {})
    assert b"".join(s.feed(data[i : i + 1]) for i in range(len(data))) + s.flush() == whole


def test_corpus_streamed_in_one_char_chunks_matches_batch() -> None:
    for row in load_corpus():
        text = row["text"]
        assert _stream(text, list(range(1, len(text)))) == REDACTOR.redact(text), text


def test_prose_is_emitted_promptly() -> None:
    s = TextStream(REDACTOR, {})
    out = s.feed("The answer is simple. ")
    assert out.startswith("The answer is simple")
    assert s.pending <= 2
    out += s.feed("Next sentence, please!\n")
    assert out.startswith("The answer is simple. Next sentence, please")
    assert out + s.flush() == "The answer is simple. Next sentence, please!\n"


PII_PIECES = [
    "jane.doe@example.com",
    "+1 415-555-0132",
    "4111 1111 1111 1111",
    "123-45-6789",
    "192.168.0.1",
    "fe80::1",
    "GB82WEST12345698765432",
    "AKIAQ3EGRTVWXH7K2M4P",
    "sk-proj-abc123def456ghi789jkl012mno",
    "EMP-123456",
    "Bearer abcdefghijklmnop1234",
    "SSN: 123456789",
    "AccountKey=abcdefghijklmnopqrstuvwxyz012345",
    "-----BEGIN PRIVATE KEY-----\nMIIBVQ==\n-----END PRIVATE KEY-----",
]
FILLER = st.text(alphabet=st.sampled_from(list("abc XYZ-.:@+()01239\n,")), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.one_of(FILLER, st.sampled_from(PII_PIECES)), min_size=1, max_size=8),
    cut_seeds=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_stream_equals_batch_for_any_chunking(parts: list[str], cut_seeds: list[int]) -> None:
    text = "".join(parts)
    cuts = sorted({c % (len(text) + 1) for c in cut_seeds})
    assert _stream(text, cuts) == REDACTOR.redact(text)


# --------------------------------------------------------------------------- SSE / NDJSON


def _openai_events(text: str, piece: int = 1, choice: int = 0) -> list[bytes]:
    out = []
    for i in range(0, len(text), piece):
        obj = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [
                {"index": choice, "delta": {"content": text[i : i + piece]}, "finish_reason": None}
            ],
        }
        out.append(b"data: " + json.dumps(obj).encode() + b"\n\n")
    done = {"id": "c1", "choices": [{"index": choice, "delta": {}, "finish_reason": "stop"}]}
    out.append(b"data: " + json.dumps(done).encode() + b"\n\n")
    return out


def _sse_content(body: bytes) -> tuple[str, list[dict[str, Any]]]:
    content, objs = "", []
    for block in body.decode().split("\n\n"):
        if not block.startswith("data: {"):
            continue
        obj = json.loads(block[6:])
        objs.append(obj)
        content += obj["choices"][0]["delta"].get("content", "")
    return content, objs


SECRET_SENTENCE = "Mail jane.doe@example.com, key AKIAQ3EGRTVWXH7K2M4P, card 4111111111111111."


def test_sse_openai_deltas_split_secret_is_redacted_at_every_byte_split() -> None:
    body = b"".join(_openai_events(SECRET_SENTENCE, piece=3)) + b"data: [DONE]\n\n"
    expected = REDACTOR.redact(SECRET_SENTENCE)
    for i in range(0, len(body) + 1, 7):
        s = SSEStream(REDACTOR, {})
        out = s.feed(body[:i]) + s.feed(body[i:]) + s.flush()
        content, objs = _sse_content(out)
        assert content == expected
        assert out.endswith(b"data: [DONE]\n\n")
        assert all(set(o) <= {"id", "object", "choices"} for o in objs)


def test_sse_one_byte_chunks_and_counts() -> None:
    body = b"".join(_openai_events(SECRET_SENTENCE)) + b"data: [DONE]\n\n"
    counts: dict[str, int] = {}
    s = SSEStream(REDACTOR, counts)
    out = b"".join(s.feed(body[i : i + 1]) for i in range(len(body))) + s.flush()
    content, _ = _sse_content(out)
    assert content == REDACTOR.redact(SECRET_SENTENCE)
    assert counts == {"email": 1, "secret": 1, "payment_card": 1}


def test_sse_first_event_is_not_delayed() -> None:
    s = SSEStream(REDACTOR, {})
    first = _openai_events("Hello there, friend.")[0]
    assert s.feed(first) != b""  # the event goes out at once (its text may be held)


def test_sse_flushes_held_text_at_eof_without_done() -> None:
    events = _openai_events("write to bob@example.com", piece=4)[:-1]  # no finish, no [DONE]
    s = SSEStream(REDACTOR, {})
    out = b"".join(s.feed(e) for e in events) + s.flush()
    content, _ = _sse_content(out)
    assert content == "write to [REDACTED:email]"


def test_sse_interleaved_choices_are_separate_streams() -> None:
    a = _openai_events("a: x@example.com", piece=2, choice=0)
    b = _openai_events("b: 123-45-6789", piece=2, choice=1)
    body = b"".join(x for pair in zip(a, b, strict=False) for x in pair)
    s = SSEStream(REDACTOR, {})
    out = s.feed(body) + s.feed(b"data: [DONE]\n\n") + s.flush()
    texts = {0: "", 1: ""}
    for block in out.decode().split("\n\n"):
        if block.startswith("data: {"):
            ch = json.loads(block[6:])["choices"][0]
            texts[ch["index"]] += ch["delta"].get("content", "")
    assert texts == {0: "a: [REDACTED:email]", 1: "b: [REDACTED:us_ssn]"}


def test_sse_anthropic_style_events() -> None:
    pieces = ["My SSN is 123", "-45-", "6789 ok"]
    body = b'event: message_start\ndata: {"type":"message_start"}\n\n'
    for p in pieces:
        ev = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
        body += b"event: content_block_delta\ndata: " + json.dumps(ev).encode() + b"\n\n"
    body += b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    s = SSEStream(REDACTOR, {})
    out = s.feed(body) + s.flush()
    text = ""
    for block in out.decode().split("\n\n"):
        lines = block.split("\n")
        if lines[0] == "event: content_block_delta":
            assert lines[1].startswith("data: ")
            text += json.loads(lines[1][6:])["delta"]["text"]
    assert text == "My SSN is [REDACTED:us_ssn] ok"


def test_sse_plain_text_data_and_comments() -> None:
    body = b": keep-alive\n\ndata: call +1 415-\n\ndata: 555-0132 now\n\ndata: [DONE]\n\n"
    s = SSEStream(REDACTOR, {})
    out = (s.feed(body) + s.flush()).decode()
    assert out.startswith(": keep-alive\n\n")
    data = "".join(
        line[6:] for line in out.split("\n") if line.startswith("data: ") and line != "data: [DONE]"
    )
    assert data == "call [REDACTED:phone] now"
    assert "415" not in out


def test_sse_oversized_event_fails_closed() -> None:
    s = SSEStream(REDACTOR, {}, max_event=1000)
    with pytest.raises(StreamError):
        s.feed(b"data: " + b"x" * 2000)


def test_ndjson_ollama_style() -> None:
    lines = [
        {"model": "m", "response": p, "done": False}
        for p in ("key AKIAQ3EGR", "TVWXH7K2M4P", " ok")
    ]
    lines.append({"model": "m", "response": "", "done": True})
    body = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    s = NDJSONStream(REDACTOR, {})
    out = b"".join(s.feed(body[i : i + 5]) for i in range(0, len(body), 5)) + s.flush()
    objs = [json.loads(x) for x in out.decode().splitlines()]
    assert "".join(o["response"] for o in objs) == "key [REDACTED:secret] ok"
    assert objs[-1]["done"] is True and len(objs) == len(lines)


# --------------------------------------------------------------------------- JSON documents


def test_json_chat_completion_structure_kept() -> None:
    doc = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1700000000,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Reach jane@example.com or 123-45-6789",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 4111111111111111, "total_tokens": 12},
    }
    text = json.dumps(doc, indent=2)
    counts: dict[str, int] = {}
    out = redact_json_text(text, REDACTOR, counts)
    assert out is not None
    red = json.loads(out)
    doc["choices"][0]["message"]["content"] = "Reach [REDACTED:email] or [REDACTED:us_ssn]"
    assert red == doc  # numbers are not strings: left alone
    assert counts == {"email": 1, "us_ssn": 1}
    assert out.count("\n") == text.count("\n")  # formatting kept


def test_json_escaped_strings_and_keys() -> None:
    text = '{"k": "jane\\u0040example.com", "bob@example.com": [1, "x"], "n": "ok"}'
    out = redact_json_text(text, REDACTOR, {})
    assert out is not None
    assert json.loads(out) == {"k": "[REDACTED:email]", "[REDACTED:email]": [1, "x"], "n": "ok"}


def test_json_unchanged_returns_same_object_and_invalid_is_none() -> None:
    text = '{"a": "nothing here"}'
    assert redact_json_text(text, REDACTOR, {}) is text
    assert redact_json_text('{"a": ', REDACTOR, {}) is None


def test_json_document_buffer_and_fallbacks() -> None:
    doc = json.dumps({"a": "x@example.com"}).encode()
    f = JsonDocument(REDACTOR, {}, cap=1024)
    assert f.feed(doc[:5]) == b"" and f.feed(doc[5:]) == b""
    assert json.loads(f.flush()) == {"a": "[REDACTED:email]"}
    f = JsonDocument(REDACTOR, {}, cap=1024)
    f.feed(b"not json x@example.com")
    assert f.flush() == b"not json [REDACTED:email]"
    big = b'{"a": "' + b"y" * 3000 + b' x@example.com"}'
    f = JsonDocument(REDACTOR, {}, cap=1024)
    out = f.feed(big[:2000]) + f.feed(big[2000:]) + f.flush()
    assert b"x@example.com" not in out and b"[REDACTED:email]" in out


def test_escaped_pem_inside_json_text_stream() -> None:
    key = (
        "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n"
        "-----END PRIVATE KEY-----\\n"
    )
    raw = '{"private_key": "' + key + '", "x": 1}'
    out = _stream(raw, list(range(1, len(raw), 3)))
    assert "MIIEvQ" not in out and json.loads(out)["private_key"].startswith("[REDACTED:secret]")


@pytest.mark.parametrize(
    ("ctype", "kind"),
    [
        ("text/event-stream", SSEStream),
        ("application/x-ndjson", NDJSONStream),
        ("application/json; charset=utf-8", JsonDocument),
        ("application/vnd.api+json", JsonDocument),
        ("text/plain; charset=latin-1", Sniff),
        (None, Sniff),
        ("text/csv", ByteStream),
    ],
)
def test_body_filter_by_content_type(ctype: str | None, kind: type) -> None:
    assert isinstance(body_filter(ctype, REDACTOR, {}, 1024), kind)


def test_binary_bodies_have_no_filter() -> None:
    # The proxy refuses them unless the path is allowed (tests/guard/test_guard_traffic.py).
    for ctype in ("image/png", "application/octet-stream", "application/grpc"):
        assert body_filter(ctype, REDACTOR, {}, 1024) is None


# --------------------------------------------------------------------------- config, limits

CONTRACT = """{"listen_port": 8443, "upstream": "http://127.0.0.1:8080",
 "tls_cert_file": "/etc/secureai/tls/tls.crt", "tls_key_file": "/etc/secureai/tls/tls.key",
 "metrics_port": 9090, "max_body_bytes": 1048576, "rate_limit_rps": 10.0, "rate_limit_burst": 20,
 "max_concurrency": 64, "upstream_timeout_s": 30.0,
 "redact_types": ["email","phone","payment_card","us_ssn","ip_address","iban","secret"],
 "custom_patterns": [{"name": "employee_id", "regex": "EMP-[0-9]{6}"}],
 "deny_patterns": ["(?i)ignore (all )?previous instructions"],
 "client_identity_header": null}"""


def test_contract_config_parses() -> None:
    cfg = parse_config(CONTRACT)
    assert cfg.listen_port == 8443 and cfg.custom_patterns[0].name == "employee_id"
    assert cfg.client_identity_header is None and cfg.listen_host is None


@pytest.mark.parametrize(
    "patch",
    [
        {"extra": 1},
        {"upstream": "http://example.com:80"},
        {"upstream": "ftp://127.0.0.1:21"},
        {"redact_types": ["email", "email"]},
        {"redact_types": ["passport"]},
        {"custom_patterns": [{"name": "email", "regex": "x{1,3}"}]},
        {"custom_patterns": [{"name": "ok", "regex": "a*"}]},
        {"custom_patterns": [{"name": "ok", "regex": "[0-9]+"}]},
        {"metrics_port": 8443},
        {"max_body_bytes": 0},
        {"rate_limit_rps": 0},
    ],
)
def test_bad_config_is_one_line(patch: dict[str, Any]) -> None:
    raw = json.loads(CONTRACT) | patch
    with pytest.raises(ConfigError) as exc:
        parse_config(json.dumps(raw))
    assert "\n" not in str(exc.value)


def test_custom_pattern_hold_uses_its_charset() -> None:
    r = Redactor(types=[], custom=[("employee_id", "EMP-[0-9]{6}")])
    assert r.hold_point("hello world", 0) == len("hello world")
    assert r.hold_point("id EMP-12", 0) == 3


def test_rate_limiter_token_bucket() -> None:
    rl = RateLimiter(rps=2.0, burst=3)
    assert [rl.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take("a", 0.0) == pytest.approx(0.5)
    assert rl.take("b", 0.0) == 0.0
    assert rl.take("a", 0.6) == 0.0


def test_rate_limiter_bounded_table() -> None:
    rl = RateLimiter(rps=1.0, burst=1, max_keys=10)
    for i in range(100):
        rl.take(f"k{i}", float(i) * 10)
    assert len(rl._buckets) <= 10


def test_deny_list_checks_raw_json_and_normalised_text() -> None:
    d = DenyList(["(?i)ignore (all )?previous instructions"])
    assert d.denied(b'{"m": "Ignore previous\\u0020instructions"}', "")
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "ignore")
    assert d.denied(f"{fullwidth} previous instructions".encode(), "")
    assert d.denied(b"", "q=ignore%20all%20previous%20instructions")
    assert not d.denied(b'{"m": "follow the previous instructions"}', "")


def test_server_tls_context_floor(tmp_path: Path) -> None:
    import datetime as dt  # noqa: PLC0415
    import ssl  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "c").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = server_context(str(tmp_path / "c"), str(tmp_path / "k"))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
