"""Generated datasets with planted personal data at known byte offsets (tests and bench).

Filler is made of words and small numbers that no detector matches, so the planted values are
exactly what a scan must find. ``plant_across`` puts values across given byte offsets (the
scanner's read boundaries) and across line breaks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from secureai.pii import luhn_ok

WORDS = (  # noqa: SIM905
    "the model data training loss epoch value user record item batch step token rate layer "
    "weight sample query answer prompt label score"
).split()


@dataclass(frozen=True)
class Planted:
    type: str
    value: str
    offset: int  # byte offset in the file


def card(rng: random.Random) -> str:
    body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
    check = next(c for c in "0123456789" if luhn_ok(body + c))
    d = body + check
    return " ".join(d[i : i + 4] for i in range(0, 16, 4)) if rng.random() < 0.5 else d


def iban(rng: random.Random) -> str:
    bban = "WEST" + "".join(rng.choice("0123456789") for _ in range(14))
    num = int("".join(str(int(c, 36)) for c in bban + "GB00"))
    check = 98 - num % 97
    compact = f"GB{check:02d}{bban}"
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def value(kind: str, rng: random.Random, i: int) -> str:
    if kind == "email":
        return f"person{i}.{rng.choice(WORDS)}@mail{rng.randint(1, 9)}.example.com"
    if kind == "phone":
        return f"+44 20 7946 {rng.randint(0, 9999):04d}"
    if kind == "payment_card":
        return card(rng)
    if kind == "us_ssn":
        return ssn(rng)
    if kind == "ip_address":
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if kind == "iban":
        return iban(rng)
    if kind == "secret":
        return "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
    raise ValueError(kind)


KINDS = ("email", "phone", "payment_card", "us_ssn", "ip_address", "iban", "secret")


def filler(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def text_with(
    rng: random.Random, size: int, every: int, across: tuple[int, ...] = ()
) -> tuple[bytes, list[Planted]]:
    """About ``size`` bytes of lines, a planted value every ``every`` bytes on average, and one
    straddling each offset in ``across`` (and some straddling a line break)."""
    out: list[str] = []
    planted: list[Planted] = []
    pos = 0
    i = 0
    targets = sorted(across)
    while pos < size:
        if targets and pos + 300 > targets[0]:
            # Pad to just before the boundary, then a value straddling it.
            target = targets.pop(0)
            kind = KINDS[i % len(KINDS)]
            v = value(kind, rng, i)
            start = target - max(1, len(v) // 2)
            assert start - pos >= 2, "boundaries too close together"
            out.append("x" * (start - pos - 1) + " ")
            planted.append(Planted(kind, v, start))
            out.append(v + "\n")
            pos = start + len(v) + 1
            i += 1
            continue
        line = filler(rng, rng.randint(3, 12))
        if rng.random() < 40 / max(every, 41):
            kind = KINDS[i % len(KINDS)]
            v = value(kind, rng, i)
            line = f"{line} field="
            planted.append(Planted(kind, v, pos + len(line)))
            line += v + " " + filler(rng, 2)
            i += 1
        out.append(line + "\n")
        pos += len(line) + 1
    data = "".join(out).encode("latin-1")
    for p in planted:
        assert data[p.offset : p.offset + len(p.value)].decode() == p.value, p
    return data, planted


PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    + "\n".join("MIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEA" + str(i) for i in range(4))
    + "\n-----END PRIVATE KEY-----"
)
