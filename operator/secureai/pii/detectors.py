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
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
        if text[i] != " ":
            count += 1
            if count == want:
                end = i + 1
                break
    if count != want or (end < len(text) and text[end].isalnum()):
        return None
    compact = text[start:end].replace(" ", "")
    return (start, end) if iban_ok(compact) else None


def _validate_ssn(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    span = m.span(m.lastindex or 0)
    digits = re.sub(r"\D", "", text[span[0] : span[1]])
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return span


_VERSION_CTX = re.compile(r"(?i)(?:version|ver\.?|release|build|rev\.?|firmware|v)\s*[:=#]?\s*\Z")


def _validate_ipv4(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    try:
        ipaddress.IPv4Address(m.group(0))
    except ValueError:
        return None
    if _VERSION_CTX.search(text[max(0, m.start() - 16) : m.start()]):
        return None
    return m.span()


def _validate_ipv6(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    cand = m.group(0)
    if cand != "::1" and sum(c in "0123456789abcdefABCDEF" for c in cand) < 4:
        return None
    try:
        ipaddress.IPv6Address(cand)
    except ValueError:
        return None
    return m.span()


def _validate_phone(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    raw = m.group(0)
    digits = re.sub(r"\D", "", raw)
    if raw.startswith("+"):
        if not 8 <= len(digits) <= 15:
            return None
        if raw.startswith("+1") and len(digits) == 11:
            return m.span() if digits[1] in "23456789" else None
        return m.span()
    if raw.startswith("0") and not raw.startswith("0("):
        if digits[1] == "0" or not 10 <= len(digits) <= 11 or not re.search(r"[ -]", raw):
            return None
        if re.match(r"\d{2}[-/. ]\d{2}[-/. ]\d{4}", raw):  # a date
            return None
        rest = [len(g) for g in re.split(r"[ -]", raw)[1:]]
        # National layouts: 2-digit pairs (FR) or a last group of 3+ (UK, DE, IT, NL).
        if not (all(n == 2 for n in rest) or rest[-1] >= 3):
            return None
        return m.span()
    national = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
    if len(national) != 10 or national[0] in "01":
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
    body = m.group(0)[3:]
    if re.search(r"\d", body) and re.search(r"[A-Za-z]", body):
        return m.span()
    return None


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
        r"[A-Za-z]{2,24}(?![A-Za-z0-9-])"
    ),
    max_len=480,
    charset=r"[A-Za-z0-9._%+@-]",
    trigger=("@",),
    priority=10,
)

PHONE = Detector(
    type="phone",
    pattern=re.compile(
        r"(?<![\w+.-])(?:"
        r"\+[1-9]\d{0,2}+(?:[ .-]?\(\d{1,4}+\)|[ .-]?\d{1,5}+){1,6}+"
        r"|(?:1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
        r"|0\d{1,4}+(?:[ -]\d{2,8}+){1,4}+"
        r")(?![\w-]|[.]\d)"
    ),
    max_len=40,
    charset=_SEP_NUM,
    validate=_validate_phone,
    trigger=_DIGITS,
    priority=20,
)

PAYMENT_CARD = Detector(
    type="payment_card",
    pattern=re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w-]|[.]\d)"),
    max_len=38,
    charset=r"[0-9 -]",
    validate=_validate_card,
    trigger=_DIGITS,
    priority=40,
)

US_SSN = Detector(
    type="us_ssn",
    pattern=re.compile(
        r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-]|[.]\d)"
        r"|(?i:\b(?:ssn|social security(?: number| no\.?)?)\s{0,3}(?:#|no\.?|number)?\s{0,3}"
        r"[:=]?\s{0,3})(\d{3}[ -]?\d{2}[ -]?\d{4})(?![\w-])"
    ),
    max_len=60,
    charset=None,
    tail=_tail(
        [
            r"[0-9-]{1,10}",
            _prefix_closure("ssn", r"[\s#:=.a-z0-9 -]{0,40}"),
            _prefix_closure("social security", r"[\s#:=.a-z0-9 -]{0,40}"),
        ],
        re.IGNORECASE,
    ),
    validate=_validate_ssn,
    trigger=_DIGITS,
    priority=35,
)

IPV4 = Detector(
    type="ip_address",
    pattern=re.compile(r"(?<![\w.-])(?:\d{1,3}\.){3}\d{1,3}(?![\w-]|[.]\d)"),
    max_len=15,
    charset=r"[0-9.]",
    validate=_validate_ipv4,
    trigger=_DIGITS,
    priority=15,
)

