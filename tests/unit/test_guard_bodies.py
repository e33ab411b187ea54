"""Request bodies: decoding never switches off, deny patterns and redaction see the same text."""

from __future__ import annotations

import codecs
import json

import pytest

from secureai.guard.bodies import redact_request
from secureai.guard.proxy import DenyList
from secureai.pii import Redactor

DENY = DenyList([r"(?i)ignore previous instructions"])
R = Redactor()
PHRASE = "ignore previous instructions"
ESCAPED = "".join(f"\\u{ord(c):04x}" for c in PHRASE)


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b'  \n{"prompt": "' + ESCAPED.encode() + b'"}', "application/json"),
        (codecs.BOM_UTF16_LE + json.dumps({"prompt": PHRASE}).encode("utf-16-le"), None),
        (codecs.BOM_UTF16_BE + json.dumps({"prompt": PHRASE}).encode("utf-16-be"), None),
        (codecs.BOM_UTF8 + b'{"prompt": "' + ESCAPED.encode() + b'"}', "application/json"),
        (b"q=Ignore+previous+instructions&x=1", "application/x-www-form-urlencoded"),
        (b"q=ignore%20previous%20instructions", None),
        (json.dumps({"prompt": PHRASE}).encode("utf-16"), "application/json; charset=utf-16"),
    ],
    ids=[
        "leading-space-escapes",
        "utf16le-bom",
        "utf16be-bom",
        "utf8-bom",
        "form",
        "form-untyped",
        "charset",
    ],
)
def test_deny_patterns_see_through_the_encoding(body: bytes, ctype: str | None) -> None:
    assert DENY.denied(body, "", ctype)


def test_harmless_bodies_pass() -> None:
    assert not DENY.denied(b'{"prompt": "hello"}', "", "application/json")
    assert not DENY.denied(b"\x00\x01\x02", "", "application/octet-stream")


def test_json_redacted_in_place_keeping_encoding_and_bom() -> None:
    doc = {"messages": [{"role": "user", "content": "mail jane.doe@example.com"}], "n": 1}
    body = codecs.BOM_UTF16_LE + json.dumps(doc).encode("utf-16-le")
    out = redact_request(body, "application/json", R, counts := {})
    assert out.startswith(codecs.BOM_UTF16_LE)
    parsed = json.loads(out[2:].decode("utf-16-le"))
    assert parsed == {"messages": [{"role": "user", "content": "mail [REDACTED:email]"}], "n": 1}
    assert counts == {"email": 1}


def test_form_fields_redacted_and_reencoded() -> None:
    out = redact_request(
        b"q=card+4111+1111+1111+1111&ok=1", "application/x-www-form-urlencoded", R, {}
    )
    assert out == b"q=card+%5BREDACTED%3Apayment_card%5D&ok=1"


def test_unchanged_and_binary_bodies_are_forwarded_as_they_are() -> None:
    body = b'{"prompt": "hello"}'
    assert redact_request(body, "application/json", R, {}) is body
    blob = b"\xff\xfe\x00\xd8garbage"  # UTF-16 BOM with a lone surrogate: not text
    assert redact_request(blob, None, R, {}) is blob
