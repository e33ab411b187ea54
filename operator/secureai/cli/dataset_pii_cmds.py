"""``secureai dataset scan`` and ``secureai dataset pseudonymize``.

Exit codes: 0 success; 1 ``scan --allow`` found personal data the rule forbids (or a file it
could not scan); 2 bad input, bad key or a tampered envelope (one ``secureai: <reason>`` line on
stderr, nothing on stdout); 130/143 interrupted by SIGINT/SIGTERM (no output left behind).
The JSON schema of the census is in docs/data-minimisation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from secureai.cli.crypto_cmds import dataset_digests
from secureai.crypto import EnvelopeError, load_kek
from secureai.dataset.census import Census
from secureai.dataset.detect import TYPES, build, parse_types
from secureai.dataset.files import DatasetError
from secureai.dataset.ops import dataset_size, pseudonymize, scan
from secureai.dataset.pseudonym import Pseudonymizer

__all__ = ["add_dataset_pii_commands"]

EXIT_VIOLATION = 1
EXIT_FAILURE = 2
MIB = 1 << 20


class CommandError(Exception):
    """A user-facing failure of a command (one line)."""


class Interrupted(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM/SIGINT raise, so cleanup code (``finally``/``except BaseException``) runs."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            with _signals_raise():
                return fn(args)
        except (CommandError, DatasetError, EnvelopeError, ValueError) as exc:
            return _fail(str(exc))
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            return _fail(f"{exc.strerror or type(exc).__name__}{where}")
        except Interrupted as exc:
            _fail("interrupted; no output was left behind")
            return 128 + exc.signum
        except KeyboardInterrupt:
            _fail("interrupted; no output was left behind")
            return 128 + signal.SIGINT

    run.__name__ = fn.__name__
    return run


def _fail(message: str) -> int:
    print(f"secureai: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_FAILURE


def _key(path: str | None, env: str | None, what: str) -> bytes | None:
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise CommandError(f"environment variable {env} is not set")
        return load_kek(value.encode())
    if path is not None:
        return load_kek(path)
    return None


def _add_key(p: argparse.ArgumentParser, name: str, what: str, required: bool = False) -> None:
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument(
        f"--{name}", metavar="FILE", help=f"{what} file (32 bytes: raw, base64, hex)"
    )
    group.add_argument(f"--{name}-env", metavar="VAR", help=f"environment variable with the {what}")


class _Bar:
    """A progress line on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, label: str, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.on = self.out.isatty()
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if not self.on or now - self.last < 0.2:
            return
        self.last = now
        rate = self.done / MIB / max(now - self.start, 1e-6)
        pct = min(100.0, 100.0 * self.done / self.total)
        width = 30
        fill = int(width * pct / 100)
        self.out.write(
            f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {pct:5.1f}% "
            f"{self.done / MIB:,.1f}/{self.total / MIB:,.1f} MiB {rate:,.1f} MiB/s"
        )
        self.out.flush()

    def close(self) -> None:
        if self.on:
            self.out.write("\r\x1b[K")
            self.out.flush()