IPV6 = Detector(
    type="ip_address",
    pattern=re.compile(
        r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}(?:\.\d{1,3}){0,3}(?![\w:]|[.]\d)"
    ),
    max_len=45,
    charset=r"[0-9A-Fa-f:.]",
    validate=_validate_ipv6,
    trigger=(":",),
    priority=16,
)

IBAN = Detector(
    type="iban",
    pattern=re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}"),
    max_len=48,
    charset=r"[A-Z0-9 ]",
    validate=_validate_iban,
    trigger=_DIGITS,
    priority=30,
)

_PEM_BODY = r"(?:[A-Za-z0-9+/=\s\\,:]|-(?!-)){0,16000}"
_PEM_END = r"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_B64ISH = r"[A-Za-z0-9_.+/=-]"

SECRETS: tuple[Detector, ...] = (
    Detector(
        type="secret",
        pattern=re.compile(
            r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----" + _PEM_BODY + f"(?:{_PEM_END})?"
        ),
        max_len=16200,
        charset=None,
        tail=_tail([_prefix_closure("-----BEGIN", r"[ A-Z0-9]{0,60}-{0,4}")]),
        tail_keys=("-----begin",),
        trigger=("-----BEGIN",),
        end_slack=48,
        priority=100,
    ),
    Detector(
        type="secret",
        pattern=re.compile(
            r"(?<![\w-])eyJ[A-Za-z0-9_-]{5,4096}\.eyJ[A-Za-z0-9_-]{2,8192}\.[A-Za-z0-9_-]{0,2048}"
            r"(?![\w-])"
        ),
        max_len=14400,
        charset=r"[A-Za-z0-9_.-]",
        validate=_validate_jwt,
        trigger=("eyJ",),
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
        trigger=_AWS_PREFIXES,
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
        group=1,
        trigger=("secret",),
        trigger_ci=True,
        priority=80,
    ),
    Detector(
        type="secret",
        pattern=re.compile(
            r"(?<![\w-])(?:AIza[0-9A-Za-z_-]{35}|ya29\.[0-9A-Za-z_-]{20,2048})(?![\w-])"
        ),
        max_len=2060,
        charset=r"[0-9A-Za-z_.-]",
        trigger=("AIza", "ya29."),
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
        group=-1,
        trigger=("accountkey", "sharedaccess", "clientsecret", "client_secret", "sig="),
        trigger_ci=True,
        priority=80,
    ),
    Detector(
        type="secret",
        pattern=re.compile(
            r"(?<![\w-])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"
            r"|xox[abposre]-[A-Za-z0-9-]{10,250}|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,250})"
            r"(?![\w-])"
        ),
        max_len=270,
        charset=r"[A-Za-z0-9_-]",
        trigger=(
            "ghp_",
            "gho_",
            "ghu_",
            "ghs_",
            "ghr_",
            "github_pat_",
            "xox",
            "k_live_",
            "k_test_",
        ),
        priority=80,
    ),
    Detector(
        type="secret",
        pattern=re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,120}"),
        max_len=160,
        charset=r"[A-Za-z0-9/:.]",
        trigger=("hooks.slack.com",),
        priority=85,
    ),
    Detector(
        type="secret",
        pattern=re.compile(
            r"(?<![\w-])sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_-]{20,250}"
            r"(?![\w-])"
        ),
        max_len=280,
        charset=r"[A-Za-z0-9_-]",
        validate=_validate_api_token,
        trigger=("sk-",),
        priority=80,
    ),
    Detector(
        type="secret",
        pattern=re.compile(r"(?i:\bbearer)\s{1,4}(" + _B64ISH + r"{16,2048})"),
        max_len=2060,
        charset=None,
        tail=_tail([_prefix_closure("bearer", r"\s{0,4}" + _B64ISH + r"{0,2048}")], re.I),
        tail_keys=("bearer",),
        group=1,
        trigger=("bearer",),
        trigger_ci=True,
        priority=70,
    ),
)

BUILTIN: dict[str, tuple[Detector, ...]] = {
    "email": (EMAIL,),
    "phone": (PHONE,),
    "payment_card": (PAYMENT_CARD,),
    "us_ssn": (US_SSN,),
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


def custom_detector(name: str, regex: str) -> Detector:
    parsed = _sre_parser.parse(regex)
    parts: list[str] = []
    charset: str | None = None
    if _class_parts(parsed, parts) and parts:
        charset = "[" + "".join(parts) + "]"
        if parsed.state.flags & re.IGNORECASE:
            charset = "(?i:" + charset + ")"
    return Detector(
        type=name,
        pattern=re.compile(regex),
        max_len=max(1, pattern_max_width(regex)),
        charset=charset,
        priority=50,
    )
