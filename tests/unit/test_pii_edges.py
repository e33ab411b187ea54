"""Edges of the PII detectors that users rely on: card brands, national layouts, tokens.

Each test states a property of a validator (which card numbers, phone layouts, identifiers
and tokens count as values, and which look-alikes do not), written from the formats
themselves, not from the code. Every ``Redactor`` is built inside its test: one built at
import time would hide a broken construction from mutation testing (mutmut activates a
mutant only after the test modules are imported).
"""

from __future__ import annotations

import base64
import json

import pytest

from secureai.pii import Redactor, luhn_ok


def _luhn_number(prefix: str, length: int, fill: str = "7") -> str:
    """A ``length``-digit number starting with ``prefix`` whose Luhn check digit is right."""
    body = prefix + fill * (length - len(prefix) - 1)
    return next(body + c for c in "0123456789" if luhn_ok(body + c))


# (issuer prefix, the lengths its cards have), from the card networks' published IIN ranges,
# at the edges of each range. Numbers of 13 to 19 digits are tried; other lengths never match.
CARD_BRANDS = [
    ("4", {13, 16, 19}),  # Visa
    ("51", {16}),  # Mastercard 51-55
    ("55", {16}),
    ("2221", {16}),  # Mastercard 2-series 2221-2720
    ("2720", {16}),
    ("34", {15}),  # American Express
    ("37", {15}),
    ("6011", {16, 17, 18, 19}),  # Discover
    ("644", {16, 17, 18, 19}),
    ("649", {16, 17, 18, 19}),
    ("65", {16, 17, 18, 19}),
    ("3528", {16, 17, 18, 19}),  # JCB 3528-3589
    ("3589", {16, 17, 18, 19}),
    ("36", {14, 15, 16, 17, 18, 19}),  # Diners Club
    ("38", {14, 15, 16, 17, 18, 19}),
    ("39", {14, 15, 16, 17, 18, 19}),
    ("300", {14, 15, 16, 17, 18, 19}),
    ("305", {14, 15, 16, 17, 18, 19}),
    ("62", {16, 17, 18, 19}),  # UnionPay
    ("2200", {16, 17, 18, 19}),  # Mir 2200-2204
    ("2204", {16, 17, 18, 19}),
    ("50", set(range(13, 20))),  # Maestro
    ("56", set(range(13, 20))),
    ("69", set(range(13, 20))),
    # next to the ranges above, or no network at all: never a card, whatever its length
    ("2220", set()),
    ("2721", set()),
    ("2205", set()),
    ("3527", set()),
    ("3590", set()),
    ("306", set()),
    ("1", set()),
    ("7", set()),
    ("9", set()),
]


@pytest.mark.parametrize(("prefix", "lengths"), CARD_BRANDS)
def test_card_numbers_are_cards_only_at_their_brands_lengths(
    prefix: str, lengths: set[int]
) -> None:
    r = Redactor(types=["payment_card"])
    found = set()
    for n in range(13, 20):
        number = _luhn_number(prefix, n)
        spans = [(s, e) for s, e, _ in r.find(f"paid with {number} today")]
        assert spans in ([], [(10, 10 + n)]), number  # the whole number or nothing
        if spans:
            found.add(n)
    assert found == lengths


def test_a_card_number_needs_its_check_digit() -> None:
    r = Redactor(types=["payment_card"])
    good = _luhn_number("4", 16)
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert [(s, e) for s, e, _ in r.find(f"card {good}.")] == [(5, 21)]
    assert r.find(f"card {bad}.") == []


# --------------------------------------------------------------------------- phone numbers

