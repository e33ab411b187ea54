"""Generates tests/data/guard_corpus_v2.jsonl: a broad labelled corpus for the PII detectors.

Run ``python tests/data/make_guard_corpus.py`` to rebuild it (deterministic). Every row has
``text``, ``labels`` (``type``, ``start``, ``end``), ``class`` (the family it exercises) and
``split``: rows are shuffled once with a fixed seed and 40 % go to ``heldout``, which is never
used while tuning the detectors; ``tune`` is the rest.

Values are synthetic: random digits and letters with valid check digits where a format has
them (Luhn, IBAN mod-97), documentation IP ranges and example domains, phone numbers in the
fictional ranges where a country has them.

``--classes`` writes tests/data/guard_corpus_classes.jsonl: the classes found missing on the
public suites (see "classes part" below), under their own seed.

``--fresh`` writes tests/data/guard_corpus_fresh.jsonl instead: the same generators under
another seed, all rows ``split: fresh``. It was generated once, after the detectors had been
changed following the first (and only) look at ``heldout``, and scored once.
"""

from __future__ import annotations

import json
import random
import re
import string
import sys
from collections.abc import Callable
from pathlib import Path

SEED = 20261129
SEED_FRESH = 20261130
HELDOUT_SHARE = 0.4
OUT = Path(__file__).with_name("guard_corpus_v2.jsonl")
OUT_FRESH = Path(__file__).with_name("guard_corpus_fresh.jsonl")

R = random.Random(SEED)
ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "_-"
HEX = "0123456789abcdef"


def rs(alphabet: str, n: int) -> str:
    return "".join(R.choice(alphabet) for _ in range(n))


def digits(n: int, first: str = "0123456789") -> str:
    return R.choice(first) + rs(string.digits, n - 1)


# --------------------------------------------------------------------------- contexts

PROSE = [
    "{v}",
    "Please contact {v} before Friday.",
    "As requested, here it is: {v}",
    "Found value {v} in the log.",
    "- item: {v}\n- other: none",
    "<td>{v}</td>",
    'The field contains "{v}" (verified).',
    "Customer record: {v}.",
    "Note {v}; thanks!",
    "{v} was mentioned twice.",
    "| name | value |\n|---|---|\n| x | {v} |",
    "Sure! The value you asked for is **{v}**.",
    "Kontakt: {v}, bitte bis Freitag.",
    "Voici la valeur : {v}.",
    "値は {v} です。",
    "[{v}]",
    "(see {v})",
    "log: 2024-05-01T12:00:00Z INFO got {v} from upstream",
    "user_data,{v},active",
    '{{"value": "{v}", "ok": true}}',
]

# Contexts used only for the fresh part (written after tuning, never tuned against).
FRESH_PROSE = [
    "Hi team, forwarding {v} as discussed.",
    "```\n{v}\n```",
    "> {v}",
    "* {v}",
    "Subject: re: {v}",
    "<li>{v}</li>",
    "{v}\n",
    "Der Wert lautet {v}.",
    "El valor es {v}.",
    "- [x] {v}",
]


def ctx(value: str, templates: list[str] | None = None) -> tuple[str, int]:
    t = R.choice(templates or PROSE)
    i = t.index("{v}")
    text = t.replace("{{", "{").replace("}}", "}")
    j = text.index("{v}")
    assert i >= j
    return text.replace("{v}", value, 1), j


Rows = list[dict[str, object]]


def pos(rows: Rows, cls: str, typ: str, value: str, templates: list[str] | None = None) -> None:
    text, start = ctx(value, templates)
    rows.append(
        {
            "text": text,
            "labels": [{"type": typ, "start": start, "end": start + len(value)}],
            "class": cls,
        }
    )


def pos_in(rows: Rows, cls: str, typ: str, template: str, value: str) -> None:
    """A positive in a fixed sentence (cue words that belong to the class)."""
    start = template.index("{v}")
    rows.append(
        {
            "text": template.replace("{v}", value),
            "labels": [{"type": typ, "start": start, "end": start + len(value)}],
            "class": cls,
        }
    )


def neg(rows: Rows, cls: str, text: str) -> None:
    rows.append({"text": text, "labels": [], "class": cls})


# --------------------------------------------------------------------------- emails


def gen_emails(rows: Rows) -> None:
    locals_ = ["jane.doe", "j.smith", "x+tag", "first.last", "li_wei", "o'neil", "ops-team", "u"]
    domains = [
        "example.com",
        "example.org",
        "mail.example.net",
        "corp.example.co.uk",
        "example.io",
        "uni-example.edu",
        "example.travel",
        "example.de",
        "sub.domain.example.fr",
        "example.museum",
    ]
    for _ in range(160):
        local = R.choice(locals_).replace("'", "") + (
            str(R.randint(1, 999)) if R.random() < 0.5 else ""
        )
        if R.random() < 0.15:
            local = local.upper()
        value = f"{local}@{R.choice(domains)}"
        pos(rows, "email", "email", value)
    for v in ["mailto:{}", "<{}>", "Email: {}", "e-mail {},"]:
        for _ in range(6):
            value = (
                f"{R.choice(locals_).replace(chr(39), '')}{R.randint(1, 99)}@{R.choice(domains)}"
            )
            pre, _, post = v.partition("{}")
            pos_in(rows, "email in markup", "email", pre + "{v}" + post, value)
    # Hard negatives.
    for _ in range(12):
        n = R.choice(["logo", "icon", "hero", "avatar", "btn-close", "bg_main"])
        ext = R.choice(["png", "jpg", "webp", "svg", "gif", "jpeg"])
        neg(rows, "retina image name", f'<img src="{n}@{R.choice(["2x", "3x", "1.5x"])}.{ext}">')
        neg(rows, "retina image name", f"Use {n}@2x.{ext} for high-DPI screens.")
    for _ in range(14):
        host = R.choice(
            ["github.com", "gitlab.com", "bitbucket.org", "git.example.com", "ssh.dev.azure.com"]
        )
        org = R.choice(["acme", "my-org", "openai", "kubernetes-sigs", "torvalds"])
        repo = R.choice(["linux", "repo", "secure-ai", "charts", "tools.git-utils"])
        neg(rows, "ssh git remote", f"git clone git@{host}:{org}/{repo}.git")
        neg(rows, "ssh git remote", f'url = "git@{host}:{org}/{repo}.git"')
    for t in [
        "npm install @scope/pkg@1.2.3 and lodash@^4.17.21",
        "image: nginx@sha256:" + rs(HEX, 64),
        "@app.route('/users/<int:id>')",
        "ssh deploy@localhost -p 2222",
        "Use the decorator @property and @staticmethod.",
        "pip install requests@git+https://github.com/psf/requests",
        "The pattern is user@host, not an address.",
        "Follow @jane_doe on the socials.",
        "go get golang.org/x/tools@v0.21.0",
        "uses: actions/checkout@v4.1.1",
    ]:
        neg(rows, "email look-alike", t)