def _table(census: Census) -> str:
    rows = [("FILE", "FORMAT", "TYPE", "COUNT")]
    for f in census.files:
        fmt = (f.format or "-") + (" (enc)" if f.encrypted else "")
        if f.error is not None:
            rows.append((f.path, fmt, "unreadable", f.error))
            continue
        if f.unscanned_columns:
            rows.append((f.path, fmt, "unscanned", ", ".join(f.unscanned_columns)))
        if not f.counts:
            rows.append((f.path, fmt, "-", "0"))
        for kind, n in sorted(f.counts.items()):
            rows.append((f.path, fmt, kind, str(n)))
    totals = census.totals()
    for kind, n in totals["counts"].items():
        rows.append(("TOTAL", "", kind, str(n)))
    rows.append(("TOTAL", "", "files", f"{totals['files']} ({totals['unreadable']} unreadable)"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join(c.ljust(widths[i]) if i < 3 else c for i, c in enumerate(r)).rstrip()
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def _types(text: str | None) -> tuple[str, ...]:
    try:
        return parse_types(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _allowed(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    if text.strip() == "none":
        return ()
    return _types(text)


def _cmd_scan(args: argparse.Namespace) -> int:
    kek = _key(args.key, args.key_env, "KEK")
    allowed = _allowed(args.allow)
    # With a rule, every type runs: the census must show what the rule forbids.
    engine = build(TYPES if allowed is not None else _types(args.types))
    root = Path(args.path)
    if not root.exists():
        raise CommandError(f"not found: {root}")
    copy_to = Path(args.decrypt_to) if args.decrypt_to else None
    bar = _Bar(dataset_size(root), "scan")
    try:
        census = scan(
            root,
            engine,
            kek=kek,
            max_locations=args.max_locations,
            progress=bar,
            copy_to=copy_to,
        )
    finally:
        bar.close()
    violation = census.violation(allowed) if allowed is not None else None
    if violation is not None and copy_to is not None:
        _clear(copy_to)  # a refused dataset is not handed to the trainer
    if args.report:
        summary = census.summary(allowed, violation)
        if copy_to is not None and kek is not None:  # decrypted here: lineage gets both digests
            summary.update(dataset_digests(root, copy_to if violation is None else None))
        Path(args.report).write_text(json.dumps(summary, sort_keys=True, separators=(",", ":")))
    if args.output == "json":
        sys.stdout.write(json.dumps(census.to_json(), sort_keys=True) + "\n")
    else:
        sys.stdout.write(_table(census))
    if violation is not None:
        print(f"secureai: dataset refused: {violation}", file=sys.stderr)
        return EXIT_VIOLATION
    return 0


def _clear(folder: Path) -> None:
    import shutil  # noqa: PLC0415

    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _cmd_pseudonymize(args: argparse.Namespace) -> int:
    pkey = _key(args.pseudonym_key, args.pseudonym_key_env, "pseudonym key")
    assert pkey is not None  # required group
    kek = _key(args.key, args.key_env, "KEK")
    new_kek = _key(args.new_key, args.new_key_env, "new KEK")
    if new_kek is not None and kek is None:
        raise CommandError("--new-key needs --key (the KEK of the input)")
    types = _types(args.types)
    # Detection runs every type so that a pseudonym is checked against all of them.
    pseudo = Pseudonymizer(pkey, build(TYPES))
    src, dst = Path(args.src), Path(args.dst)
    if not src.exists():
        raise CommandError(f"not found: {src}")
    bar = _Bar(dataset_size(src), "pseudonymize")
    try:
        census = pseudonymize(
            src, dst, build(types), pseudo, kek=kek, new_kek=new_kek, progress=bar
        )
    finally:
        bar.close()
    totals = census.totals()
    out: dict[str, Any] = {
        "operation": "pseudonymize",
        "src": str(src),
        "dst": str(dst),
        "files": totals["files"],
        "bytes": totals["bytes"],
        "replaced": totals["findings"],
        "counts": totals["counts"],
        "types": list(types),
    }
    sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
    return 0


def _subparsers(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the dataset parser has no subcommands")


def add_dataset_pii_commands(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``scan`` and ``pseudonymize`` to the ``dataset`` parser; returns it."""
    sub = _subparsers(parser)
    known = ", ".join(TYPES)

    sc = sub.add_parser(
        "scan",
        help="census of personal data in a file or tree (plain or encrypted)",
        description="Count personal data (per type and per file) and say where it is (file, "
        "byte offset, line), never what it is. Envelopes are decrypted in memory.",
    )
    _add_key(sc, "key", "KEK (to read envelope-encrypted files)")
    sc.add_argument("-o", "--output", choices=("table", "json"), default="table")
    sc.add_argument("--types", metavar="T,...", help=f"detectors to run (default all: {known})")
    sc.add_argument(
        "--max-locations",
        type=int,
        default=100,
        metavar="N",
        help="locations kept per file (default 100; counts are always complete)",
    )
    sc.add_argument(
        "--allow",
        metavar="T,...|none",
        help="policy: the only types the data may hold; anything else exits 1",
    )
    sc.add_argument("--report", metavar="FILE", help="write the census summary (JSON) here")
    sc.add_argument(
        "--decrypt-to",
        metavar="DIR",
        help="also write the plaintext into this empty directory (all or nothing; emptied "
        "again when --allow refuses the data)",
    )
    sc.add_argument("path", metavar="PATH")
    sc.set_defaults(func=_guarded(_cmd_scan))

    ps = sub.add_parser(
        "pseudonymize",
        help="replace personal data by keyed, shape-keeping pseudonyms (all or nothing)",
        description="Replace each detected value with a deterministic HMAC-based pseudonym of "
        "the same shape that can never be a real value. Encrypted input gives encrypted output.",
    )
    _add_key(ps, "pseudonym-key", "pseudonym key", required=True)
    _add_key(ps, "key", "KEK of encrypted input")
    _add_key(ps, "new-key", "KEK for the encrypted output (default: --key)")
    ps.add_argument("--types", metavar="T,...", help=f"types to replace (default all: {known})")
    ps.add_argument("src", metavar="IN")
    ps.add_argument("dst", metavar="OUT")
    ps.set_defaults(func=_guarded(_cmd_pseudonymize))
    return parser
