"""The guard's detection measured on two public test suites written by others.

- Microsoft Presidio's recognizer tests (``presidio-analyzer/tests/test_*_recognizer.py``) for
  the types the guard covers: email, phone, credit card, US SSN, IP address, IBAN.
- gitleaks' rule definitions (``cmd/generate/config/rules/*.go``): every rule's true-positive
  and false-positive examples, all token families.

Only the labelled examples are taken (the strings and their labels), read from a local mirror of
each repository with ``git show``; no code of either project is imported or run. Presidio's
parametrised cases are Python literals (read with ``ast.literal_eval``). gitleaks builds many of
its examples at run time (a random value from a regex, wrapped in sample assignments); those
expressions are evaluated here: string literals and concatenation, ``[]string{…}``, ``append``,
local variables, random values drawn from the given regex with a fixed seed, and the sample
wrappers (``<id>_api_token = "<secret>"`` and the ``GenerateSampleSecrets`` layouts, whose
templates are read from gitleaks' ``utils/generate.go``). Examples built by anything else are
counted as skipped.

Scoring, the way the guard uses the engine: a positive value counts as caught when its whole
span is redacted (covered by the union of the redacted spans); a negative counts as altered when
anything in it is redacted. For gitleaks the span of a positive is the secret of the rule's own
regex (its ``secretGroup``, else its first group, else the match, from ``config/gitleaks.toml``),
or the value passed to the sample wrapper; if neither can be located the example counts as caught
when anything in it is redacted ("loose", reported).

Not run in CI (the mirrors are not there)::

    python -m bench.public_suites --presidio /path/to/presidio.git --gitleaks /path/to/gitleaks.git
        [--rev HEAD] [-v] [--json OUT]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import random
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from secureai.pii import Redactor

REDACTOR = Redactor()

# --------------------------------------------------------------------------- git access


def git_show(repo: str, rev: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", repo, "show", f"{rev}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def git_ls(repo: str, rev: str, path: str) -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", repo, "ls-tree", "--name-only", f"{rev}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [f"{path}/{n}" for n in out.split()]


@dataclass
class Example:
    suite: str
    type: str  # guard type
    source: str  # file (and rule)
    text: str
    spans: list[tuple[int, int]] = field(default_factory=list)  # empty: negative
    loose: bool = False  # positive whose span is unknown: caught if anything is redacted


# --------------------------------------------------------------------------- Presidio

PRESIDIO_TESTS = {
    "test_email_recognizer.py": "email",
    "test_phone_recognizer.py": "phone",
    "test_tr_phone_number_recognizer.py": "phone",
    "test_credit_card_recognizer.py": "payment_card",
    "test_us_ssn_recognizer.py": "us_ssn",
    "test_ip_recognizer.py": "ip_address",
    "test_iban_recognizer.py": "iban",
}


def _iban_with_checksum(iban: str) -> str:
    """The standard IBAN check digits (ISO 13616) put into ``iban``'s positions 2-3."""
    compact = iban.replace(" ", "")
    moved = compact[4:] + compact[:2] + "00"
    number = int("".join(str(int(c, 36)) for c in moved.upper()))
    return iban[:2] + f"{98 - number % 97:02d}" + iban[4:]


def _literal(node: ast.expr, names: dict[str, Any]) -> Any:
    """A literal, a module-level constant, or the IBAN checksum helper applied to literals."""
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id.endswith("checksum") and len(node.args) == 1:
            return _iban_with_checksum(_literal(node.args[0], names))
        raise ValueError(node.func.id)
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_literal(e, names) for e in node.elts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal(node.left, names) + _literal(node.right, names)
    return ast.literal_eval(node)


def _is_span_list(v: Any) -> bool:
    return isinstance(v, tuple) and all(
        isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, int) for x in p) for p in v
    )


