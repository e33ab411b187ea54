"""Keyed, deterministic pseudonyms that keep a value's shape but can never be the real thing.

A pseudonym is drawn from HMAC-SHA256 under a key derived from the user's pseudonym key, over
the value's type and normalised form: the same value always gets the same pseudonym under one
key (joins and counts still work), and without the key it can be neither reversed nor linked
across keys. Each type keeps the shape a consumer relies on, inside a space that is never
assigned to anyone, so the output scans clean:

- payment card: same digit count and separators, same first digit, Luhn check FAILS;
- US SSN: same layout, area 9xx with group 01-49 (never issued as an SSN or an ITIN);
- phone: same layout, with a prefix no real number has (``+0``, ``00``, NANP area 0xx/1xx);
- IBAN: same country, length and spacing, mod-97 check FAILS;
- email: ``<local>@<domain>.invalid`` (RFC 6761), local part and domain pseudonymised apart;
- IP address: IPv4 in 240.0.0.0/4 (reserved), IPv6 in 2001:db8::/32 (documentation);
- secret: ``secret_<base32>`` (a secret has no shape worth keeping).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Iterator

from secureai.dataset.detect import RESERVED_EMAIL_TLD, Engine
from secureai.pii import iban_ok, luhn_ok

_DOMAIN = b"secureai/pseudonym/v1"
_MEMO_SIZE = 1 << 16
_ATTEMPTS = 32


class _Draw:
    """A deterministic stream of random symbols from HMAC in counter mode."""

    def __init__(self, key: bytes, label: bytes) -> None:
        self._key = key
        self._label = label
        self._counter = 0
        self._buf = b""
        self._pos = 0

    def _byte(self) -> int:
        if self._pos >= len(self._buf):
            msg = self._counter.to_bytes(4, "big") + self._label
            self._buf = hmac.new(self._key, msg, hashlib.sha256).digest()
            self._pos = 0
            self._counter += 1
        b = self._buf[self._pos]
        self._pos += 1
        return b

    def below(self, n: int) -> int:
        """Uniform in [0, n) for n <= 256 (rejection sampling)."""
        limit = 256 - 256 % n
        while True:
            b = self._byte()
            if b < limit:
                return b % n

    def digit(self) -> str:
        return chr(48 + self.below(10))

    def letter(self) -> str:
        return chr(65 + self.below(26))

    def bits(self, n: int) -> int:
        out = 0
        for _ in range((n + 7) // 8):
            out = (out << 8) | self._byte()
        return out & ((1 << n) - 1)

    def token(self, n: int) -> str:
        raw = bytes(self._byte() for _ in range((n * 5 + 7) // 8 + 1))
        return base64.b32encode(raw).decode("ascii").lower()[:n]


def _relayout(template: str, digits: Iterator[str]) -> str:
    """``template`` with each digit replaced by the next of ``digits``; other chars kept."""
    return "".join(next(digits) if c.isdigit() else c for c in template)


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def _card(d: _Draw, value: str) -> str:
    digits = _digits(value)
    body = digits[0] + "".join(d.digit() for _ in range(len(digits) - 2))
    good = next(c for c in "0123456789" if luhn_ok(body + c))
    bad = str((int(good) + 1 + d.below(9)) % 10)
    return _relayout(value, iter(body + bad))


def _ssn(d: _Draw, value: str) -> str:
    group = 1 + d.below(49)
    new = "9" + d.digit() + d.digit() + f"{group:02d}" + "".join(d.digit() for _ in range(4))
    return _relayout(value, iter(new))


def _phone(d: _Draw, value: str) -> str:
    digits = _digits(value)
    stripped = value.lstrip()
    if stripped.startswith("+"):
        lead = "0"  # no country code starts with 0
    elif stripped.startswith("0") and not stripped.startswith("0("):
        lead = "00"  # trunk 0 kept; a national number never starts with 00
    elif len(digits) == 11 and digits[0] == "1":
        lead = "1" + str(d.below(2))  # NANP area codes never start with 0 or 1
    else:
        lead = str(d.below(2))
    new = lead + "".join(d.digit() for _ in range(len(digits) - len(lead)))
    return _relayout(value, iter(new))


def _iban(d: _Draw, value: str) -> str:
    compact = value.replace(" ", "")
    while True:
        body = "".join(
            d.digit() if c.isdigit() else d.letter() if c.isalpha() else c for c in compact[4:]
        )
        new = compact[:2] + d.digit() + d.digit() + body
        if not iban_ok(new):
            break
    it = iter(new)
    return "".join(c if c == " " else next(it) for c in value)


def _email(key: bytes, value: str) -> str:
    local, _, domain = value.rpartition("@")
    loc = _Draw(key, b"email-local\x00" + local.encode("latin-1"))
    dom = _Draw(key, b"email-domain\x00" + domain.lower().encode("latin-1"))
    return f"{loc.token(12)}@{dom.token(10)}{RESERVED_EMAIL_TLD}"


def _ip(d: _Draw, value: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return "240.0.0.1"
    if addr.version == 4:
        return str(ipaddress.IPv4Address((240 << 24) | d.bits(28)))
    return str(ipaddress.IPv6Address((0x20010DB8 << 96) | d.bits(96)))


def _normalise(kind: str, value: str) -> str:
    if kind in ("payment_card", "us_ssn"):
        return _digits(value)
    if kind == "phone":
        return ("+" if value.lstrip().startswith("+") else "") + _digits(value)
    if kind == "iban":
        return value.replace(" ", "").upper()
    if kind == "ip_address":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return value
    if kind == "email":
        local, _, domain = value.rpartition("@")
        return f"{local}@{domain.lower()}"
    return value


_SHAPES: dict[str, Callable[[_Draw, str], str]] = {
    "payment_card": _card,
    "us_ssn": _ssn,
    "phone": _phone,
    "iban": _iban,
    "ip_address": _ip,
}


class Pseudonymizer:
    """``p(kind, value)``: the pseudonym of ``value`` under this key (memoised)."""

    def __init__(self, key: bytes, check: Engine) -> None:
        if len(key) < 16:
            raise ValueError("pseudonym key must be at least 16 bytes")
        self._key = hmac.new(key, _DOMAIN, hashlib.sha256).digest()
        self._check = check
        self._memo: dict[tuple[str, str], str] = {}

    def _clean(self, candidate: str) -> bool:
        return not self._check.find(f" {candidate} ")

    def _make(self, kind: str, norm: str, value: str) -> str:
        for attempt in range(_ATTEMPTS):
            label = f"{kind}\x00{attempt}\x00".encode() + norm.encode("latin-1", "replace")
            if kind == "email":
                candidate = _email(self._key, value if attempt == 0 else f"{attempt}.{value}")
            elif kind in _SHAPES:
                candidate = _SHAPES[kind](_Draw(self._key, label), value)
            else:
                candidate = f"{kind}_{_Draw(self._key, label).token(16)}"
            if self._clean(candidate):
                return candidate
        return (
            f"{kind}_{_Draw(self._key, b'fallback' + norm.encode('latin-1', 'replace')).token(16)}"
        )

    def __call__(self, kind: str, value: str) -> str:
        norm = _normalise(kind, value)
        key = (kind, value)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._make(kind, norm, value)
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = hit
        return hit
