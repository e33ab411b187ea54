"""Redaction inside JSON string values (and keys) without changing the document's structure."""

from __future__ import annotations

import json
import re
from typing import Any

from secureai.pii import Redactor

_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"', re.S)


def redact_json_text(text: str, redactor: Redactor, counts: dict[str, int]) -> str | None:
    """Redact every string literal of a JSON document in place.

    Returns the new text (the input itself when nothing matched), or None if ``text`` is not
    JSON. Only changed string literals are re-encoded; numbers, whitespace and key order are kept.
    """
    try:
        json.loads(text)
    except ValueError:
        return None
    out: list[str] = []
    cur = 0
    for m in _STRING.finditer(text):
        raw = m.group(0)
        value = json.loads(raw) if "\\" in raw else raw[1:-1]
        red = redactor.redact_short(value, counts)
        if red is not value and red != value:
            out.append(text[cur : m.start()])
            out.append(json.dumps(red, ensure_ascii=False))
            cur = m.end()
    if not out:
        return text
    out.append(text[cur:])
    return "".join(out)


def redact_json_bytes(data: bytes, redactor: Redactor, counts: dict[str, int]) -> bytes | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    red = redact_json_text(text, redactor, counts)
    if red is None:
        return None
    return data if red is text else red.encode("utf-8")


def redact_obj(obj: Any, redactor: Redactor, counts: dict[str, int]) -> Any:
    """A copy of a parsed JSON value with every string (values and keys) redacted."""
    if isinstance(obj, str):
        return redactor.redact(obj, counts)
    if isinstance(obj, dict):
        return {redactor.redact(k, counts): redact_obj(v, redactor, counts) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_obj(v, redactor, counts) for v in obj]
    return obj
