"""``secureai dataset ...`` and ``secureai model ...`` subcommands.

Every command returns an exit code: 0 on success, 2 on any failure (bad key, tampering,
verification failure, missing file), after printing one ``secureai: <reason>`` line to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from secureai.crypto import (
    KEY_FORMS,
    CAError,
    EnvelopeError,
    SignatureError,
    decrypt_dir,
    decrypt_file,
    encrypt_dir,
    encrypt_file,
    format_kek,
    generate_kek,
    generate_signing_key,
    kek_id,
    load_kek,
    reencrypt_dir,
    rekey_in_place,
    sign_model,
    verify_model,
)
from secureai.crypto.signing import tree_digest
from secureai.render.training import DIGESTS_SCHEMA

__all__ = ["add_dataset_parser", "add_model_parser", "main"]

EXIT_FAILURE = 2
_MAX_KEY_FILE = 64 << 10


class CommandError(Exception):
    """A user-facing failure of a command."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived; raised so every partial output is removed on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into ``Interrupted`` while a command writes files."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _fail(message: str) -> int:
    print(f"secureai: {message}", file=sys.stderr)
    return EXIT_FAILURE


def _os_reason(exc: OSError) -> str:
    reason = exc.strerror or exc.__class__.__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            with _signals_unwind():
                return fn(args)
        except Interrupted as exc:
            name = signal.Signals(exc.signum).name
            print(f"secureai: interrupted by {name}; partial output removed", file=sys.stderr)
            return 128 + exc.signum
        except (CommandError, EnvelopeError, SignatureError, CAError) as exc:
            return _fail(str(exc))
        except OSError as exc:
            return _fail(_os_reason(exc))

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True))


