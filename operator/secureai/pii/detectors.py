"""PII and secret detectors: a regex per format, with validators and streaming hints.

Each detector is a regex with an optional validator (Luhn, mod-97, ``ipaddress``, JWT header)
plus what the streaming redactor needs to hold back a possible partial match: the set of
characters a match is made of (``charset``) and its longest length (``max_len``), or, for
detectors whose matches contain spaces, a ``tail`` regex matching any unfinished match at the
end of the text.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

Span = tuple[int, int, str]  # start, end, type
Validator = Callable[[str, "re.Match[str]"], tuple[int, int] | None]

_sre_parser: Any = importlib.import_module("re._parser")
_sre_constants: Any = importlib.import_module("re._constants")
UNBOUNDED = 1 << 30


@dataclass(frozen=True, slots=True)
class Detector:
    type: str
    pattern: re.Pattern[str]
    max_len: int
    charset: str | None  # regex class source of the chars a match can hold; None: any char
    tail: re.Pattern[str] | None = None
    # The tail can only reach back further than a partial keyword if one of these is present.
    tail_keys: tuple[str, ...] | None = None
    validate: Validator | None = None
    group: int = 0  # -1: the last group that matched
    # Cheap pre-check: a match needs one of these substrings (of the lowercased text if ci).
    trigger: tuple[str, ...] | None = None
    trigger_ci: bool = False
    # Keyword-led detectors: where the keywords are (in the lowercased text); the pattern is
    # only tried at those offsets.
    seek: re.Pattern[str] | None = None
    # Every match holds a run of at least 16 token characters ([A-Za-z0-9_.+/=~:-]): the
    # detector is skipped for texts without one.
    min_token_run: int = 0
    end_slack: int = 0  # hold a found match this close to the end (an optional suffix may follow)
    priority: int = 0


def pattern_max_width(regex: str) -> int:
    """Longest text the regex can match (UNBOUNDED or more when unbounded)."""
    width = _sre_parser.parse(regex).getwidth()[1]
    return int(min(width, UNBOUNDED))


# --------------------------------------------------------------------------- validators


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_iin_ok(d: str) -> bool:
    n = len(d)
    p2, p3, p4 = int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65:
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19
    if p2 in (36, 38, 39) or 300 <= p3 <= 305:
        return 14 <= n <= 19
    if p2 == 62 or 2200 <= p4 <= 2204:
        return 16 <= n <= 19
    if p2 == 50 or 56 <= p2 <= 69:
        return 12 <= n <= 19
    return False


def _validate_card(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    raw = m.group(0)
    seps = {c for c in raw if c in " -"}
    if len(seps) > 1:
        return None
    digits = raw.replace(" ", "").replace("-", "")
    if seps:
        groups = [len(g) for g in re.split(r"[ -]", raw)]
        ok = all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4
        ok = ok or groups in ([4, 6, 5], [4, 6, 4])
        if not ok:
            return None
    if not (_card_iin_ok(digits) and luhn_ok(digits)):
        return None
    return m.span()


_IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "LY": 25,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NL": 18,
    "NO": 15,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "SA": 24,
    "SC": 31,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
    # added to the SWIFT IBAN registry since 2020
    "BI": 27,
    "DJ": 27,
    "FK": 18,
    "HN": 28,
    "MN": 20,
    "NI": 28,
    "OM": 23,
    "RU": 33,
    "SD": 18,
    "SO": 23,
    "YE": 30,
}


def iban_ok(compact: str) -> bool:
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _validate_iban(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    start = m.start()
    want = _IBAN_LENGTHS.get(m.group(0)[:2])
    if want is None:
        return None
    # The regex may run into a following code or word; cut at the country's length.
    count = 0
    end = start
    for i in range(start, m.end()):
        if text[i] not in " -":
            count += 1
            if count == want:
                end = i + 1
                break
    if count != want or (end < len(text) and text[end].isalnum()):
        return None
    if " " in text[start:end] and "-" in text[start:end]:
        return None  # one kind of separator
    compact = text[start:end].replace(" ", "").replace("-", "")
    return (start, end) if iban_ok(compact) else None


_SSN_BAD_AREAS = ("000", "666")


def _validate_ssn(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    g = m.lastindex or 0
    span = m.span(g)
    raw = text[span[0] : span[1]]
    seps = {c for c in raw if not c.isdigit()}
    if len(seps) > 1:
        return None
    if "." in raw and _NOT_ADDR_CTX.search(text[max(0, span[0] - 40) : span[0]]):
        return None  # a dotted number after "version", "section", …
    digits = re.sub(r"\D", "", raw)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in _SSN_BAD_AREAS or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return span


# Words after which a dotted number is a version, a section or an identifier, not an address.
# Whole words only: "server 10.1.2.3" and "nameserver 10.1.2.3" are addresses.
_NOT_ADDR_CTX = re.compile(
    r"(?i)(?:(?<![\w])(?:version|ver|v|release|rel|build|rev|revision|firmware|fw|patch|"
    r"section|sec|§|clause|chapter|ch|para|paragraph|article|art|rule|step|figure|fig|"
    r"table|appendix|oid|rfc|iso|schema|standard|kb|update|sp)[\"']?\.?\s{0,3}[:=#]?"
    r"|(?:defined|described|specified|listed|shown|explained|referenced|given|set out)"
    r"\s+(?:in|under|by|at))\s{0,3}[\"']?\Z"
)
# A capitalised product name right before a 4-part number makes it a version ("OpenSSL
# 3.0.19.1"); these words are not product names.
_IP_CUE_WORDS = frozenset(
    [
        "note",
        "see",
        "found",
        "value",
        "contact",
        "kontakt",
        "address",
        "addr",
        "host",
        "server",
        "ip",
        "ipv4",
        "from",
        "to",
        "got",
        "use",
        "record",
        "field",
        "sure",
        "please",
        "voici",
        "ping",
        "connecting",
        "connect",
        "gateway",
        "dns",
        "nameserver",
        "peer",
        "client",
        "proxy",
        "endpoint",
        "router",
        "subnet",
        "route",
        "bind",
        "listen",
        "remote",
        "src",
        "dst",
        "source",
        "destination",
        "inet",
        "cidr",
        "network",
        "net",
        "range",
        "vpc",
        "lan",
        "wan",
        "vpn",
        "nat",
        "allow",
        "deny",
        "block",
        "firewall",
        "target",
        "mask",
        "netmask",
        "resolver",
        "public",
        "private",
        "internal",
        "external",
        "local",
        "static",
        "dhcp",
        "ntp",
        "smtp",
        "http",
        "https",
        "tcp",
        "udp",
        "ssh",
        "at",
        "on",
        "is",
        "via",
        "and",
        "or",
        "the",
        "a",
        "an",
        "with",
        "by",
        "for",
    ]
)
_PRODUCT = re.compile(r"(?<![\w.])([A-Z][A-Za-z0-9+_-]{1,30}) \Z")


def _ipv4_is_version(text: str, start: int, first_octet: int) -> bool:
    before = text[max(0, start - 40) : start]
    if _NOT_ADDR_CTX.search(before):
        return True
    m = _PRODUCT.search(before)
    return bool(m and first_octet <= 30 and m.group(1).lower() not in _IP_CUE_WORDS)


def _ip_suffix(text: str, end: int, v6: bool) -> int:
    """Extend an address over its ``/prefix`` (and ``%zone`` for IPv6)."""
    if v6:
        z = _ZONE.match(text, end)
        if z:
            end = z.end()
    p = _PREFIX_LEN.match(text, end)
    if p and int(p.group(1)) <= (128 if v6 else 32):
        end = p.end()
    return end


_ZONE = re.compile(r"%(?:[A-Za-z0-9_.-]{0,15}[A-Za-z0-9_])(?![\w%])")
_PREFIX_LEN = re.compile(r"/(\d{1,3})(?![\w/]|\.\d)")


def _validate_ipv4(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    try:
        ipaddress.IPv4Address(m.group(0))
    except ValueError:
        return None
    if _ipv4_is_version(text, m.start(), int(m.group(0).split(".", 1)[0])):
        return None
    return m.start(), _ip_suffix(text, m.end(), False)


def _validate_ipv6(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    cand = m.group(0)
    if cand != "::1" and sum(c in "0123456789abcdefABCDEF" for c in cand) < 4:
        return None
    try:
        ipaddress.IPv6Address(cand)
    except ValueError:
        return None
    return m.start(), _ip_suffix(text, m.end(), True)


# --------------------------------------------------------------------------- phones

# Words that announce a phone number (then a bare run of digits is one), or an identifier of
# another kind (then a digit group is not a phone number).
_PHONE_CUE = re.compile(
    r"(?i)(?:phone|tel|tél|telefon|telephone|téléphone|mobile|mobil|cell|handy|fax|call|"
    r"whatsapp|sms|text me|(?:reach|call|ring) (?:me|him|her|us|them)(?: on| at)?|dial|number is|"
    r"phone number|contact number|numéro|nummer|電話)[\w.]{0,3}\s{0,3}(?:no\.?|number|#)?"
    r"\s{0,3}(?:is|at|on|:|=|-)?\s{0,3}[\"'(]?\s{0,2}\Z"
)
_ID_CUE = re.compile(
    r"(?i)(?<![\w])(?:s/n|sn|invoice|inv|order|ref|reference|account|acct|id|no|nr|ticket|case|sku|"
    r"isbn|issn|serial|part|build|version|po|zip|postcode|code|tracking|iban|bic|vat|tax|"
    r"customer|member|policy|claim|booking|confirmation|transaction|txn)[.#:]?\s{0,3}"
    r"(?:no\.?|number|#|id)?[.#:]?\s{0,3}\Z"
)
_ACCOUNT_HEAD = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ -][A-Z0-9]{4})+[ -]\Z")
_DATE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\Z")


def _groups(raw: str) -> list[str]:
    return re.findall(r"\d+", raw)


def _national_layout(raw: str, digits: str, groups: list[str]) -> bool:
    """National formats of the major locales, written with separators."""
    n = len(digits)
    sizes = [len(g) for g in groups]
    if len(sizes) > 2 and groups[0] == "0" and raw[1] in " -(":
        sizes = [1 + sizes[1], *sizes[2:]]  # the trunk 0 written apart: 0 532 123 45 67
    if any(s == 1 for s in sizes[1:]):  # ISBN-like, dates, versions
        return False
    if raw.startswith("("):  # (area) number: US, DE, BR, AU
        return 9 <= n <= 11
    if digits[0] == "0":
        # Trunk prefix: area code of 2-5 digits (with the 0), then the subscriber number.
        return not digits.startswith("00") and 2 <= sizes[0] <= 5 and 9 <= n <= 12
    if raw.startswith("8 (") and n == 11:  # RU trunk 8
        return True
    if n == 10 and sizes == [3, 3, 4] and digits[0] in "23456789":  # NANP, IT mobile
        return True
    if n == 11 and digits[0] == "1" and sizes in ([1, 3, 3, 4], [3, 4, 4]):  # 1-800, CN mobile
        return digits[1] in ("3456789" if sizes == [3, 4, 4] else "23456789")
    if n == 9 and sizes == [3, 3, 3] and digits[0] in "56789":  # ES, PL
        return True
    if n == 10 and sizes == [5, 5] and digits[0] in "6789":  # IN mobile
        return True
    if n == 10 and sizes == [3, 3, 2, 2] and digits[0] in "59":  # TR, RU mobile
        return True
    return n == 10 and sizes == [2, 4, 4] and digits[0] != "1"  # MX


def _validate_phone(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    raw = m.group(0)
    groups = _groups(raw)
    digits = "".join(groups)
    n = len(digits)
    if not 7 <= n <= 15:
        return None
    before = text[max(0, m.start() - 40) : m.start()]
    if raw.startswith("+"):
        if not 8 <= n <= 15 or raw[1] == "0":
            return None
        if raw.startswith("+1") and n == 11 and digits[1] not in "23456789":
            return None
        return m.span()
    if _PHONE_CUE.search(before):
        return m.span() if 7 <= n <= 13 and not _DATE.match(raw) else None
    if len(groups) < 2 or _ID_CUE.search(before) or _DATE.match(raw):
        return None
    if _ACCOUNT_HEAD.search(before):  # the digit groups of an account number (an IBAN)
        return None
    if re.search(r"\d[ .-]\Z", before):  # the tail of a longer digit sequence
        return None
    if re.fullmatch(r"\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}-\d{2}-\d{2}", raw):
        return None
    return m.span() if _national_layout(raw, digits, groups) else None


# --------------------------------------------------------------------------- secrets

_PLACEHOLDER_WORDS = re.compile(
    r"(?i)example|sample|dummy|fake|placeholder|your|redacted|changeme|change[_-]?me|"
    r"insert|replace|here|token[_-]?here|xxxx|\*\*\*|\.\.\.|"
    r"<[^>]*>|\$\{|\{\{|%\(|todo|foobar|lorem|not[_-]?a[_-]?real|insecure"
)


def _sequence_share(body: str) -> float:
    """The share of ``body`` in runs of 4+ consecutive letters or digits (``abcd``, ``3456``)."""
    covered = 0
    run = 1
    for i in range(1, len(body) + 1):
        if i < len(body) and ord(body[i]) == ord(body[i - 1]) + 1 and body[i].isalnum():
            run += 1
            continue
        if run >= 4:
            covered += run
        run = 1
    return covered / len(body) if body else 0.0


def looks_like_placeholder(body: str) -> bool:
    """A documentation value: words, runs of one character, or very few distinct ones."""
    if not body or _PLACEHOLDER_WORDS.search(body):
        return True
    if re.search(r"(.)\1{5}", body):
        return True
    # (capped: a long random hex string has 16 distinct characters, not len/8)
    if len(set(body.lower())) <= max(3, min(len(body) // 8, 8)):
        return True
    # lowercase words joined by - or _ ("your-bot-token", "my_api_key")
    return re.fullmatch(r"[a-z]+(?:[-_.][a-z]+)*", body) is not None


def looks_constructed(body: str) -> bool:
    """A value typed by hand for an example: a short unit repeated (``123123123123``), or an
    alphabet or a count written out for a third of it (``abcdefgh…``, ``12345678``)."""
    return bool(re.search(r"(.{2,4})\1{3}", body)) or _sequence_share(body) >= 1 / 3


def _entropy(s: str) -> float:
    counts: dict[str, int] = {}
    for c in s:
        counts[c] = counts.get(c, 0) + 1
    n = len(s)
    return -sum(k / n * math.log2(k / n) for k in counts.values())


def _validate_token(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    """A token of a known family: its body must not be a placeholder."""
    g = (m.lastindex or 0) if m.lastindex else 0
    span = m.span(g)
    value = text[span[0] : span[1]]
    body = re.sub(r"^[A-Za-z]{2,12}[_-](?:[a-z0-9]{1,8}[_-])?", "", value)
    if looks_like_placeholder(value) or looks_like_placeholder(body or value):
        return None
    return span


_MASK = re.compile(r"[#*]{4}")


def _family_validator(lead: str) -> Validator:
    """A token of a family with a known prefix: its body (after the prefix and a short kind
    such as ``live_``) is not a placeholder, not typed by hand, and not masked (``####``)."""
    skip = len(lead)

    def validate(text: str, m: re.Match[str]) -> tuple[int, int] | None:
        if _MASK.match(text, m.end()):
            return None  # the visible start of a masked token (xoxp-1234-…-####…)
        body = re.sub(r"^[A-Za-z0-9]{0,8}[_.-]", "", m.group(0)[skip:]) or m.group(0)[skip:]
        if looks_like_placeholder(body) or looks_constructed(body):
            return None
        return m.span()

    return validate


def _looks_like_code(value: str) -> bool:
    """A dotted name, a call or a subscript, or a bare snake_case, UPPER_CASE or camelCase name."""
    if re.match(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*[\[(]", value):
        return True
    # a dotted name (settings.DB_PASSWORD), unless its parts are random (pat.x8k2….q9z4…)
    if re.match(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\Z", value) and sum(map(str.isdigit, value)) < 3:
        return True
    # one quantifier per class: nested ones (`[a-z_]+(?:[a-z_]+)*`) backtrack exponentially
    # on a long lowercase run that ends in another character (a ReDoS in the guard)
    if re.fullmatch(r"[a-z_]+\d*|[A-Z_]+\d*", value):
        return True  # names may end in digits (var2, DB_PASSWORD_1), random strings mix them
    return re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+){1,3}", value) is not None


_TRAILING_PUNCT = ".,:;!?)]}"
_TOKEN_VALUE = re.compile(r"[A-Za-z0-9_.+/=~:-]{16,200}")
_QUOTES = ('"', "'", "`")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.$-")


def _validate_generic(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    """``name = value`` credentials: judged by the value, since the key already qualified."""
    start, end = m.span("v")
    if m.group("xml"):
        # ``<dbPassword>value``: the name must open an XML element.
        i = m.start()
        while i > 0 and text[i - 1] in _NAME_CHARS:
            i -= 1
        if i == 0 or text[i - 1] != "<":
            return None
    if m.group("arg") or m.group("typed"):
        # a quoted name then a quoted value (f("API_TOKEN", "…")), or a declaration with its
        # type (var apiToken string = "…"): the value must be a token, 16+ token characters
        # in quotes, so that a run of them anchors it (the dataset prefilter's RUN class)
        quoted = text[start - 1 : start] in _QUOTES and text[end : end + 1] == text[start - 1]
        if m.group("arg"):
            j = m.start("arg")
            while j > m.start() and text[j - 1] in " \t":
                j -= 1
            if text[j - 1 : j] not in _QUOTES:
                return None  # the name is a string literal, not a variable: f(token, x)
        if not quoted or _TOKEN_VALUE.fullmatch(text, start, end) is None:
            return None
    if text[end : end + 1] not in _QUOTES:  # a quoted value keeps its last character
        while end > start and text[end - 1] in _TRAILING_PUNCT:
            end -= 1  # the end of a sentence or of a call, not of the value
    value = text[start:end]
    if len(value) < 8 or looks_like_placeholder(value) or looks_constructed(value):
        return None
    if value[0] in "$%{<([" or value.lower() in ("true", "false", "null", "none"):
        return None
    if _looks_like_code(value):
        return None
    if value.isdigit():
        # digits alone: a long random number (not a count, a timestamp or a port)
        return (start, end) if len(value) >= 16 and _entropy(value) >= 2.5 else None
    classes = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"\d", r"[^A-Za-z0-9]"))
    if classes < 2 or _entropy(value) < 2.8:
        return None
    return start, end


_KEY_LINE = re.compile(r"[A-Za-z0-9+/=]{32}")


def _validate_pem(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    """A complete block must hold key material (a base64 line), not a word (``anything``).
    An unfinished block is kept: the rest of it may still arrive."""
    block = m.group(0)
    if "-----END" in block[10:] and _KEY_LINE.search(block) is None:
        return None
    return m.span()


def _b64url_json(part: str) -> Any:
    padded = part + "=" * (-len(part) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error):
        return None


def _validate_jwt(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    header = _b64url_json(m.group(0).split(".", 1)[0])
    if isinstance(header, dict) and ("alg" in header or "typ" in header):
        return m.span()
    return None


def _validate_api_token(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    body = re.sub(r"^sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?", "", m.group(0))
    if (
        re.search(r"\d", body)
        and re.search(r"[A-Za-z]", body)
        and not looks_like_placeholder(body)
        and not looks_constructed(body)
    ):
        return m.span()
    return None


def _validate_email(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    if re.search(r"://[^\s/@]*\Z", text[max(0, m.start() - 80) : m.start()]):
        return None  # the password and host of scheme://user:password@host
    return m.span()


def _validate_webhook(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    tail = re.sub(r"^.*?hooks\.slack\.com/\w+/", "", m.group(0))
    return None if looks_like_placeholder(tail.replace("/", "")) else m.span()


def _validate_url_password(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    span = m.span(1)
    value = m.group(1)
    if looks_like_placeholder(value) or value.lower() in ("password", "pass", "pwd", "secret"):
        return None
    return span


# --------------------------------------------------------------------------- detectors


def _prefix_closure(word: str, rest: str = "") -> str:
    """Regex for any non-empty prefix of ``word`` followed, once complete, by ``rest``."""
    out = rest
    for ch in reversed(word[1:]):
        out = f"(?:{re.escape(ch)}{out})?"
    return re.escape(word[0]) + out


def _tail(alternatives: Iterable[str], flags: int = 0) -> re.Pattern[str]:
    return re.compile(r"(?:" + "|".join(alternatives) + r")\Z", flags)


_DIGITS = tuple("0123456789")
_AWS_PREFIXES = (
    "AKIA",
    "ASIA",
    "ABIA",
    "ACCA",
    "AGPA",
    "AIDA",
    "AIPA",
    "AKPA",
    "ANPA",
    "ANVA",
    "AROA",
    "APKA",
    "ASCA",
)
_SEP_NUM = r"[0-9 ().+-]"

EMAIL = Detector(
    type="email",
    pattern=re.compile(
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,6}"
        r"(?!(?:png|jpe?g|gif|svg|webp|ico|css|js|ts|py|md|txt|json|ya?ml|html?|lock|zip|gz)"
        r"(?![A-Za-z0-9-]))"
        # a TLD, or an internationalised one in its ASCII (punycode) form, xn--p1ai;
        # not followed by ':path' (an SSH-style Git remote, git@host:org/repo.git)
        r"(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9-]{2,20})(?![A-Za-z0-9-]|:[\w~]|\.[A-Za-z0-9])"
    ),
    max_len=480,
    charset=r"[A-Za-z0-9._%+@-]",
    validate=_validate_email,
    trigger=("@",),
    priority=10,
)

PHONE = Detector(
    type="phone",
    pattern=re.compile(
        r"[\d+(](?<![\w+.\-/:#@$][\d+(])"
        r"(?:(?<=\+)\d{1,3}+|(?<=\()\d{1,5}+\)|(?<=\d)\d{0,11}+)"
        r"(?:(?:[ .\-/]|\ ?\(0\)\ ?)?+(?:\(\d{1,5}+\)|\d{1,12}+)){0,6}+"
        r"(?![\w-]|[.,/:]\d)"
    ),
    max_len=40,  # replaced below by the pattern's width
    charset=r"[0-9 ().+/-]",
    validate=_validate_phone,
    trigger=_DIGITS,
    priority=20,
)
PHONE = replace(PHONE, max_len=pattern_max_width(PHONE.pattern.pattern))

PAYMENT_CARD = Detector(
    type="payment_card",
    pattern=re.compile(r"\d(?<![\w.-]\d)(?:[ -]?\d){12,18}(?![\w-]|[.]\d)"),
    max_len=38,
    charset=r"[0-9 -]",
    validate=_validate_card,
    trigger=_DIGITS,
    priority=40,
)

_SSN_CUES = ("ssn", "s.s.n.", "ss#", "ss no", "soc. sec.", "social security", "social")
US_SSN = Detector(
    type="us_ssn",
    # 123-45-6789, or with dots (one kind of separator)
    pattern=re.compile(r"\d(?<![\w.-]\d)\d{2}(?:-\d{2}-|\.\d{2}\.)\d{4}(?![\w-]|[.]\d)"),
    max_len=11,
    charset=r"[0-9.-]",
    validate=_validate_ssn,
    trigger=_DIGITS,
    priority=35,
)

US_SSN_CUE = Detector(
    type="us_ssn",
    pattern=re.compile(
        r"(?i:(?<![\w])(?:ssn|s\.s\.n\.?|ss\#|ss\s?no\.?"
        r"|soc(?:ial)?\.?\s?sec(?:urity)?\.?(?:\s?(?:number|num|no)\.?|\s?\#)?|social)"
        r"(?:\s{0,3}(?:\#|no\.?|number|num\.?))?[\"']?\s{0,3}(?:is|:|=|\#|-)?\s{0,3}"
        r"[\"']?\s{0,3})(\d{3}([ .-]?)\d{2}\2\d{4})(?![\w-]|[.]\d)"
    ),
    max_len=80,
    charset=None,
    tail=_tail(
        [_prefix_closure(c, r"[\s#:=.a-z0-9\"' -]{0,40}") for c in _SSN_CUES],
        re.IGNORECASE,
    ),
    tail_keys=("ss", "s.s", "soc"),
    validate=_validate_ssn,
    trigger=("ss", "s.s", "soc"),
    trigger_ci=True,
    seek=re.compile(r"ssn|s\.s\.n|ss#|ss ?no|soc"),
    priority=35,
)

IPV4 = Detector(
    type="ip_address",
    pattern=re.compile(r"\d(?<![\w.-]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?![\w-]|[.]\d)"),
    max_len=19,
    charset=r"[0-9./]",
    validate=_validate_ipv4,
    trigger=_DIGITS,
    priority=15,
)

IPV6 = Detector(
    type="ip_address",
    pattern=re.compile(
        r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}(?:\.\d{1,3}){0,3}(?![\w:]|[.]\d)"
    ),
    max_len=66,
    charset=r"[0-9A-Za-z:.%/_-]",
    validate=_validate_ipv6,
    trigger=(":",),
    priority=16,
)

IBAN = Detector(
    type="iban",
    pattern=re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,32}"),
    max_len=pattern_max_width(r"[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,32}"),
    charset=r"[A-Z0-9 -]",
    validate=_validate_iban,
    trigger=_DIGITS,
    priority=30,
)

_PEM_BODY = r"(?:[A-Za-z0-9+/=\s\\,:]|-(?!-)){0,16000}"
_PEM_END = r"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_B64ISH = r"[A-Za-z0-9_.+/=-]"

# Token families with a recognisable prefix (GitLab, Hugging Face, Slack, Stripe, npm, PyPI,
# Twilio, SendGrid, AWS Bedrock, GitHub, Google, DigitalOcean, Shopify, Databricks, Grafana,
# Vault, Postman, age, Groq, Replicate, Linear, New Relic, Sentry, Doppler).
_FAMILIES: tuple[tuple[str, str], ...] = (  # (literal lead, rest of the token)
    ("gl", r"(?:pat|dt|rt|ptt|soat|ft|imt|cbt|agent|oas|ffct|wt|rtr)-[\w.-]{19,299}[\w-]"),
    ("GR1348941", r"[\w-]{20,40}"),
    ("hf_", r"[A-Za-z]{30,40}"),
    ("api_org_", r"[A-Za-z]{30,40}"),
    ("xox", r"[abposre]-[A-Za-z0-9-]{10,250}"),
    ("xoxe.xox", r"[bp]-\d-[A-Za-z0-9-]{40,300}"),
    ("xoxe-", r"\d-[A-Za-z0-9-]{40,300}"),
    ("xapp-", r"\d-[A-Z0-9]{8,16}-\d{6,16}-[a-f0-9]{32,128}"),
    ("sk_", r"(?:live|test)_[A-Za-z0-9]{16,250}"),
    ("rk_", r"(?:live|test)_[A-Za-z0-9]{16,250}"),
    ("whsec_", r"[A-Za-z0-9+/=]{24,100}"),
    ("npm_", r"[A-Za-z0-9]{36}"),
    ("pypi-AgEIcHlwaS5vcmc", r"[\w-]{50,400}"),
    ("SK", r"[0-9a-f]{32}"),
    ("SG.", r"[\w-]{22}\.[\w-]{43}"),
    ("ABSK", r"[A-Za-z0-9+/]{100,300}={0,2}"),
    ("bedrock-api-key-", r"[A-Za-z0-9+/=]{40,2000}"),
    ("gh", r"[pousr]_[A-Za-z0-9]{36,255}"),
    ("github_pat_", r"\w{22,255}"),
    ("do", r"[por]_v1_[a-f0-9]{64}"),
    ("shp", r"(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"),
    ("dapi", r"[a-f0-9]{32}(?:-\d)?"),
    ("gl", r"(?:sa|c)_[A-Za-z0-9_+/=-]{32,200}"),
    ("hv", r"[sbr]\.[\w-]{24,300}"),
    ("PMAK-", r"[a-f0-9]{24}-[a-f0-9]{34}"),
    ("AGE-SECRET-KEY-1", r"[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}"),
    ("gsk_", r"[A-Za-z0-9]{48,60}"),
    ("r8_", r"[A-Za-z0-9]{37}"),
    ("lin_api_", r"[A-Za-z0-9]{40}"),
    ("NRAK-", r"[A-Z0-9]{27}"),
    ("sntry", r"[su]_[A-Za-z0-9+/=_-]{40,300}"),
    ("dp.", r"(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}"),
    ("AIza", r"[\w-]{35}"),
    ("ya29.", r"[\w-]{20,2048}"),
    ("AAAAAAAAAAAAAAAAAAAAAA", r"[A-Za-z0-9]{40,120}"),  # X (Twitter) app-only bearer tokens
    ("EZAK", r"[A-Za-z0-9]{54}"),  # EasyPost production and test keys
    ("EZTK", r"[A-Za-z0-9]{54}"),
    ("ntn_", r"\d{11}[A-Za-z0-9]{35}"),  # Notion integration tokens
    ("sgp_", r"(?:local_|[a-fA-F0-9]{16}_)?[a-fA-F0-9]{40}"),  # Sourcegraph access tokens
    ("pplx-", r"[A-Za-z0-9]{48}"),  # Perplexity API keys
    ("p8e-", r"[A-Za-z0-9]{32}"),  # Adobe client secrets
    ("LTAI", r"[A-Za-z0-9]{20}"),  # Alibaba Cloud AccessKey ids
    ("EAA", r"[MC][A-Za-z0-9]{100,300}"),  # Facebook (Meta) access tokens
)


def _lead_first(lead: str, rest: str, before: str = r"[\w-]", after: str = r"(?![\w-])") -> str:
    """``lead`` first so the regex engine can scan for it; the boundary check follows it."""
    lit = re.escape(lead)
    return f"{lit}(?<!{before}{lit}){rest}{after}"


def _family(lead: str, rest: str) -> Detector:
    regex = _lead_first(lead, rest)
    return Detector(
        type="secret",
        pattern=re.compile(regex),
        max_len=pattern_max_width(regex),
        charset=r"[A-Za-z0-9_.+/=-]",
        validate=_family_validator(lead),
        trigger=(lead,),
        priority=85,
        min_token_run=16,
    )


# Names under which a credential is assigned (``password = …``, ``"api_key": "…"``,
# ``twitterToken := "…"``, ``<dbPassword>…</dbPassword>``); the value is then judged on its own
# (not a placeholder, mixed characters, enough entropy). The keyword is the head of the name: it
# starts a word of it (after a non-letter, or at a lower-to-upper camelCase step) and ends it (an
# optional ``key`` and digits may follow).
_CRED_KEYS = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "pass",
    "secret",
    "token",
    "api_key",
    "api-key",
    "apikey",
    "access_key",
    "access-key",
    "accesskey",
    "private_key",
    "private-key",
    "privatekey",
    "credential",
    "credentials",
    "creds",
)
_CRED_WORDS = (
    r"passwor[dt]|passwd|passphrase|pwd|pass|secret|token|api[_-]?key|access[_-]?key|"
    r"private[_-]?key|credentials?|creds"
)
_GENERIC_RE = (
    r"(?:(?<![A-Za-z])|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])"
    # the last word of a name in capitals run together (ACMETOKEN, XAPI_KEY); not PASS/PWD,
    # which end ordinary words (BYPASS, COMPASS)
    r"|(?<=[A-Z])(?=(?:TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDS)"
    r"(?![A-Za-z0-9])))"
    r"(?i:(?:" + _CRED_WORDS + r")(?:[_.-]?key)?)(?:[_.-]?\d{1,3})?(?![A-Za-z0-9])"
    r"[\"'\]]{0,2}"
    r"(?P<typed>(?:[ \t]{0,2}:)?[ \t]{1,2}(?:string|String|str|&str|\[\]byte))?[ \t]{0,3}"
    # = : := ::= :::= ?= .= += => (assignments in config files and code), the end of an XML
    # start tag (then the value may be on the next line), "is"/"to" in prose, and the next
    # argument of a call: setProperty("API_TOKEN", "…")
    r"(?:(?:[:?.+]?=|:{1,3}=|=>|:)[ \t]{0,3}|(?P<xml>>)\s{0,12}|\s(?i:to|is)\s{1,3}"
    r"|(?P<arg>,)[ \t]{0,3})"
    r"[\"'`]?(?P<v>[^\s\"'<>,;`]{8,200})"
)
SECRETS: tuple[Detector, ...] = (
    Detector(
        type="secret",
        pattern=re.compile(
            r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
            # not a placeholder body ("...", "<your key>", "(paste it)") or an empty block
            r"(?!(?:\s|\\[nr])*(?:[.<(\[{*\u2026]|-----END))" + _PEM_BODY + f"(?:{_PEM_END})?"
        ),
        max_len=16200,
        charset=None,
        tail=_tail([_prefix_closure("-----BEGIN", r"[ A-Z0-9]{0,60}-{0,4}")]),
        tail_keys=("-----begin",),
        validate=_validate_pem,
        trigger=("-----BEGIN",),
        end_slack=48,
        priority=100,
    ),
    Detector(
        type="secret",
        pattern=re.compile(
            _lead_first(
                "eyJ", r"[A-Za-z0-9_-]{5,4096}\.eyJ[A-Za-z0-9_-]{2,8192}\.[A-Za-z0-9_-]{0,2048}"
            )
        ),
        max_len=14400,
        charset=r"[A-Za-z0-9_.-]",
        validate=_validate_jwt,
        trigger=("eyJ",),
        min_token_run=16,
        priority=90,
    ),
    Detector(
        type="secret",
        pattern=re.compile(
            r"(?<![A-Za-z0-9])(?:" + "|".join(_AWS_PREFIXES) + ")"
            r"[A-Z0-9]{16}(?![A-Za-z0-9])"
        ),
        max_len=20,
        charset=r"[A-Z0-9]",
        validate=_validate_token,
        trigger=_AWS_PREFIXES,
        min_token_run=16,
        priority=80,
    ),
    Detector(
        type="secret",
        pattern=re.compile(
            r"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?\s{0,3}[:=]\s{0,3}[\"']?"
            r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        max_len=90,
        charset=None,
        tail=_tail(
            [
                _prefix_closure(
                    "aws", r"[_a-z]{0,24}[\"']?\s{0,3}[:=]?\s{0,3}[\"']?[A-Za-z0-9/+=]{0,40}"
                ),
                _prefix_closure(
                    "secret", r"[_a-z]{0,20}[\"']?\s{0,3}[:=]?\s{0,3}[\"']?[A-Za-z0-9/+=]{0,40}"
                ),
            ],
            re.IGNORECASE,
        ),
        tail_keys=("aws", "secret"),
        validate=_validate_token,
        group=1,
        trigger=("secret",),
        trigger_ci=True,
        seek=re.compile(r"aws_?secret|secret_?access"),
        priority=80,
    ),
    *(_family(lead, rest) for lead, rest in _FAMILIES),
    Detector(
        type="secret",  # Azure AD (Entra ID) client secrets, recognisable without a label
        pattern=re.compile(
            r"(?<![\w~.-])[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{30,33}[A-Za-z0-9_~-](?![\w~-]|\.[\w~-])"
        ),
        max_len=40,
        charset=r"[A-Za-z0-9_~.-]",
        validate=_validate_token,
        trigger=("Q~",),
        min_token_run=16,
        priority=80,
    ),
    Detector(
        type="secret",  # Telegram bot tokens
        pattern=re.compile(r"\d(?<![\w:]\d)\d{7,9}:AA[\w-]{33}(?![\w-])"),
        max_len=45,
        charset=r"[A-Za-z0-9_:-]",
        trigger=(":AA",),
        min_token_run=16,
        priority=80,
    ),
    Detector(
        type="secret",
        pattern=re.compile(
            r"(?i:AccountKey|SharedAccessKey|SharedAccessSignature|ClientSecret|client_secret)"
            r"[\"']?\s{0,3}[:=]\s{0,3}[\"']?([A-Za-z0-9+/=%._~-]{20,256})"
            r"|[?&]sig=([A-Za-z0-9%+/=]{30,256})"
        ),
        max_len=300,
        charset=None,
        tail=_tail(
            [
                _prefix_closure(w, r"[\"']?\s{0,3}[:=]?\s{0,3}[\"']?[A-Za-z0-9+/=%._~-]{0,256}")
                for w in (
                    "accountkey",
                    "sharedaccesskey",
                    "sharedaccesssignature",
                    "clientsecret",
                    "client_secret",
                )
            ]
            + [r"[?&](?:s(?:i(?:g(?:=[A-Za-z0-9%+/=]{0,256})?)?)?)?"],
            re.IGNORECASE,
        ),
        tail_keys=("accountkey", "sharedaccess", "clientsecret", "client_secret", "sig="),
        validate=_validate_token,
        group=-1,
        trigger=("accountkey", "sharedaccess", "clientsecret", "client_secret", "sig="),
        trigger_ci=True,
        seek=re.compile(r"accountkey|sharedaccess|clientsecret|client_secret|[?&]sig="),
        priority=80,
    ),
    Detector(
        type="secret",
        pattern=re.compile(
            # with or without its scheme
            r"(?:https?://)?(?<![\w.-])hooks\.slack\.com/(?:services|workflows|triggers)/"
            r"[A-Za-z0-9/]{20,160}"
        ),
        max_len=200,
        charset=r"[A-Za-z0-9/:.]",
        validate=_validate_webhook,
        trigger=("hooks.slack.com",),
        priority=85,
    ),
    Detector(
        type="secret",
        pattern=re.compile(
            _lead_first(
                "sk-", r"(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_-]{20,250}"
            )
        ),
        max_len=280,
        charset=r"[A-Za-z0-9_-]",
        validate=_validate_api_token,
        trigger=("sk-",),
        min_token_run=16,
        priority=80,
    ),
    Detector(
        type="secret",
        pattern=re.compile(r"(?i:\bbearer)\s{1,4}(" + _B64ISH + r"{16,2048})"),
        max_len=2060,
        charset=None,
        tail=_tail([_prefix_closure("bearer", r"\s{0,4}" + _B64ISH + r"{0,2048}")], re.I),
        tail_keys=("bearer",),
        validate=_validate_token,
        group=1,
        trigger=("bearer",),
        trigger_ci=True,
        seek=re.compile(r"bearer"),
        priority=70,
    ),
    Detector(
        type="secret",  # the password of scheme://user:password@host
        pattern=re.compile(r"(?<=[A-Za-z0-9+.-])://[^\s:/@\"'<>]{1,64}:([^\s/@\"'<>]{3,128})@"),
        max_len=200,
        charset=None,
        tail=_tail([r":(?://?(?:[^\s:/@\"'<>]{0,64}(?::[^\s/@\"'<>]{0,128})?)?)?"]),
        tail_keys=("://",),
        validate=_validate_url_password,
        group=1,
        trigger=("://",),
        priority=75,
    ),
    Detector(
        type="secret",
        pattern=re.compile(_GENERIC_RE),
        max_len=280,
        charset=None,
        tail=_tail(
            [
                _prefix_closure(
                    k,
                    r"(?:[_.-]?(?:k(?:ey?)?)?)?[_.-]?\d{0,3}"  # SECRET_KEY, token2, token_3
                    r"[\"'\]]{0,2}(?:[ \t]{0,2}:?[ \t]{1,2}[\w&\[\]]{1,6})?"  # a type: x: &str
                    r"[\s:=>?.+,tois]{0,18}[\"'`]?[^\s\"'<>,;`]{0,200}",
                )
                for k in _CRED_KEYS
            ],
            re.IGNORECASE,
        ),
        tail_keys=("pass", "pwd", "secret", "token", "key", "cred"),
        validate=_validate_generic,
        group=-1,
        trigger=("pass", "pwd", "secret", "token", "key", "cred"),
        trigger_ci=True,
        seek=re.compile(_CRED_WORDS),
        priority=60,
    ),
)

BUILTIN: dict[str, tuple[Detector, ...]] = {
    "email": (EMAIL,),
    "phone": (PHONE,),
    "payment_card": (PAYMENT_CARD,),
    "us_ssn": (US_SSN, US_SSN_CUE),
    "ip_address": (IPV4, IPV6),
    "iban": (IBAN,),
    "secret": SECRETS,
}


# --------------------------------------------------------------------------- custom patterns

_CATEGORY_SRC = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_SPACE": r"\s",
}


def _class_parts(parsed: Any, parts: list[str]) -> bool:
    """Collect class fragments for every char the pattern can consume; False if any char."""
    c = _sre_constants
    for op, av in parsed:
        if op is c.LITERAL:
            parts.append(re.escape(chr(av)))
        elif op in (c.NOT_LITERAL, c.ANY, c.GROUPREF):
            return False
        elif op is c.IN:
            for iop, iav in av:
                if iop is c.NEGATE:
                    return False
                if iop is c.LITERAL:
                    parts.append(re.escape(chr(iav)))
                elif iop is c.RANGE:
                    parts.append(f"{re.escape(chr(iav[0]))}-{re.escape(chr(iav[1]))}")
                elif iop is c.CATEGORY and str(iav) in _CATEGORY_SRC:
                    parts.append(_CATEGORY_SRC[str(iav)])
                else:
                    return False
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            if not _class_parts(av[2], parts):
                return False
        elif op is c.SUBPATTERN:
            if not _class_parts(av[3], parts):
                return False
        elif op is c.ATOMIC_GROUP:
            if not _class_parts(av, parts):
                return False
        elif op is c.BRANCH:
            for sub in av[1]:
                if not _class_parts(sub, parts):
                    return False
        elif op is c.GROUPREF_EXISTS:
            for sub in av[1:]:
                if sub is not None and not _class_parts(sub, parts):
                    return False
        elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            continue  # zero-width
        else:
            return False
    return True


def _folds_case(parsed: Any) -> bool:
    """Whether any group of the pattern turns case-insensitive matching on (``(?i:…)``)."""
    c = _sre_constants
    for op, av in parsed:
        if op is c.SUBPATTERN:
            if av[1] & re.IGNORECASE or _folds_case(av[3]):
                return True
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            if _folds_case(av[2]):
                return True
        elif op is c.ATOMIC_GROUP:
            if _folds_case(av):
                return True
        elif op is c.BRANCH:
            if any(_folds_case(sub) for sub in av[1]):
                return True
        elif op is c.GROUPREF_EXISTS:
            if any(sub is not None and _folds_case(sub) for sub in av[1:]):
                return True
        elif op in (c.ASSERT, c.ASSERT_NOT) and _folds_case(av[1]):
            return True
    return False


def custom_detector(name: str, regex: str) -> Detector:
    parsed = _sre_parser.parse(regex)
    parts: list[str] = []
    charset: str | None = None
    if _class_parts(parsed, parts) and parts:
        charset = "[" + "".join(parts) + "]"
        if parsed.state.flags & re.IGNORECASE or _folds_case(parsed):
            charset = "(?i:" + charset + ")"  # a scoped (?i:…) folds the whole class: a superset
    return Detector(
        type=name,
        pattern=re.compile(regex),
        max_len=max(1, pattern_max_width(regex)),
        charset=charset,
        priority=50,
    )