def presidio_examples(repo: str, rev: str) -> tuple[list[Example], int]:
    by_text: dict[tuple[str, str], Example] = {}
    skipped = 0
    for name, typ in PRESIDIO_TESTS.items():
        path = f"presidio-analyzer/tests/{name}"
        tree = ast.parse(git_show(repo, rev, path))
        names: dict[str, Any] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                t = node.targets[0]
                if isinstance(t, ast.Name):
                    with contextlib.suppress(ValueError, TypeError, SyntaxError):
                        names[t.id] = _literal(node.value, names)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            f = node.func
            if not (isinstance(f, ast.Attribute) and f.attr == "parametrize"):
                continue
            if not isinstance(node.args[0], ast.Constant) or len(node.args) < 2:
                continue
            argnames = [a.strip() for a in str(node.args[0].value).split(",")]
            if not isinstance(node.args[1], ast.List):
                continue
            for case in node.args[1].elts:
                try:
                    values = _literal(case, names)
                except (ValueError, TypeError, SyntaxError):
                    skipped += 1
                    continue
                if not isinstance(values, tuple) or len(values) != len(argnames):
                    skipped += 1
                    continue
                row = dict(zip(argnames, values, strict=True))
                text = next((v for v in values if isinstance(v, str)), None)
                count = next((v for k, v in row.items() if "len" in k and isinstance(v, int)), None)
                if text is None or count is None:
                    skipped += 1
                    continue
                spans = next(
                    (
                        list(v)
                        for k, v in row.items()
                        if ("position" in k or k == "expected_res") and _is_span_list(v) and v
                    ),
                    [],
                )
                ex = Example("presidio", typ, name, text)
                if count > 0:
                    if len(spans) == count:
                        ex.spans = [(s, e) for s, e in spans]
                    else:
                        ex.spans, ex.loose = [(0, len(text))], True
                key = (typ, text)
                old = by_text.get(key)
                # The same text under several settings (phone leniency): the most values wins.
                if old is None or len(ex.spans) > len(old.spans):
                    by_text[key] = ex
    return list(by_text.values()), skipped


# --------------------------------------------------------------------------- gitleaks: Go subset

_GO_TOKEN = re.compile(
    r"(?P<ws>[ \t\r]+)|(?P<nl>\n)|(?P<lc>//[^\n]*)|(?P<bc>/\*.*?\*/)"
    r"|(?P<raw>`[^`]*`)|(?P<str>\"(?:\\.|[^\"\\\n])*\")|(?P<rune>'(?:\\.|[^'\\])+')"
    r"|(?P<id>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)|(?P<num>\d+)"
    r"|(?P<op>\.\.\.|:=|\+=|==|!=|&&|\|\||<-|[-+*/%&|^<>!=:;,.(){}\[\]])",
    re.S,
)


@dataclass
class Tok:
    kind: str
    value: str


def go_tokens(src: str) -> list[Tok]:
    out: list[Tok] = []
    pos = 0
    while pos < len(src):
        m = _GO_TOKEN.match(src, pos)
        if m is None:
            pos += 1
            continue
        pos = m.end()
        kind = m.lastgroup or ""
        if kind in ("ws", "lc"):
            continue
        if kind == "bc":
            if "\n" in m.group(0):
                out.append(Tok("nl", "\n"))
            continue
        out.append(Tok(kind, m.group(0)))
    return out


def _go_string(tok: Tok) -> str:
    if tok.kind == "raw":
        return tok.value[1:-1]
    body = tok.value[1:-1]
    return str(ast.literal_eval('"' + body.replace("\\`", "`") + '"'))


class GoSyntax(Exception):
    pass


class GoUnknown(Exception):
    pass


@dataclass
class Node:
    kind: str  # str, id, call, concat, list, map, composite
    value: Any = None
    args: list[Any] = field(default_factory=list)
    spread: bool = False