# --------------------------------------------------------------------------- phones


def _grp(ds: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for s in sizes:
        out.append(ds[i : i + s])
        i += s
    assert i == len(ds), (ds, sizes)
    return sep.join(out)


PHONE_CUES = [
    "my phone number is {v}",
    "Call me at {v} tomorrow.",
    "Tel: {v}",
    "tel. {v}",
    "Phone: {v}",
    "mobile {v}",
    "Telefon: {v}",
    "Tél. : {v}",
    "cell: {v}",
    "phone number: {v}",
    "You can reach her on {v}.",
    "WhatsApp: {v}",
]


def phone_values() -> list[tuple[str, str]]:
    """(class, value) for national and international formats of the major locales."""
    out: list[tuple[str, str]] = []
    for _ in range(4):
        a = digits(3, "23456789")
        x = digits(3, "23456789")
        s = digits(4)
        out += [
            ("US", f"({a}) {x}-{s}"),
            ("US", f"{a}-{x}-{s}"),
            ("US", f"{a}.{x}.{s}"),
            ("US", f"+1 {a} {x} {s}"),
            ("US", f"+1-{a}-{x}-{s}"),
            ("US", f"1-800-{x}-{s}"),
            ("US", f"{a} {x} {s}"),
            ("US", f"+1 ({a}) {x}-{s}"),
        ]
        uk = "20" + digits(8)
        ukm = "7700" + digits(6)
        out += [
            ("UK", f"0{_grp(uk, [2, 4, 4], ' ')}"),
            ("UK", f"0{_grp(ukm, [4, 6], ' ')}"),
            ("UK", f"+44 {_grp(uk, [2, 4, 4], ' ')}"),
            ("UK", f"+44 (0){_grp(uk, [2, 4, 4], ' ')}"),
            ("UK", f"+44 {_grp(ukm, [4, 6], ' ')}"),
            ("UK", f"01632 {digits(6)}"),
        ]
        de = "30" + digits(8)
        dem = "171" + digits(7)
        out += [
            ("DE", f"0{de[:2]} {de[2:]}"),
            ("DE", f"0{de[:2]}/{de[2:]}"),
            ("DE", f"0{dem[:3]} {dem[3:]}"),
            ("DE", f"089/{digits(4)}-{digits(4)}"),
            ("DE", f"+49 {de[:2]} {de[2:]}"),
            ("DE", f"+49 (0){de[:2]} {de[2:]}"),
            ("DE", f"(0{de[:2]}) {de[2:]}"),
            ("DE", f"+49 {dem[:3]} {dem[3:]}"),
        ]
        fr = R.choice("1234567") + digits(8)
        out += [
            ("FR", "0" + _grp(fr, [1, 2, 2, 2, 2], " ")),
            ("FR", "0" + _grp(fr, [1, 2, 2, 2, 2], ".")),
            ("FR", "0" + _grp(fr, [1, 2, 2, 2, 2], "-")),
            ("FR", "+33 " + _grp(fr, [1, 2, 2, 2, 2], " ")),
            ("FR", "+33 (0)" + _grp(fr, [1, 2, 2, 2, 2], " ")),
        ]
        itm = "3" + digits(9)
        out += [
            ("IT", f"06 {digits(4)} {digits(4)}"),
            ("IT", f"{_grp(itm, [3, 3, 4], ' ')}"),
            ("IT", f"+39 06 {digits(4)} {digits(4)}"),
            ("IT", f"+39 {_grp(itm, [3, 3, 4], ' ')}"),
        ]
        es = R.choice("6789") + digits(8)
        out += [("ES", _grp(es, [3, 3, 3], " ")), ("ES", "+34 " + _grp(es, [3, 3, 3], " "))]
        out += [
            ("NL", f"020-{digits(7)}"),
            ("NL", f"06-{digits(8)}"),
            ("NL", f"+31 20 {digits(3)} {digits(4)}"),
            ("NL", f"+31 6 {digits(8)}"),
        ]
        out += [
            ("JP", f"03-{digits(4)}-{digits(4)}"),
            ("JP", f"090-{digits(4)}-{digits(4)}"),
            ("JP", f"+81 3-{digits(4)}-{digits(4)}"),
            ("JP", f"+81 90-{digits(4)}-{digits(4)}"),
            ("JP", f"0120-{digits(3)}-{digits(3)}"),
        ]
        cn = "1" + R.choice("3456789") + digits(9)
        out += [
            ("CN", _grp(cn, [3, 4, 4], " ")),
            ("CN", _grp(cn, [3, 4, 4], "-")),
            ("CN", f"010-{digits(8)}"),
            ("CN", "+86 " + _grp(cn, [3, 4, 4], " ")),
            ("CN", "+86 " + cn),
        ]
        inm = R.choice("6789") + digits(9)
        out += [
            ("IN", _grp(inm, [5, 5], " ")),
            ("IN", "+91 " + _grp(inm, [5, 5], " ")),
            ("IN", "+91-" + inm),
            ("IN", f"022-{digits(8)}"),
        ]
        out += [
            ("BR", f"(11) 9{digits(4)}-{digits(4)}"),
            ("BR", f"+55 11 9{digits(4)}-{digits(4)}"),
            ("BR", f"(21) {digits(4, '23')}-{digits(4)}"),
        ]
        out += [
            ("AU", f"(02) {digits(4)} {digits(4)}"),
            ("AU", f"04{digits(2)} {digits(3)} {digits(3)}"),
            ("AU", f"+61 2 {digits(4)} {digits(4)}"),
            ("AU", f"+61 4{digits(2)} {digits(3)} {digits(3)}"),
        ]
        out += [
            ("MX", f"+52 55 {digits(4)} {digits(4)}"),
            ("MX", f"+52 1 55 {digits(4)} {digits(4)}"),
            ("KR", f"010-{digits(4)}-{digits(4)}"),
            ("KR", f"02-{digits(3)}-{digits(4)}"),
            ("KR", f"+82 10-{digits(4)}-{digits(4)}"),
            ("RU", f"8 (495) {digits(3)}-{digits(2)}-{digits(2)}"),
            ("RU", f"+7 495 {digits(3)}-{digits(2)}-{digits(2)}"),
            ("RU", f"+7 (912) {digits(3)}-{digits(2)}-{digits(2)}"),
            ("CH", f"044 {digits(3)} {digits(2)} {digits(2)}"),
            ("CH", f"+41 44 {digits(3)} {digits(2)} {digits(2)}"),
            ("SE", f"08-{digits(3)} {digits(3)} {digits(2)}"),
            ("SE", f"+46 8 {digits(3)} {digits(3)} {digits(2)}"),
            ("SE", f"070-{digits(3)} {digits(2)} {digits(2)}"),
            ("PL", f"+48 {digits(3, '5678')} {digits(3)} {digits(3)}"),
            ("PL", f"+48 12 {digits(3)} {digits(2)} {digits(2)}"),
            ("IE", f"+353 1 {digits(3)} {digits(4)}"),
            ("IE", f"+353 87 {digits(3)} {digits(4)}"),
            ("ZA", f"+27 21 {digits(3)} {digits(4)}"),
            ("ZA", f"+27 82 {digits(3)} {digits(4)}"),
            ("SG", f"+65 {digits(4, '689')} {digits(4)}"),
            ("HK", f"+852 {digits(4, '2356789')} {digits(4)}"),
            ("AE", f"+971 50 {digits(3)} {digits(4)}"),
            ("IL", f"+972 52-{digits(3)}-{digits(4)}"),
            ("TR", f"+90 532 {digits(3)} {digits(2)} {digits(2)}"),
            ("NG", f"+234 803 {digits(3)} {digits(4)}"),
            (
                "E164",
                "+"
                + R.choice(["44", "49", "33", "39", "34", "81", "86", "91", "61", "55"])
                + digits(10, "123456789"),
            ),
            ("E164", "+1" + digits(3, "23456789") + digits(7, "23456789")),
            ("PH", f"+63 917 {digits(3)} {digits(4)}"),
            ("BE", f"+32 2 {digits(3)} {digits(2)} {digits(2)}"),
            ("BE", f"0{digits(3, '4')} {digits(2)} {digits(2)} {digits(2)}"),
            ("AT", f"+43 1 {digits(7)}"),
            ("AT", f"0664 {digits(7)}"),
        ]
    return out


def gen_phones(rows: Rows) -> None:
    for cls, value in phone_values():
        pos(rows, f"phone {cls}", "phone", value)
    # Bare numbers after a phone cue.
    for _ in range(40):
        value = R.choice(
            [
                digits(10, "23456789"),
                "0" + digits(10, "123456789"),
                digits(11, "1"),
                "0" + digits(9, "1234567"),
                digits(9, "6789"),
            ]
        )
        pos_in(rows, "phone after cue", "phone", R.choice(PHONE_CUES), value)
    # Hard negatives.
    for _ in range(4):
        y, m, d = R.randint(1990, 2030), R.randint(1, 12), R.randint(1, 28)
        for t in [
            f"Released on {y}-{m:02d}-{d:02d}.",
            f"Date: {d:02d}/{m:02d}/{y}",
            f"am {d:02d}.{m:02d}.{y} um 10:30",
            f"Order #{digits(8)} shipped.",
            f"Invoice {digits(4)}-{digits(6)} is due.",
            f"ISBN 978-{digits(1)}-{digits(2)}-{digits(6)}-{digits(1)}",
            f"Total: {R.randint(1, 9)} {digits(3)} {digits(3)} EUR",
            f"Population: {R.randint(100, 999)},{digits(3)},{digits(3)}",
            f"The build took {digits(5)} ms over {digits(7)} requests.",
            f"timestamp {digits(10, '1')}",
            f"Tracking number 1Z {digits(3)} {digits(3)} {digits(2)} {digits(4)} {digits(4)}",
            f"SKU {digits(2)}-{digits(4)}-{digits(3)}",
            f"Sort code {digits(2)}-{digits(2)}-{digits(2)}",
            f"coordinates 48.{digits(6)}, 2.{digits(6)}",
            "ports 8080-8090 and 9000-9100",
            f"See RFC {digits(4)} section {R.randint(1, 9)}.{R.randint(1, 9)}.{R.randint(1, 9)}",
            f"Version {R.randint(1, 9)}.{R.randint(0, 20)}.{R.randint(0, 99)}-{digits(8)}",
            f"Build {digits(4)}.{digits(4)}.{digits(4)}",
            f"between {digits(3)} and {digits(3)} units",
            f"Room {digits(3)}, floor {digits(1)}",
            f"The answer is {digits(6)}.",
            f"price: ${R.randint(1, 999)}.{digits(2)}",
            f"Case no. {digits(2)}-cv-{digits(5)}",
            f"UUID {rs(HEX, 8)}-{rs(HEX, 4)}-{rs(HEX, 4)}-{rs(HEX, 4)}-{rs(HEX, 12)}",
            f"Matrix: [[{digits(3)}, {digits(3)}], [{digits(3)}, {digits(3)}]]",
            f"{digits(2)}:{digits(2)}:{digits(2)}.{digits(3)}",
            f"Zip code {digits(5)}-{digits(4)}",
            f"lat/long: -33.{digits(4)} 151.{digits(4)}",
            f"Reference: {digits(3)}-{digits(3)}-{digits(3)}-{digits(3)}",
            f"PID {digits(5)} exited with code {R.randint(0, 255)}",
        ]:
            neg(rows, "phone look-alike", t)


# --------------------------------------------------------------------------- cards


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + rs(string.digits, length - len(prefix) - 1)
    for c in string.digits:
        cand = body + c
        total = 0
        for i, ch in enumerate(reversed(cand)):
            d = int(ch)
            if i % 2 == 1:
                d *= 2
                if d > 9:
                    d -= 9
            total += d
        if total % 10 == 0:
            return cand
    raise AssertionError


BRANDS = [
    ("visa", "4", 16),
    ("visa13", "4", 13),
    ("visa19", "4", 19),
    ("mastercard", "5" + R.choice("12345"), 16),
    ("mastercard2", "2221", 16),
    ("mastercard2", "2720", 16),
    ("amex", "34", 15),
    ("amex", "37", 15),
    ("discover", "6011", 16),
    ("discover", "65", 16),
    ("jcb", "3528", 16),
    ("jcb", "3589", 16),
    ("diners", "36", 14),
    ("diners", "300", 14),
    ("unionpay", "62", 16),
    ("unionpay", "62", 19),
    ("maestro", "6759", 16),
    ("mir", "2200", 16),
]


def card_format(num: str) -> str:
    n = len(num)
    f = R.random()
    if n == 15 and f < 0.6:
        return _grp(num, [4, 6, 5], R.choice(" -"))
    if n == 14 and f < 0.6:
        return _grp(num, [4, 6, 4], R.choice(" -"))
    if n in (16, 19) and f < 0.6:
        sep = R.choice(" -")
        return _grp(num, [4] * (n // 4) + ([n % 4] if n % 4 else []), sep)
    return num


def gen_cards(rows: Rows) -> None:
    for _ in range(6):
        for brand, prefix, n in BRANDS:
            pos(rows, f"card {brand}", "payment_card", card_format(luhn_complete(prefix, n)))
    for t in ["card number: {v}", "Card: {v} exp 12/27", '"pan": "{v}"', "charged to {v}"]:
        for _ in range(4):
            pos_in(rows, "card labelled", "payment_card", t, card_format(luhn_complete("4", 16)))
    for _ in range(40):
        num = luhn_complete(R.choice(["4", "51", "37", "6011"]), 16)
        bad = num[:-1] + str((int(num[-1]) + R.randint(1, 9)) % 10)
        neg(
            rows,
            "non-Luhn digit run",
            R.choice(PROSE).replace("{v}", card_format(bad)).replace("{{", "{").replace("}}", "}"),
        )
    for _ in range(10):
        neg(rows, "card look-alike", f"IMEI {luhn_complete('35', 15)}")
        neg(rows, "card look-alike", f"epoch ms {digits(13, '1')}")
        neg(rows, "card look-alike", f"account id {digits(16, '9')}")


# --------------------------------------------------------------------------- SSN


def ssn_digits() -> str:
    while True:
        a = digits(3, "012345678")
        if a not in ("000", "666"):
            break
    return a + f"{R.randint(1, 99):02d}" + f"{R.randint(1, 9999):04d}"


def gen_ssn(rows: Rows) -> None:
    for _ in range(50):
        d = ssn_digits()
        pos(rows, "ssn dashed", "us_ssn", f"{d[:3]}-{d[3:5]}-{d[5:]}")
    cues = [
        "my ssn is {v}",
        "My SSN is {v}.",
        "SSN: {v}",
        "SSN#: {v}",
        "SSN # {v}",
        "S.S.N. {v}",
        "soc. sec. no. {v}",
        "Social Security Number: {v}",
        "social security no {v}",
        "Social Security #{v}",
        "SSN={v}",
        '"ssn": "{v}"',
        "her social is {v}",
        "SS# {v}",
    ]
    for _ in range(70):
        d = ssn_digits()
        value = R.choice(
            [
                f"{d[:3]} {d[3:5]} {d[5:]}",
                f"{d[:3]}.{d[3:5]}.{d[5:]}",
                d,
                f"{d[:3]}-{d[3:5]}-{d[5:]}",
            ]
        )
        pos_in(rows, "ssn after cue", "us_ssn", R.choice(cues), value)
    for _ in range(6):
        for t in [
            f"000-{digits(2)}-{digits(4)}",
            f"666-{digits(2)}-{digits(4)}",
            f"9{digits(2)}-{digits(2)}-{digits(4)}",
            f"{digits(3, '12345')}-00-{digits(4)}",
            f"{digits(3, '12345')}-{digits(2, '123')}-0000",
            f"zip {digits(5)}-{digits(4)}",
            f"ticket {digits(9)}",
            f"part no. {digits(3)} {digits(2)} {digits(4)}",
            f"version {digits(3)}.{digits(2)}.{digits(4)}",
            f"room {digits(3)}-{digits(4)}",
        ]:
            neg(rows, "ssn look-alike", t)


# --------------------------------------------------------------------------- IP

IP_CUES = [
    "server {v}:9000",
    "nameserver {v}",
    "observer at {v}",
    "host {v}",
    "Connecting to {v} ...",
    "listen {v}:8443;",
    "from {v} port 22",
    "ip={v}",
    "X-Forwarded-For: {v}",
    "gateway {v}",
    "upstream backend {{ server {v}; }}",
    "ping {v}",
]


def ipv4() -> str:
    first = R.choice([10, 172, 192, 203, 198, 100, 8, 34, 52, 151, 81, 45])
    return f"{first}.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}"


def ipv6() -> str:
    groups = [rs(HEX, R.randint(1, 4)) for _ in range(8)]
    f = R.random()
    if f < 0.3:
        return "2001:db8:" + ":".join(groups[2:])
    if f < 0.6:
        return f"2001:db8:{groups[2]}::{groups[5]}"
    if f < 0.75:
        return f"fe80::{groups[4]}:{groups[5]}:{groups[6]}:{groups[7]}"
    if f < 0.9:
        a, b, c, d = R.randint(1, 223), R.randint(0, 255), R.randint(0, 255), R.randint(1, 254)
        return f"::ffff:{a}.{b}.{c}.{d}"
    return ":".join(g.upper() for g in groups)


def gen_ips(rows: Rows) -> None:
    for _ in range(60):
        pos(rows, "ipv4", "ip_address", ipv4())
    for _ in range(40):
        pos(rows, "ipv6", "ip_address", ipv6())
    for _ in range(20):
        pos(rows, "ipv4 prefix", "ip_address", f"{ipv4().rsplit('.', 1)[0]}.0/{R.randint(8, 30)}")
        pos(
            rows,
            "ipv6 prefix",
            "ip_address",
            f"2001:db8:{rs(HEX, 4)}::/{R.choice([32, 48, 56, 64])}",
        )
        pos(
            rows,
            "ipv6 zone",
            "ip_address",
            f"fe80::{rs(HEX, 4)}:{rs(HEX, 4)}%{R.choice(['eth0', 'en0', 'wlan1', '3'])}",
        )
    for _ in range(40):
        pos_in(rows, "ipv4 after cue", "ip_address", R.choice(IP_CUES), ipv4())
    for _ in range(10):
        pos_in(
            rows, "ipv6 bracketed", "ip_address", "http://[{v}]:8080/", f"2001:db8::{rs(HEX, 4)}"
        )
    # Hard negatives.
    products = [
        "OpenSSL",
        "Firefox",
        "Chrome",
        "Kubernetes",
        "Node",
        "Python",
        "Windows",
        "nginx",
        "Go",
        "Xcode",
        "Terraform",
        "PostgreSQL",
    ]
    for _ in range(40):
        v = f"{R.randint(0, 30)}.{R.randint(0, 40)}.{R.randint(0, 99)}.{R.randint(0, 30)}"
        neg(
            rows,
            "version after product name",
            R.choice(
                [
                    f"{R.choice(products)} {v}",
                    f"Upgrade to {R.choice(products)} {v} today.",
                    f"{R.choice(products)} {v} fixes the bug",
                ]
            ),
        )
    for _ in range(30):
        v = f"{R.randint(1, 20)}.{R.randint(1, 9)}.{R.randint(1, 9)}.{R.randint(1, 9)}"
        neg(
            rows,
            "section number",
            R.choice(
                [
                    f"See section {v}.",
                    f"§ {v} applies",
                    f"Clause {v} of the contract",
                    f"as defined in {v} above",
                    f"Step {v}: restart",
                    f"chapter {v}",
                ]
            ),
        )
    for _ in range(30):
        v = f"{R.randint(1, 30)}.{R.randint(0, 30)}.{R.randint(0, 99)}.{R.randint(0, 99)}"
        neg(
            rows,
            "version number",
            R.choice(
                [
                    f"version {v}",
                    f"v{v}",
                    f"ver. {v}",
                    f"Release {v}",
                    f"build {v}",
                    f"firmware {v}",
                    f"rev {v}",
                    f'"version": "{v}"',
                    f"Version: {v}",
                ]
            ),
        )
    for t in [
        "std::vector<int> v; a::b::c",
        "arr[::2] and arr[1::3]",
        "MAC 00:1a:2b:3c:4d:5e",
        "at 12:34:56 on Monday",
        "sha1 " + rs(HEX, 40),
        "OID 2.5.4.3 is commonName",
        "OID 1.2.840.113549.1.1.11",
        "999.1.1.1 is not an address",
        "1.2.3 and 4.5.6",
        "fn main() { let x = foo::bar::baz(); }",
        "dead:beef is a word, cafe:babe too",
    ]:
        neg(rows, "ip look-alike", t)


# --------------------------------------------------------------------------- IBAN

IBAN_SPEC = {
    "DE": "8n10n",
    "GB": "4a14n",
    "FR": "10n11c2n",
    "ES": "20n",
    "IT": "1a10n12c",
    "NL": "4a10n",
    "BE": "12n",
    "CH": "5n12c",
    "AT": "16n",
    "PL": "24n",
    "SE": "20n",
    "NO": "11n",
    "DK": "14n",
    "FI": "14n",
    "IE": "4a14n",
    "PT": "21n",
    "LU": "3n13c",
    "SA": "2n18c",
    "AE": "19n",
    "TR": "6n16c",
    "BR": "23n1a1c",
    "RO": "4a16c",
    "HU": "24n",
    "CZ": "20n",
    "GR": "7n16c",
    "MT": "4a5n18c",
    "KW": "4a22c",
    "IL": "19n",
}


def iban_value(cc: str) -> str:
    bban = ""
    spec = IBAN_SPEC[cc]
    num = ""
    for ch in spec:
        if ch.isdigit():
            num += ch
            continue
        alpha = {
            "n": string.digits,
            "a": string.ascii_uppercase,
            "c": string.ascii_uppercase + string.digits,
        }[ch]
        bban += rs(alpha, int(num))
        num = ""
    rearr = bban + cc + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in rearr)) % 97
    return f"{cc}{check:02d}{bban}"


def grouped(v: str, sep: str = " ") -> str:
    return sep.join(v[i : i + 4] for i in range(0, len(v), 4))


def wrong_check_digits(v: str) -> str:
    return v[:2] + f"{(int(v[2:4]) + R.randint(1, 50)) % 97 + 2:02d}" + v[4:]


def gen_iban_values(rows: Rows, countries: list[str], cls: str) -> None:
    for cc in countries:
        v = iban_value(cc)
        if R.random() < 0.5:
            v = grouped(v)
        pos(rows, cls, "iban", v)


def gen_ibans(rows: Rows) -> None:
    for _ in range(3):
        gen_iban_values(rows, list(IBAN_SPEC), "iban")
    for _ in range(25):
        bad = wrong_check_digits(iban_value(R.choice(list(IBAN_SPEC))))
        neg(rows, "iban look-alike", f"IBAN {bad} (check digits wrong)")
    for t in [
        "GB29 NWBK",
        "DE89 3704",
        "Flight LH400 gate A12",
        "ISO 3166 code DE, AT, CH",
        "SWIFT DEUTDEFF",
    ]:
        neg(rows, "iban look-alike", t)


# --------------------------------------------------------------------------- secrets


def secret_values() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for _ in range(3):
        out += [
            ("gitlab", "glpat-" + rs(URLSAFE, 20)),
            ("gitlab", "glpat-" + rs(URLSAFE, 27) + "." + rs(ALNUM, 2) + "." + rs(ALNUM, 9)),
            ("gitlab", "gldt-" + rs(URLSAFE, 20)),
            ("gitlab", "glrt-" + rs(URLSAFE, 20)),
            ("gitlab", "glptt-" + rs(HEX, 40)),
            ("gitlab", "glsoat-" + rs(URLSAFE, 20)),
            ("gitlab", "glft-" + rs(URLSAFE, 20)),
            ("gitlab", "glcbt-" + rs(HEX, 1) + "_" + rs(URLSAFE, 20)),
            ("gitlab", "GR1348941" + rs(URLSAFE, 20)),
            ("gitlab", "glimt-" + rs(ALNUM, 25)),
            ("gitlab", "gloas-" + rs(HEX, 64)),
            ("huggingface", "hf_" + rs(string.ascii_letters, 34)),
            ("huggingface", "api_org_" + rs(string.ascii_letters, 34)),
            ("slack", "xoxb-" + digits(12) + "-" + digits(13) + "-" + rs(ALNUM, 24)),
            (
                "slack",
                "xoxp-" + digits(11) + "-" + digits(11) + "-" + digits(13) + "-" + rs(HEX, 32),
            ),
            (
                "slack",
                "xapp-1-A"
                + rs(string.ascii_uppercase + string.digits, 10)
                + "-"
                + digits(13)
                + "-"
                + rs(HEX, 64),
            ),
            ("slack", "xoxe.xoxp-1-" + rs(ALNUM, 140)),
            ("slack", "xoxe-1-" + rs(ALNUM, 140)),
            (
                "slack",
                "https://hooks.slack.com/services/T"
                + rs(string.ascii_uppercase + string.digits, 10)
                + "/B"
                + rs(string.ascii_uppercase + string.digits, 10)
                + "/"
                + rs(ALNUM, 24),
            ),
            (
                "slack",
                "https://hooks.slack.com/workflows/T"
                + rs(string.ascii_uppercase + string.digits, 10)
                + "/A"
                + rs(string.ascii_uppercase + string.digits, 10)
                + "/"
                + digits(18)
                + "/"
                + rs(ALNUM, 24),
            ),
            ("stripe", "sk_live_" + rs(ALNUM, 99)),
            ("stripe", "rk_live_" + rs(ALNUM, 24)),
            ("stripe", "whsec_" + rs(ALNUM, 32)),
            ("stripe", "sk_test_" + rs(ALNUM, 24)),
            ("npm", "npm_" + rs(ALNUM, 36)),
            ("pypi", "pypi-AgEIcHlwaS5vcmc" + rs(URLSAFE, 60)),
            ("twilio", "SK" + rs(HEX, 32)),
            ("sendgrid", "SG." + rs(URLSAFE, 22) + "." + rs(URLSAFE, 43)),
            ("aws", R.choice(["AKIA", "ASIA", "AROA"]) + rs(string.ascii_uppercase + "234567", 16)),
            ("aws bedrock", "ABSK" + rs(B64, 132)),
            ("aws bedrock", "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29t" + rs(B64, 80)),
            ("azure ad", rs(ALNUM, 3) + digits(1) + "Q~" + rs(ALNUM + "_~.-", 34)),
            ("openai", "sk-proj-" + rs(URLSAFE, 120)),
            ("openai", "sk-" + rs(ALNUM, 48)),
            ("anthropic", "sk-ant-api03-" + rs(URLSAFE, 93) + "AA"),
            ("github", "ghp_" + rs(ALNUM, 36)),
            ("github", "github_pat_" + rs(ALNUM, 22) + "_" + rs(ALNUM, 59)),
            ("google", "AIza" + rs(URLSAFE, 35)),
            ("digitalocean", "dop_v1_" + rs(HEX, 64)),
            ("shopify", "shpat_" + rs(HEX, 32)),
            ("databricks", "dapi" + rs(HEX, 32)),
            ("grafana", "glsa_" + rs(ALNUM, 32) + "_" + rs(HEX, 8)),
            ("vault", "hvs." + rs(URLSAFE, 90)),
            ("postman", "PMAK-" + rs(HEX, 24) + "-" + rs(HEX, 34)),
            ("telegram", digits(10, "123456789") + ":AA" + rs(URLSAFE, 33)),
            ("age", "AGE-SECRET-KEY-1" + rs("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)),
            ("groq", "gsk_" + rs(ALNUM, 52)),
            ("replicate", "r8_" + rs(ALNUM, 37)),
            ("linear", "lin_api_" + rs(ALNUM, 40)),
            ("newrelic", "NRAK-" + rs(string.ascii_uppercase + string.digits, 27)),
            ("sentry", "sntrys_" + rs(B64, 100)),
            ("doppler", "dp.pt." + rs(ALNUM, 43)),
        ]
    return out


GENERIC_KEYS = [
    "password",
    "db_password",
    "DB_PASS",
    "api_key",
    "apiKey",
    "secret",
    "client_secret",
    "auth_token",
    "access_token",
    "PASSWD",
    "private_key",
    "SECRET_KEY",
    "token",
    "pwd",
    "mysql_root_password",
    "credentials",
]


def generic_value() -> str:
    return R.choice(
        [
            rs(ALNUM, R.randint(16, 40)),
            rs(ALNUM + "!@#$%^&*", R.randint(12, 24)),
            rs(HEX, 32),
            rs(B64, 40),
            R.choice(
                [
                    "Tr0ub4dor&3",
                    "correct-horse-battery-9",
                    "S3cr3t!Pass2024",
                    "P@ssw0rd_" + digits(4),
                ]
            ),
        ]
    )


def gen_secrets(rows: Rows) -> None:
    for cls, value in secret_values():
        pos(rows, f"secret {cls}", "secret", value)
    code = [
        'token = "{v}"',
        "export HF_TOKEN={v}",
        "client = OpenAI(api_key='{v}')",
        "Authorization: token {v}",
        "--token {v}",
        '{{"key": "{v}"}}',
        "TOKEN: {v}",
    ]
    for cls, value in secret_values()[::3]:
        pos(rows, f"secret {cls} in code", "secret", value, code)
    # Generic name = value, judged by the key's name and the value.
    for _ in range(60):
        k = R.choice(GENERIC_KEYS)
        v = generic_value()
        tmpl = R.choice(
            [
                f'{k} = "{{v}}"',
                f"{k}: {{v}}",
                f"{k}={{v}}",
                f'"{k}": "{{v}}"',
                f"export {k.upper()}='{{v}}'",
                f"<{k}>{{v}}</{k}>",
                f"set {k} to {{v}}",
            ]
        )
        pos_in(rows, "secret generic key=value", "secret", tmpl, v)
    for _ in range(10):
        user, pw = R.choice(["app", "admin", "svc_ro"]), rs(ALNUM, R.randint(12, 24))
        scheme = R.choice(["postgres", "mysql", "mongodb+srv", "redis", "amqp"])
        pos_in(
            rows,
            "secret url credentials",
            "secret",
            f"{scheme}://{user}:{{v}}@db.internal.example:5432/app",
            pw,
        )
    # Placeholders and documentation examples: an assistant's sample code must come through.
    placeholders = [
        'SLACK_BOT_TOKEN = "xoxb-your-bot-token"',
        "export SLACK_TOKEN=xoxp-your-token-here",
        'client = OpenAI(api_key="sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")',
        "api_key = 'sk-...'",
        'openai.api_key = "sk-YOUR_API_KEY"',
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AKIAXXXXXXXXXXXXXXXX",
        "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "GITHUB_TOKEN=ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        'HF_TOKEN="hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"',
        "glpat-xxxxxxxxxxxxxxxxxxxx",
        'stripe.api_key = "sk_test_your_secret_key_here"',
        'password = "<your-password>"',
        "password: ${DB_PASSWORD}",
        "password = os.environ['DB_PASSWORD']",
        "token: {{ .Values.token }}",
        "API_KEY=your_api_key_here",
        "password: changeme",
        "secret: '********'",
        "api_key: REDACTED",
        "password = getpass.getpass()",
        "token = get_token()",
        "SECRET_KEY = 'django-insecure-change-me'",
        "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----\n<your private key here>\n-----END PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n(paste your key)\n-----END OPENSSH PRIVATE KEY-----",
        "-----BEGIN CERTIFICATE-----\nMIIB" + rs(B64, 60) + "\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----\nMFkw" + rs(B64, 60) + "\n-----END PUBLIC KEY-----",
        "SENDGRID_API_KEY=SG.xxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "npm_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "Use your token (it starts with hf_) in the header.",
        "Stripe publishable key pk_live_" + rs(ALNUM, 24),
        "pk_test_" + rs(ALNUM, 24),
        "Set the webhook to https://hooks.slack.com/services/XXX/YYY/ZZZ",
        "the password field is required",
        "token = None",
        "password_hash = bcrypt(...)",
        "secret_name: my-app-secret",
        "token_type: bearer",
        "passwordless login is enabled",
        "sk-learn is not a thing; scikit-learn is",
        "Twilio SID: AC" + rs(HEX, 32) + " (public account id)",
        "commit " + rs(HEX, 40),
        "sha256:" + rs(HEX, 64),
        "uuid "
        + rs(HEX, 8)
        + "-"
        + rs(HEX, 4)
        + "-"
        + rs(HEX, 4)
        + "-"
        + rs(HEX, 4)
        + "-"
        + rs(HEX, 12),
        "The tokenizer has 32000 tokens.",
        "access_token_ttl = 3600",
        "password_min_length: 12",
        "auth_token: true",
    ]
    for t in placeholders:
        neg(rows, "secret placeholder or look-alike", t)
    for _ in range(3):
        neg(rows, "secret placeholder or look-alike", "key = 'x" + "x" * R.randint(20, 40) + "'")
        neg(rows, "secret placeholder or look-alike", "token: " + "0" * R.randint(16, 40))


GENERATORS: list[Callable[[Rows], None]] = [
    gen_emails,
    gen_phones,
    gen_cards,
    gen_ssn,
    gen_ips,
    gen_ibans,
    gen_secrets,
]


# --------------------------------------------------------------------------- classes part
#
# Classes found missing when the guard was measured on public suites written by others
# (bench/public_suites.py: Presidio's recognizer tests, gitleaks' rule examples). The cases are
# written here from the classes' definitions, not copied from those suites. They form their own
# part (``--classes``, tests/data/guard_corpus_classes.jsonl, split ``classes``) under their own
# seed, so the tune/heldout/fresh parts above stay exactly as they were.

SEED_CLASSES = 20261201
OUT_CLASSES = Path(__file__).with_name("guard_corpus_classes.jsonl")

# Names whose head word says credential, in the spellings code and config files use.
CRED_NAME_WORDS = ["Token", "Secret", "Password", "ApiKey", "AccessKey", "Passwd", "Creds"]
CRED_NAME_STEMS = ["stripe", "github", "dbAdmin", "ACME", "MyService", "billing", "X", "ci"]
# ``{n}`` the name, ``{v}`` the value: assignments of several languages and config formats.
ASSIGNMENTS = [
    '{n} := "{v}"',
    '{n} ::= "{v}"',
    '{n} ?= "{v}"',
    '${n} .= "{v}";',
    '{n} += "{v}"',
    '  "{n}" => "{v}",',
    "{n}: '{v}'",
    "<{n}>\n    {v}\n</{n}>",
    "<{n}>{v}</{n}>",
    'const {n} = "{v}";',
    "{n}={v}",
]


def cred_name() -> str:
    stem, word = R.choice(CRED_NAME_STEMS), R.choice(CRED_NAME_WORDS)
    style = R.randrange(4)
    if style == 0:  # camelCase
        return stem[0].lower() + stem[1:] + word
    if style == 1:  # SCREAMING_SNAKE
        snake = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", stem + word)
        return snake.upper()
    if style == 2:  # ALLCAPS stem joined to a capitalised word: ACMEToken
        return stem.upper() + word
    return stem.lower() + "_" + re.sub(r"(?<=[a-z])(?=[A-Z])", "_", word).lower() + "_2"


def random_credential() -> str:
    """Random values of the alphabets vendors use (none typed by hand)."""
    kind = R.randrange(6)
    if kind == 0:
        return rs(HEX, R.choice([32, 40, 64]))
    if kind == 1:
        return rs(string.ascii_lowercase + string.digits, R.randint(20, 40))
    if kind == 2:
        return rs(ALNUM, R.randint(24, 48))
    if kind == 3:  # dotted random parts: pat.<id>.<id>.<secret>
        parts = [rs(string.ascii_lowercase + string.digits, R.randint(10, 24)) for _ in range(3)]
        return R.choice(["pat", "sat", "key"]) + "." + ".".join(parts)
    if kind == 4:  # long random numbers (client secrets of some vendors)
        return digits(R.randint(18, 32), "123456789")
    return rs(URLSAFE, R.randint(30, 60))


def gen_class_credentials(rows: Rows) -> None:
    for _ in range(90):
        name, value = cred_name(), random_credential()
        template = R.choice(ASSIGNMENTS)
        text = template.replace("{n}", name, 1)
        start = text.index("{v}")
        text = text.replace("{v}", value).replace("{n}", name)
        rows.append(
            {
                "text": text,
                "labels": [{"type": "secret", "start": start, "end": start + len(value)}],
                "class": "credential name and operator",
            }
        )
    # A quoted name and a token-shaped value as the arguments of a call, and a declaration
    # with its type between name and value.
    for _ in range(20):
        name, value = cred_name(), rs(URLSAFE, R.randint(20, 48))
        template = R.choice(
            [
                'System.setProperty("{n}", "{v}");',
                "os.environ.setdefault('{n}', '{v}')",
                'config.Set("{n}", "{v}")',
                'var {n} string = "{v}"',
                'let {n}: &str = "{v}";',
            ]
        )
        text = template.replace("{n}", name)
        start = text.index("{v}")
        rows.append(
            {
                "text": text.replace("{v}", value),
                "labels": [{"type": "secret", "start": start, "end": start + len(value)}],
                "class": "credential as an argument or typed",
            }
        )
    for _ in range(3):
        for text in [
            "hmac.new(secret, msg_bytes_to_sign_here, hashlib.sha256)",
            "verify(token, publicKeyPem)",
            'jwt.encode(payload, secret, algorithm="HS256")',
            'headers.set("X-Api-Token", token_value_from_vault)',
            'var authToken string = ""',
            'System.setProperty("API_TOKEN", "short1X!")',
        ]:
            neg(rows, "not a credential", text)
    # X (Twitter) app-only bearer tokens: 22 'A's, then the random part.
    for _ in range(15):
        pos(rows, "x bearer token", "secret", "A" * 22 + rs(ALNUM, R.randint(60, 100)))
    # Token families by their documented shapes, and Slack webhooks without their scheme.
    for _ in range(4):
        for value in [
            R.choice(["EZAK", "EZTK"]) + rs(ALNUM, 54),
            "ntn_" + digits(11) + rs(ALNUM, 35),
            "pplx-" + rs(ALNUM, 48),
            "p8e-" + rs(ALNUM, 32),
            "LTAI" + rs(ALNUM, 20),
            "EAA" + R.choice("MC") + rs(ALNUM, R.randint(100, 200)),
            "sgp_" + R.choice(["", "local_", rs(HEX, 16) + "_"]) + rs(HEX + "ABCDEF", 40),
            R.choice(["", "http://"])
            + "hooks.slack.com/services/T"
            + rs(string.ascii_uppercase + string.digits, 8)
            + "/B"
            + rs(string.ascii_uppercase + string.digits, 10)
            + "/"
            + rs(ALNUM, 24),
        ]:
            pos(rows, "token family", "secret", value)
    # Not credentials: the name is not a credential's, or the value is code, a reference, a
    # number that counts, or typed by hand.
    for _ in range(4):
        for text in [
            f"tokenExpiry := {R.randint(1_600_000_000, 1_900_000_000)}",
            f"passwordHint: '{R.choice(['first pet', 'mother maiden name'])}'",
            'secretName: "db-credentials-' + rs(string.ascii_lowercase, 5) + '"',
            'apiKey := os.Getenv("API_KEY")',
            "$token .= $suffix;",
            "ACCESS_TOKEN ?= $(shell cat token.txt)",
            "<password>${DB_PASSWORD}</password>",
            "token = settings.auth.token",
            "GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}",
            f"max_tokens = {R.randint(100, 4096)}",
            "tokenizer = AutoTokenizer.from_pretrained(model_id)",
            f'stripeSecret := "sk_live_{"abcdefghijklmnopqrstuvwx"[R.randint(0, 3) :]}"',
            "apiKey = 'AIza" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[: R.randint(30, 35)] + "'",
            "slack_token: xoxp-" + "-".join([digits(12)] * 3) + "-" + "#" * 20,
            "-----BEGIN PRIVATE KEY-----\n"
            + R.choice(["anything", "put it here", "…"])
            + "\n-----END PRIVATE KEY-----",
            "token = " + R.choice(["123123123123", "abababababab", "xyzxyzxyzxyz"]),
        ]:
            neg(rows, "not a credential", text)


IBAN_SPEC_NEW = {"LY": "21n", "RU": "14n15c", "OM": "3n16c", "SD": "14n", "MN": "16n"}


def gen_class_pii(rows: Rows) -> None:
    tlds = ["xn--p1ai", "xn--80asehdb", "xn--90ais", "xn--fiqs8s", "xn--mgbaam7a8h"]
    for _ in range(20):
        local = rs(string.ascii_lowercase, R.randint(1, 10))
        label = "xn--" + rs(string.ascii_lowercase + string.digits, R.randint(6, 12))
        pos(rows, "punycode email", "email", f"{local}@{label}.{R.choice(tlds)}")
    IBAN_SPEC.update(IBAN_SPEC_NEW)
    for _ in range(5):
        gen_iban_values(rows, list(IBAN_SPEC_NEW), "iban of a newer country")
    for _ in range(20):
        pos(rows, "iban with dashes", "iban", grouped(iban_value(R.choice(list(IBAN_SPEC))), "-"))
    for _ in range(15):  # an invalid account number: its digit groups are not a phone number
        bad = wrong_check_digits(iban_value(R.choice(["NL", "GB", "MT", "IE"])))
        neg(rows, "invalid iban", grouped(bad))
    for _ in range(30):  # TR and RU mobiles: 5xx / 9xx, grouped 3-3-2-2, trunk 0 apart or not
        d = R.choice("59") + digits(9)
        spaced = f"{d[:3]} {d[3:6]} {d[6:8]} {d[8:]}"
        sep = R.choice([" ", "-", "."])
        v = R.choice([spaced.replace(" ", sep), "0 " + spaced, "0-" + spaced.replace(" ", "-")])
        pos(rows, "3-3-2-2 mobile", "phone", v)
    for _ in range(25):  # SSNs written with dots
        v = ssn_digits()
        pos(rows, "dotted ssn", "us_ssn", f"{v[:3]}.{v[3:5]}.{v[5:]}")
    for _ in range(10):
        v = ssn_digits()
        word = R.choice(["version", "v", "release", "section", "build"])
        neg(rows, "dotted number after a version word", f"{word} {v[:3]}.{v[3:5]}.{v[5:]}")


CLASS_GENERATORS: list[Callable[[Rows], None]] = [gen_class_credentials, gen_class_pii]


def build_classes() -> Rows:
    R.seed(SEED_CLASSES)
    PROSE.extend(FRESH_PROSE)
    rows: Rows = []
    for g in CLASS_GENERATORS:
        g(rows)
    for r in rows:
        r["split"] = "classes"
    return rows


def build() -> Rows:
    rows: Rows = []
    for g in GENERATORS:
        g(rows)
    # Several values in one snippet: pairs of positives joined by prose.
    singles = [r for r in rows if r["labels"]]
    for _ in range(60):
        a, b = R.sample(singles, 2)
        ta, tb = str(a["text"]), str(b["text"])
        sep = R.choice([" and ", "\n", "; then ", " | "])
        labels = list(a["labels"])  # type: ignore[call-overload]
        off = len(ta) + len(sep)
        for lab in b["labels"]:  # type: ignore[attr-defined]
            labels.append({**lab, "start": lab["start"] + off, "end": lab["end"] + off})
        rows.append({"text": ta + sep + tb, "labels": labels, "class": "mixed"})
    split = random.Random(SEED + 1)
    order = list(range(len(rows)))
    split.shuffle(order)
    cut = int(len(rows) * HELDOUT_SHARE)
    held = set(order[:cut])
    for i, r in enumerate(rows):
        r["split"] = "heldout" if i in held else "tune"
    return rows


def main() -> None:
    if "--classes" in sys.argv:
        rows, out = build_classes(), OUT_CLASSES
    else:
        fresh = "--fresh" in sys.argv
        if fresh:
            R.seed(SEED_FRESH)
            PROSE.extend(FRESH_PROSE)
        rows = build()
        if fresh:
            for r in rows:
                r["split"] = "fresh"
        out = OUT_FRESH if fresh else OUT
    for r in rows:
        for lab in r["labels"]:  # type: ignore[attr-defined]
            assert str(r["text"])[lab["start"] : lab["end"]], r
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} rows -> {out}")


if __name__ == "__main__":
    main()