# National formats written without a country code or a cue word ("phone", "call"): each is a
# phone number in its country's usual grouping, and the same digits grouped otherwise are not.
NATIONAL = [
    ("8 (495) 123-45-67", True),  # Russia: trunk 8, area code in brackets
    ("612 345 678", True),  # Spain, mobile
    ("512 345 678", True),  # Poland
    ("412 345 678", False),  # 9 digits from 4: neither
    ("(030) 1234 5678", True),  # bracketed area code
    ("030 1234 5678", True),  # trunk 0, area code
    ("00 49 30 1234 5678", False),  # an international prefix is not a trunk 0
    ("415 555 0132", True),  # NANP
    ("115 555 0132", False),  # NANP area codes do not start with 1
    ("1-800-555-0132", True),  # NANP toll-free with the leading 1
    ("1-100-555-0132", False),  # ... whose area code does not start with 0 or 1
    ("138 0013 8000", True),  # China, mobile
    ("128 0013 8000", False),  # ... whose second digit is 3 to 9
    ("98765 43210", True),  # India, mobile
    ("58765 43210", False),  # ... starts with 6 to 9
    ("55 1234 5678", True),  # Mexico
    ("15 1234 5678", False),
    ("978 3 16 148410", False),  # ISBN: a one-digit group
    ("0 532 123 45 67", True),  # Turkey: the trunk 0 written apart
    ("0 4321 123456", True),  # ... it belongs to the area code (2 to 5 digits with it)
    ("0 43211 12345", False),
    ("(02) 123 45 67", True),  # bracketed area code, 9 digits (Belgium)
    ("030 1234 56789", True),  # trunk 0: 9 to 12 digits
    ("030 1234 567890", False),
]


@pytest.mark.parametrize(("number", "is_phone"), NATIONAL)
def test_national_phone_layouts(number: str, is_phone: bool) -> None:
    text = f"Office: {number}."
    spans = [(s, e) for s, e, _ in Redactor(types=["phone"]).find(text)]
    assert spans == ([(8, 8 + len(number))] if is_phone else [])


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("Office: +49 301234.", "+49 301234"),  # international: country code, 8+ digits
        ("Office: +49 30123.", None),  # 7 digits: too short to be dialled from abroad
        ("Office: +0 20 7946 0958.", None),  # no country code starts with 0
        ("Fax: 1234567890123", "1234567890123"),  # after a cue word: up to 13 digits
        ("Fax: 12345678901234", None),  # 14: an account or card-length number
        ("Fax: 12.05.2024", None),  # a date after the cue is still a date
        ("Fax: 2024-05-12", None),
    ],
)
def test_phone_numbers_by_country_code_and_cue(text: str, number: str | None) -> None:
    found = [text[s:e] for s, e, _ in Redactor(types=["phone"]).find(text)]
    assert found == ([] if number is None else [number])


@pytest.mark.parametrize(
    ("written", "is_card"),
    [
        ("4111 1111 1111 1111", True),  # fours
        ("4111-1111-1111-1111", True),
        ("4111 1111 1111 111", False),  # 15 digits: not a Visa length
        ("4111 1111 11111 111", False),  # 16 digits, but not grouped in fours
        ("41111 111 1111 1111", False),
        ("4111 1111-1111 1111", False),  # two kinds of separator
        ("3782 822463 10005", True),  # American Express: 4-6-5
    ],
)
def test_a_written_card_number_is_grouped_like_one(written: str, is_card: bool) -> None:
    text = f"card {written} ok"
    found = [text[s:e] for s, e, _ in Redactor(types=["payment_card"]).find(text)]
    assert found == ([written] if is_card else [])


# --------------------------------------------------------------------------- tokens


def _b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("header", "is_jwt"),
    [
        ({"alg": "HS256", "typ": "JWT"}, True),
        ({"alg": "RS256"}, True),  # "typ" is optional (RFC 7519 section 5.1)
        ({"typ": "JWT"}, True),  # and so is "alg" for this purpose: either names a JWT
        ({"alg": "none"}, True),  # an unsigned token still carries its claims
        ({"kid": "k1"}, False),  # JSON, but not a JOSE header
        (["alg", "typ"], False),  # not an object
    ],
)
def test_a_jwt_is_recognised_by_its_header(header: object, is_jwt: bool) -> None:
    token = f"{_b64url(header)}.{_b64url({'sub': '1234567890', 'name': 'Jane'})}.c2lnbmF0dXJl"
    spans = [(s, e) for s, e, _ in Redactor(types=["secret"]).find(f"jwt {token} end")]
    assert spans == ([(4, 4 + len(token))] if is_jwt else [])