class GoParser:
    def __init__(self, toks: list[Tok], i: int = 0) -> None:
        self.t = toks
        self.i = i
        self.depth = 0

    def peek(self) -> Tok:
        if self.depth:
            while self.i < len(self.t) and self.t[self.i].kind == "nl":
                self.i += 1
        return self.t[self.i] if self.i < len(self.t) else Tok("eof", "")

    def take(self, value: str | None = None) -> Tok:
        tok = self.peek()
        if value is not None and tok.value != value:
            raise GoSyntax(f"want {value!r}, got {tok.value!r}")
        self.i += 1
        return tok

    def expr(self) -> Node:
        parts = [self.unary()]
        while self.peek().value == "+":
            self.take()
            while self.i < len(self.t) and self.t[self.i].kind == "nl":
                self.i += 1  # a line may end with +
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else Node("concat", args=parts)

    def _group(self, close: str) -> list[Any]:
        items: list[Any] = []
        self.depth += 1
        try:
            while self.peek().value != close:
                e = self.expr()
                if self.peek().value == ":":
                    self.take()
                    e = Node("kv", e, [self.expr()])
                if self.peek().value == "...":
                    self.take()
                    e.spread = True
                items.append(e)
                if self.peek().value == ",":
                    self.take()
                elif self.peek().value != close:
                    raise GoSyntax(f"in group: {self.peek().value!r}")
            self.take(close)
        finally:
            self.depth -= 1
        return items

    def unary(self) -> Node:
        tok = self.peek()
        if tok.kind in ("raw", "str"):
            self.take()
            return Node("str", _go_string(tok))
        if tok.kind == "num":
            self.take()
            return Node("num", int(tok.value))
        if tok.value == "&":
            self.take()
            return self.unary()
        if tok.value == "[":  # []string{...}, [][]string{...}
            while self.peek().value in ("[", "]"):
                self.take()
            self.take()  # element type
            self.take("{")
            return Node("list", args=self._group("}"))
        if tok.kind == "id" and tok.value == "map":
            self.take()
            self.take("[")
            self.take()
            self.take("]")
            while self.peek().value in ("[", "]"):
                self.take()
            self.take()
            self.take("{")
            return Node("map", args=self._group("}"))
        if tok.kind == "id":
            self.take()
            nxt = self.peek()
            if nxt.value == "(":
                self.take()
                args = self._group(")")
                return Node("call", tok.value, args)
            if nxt.value == "{" and (tok.value[:1].isupper() or "." in tok.value):
                self.take()
                return Node("composite", tok.value, self._group("}"))
            return Node("id", tok.value)
        if tok.value == "{":  # element of a composite without a type
            self.take()
            return Node("list", args=self._group("}"))
        raise GoSyntax(f"unexpected {tok.value!r}")


# --------------------------------------------------------------------------- regex helpers