def _write_new(path: Path, data: bytes, *, mode: int, force: bool) -> None:
    """Write ``data`` to ``path`` created with ``mode`` (refusing to clobber unless ``force``)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise CommandError(f"{path} already exists (use --force to overwrite)") from None
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(data)


def _read_small(path: str, what: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise CommandError(f"{what} not found: {p}")
    with p.open("rb") as fh:
        data = fh.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise CommandError(f"{what} is too large: {p}")
    return data


# --- dataset ---------------------------------------------------------------------------------


def _kek_from_args(args: argparse.Namespace, prefix: str = "") -> bytes:
    env_var = getattr(args, f"{prefix}key_env")
    if env_var is not None:
        value = os.environ.get(env_var)
        if not value:
            raise CommandError(f"environment variable {env_var} is not set")
        return load_kek(value.encode())
    return load_kek(getattr(args, f"{prefix}key"))


def _add_key_options(parser: argparse.ArgumentParser, prefix: str = "", what: str = "KEK") -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(f"--{prefix}key", metavar="FILE", help=f"{what} file: {KEY_FORMS}")
    group.add_argument(
        f"--{prefix}key-env",
        metavar="VAR",
        help=f"environment variable holding the {what} ('base64:...' or 'hex:...')",
    )


def _dataset_transform(args: argparse.Namespace) -> int:
    encrypt = args.dataset_cmd == "encrypt"
    kek = _kek_from_args(args)
    src, dst = Path(args.src), Path(args.dst)
    if not src.exists():
        raise CommandError(f"source not found: {src}")
    if src.is_dir():
        if encrypt:
            files, size = encrypt_dir(src, dst, kek, chunk_size=args.chunk_size)
        else:
            files, size = decrypt_dir(src, dst, kek)
            if args.report:
                # In a pod: /dev/termination-log, read by the operator (lineage, provenance).
                write_digests_report(args.report, src, dst)
    else:
        if dst.is_dir():
            raise CommandError(f"destination is a directory: {dst}")
        if dst.exists() and not args.force:
            raise CommandError(f"{dst} already exists (use --force to overwrite)")
        if encrypt:
            size = encrypt_file(src, dst, kek, chunk_size=args.chunk_size)
        else:
            size = decrypt_file(src, dst, kek)
        files = 1
    _emit(
        {
            "operation": args.dataset_cmd,
            "src": str(src),
            "dst": str(dst),
            "files": files,
            "bytes": size,
            "kek_id": kek_id(kek),
        }
    )
    return 0


def dataset_digests(encrypted: Path, plain: Path | None) -> dict[str, str]:
    """The envelope digest of an encrypted tree and the plaintext digest of its decryption."""
    out = {"envelopeDigest": tree_digest(encrypted)}
    if plain is not None:
        out["plaintextDigest"] = tree_digest(plain)
    return out


def write_digests_report(report: str, encrypted: Path, plain: Path) -> None:
    body = {"schema": DIGESTS_SCHEMA, **dataset_digests(encrypted, plain)}
    Path(report).write_text(json.dumps(body, sort_keys=True, separators=(",", ":")))


def _dataset_rekey(args: argparse.Namespace) -> int:
    old, new = _kek_from_args(args), _kek_from_args(args, "new_")
    path = Path(args.path)
    chunk = args.chunk_size
    if path.is_dir():
        rotated, skipped = reencrypt_dir(path, old, new, chunk_size=chunk)
    elif path.is_file():
        done = rekey_in_place(path, old, new, chunk_size=chunk)
        rotated, skipped = int(done), int(not done)
    else:
        raise CommandError(f"not found: {path}")
    _emit({"path": str(path), "rotated": rotated, "skipped": skipped, "kek_id": kek_id(new)})
    return 0


def _dataset_keygen(args: argparse.Namespace) -> int:
    kek = generate_kek()
    _write_new(Path(args.out), format_kek(kek), mode=0o600, force=args.force)
    _emit({"key": str(args.out), "kek_id": kek_id(kek)})
    return 0


def add_dataset_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``dataset encrypt|decrypt|keygen``."""
    parser = subparsers.add_parser(
        "dataset",
        help="envelope-encrypt datasets and model files",
        description="Envelope encryption (AES-256-GCM, per-file data keys wrapped by a KEK).",
    )
    sub = parser.add_subparsers(dest="dataset_cmd", required=True, metavar="COMMAND")
    for name, text in (
        ("encrypt", "encrypt a file or a directory tree"),
        ("decrypt", "decrypt a file or a directory tree (all or nothing)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        _add_key_options(p)
        if name == "encrypt":
            p.add_argument(
                "--chunk-size",
                type=int,
                default=1 << 20,
                metavar="BYTES",
                help="plaintext bytes per authenticated chunk (default 1 MiB)",
            )
        p.add_argument("--force", action="store_true", help="overwrite an existing DST file")
        if name == "decrypt":
            p.add_argument(
                "--report",
                metavar="FILE",
                help="write the envelope and plaintext digests of a tree (JSON) here",
            )
        p.add_argument("src", metavar="SRC")
        p.add_argument("dst", metavar="DST")
        p.set_defaults(func=_guarded(_dataset_transform))
    rk = sub.add_parser(
        "rekey",
        help="rotate envelopes in place to a new KEK",
        description="Re-encrypt a file or every file of a tree under a new KEK, in place. Each"
        " file is replaced atomically; files already under the new KEK are checked and skipped, so"
        " an interrupted run is resumed by running it again.",
    )
    _add_key_options(rk, what="current KEK")
    _add_key_options(rk, prefix="new-", what="new KEK")
    rk.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="plaintext bytes per chunk of the output (default: keep each file's chunk size)",
    )
    rk.add_argument("path", metavar="PATH")
    rk.set_defaults(func=_guarded(_dataset_rekey))
    kg = sub.add_parser("keygen", help="write a new random KEK ('base64:...') to a file")
    kg.add_argument("--out", required=True, metavar="FILE")
    kg.add_argument("--force", action="store_true")
    kg.set_defaults(func=_guarded(_dataset_keygen))
    return parser


# --- model -----------------------------------------------------------------------------------


def _model_keygen(args: argparse.Namespace) -> int:
    pair = generate_signing_key()
    _write_new(Path(args.private_key), pair.private_key_pem, mode=0o600, force=args.force)
    _write_new(Path(args.public_key), pair.public_key_pem, mode=0o644, force=args.force)
    _emit(
        {
            "private_key": str(args.private_key),
            "public_key": str(args.public_key),
            "fingerprint": pair.fingerprint,
        }
    )
    return 0


def _model_sign(args: argparse.Namespace) -> int:
    key = _read_small(args.private_key, "private key")
    signed = sign_model(args.model, key, bundle_path=args.bundle)
    _emit(
        {
            "bundle": str(signed.bundle_path),
            "digest": signed.digest,
            "signer_fingerprint": signed.signer_fingerprint,
            "files": signed.files,
        }
    )
    return 0


def _model_verify(args: argparse.Namespace) -> int:
    key = _read_small(args.public_key, "public key")
    verified = verify_model(args.model, key, args.bundle)
    result = {
        "digest": verified.digest,
        "signer_fingerprint": verified.signer_fingerprint,
        "files": verified.files,
    }
    _emit(result)
    if args.report:
        # In a pod: /dev/termination-log, which the kubelet hands to the operator (lineage).
        with open(args.report, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(result, sort_keys=True))
    return 0


def add_model_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``model keygen|sign|verify``."""
    parser = subparsers.add_parser(
        "model",
        help="sign and verify model directories",
        description="ECDSA P-256 model signatures (OpenSSF model-signing compatible bundles).",
    )
    sub = parser.add_subparsers(dest="model_cmd", required=True, metavar="COMMAND")

    kg = sub.add_parser("keygen", help="create an ECDSA P-256 signing key pair")
    kg.add_argument("--private-key", required=True, metavar="FILE", help="written with mode 0600")
    kg.add_argument("--public-key", required=True, metavar="FILE")
    kg.add_argument("--force", action="store_true", help="overwrite existing key files")
    kg.set_defaults(func=_guarded(_model_keygen))

    sg = sub.add_parser("sign", help="hash a model directory and sign its manifest")
    sg.add_argument("--model", required=True, metavar="DIR")
    sg.add_argument("--private-key", required=True, metavar="FILE")
    sg.add_argument("--bundle", metavar="FILE", help="default: DIR/model.sig.json")
    sg.set_defaults(func=_guarded(_model_sign))

    vf = sub.add_parser("verify", help="verify a model directory; prints digest and signer")
    vf.add_argument("--model", required=True, metavar="DIR")
    vf.add_argument("--public-key", required=True, metavar="FILE")
    vf.add_argument("--bundle", metavar="FILE", help="default: DIR/model.sig.json")
    vf.add_argument("--report", metavar="FILE", help="also write the JSON result here")
    vf.set_defaults(func=_guarded(_model_verify))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point with just these commands (the ``secureai`` CLI embeds them)."""
    parser = argparse.ArgumentParser(prog="secureai")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_dataset_parser(subparsers)
    add_model_parser(subparsers)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)