@pytest.mark.parametrize(
    "key",
    [
        "sk-XQ7LMB2VRT9KPWZ4NCY8HDJ3",  # upper case letters and digits
        "sk-xq7lmb2vrt9kpwz4ncy8hdj3",  # lower case
        "sk-proj-Xy7Kq2Lm9Pw4Rt6Vb8Nc1Zd3",
    ],
)
def test_api_keys_are_found_whatever_the_case_of_their_letters(key: str) -> None:
    spans = [(s, e) for s, e, _ in Redactor(types=["secret"]).find(f"key {key} end")]
    assert spans == [(4, 4 + len(key))]


@pytest.mark.parametrize("key", ["sk-ABCDEFGHIJKLMNOPQRSTUVWX", "sk-12345678901234567890123"])
def test_an_api_key_mixes_letters_and_digits(key: str) -> None:
    assert Redactor(types=["secret"]).find(f"key {key} end") == []


def test_a_webhook_url_is_judged_by_its_whole_credential_path() -> None:
    """Team and channel ids make a Slack webhook real, whatever its last segment looks like;
    a URL whose ids and secret are placeholders is documentation."""
    r = Redactor(types=["secret"])
    real = "https://hooks.slack.com/services/T0A1B2C3D/B4E5F6G7H/lmnopqrstuvwxyzabcdefghi"
    doc = "https://hooks.slack.com/services/TXXXXXXXX/BXXXXXXXX/XXXXXXXXXXXXXXXXXXXXXXXX"
    assert [(s, e) for s, e, _ in r.find(f"hook {real} ok")] == [(5, 5 + len(real))]
    assert r.find(f"hook {doc} ok") == []


@pytest.mark.parametrize("word", ["password", "PASSWORD", "Password", "pass", "PWD", "secret"])
def test_a_url_whose_password_is_the_word_password_is_documentation(word: str) -> None:
    assert Redactor(types=["secret"]).find(f"see ftp://user:{word}@host") == []


def test_a_real_url_password_is_found() -> None:
    text = "see ftp://user:Xy7!kQz#Lm@host"
    assert [(s, e) for s, e, _ in Redactor(types=["secret"]).find(text)] == [(15, 25)]


# --------------------------------------------------------------------------- IBAN


@pytest.mark.parametrize(
    ("text", "iban"),
    [
        ("pay DE89370400440532013000 now", "DE89370400440532013000"),
        ("pay DE89 3704 0044 0532 0130 00 now", "DE89 3704 0044 0532 0130 00"),  # print form
        ("pay GB82WEST12345698765432.", "GB82WEST12345698765432"),
        ("pay DE89370400440532013000-1 now", "DE89370400440532013000"),
        # the country's length runs into more letters or digits: part of a longer code
        ("pay DE89370400440532013000ABC now", None),
        ("pay DE893704004405320130001 now", None),
        ("pay DE8937040044053201300 now", None),  # one digit short of Germany's 22
        ("pay DE88370400440532013000 now", None),  # check digits wrong
    ],
)
def test_an_iban_has_its_countrys_length_and_check_digits(text: str, iban: str | None) -> None:
    found = [text[s:e] for s, e, _ in Redactor(types=["iban"]).find(text)]
    assert found == ([] if iban is None else [iban])


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("see ftp://admin:Xy7!kQz#Lm@example.com ok", "Xy7!kQz#Lm"),
        ("see https://admin:Xy7kQzLm9@db.example.org/x ok", "Xy7kQzLm9"),
    ],
)
def test_the_password_in_a_url_is_a_secret_and_its_host_no_email(text: str, secret: str) -> None:
    assert [(text[s:e], d.type) for s, e, d in Redactor().find(text)] == [(secret, "secret")]