def go_regex_to_python(rx: str) -> str:
    """Go RE2 syntax to Python ``re``: POSIX classes, ``\\z``, and flag groups in mid-pattern
    (Go's ``(?i)`` applies to the rest of the enclosing group; Python wants it scoped)."""
    posix = {
        "alnum": "a-zA-Z0-9",
        "alpha": "a-zA-Z",
        "digit": "0-9",
        "lower": "a-z",
        "upper": "A-Z",
        "space": r"\s",
        "xdigit": "0-9a-fA-F",
        "punct": r"!-/:-@\[-`{-~",
        "word": r"\w",
    }
    rx = re.sub(r"\[:(\w+):\]", lambda m: posix.get(m.group(1), m.group(0)), rx)
    rx = rx.replace(r"\z", r"\Z")
    out: list[str] = []
    closers: list[int] = [0]  # per open group: how many scoped flag groups to close
    i = 0
    in_class = False
    while i < len(rx):
        c = rx[i]
        if c == "\\":
            out.append(rx[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            if i < len(rx) and rx[i] == "^":
                out.append("^")
                i += 1
            if i < len(rx) and rx[i] == "]":
                out.append("\\]")
                i += 1
            continue
        m = re.match(r"\(\?([imsU-]+)\)", rx[i:])
        if m:
            flags = m.group(1).replace("U", "")
            if flags.strip("-"):
                out.append(f"(?{flags}:")
                closers[-1] += 1
            i += m.end()
            continue
        if c == "(":
            closers.append(0)
        elif c == ")":
            out.append(")" * closers.pop())
        elif c == "|" and closers[-1]:
            out.append(")" * closers[-1])
            closers[-1] = 0
        out.append(c)
        i += 1
    out.append(")" * closers[-1])
    return "".join(out)


_sre_parser: Any = __import__("re._parser", fromlist=["_parser"])
_sre_constants: Any = __import__("re._constants", fromlist=["_constants"])


def random_from_regex(rx: str, rng: random.Random) -> str:
    """A random string the regex matches (unbounded repeats draw at most one more)."""
    c = _sre_constants

    def chars_of(items: list[Any]) -> list[str]:
        pool: list[str] = []
        neg = False
        for op, av in items:
            if op is c.NEGATE:
                neg = True
            elif op is c.LITERAL:
                pool.append(chr(av))
            elif op is c.RANGE:
                pool.extend(chr(x) for x in range(av[0], av[1] + 1))
            elif op is c.CATEGORY:
                name = str(av)
                if "DIGIT" in name:
                    pool.extend("0123456789")
                elif "WORD" in name:
                    pool.extend("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
                elif "SPACE" in name:
                    pool.append(" ")
        if neg:
            allc = [chr(x) for x in range(33, 127)]
            return [ch for ch in allc if ch not in pool]
        return pool

    def gen(parsed: Any) -> str:
        out: list[str] = []
        for op, av in parsed:
            if op is c.LITERAL:
                out.append(chr(av))
            elif op is c.NOT_LITERAL:
                out.append(rng.choice([ch for ch in "abcdefghij" if ord(ch) != av]))
            elif op is c.ANY:
                out.append(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789"))
            elif op is c.IN:
                out.append(rng.choice(chars_of(av)))
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                lo, hi, sub = av
                if hi == c.MAXREPEAT:
                    hi = lo + 1
                out.extend(gen(sub) for _ in range(rng.randint(lo, hi)))
            elif op is c.SUBPATTERN:
                out.append(gen(av[3]))
            elif op is c.BRANCH:
                out.append(gen(rng.choice(av[1])))
            elif op is c.ATOMIC_GROUP:
                out.append(gen(av))
        return "".join(out)

    return gen(_sre_parser.parse(go_regex_to_python(rx)))


# --------------------------------------------------------------------------- gitleaks: examples

_SIZE_CLASSES = {  # gitleaks' documented character-class shorthands, by name
    "Numeric": "[0-9]{%s}",
    "Hex": "[a-f0-9]{%s}",
    "AlphaNumeric": "[a-z0-9]{%s}",
    "AlphaNumericExtendedShort": "[a-z0-9_-]{%s}",
    "AlphaNumericExtended": r"[a-z0-9=_\-]{%s}",
    "AlphaNumericExtendedLong": r"[a-z0-9\/=_\+\-]{%s}",
}


@dataclass
class GoEx:
    text: str
    secret: str | None = None


class GitleaksEval:
    def __init__(self, templates: list[str], rng: random.Random) -> None:
        self.templates = templates
        self.rng = rng

    def value(self, n: Node, env: dict[str, Any]) -> Any:
        k = n.kind
        if k == "str":
            return n.value
        if k == "num":
            return n.value
        if k == "id":
            if n.value in env:
                return env[n.value]
            raise GoUnknown(n.value)
        if k == "concat":
            vals = [self.value(a, env) for a in n.args]
            if not all(isinstance(v, str) for v in vals):
                raise GoUnknown("concat")
            return "".join(vals)
        if k in ("list", "map"):
            out: list[GoEx] = []
            for a in n.args:
                v = self.value(a.args[0] if a.kind == "kv" else a, env)
                out.extend(self._exs(v))
            return out
        if k == "call":
            return self.call(n, env)
        raise GoUnknown(k)

    def _exs(self, v: Any) -> list[GoEx]:
        if isinstance(v, str):
            return [GoEx(v)]
        if isinstance(v, GoEx):
            return [v]
        if isinstance(v, list):
            return [e for x in v for e in self._exs(x)]
        raise GoUnknown(type(v).__name__)

    def call(self, n: Node, env: dict[str, Any]) -> Any:
        name = n.value.rsplit(".", 1)[-1]
        args = [self.value(a, env) for a in n.args]
        if name in _SIZE_CLASSES:
            return _SIZE_CLASSES[name] % args[0]
        if name == "Hex8_4_4_4_12":
            return "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        if name in ("NewSecret", "newPlausibleSecret"):
            for _ in range(50):
                s = random_from_regex(args[0], self.rng)
                if name == "NewSecret" or re.search("[1-9]", s):
                    return s
            return s
        if name == "GenerateSampleSecret":
            return GoEx(f'{args[0]}_api_token = "{args[1]}"', args[1])
        if name == "GenerateSampleSecrets":
            ident, secret = args
            return [
                GoEx(
                    t.replace("{i}", ident).replace("{I}", ident.upper()).replace("{s}", secret),
                    secret,
                )
                for t in self.templates
            ]
        if name == "append":
            out = self._exs(args[0])
            for a in args[1:]:
                out.extend(self._exs(a))
            return out
        if name == "Sprintf":
            fmt = args[0]
            rest = iter(args[1:])
            return re.sub(r"%[sdvq]", lambda _m: str(next(rest)), fmt)
        if name == "MustCompile":
            return args[0]
        raise GoUnknown(name)


def sample_templates(src: str) -> list[str]:
    """The ``GenerateSampleSecrets`` layouts: the active (uncommented) map entries."""
    body = src[src.index("func GenerateSampleSecrets") :]
    body = body[: body.index("replacer")]
    out: list[str] = []
    for line in body.splitlines():
        s = line.strip()
        if s.startswith("//"):
            continue
        m = re.match(r'"[^"]*"\s*:\s*(.+?),\s*$', s)
        if m:
            toks = go_tokens(m.group(1))
            out.append(_go_string(toks[0]))
    return out


def _functions(src: str) -> Iterator[tuple[str, list[Tok]]]:
    for m in re.finditer(r"^func (\w+)\([^)]*\)[^{\n]*\{\n(.*?)^\}", src, re.S | re.M):
        yield m.group(1), go_tokens(m.group(2))


def _statements(toks: list[Tok]) -> Iterator[int]:
    """Indices where a statement at the function's top level starts."""
    depth = 0
    start = True
    for i, t in enumerate(toks):
        if t.kind == "nl":
            start = depth == 0
            continue
        if start and depth == 0:
            yield i
        start = False
        if t.value in ("(", "{", "["):
            depth += 1
        elif t.value in (")", "}", "]"):
            depth -= 1


@dataclass
class Rule:
    id: str
    regex: re.Pattern[str] | None
    group: int


def gitleaks_rules(repo: str, rev: str) -> dict[str, Rule]:
    doc = tomllib.loads(git_show(repo, rev, "config/gitleaks.toml"))
    out: dict[str, Rule] = {}
    for r in doc["rules"]:
        rx: re.Pattern[str] | None
        try:
            rx = re.compile(go_regex_to_python(r.get("regex", "")))
        except re.error:
            rx = None
        out[r["id"]] = Rule(r["id"], rx, int(r.get("secretGroup", 0)))
    return out


def _secret_span(rule: Rule | None, ex: GoEx) -> tuple[int, int] | None:
    span = _raw_secret_span(rule, ex)
    if span is None:
        return None
    s, e = span
    while s < e and ex.text[s] in "\"'`":
        s += 1  # a quote is never part of a secret (some rule regexes capture one)
    while e > s and ex.text[e - 1] in "\"'`":
        e -= 1
    return (s, e) if e > s else span


def _raw_secret_span(rule: Rule | None, ex: GoEx) -> tuple[int, int] | None:
    if ex.secret and ex.secret in ex.text:
        i = ex.text.index(ex.secret)
        return i, i + len(ex.secret)
    if rule is None or rule.regex is None:
        return None
    m = rule.regex.search(ex.text)
    if m is None:
        return None
    if rule.group and m.group(rule.group) is not None:
        return m.span(rule.group)
    for g in range(1, (m.re.groups or 0) + 1):
        if m.group(g):
            return m.span(g)
    return m.span()


def gitleaks_examples(repo: str, rev: str) -> tuple[list[Example], int]:
    rng = random.Random(20261130)
    templates = sample_templates(git_show(repo, rev, "cmd/generate/config/utils/generate.go"))
    ev = GitleaksEval(templates, rng)
    rules = gitleaks_rules(repo, rev)
    out: list[Example] = []
    skipped = 0
    for path in sorted(git_ls(repo, rev, "cmd/generate/config/rules")):
        if not path.endswith(".go"):
            continue
        src = git_show(repo, rev, path)
        for fname, toks in _functions(src):
            env: dict[str, Any] = {}
            rule_id: str | None = None
            for i in _statements(toks):
                t0 = toks[i]
                if t0.kind != "id" or i + 1 >= len(toks):
                    continue
                op = toks[i + 1].value
                if op not in (":=", "="):
                    continue
                p = GoParser(toks, i + 2)
                try:
                    node = p.expr()
                except (GoSyntax, IndexError):
                    if t0.value in ("tps", "fps"):
                        skipped += 1
                    continue
                if node.kind == "composite" and node.value.endswith("Rule"):
                    for a in node.args:
                        if a.kind == "kv" and a.value.value == "RuleID":
                            rule_id = a.args[0].value
                    continue
                try:
                    env[t0.value] = ev.value(node, env)
                except (GoUnknown, IndexError, KeyError, StopIteration, re.error, ValueError):
                    if t0.value in ("tps", "fps"):
                        skipped += 1
            rule = rules.get(rule_id or "")
            name = f"{path.rsplit('/', 1)[-1]}:{rule_id or fname}"
            for key in ("tps", "fps"):
                for ex in ev._exs(env.get(key, [])):
                    e = Example("gitleaks", "secret", name, ex.text)
                    if key == "tps":
                        span = _secret_span(rule, ex)
                        if span is None:
                            e.spans, e.loose = [(0, len(ex.text))], True
                        else:
                            e.spans = [span]
                    out.append(e)
    return out, skipped


# --------------------------------------------------------------------------- scoring


@dataclass
class Tally:
    values: int = 0
    caught: int = 0
    loose: int = 0
    negatives: int = 0
    altered: int = 0
    misses: list[str] = field(default_factory=list)


def redacted_spans(text: str) -> list[tuple[int, int]]:
    return [(s, e) for s, e, _ in REDACTOR.find(text)]


def covered(span: tuple[int, int], found: list[tuple[int, int]]) -> bool:
    s, e = span
    for fs, fe in found:
        if fs <= s < fe:
            s = fe
        if s >= e:
            return True
    return s >= e


def score(examples: list[Example]) -> dict[tuple[str, str], Tally]:
    out: dict[tuple[str, str], Tally] = {}
    for ex in examples:
        t = out.setdefault((ex.suite, ex.type), Tally())
        found = redacted_spans(ex.text)
        if not ex.spans:
            t.negatives += 1
            if found:
                t.altered += 1
                what = ", ".join(repr(ex.text[s:e]) for s, e in found)
                t.misses.append(f"ALTERED [{ex.source}] {what} in {ex.text[:300]!r}")
            continue
        for sp in ex.spans:
            t.values += 1
            t.loose += ex.loose
            ok = bool(found) if ex.loose else covered(sp, found)
            if ok:
                t.caught += 1
            else:
                got = ", ".join(repr(ex.text[s:e]) for s, e in found) or "nothing"
                t.misses.append(
                    f"MISSED [{ex.source}] {ex.text[sp[0] : sp[1]]!r} (got {got}) "
                    f"in {ex.text[:300]!r}"
                )
    return out


def report(tallies: dict[tuple[str, str], Tally]) -> str:
    lines = [
        "| suite | type | values | caught | recall | negatives | altered | altered share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sums: dict[str, Tally] = {}
    for (suite, typ), t in sorted(tallies.items()):
        lines.append(_row(suite, typ, t))
        s = sums.setdefault(suite, Tally())
        s.values += t.values
        s.caught += t.caught
        s.negatives += t.negatives
        s.altered += t.altered
    for suite, s in sorted(sums.items()):
        lines.append(_row(suite, "**all**", s))
    return "\n".join(lines)


def _row(suite: str, typ: str, t: Tally) -> str:
    rec = t.caught / t.values if t.values else float("nan")
    alt = t.altered / t.negatives if t.negatives else float("nan")
    return (
        f"| {suite} | {typ} | {t.values} | {t.caught} | {rec:.3f} | {t.negatives} "
        f"| {t.altered} | {alt:.3f} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presidio", required=True, help="git dir of microsoft/presidio")
    ap.add_argument("--gitleaks", required=True, help="git dir of gitleaks/gitleaks")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("-v", action="store_true", help="list misses and altered negatives")
    ap.add_argument("--json", help="write the extracted examples here")
    a = ap.parse_args(argv)
    pres, ps = presidio_examples(a.presidio, a.rev)
    gl, gs = gitleaks_examples(a.gitleaks, a.rev)
    examples = pres + gl
    tallies = score(examples)
    print(report(tallies))
    loose = sum(t.loose for t in tallies.values())
    print(f"\nskipped (not literal): presidio {ps}, gitleaks {gs}; loose positives: {loose}")
    if a.v:
        for (suite, typ), t in sorted(tallies.items()):
            for line in t.misses:
                print(f"{suite}/{typ} {line}")
    if a.json:
        with open(a.json, "w") as f:
            for ex in examples:
                f.write(json.dumps(ex.__dict__, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
