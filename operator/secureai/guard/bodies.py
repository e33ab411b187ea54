"""Request bodies: decoded whatever their encoding, screened and (optionally) redacted.

Decoding does not give up on a leading space before JSON, a byte-order mark (UTF-8, UTF-16,
UTF-32) or a form-encoded body: each is decoded to the text a model server would see.
"""

from __future__ import annotations

import codecs
import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

from secureai.guard.jsonredact import redact_json_text
from secureai.pii import Redactor

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
FORM = "application/x-www-form-urlencoded"


def media_type(content_type: str | None) -> tuple[str, str | None]:
    if not content_type:
        return "", None
    mime, _, params = content_type.partition(";")
    charset = None
    for p in params.split(";"):
        k, _, v = p.strip().partition("=")
        if k.lower() == "charset" and v:
            charset = v.strip('"').lower()
    return mime.strip().lower(), charset


def decode(body: bytes, content_type: str | None) -> tuple[str, str, bytes] | None:
    """(text, encoding, bom) of a body, or None if it does not decode as text."""
    for bom, enc in _BOMS:
        if body.startswith(bom):
            try:
                return body[len(bom) :].decode(enc), enc, bom
            except UnicodeDecodeError:
                return None
    _, charset = media_type(content_type)
    enc = charset or "utf-8"
    try:
        codecs.lookup(enc)
    except LookupError:
        enc = "utf-8"
    try:
        return body.decode(enc), enc, b""
    except UnicodeDecodeError:
        return None


def _strings(obj: Any, out: list[str]) -> None:
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.append(k)
            _strings(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _strings(v, out)


def texts(body: bytes, content_type: str | None) -> list[str]:
    """What a screen must look at: the decoded body, its JSON strings, its form fields."""
    dec = decode(body, content_type)
    if dec is None:
        return [body.decode("utf-8", "replace")]
    text = dec[0]
    out = [text]
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        if parsed is not None:
            strings: list[str] = []
            _strings(parsed, strings)
            out.append("\n".join(strings))
    if media_type(content_type)[0] == FORM or (
        "=" in stripped and " " not in stripped and stripped[:1] not in ("{", "[")
    ):
        out.append("\n".join(f"{k}\n{v}" for k, v in parse_qsl(stripped, keep_blank_values=True)))
    return out


def redact_request(
    body: bytes, content_type: str | None, redactor: Redactor, counts: dict[str, int]
) -> bytes:
    """The body with PII redacted in the same encoding and format (JSON, form, text).

    A body that does not decode as text is returned unchanged.
    """
    if not body:
        return body
    dec = decode(body, content_type)
    if dec is None:
        return body
    text, enc, bom = dec
    mime = media_type(content_type)[0]
    stripped = text.strip()
    if mime == FORM:
        pairs = parse_qsl(text, keep_blank_values=True)
        red = [(redactor.redact(k, counts), redactor.redact(v, counts)) for k, v in pairs]
        out = urlencode(red) if red != pairs else text
    elif stripped[:1] in ("{", "[") and (
        (red_json := redact_json_text(text, redactor, counts)) is not None
    ):
        out = red_json
    else:
        out = redactor.redact(text, counts)
    if out is text:
        return body
    return bom + out.encode(enc, "surrogateescape")