@pytest.mark.parametrize(
    ("value", "is_secret"),
    [
        ("QZXW-VKJP-LMNB", True),  # a product key: upper-case groups
        ("Xy7!kQz#Lm9", True),
        ("qzxw-vkjp-lmnb", False),  # lower-case words joined by '-': a name
        ("some-long-secret-name", False),
        ("my_api_key_name", False),
    ],
)
def test_an_assigned_credential_is_judged_by_its_value(value: str, is_secret: bool) -> None:
    text = f"password = {value}"
    found = [text[s:e] for s, e, _ in Redactor(types=["secret"]).find(text)]
    assert found == ([value] if is_secret else [])


def test_of_two_values_that_start_together_the_longer_is_redacted_whole() -> None:
    """A token that runs into ``@domain`` is also an address: one redaction covers both,
    nothing of either is left."""
    token = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
    text = f"from {token}@example.com ok"
    assert Redactor().redact(text) == "from [REDACTED:email] ok"
    assert Redactor().redact(f"from {token} ok") == "from [REDACTED:secret] ok"


# ------------------------------------------------------- credentials in code and config files

GHP = "ghp_Xq7LmB2vRt9KpWz4NcY8HdJ3aQ5sE1uF6gH0"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"token {GHP} ok", GHP),
        (f"**** token {GHP} ok", GHP),  # masking elsewhere in the text changes nothing
        (f"token {GHP}#### ok", None),  # the visible start of a masked token
        ("xoxp-1234567890-1234567890-####", None),
    ],
)
def test_a_masked_token_is_no_secret_and_a_real_one_is(text: str, secret: str | None) -> None:
    found = [text[s:e] for s, e, _ in Redactor(types=["secret"]).find(text)]
    assert found == ([] if secret is None else [secret])


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("password = Xy7!kQz#", "Xy7!kQz#"),  # 8 characters: long enough
        ("password = Xy7!kQz", None),  # 7: not
        ("password = abcdefgh12345678", None),  # typed by hand: runs of consecutive characters
        ("password = Abcdefgh-1234567", None),
        ("password = Settings.DbPassword", None),  # a dotted name in code
        ("password = 73920584", None),  # a short number: a count, a port, a code
        ("password = 7392058461730295", "7392058461730295"),  # a long random one
        ("<dbPassword>Xy7!kQz#Lm9</dbPassword>", "Xy7!kQz#Lm9"),
        ("    <dbPassword>Xy7!kQz#Lm9</dbPassword>", "Xy7!kQz#Lm9"),  # indented
        ('props.setProperty("API_TOKEN", "Xq7LmB2vRt9KpWz4NcY8HdJ3")', "Xq7LmB2vRt9KpWz4NcY8HdJ3"),
        ('props.setProperty("API_TOKEN" , "Xq7LmB2vRt9KpWz4NcY8HdJ3")', "Xq7LmB2vRt9KpWz4NcY8HdJ3"),
        ('setProperty(apiToken, "Xq7LmB2vRt9KpWz4NcY8HdJ3")', None),  # a variable, not a name
    ],
)
def test_credentials_in_config_and_code(text: str, secret: str | None) -> None:
    found = [text[s:e] for s, e, _ in Redactor(types=["secret"]).find(text)]
    assert found == ([] if secret is None else [secret])


def test_a_private_key_block_needs_key_material() -> None:
    r = Redactor(types=["secret"])
    empty = "-----BEGIN PRIVATE KEY-----\nanything here\n-----END PRIVATE KEY-----"
    assert r.find(f"see {empty} ok") == []
    line = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
    real = f"-----BEGIN PRIVATE KEY-----\n{line}\n-----END PRIVATE KEY-----"
    assert [(s, e) for s, e, _ in r.find(f"see {real} ok")] == [(4, 4 + len(real))]
