"""``secureai quarantine evidence NAME --out DIR``: export and verify a quarantine's evidence.

Reads the bundle from the operator namespace (Secrets ``secureai-evidence-<NAME>-<i>``),
verifies its signature with the public key of ConfigMap ``secureai-evidence-signer`` (or
``--public-key FILE``, a key obtained out of band), decrypts it with the KEK of Secret
``secureai-evidence-key`` and writes its files under DIR. Nothing is written unless the whole
bundle verifies. The caller needs ``get`` on those Secrets and that ConfigMap. Exit 0 on
success, 2 with one ``secureai: <reason>`` line on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from secureai.crypto.ca import fingerprint
from secureai.crypto.envelope import kek_id
from secureai.crypto.evidence import EvidenceError, digest, open_bundle, statement_of
from secureai.crypto.signing import SignatureError, load_public_key
from secureai.k8s import evidence as stored
from secureai.k8s.client import ApiError, KubeClient, load_credentials

__all__ = ["add_arguments", "export"]

EXIT_FAILURE = 2
DEFAULT_NAMESPACE_ENV = "SECUREAI_NAMESPACE"
_MAX_PUBLIC_KEY = 64 << 10


class ExportError(Exception):
    """A one-line reason to refuse the export."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``secureai quarantine evidence``; sets ``func`` to ``export``."""
    parser.add_argument("name", metavar="NAME", help="the Quarantine whose evidence to export")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the files to")
    parser.add_argument(
        "--public-key",
        metavar="FILE",
        help="verify with this PEM public key instead of ConfigMap secureai-evidence-signer",
    )
    parser.add_argument(
        "--operator-namespace",
        default=os.environ.get(DEFAULT_NAMESPACE_ENV, "secureai-system"),
        help="where the evidence is stored (default: $SECUREAI_NAMESPACE or secureai-system)",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
    parser.set_defaults(func=export)


def _read_public_key(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_PUBLIC_KEY + 1)
    except OSError as exc:
        raise ExportError(f"cannot read public key {path}: {exc.strerror}") from None
    if len(data) > _MAX_PUBLIC_KEY:
        raise ExportError(f"public key file too large: {path}")
    return data


def _targets(out: Path, names: list[str]) -> list[tuple[str, Path]]:
    """Where each file goes; refuses any path that would leave ``out`` or exists already."""
    root = out.resolve()
    placed = []
    for name in names:
        target = (root / name).resolve()
        if not target.is_relative_to(root) or target == root:
            raise ExportError(f"refusing a path that escapes {out}: {name!r}")
        if os.path.lexists(target):
            raise ExportError(f"refusing to overwrite {target}")
        placed.append((name, target))
    return placed


def _write(out: Path, files: dict[str, bytes]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, target in _targets(out, sorted(files)):
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.resolve().is_relative_to(out.resolve()):  # a symlinked folder in DIR
            raise ExportError(f"refusing a path that escapes {out}: {name!r}")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(files[name])


async def _fetch(args: argparse.Namespace) -> tuple[bytes, bytes, bytes]:
    """(bundle, KEK, public key) from the cluster."""
    try:
        creds = load_credentials(args.kubeconfig)
    except Exception as exc:  # the kubernetes loader raises many types; say why in one line
        raise ExportError(f"cannot load cluster credentials: {exc}") from None
    async with KubeClient(creds) as kube:
        blob = await stored.load(kube, args.operator_namespace, args.name)
        if args.public_key:
            public = _read_public_key(args.public_key)
        else:
            public = await stored.public_key(kube, args.operator_namespace)
        statement_of(blob, public)  # verify before asking for the KEK
        kek, _, _ = await stored.evidence_keys(kube, args.operator_namespace, create=False)
    return blob, kek, public


def export(args: argparse.Namespace) -> int:
    """Export, verify and write a quarantine's evidence; 0, or 2 with a one-line reason."""
    try:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ExportError(f"--out is not a folder: {out}")
        blob, kek, public = asyncio.run(_fetch(args))
        files, meta = open_bundle(blob, kek, public)
        _write(out, files)
        signer = fingerprint(load_public_key(public))
    except (ExportError, EvidenceError, SignatureError) as exc:
        return _fail(str(exc))
    except ApiError as exc:
        return _fail(f"API request failed: {exc}")
    except OSError as exc:
        return _fail(f"cannot write {exc.filename or args.out}: {exc.strerror}")
    quarantine = meta.get("quarantine", args.name)
    print(
        f"evidence of quarantine {quarantine}: {len(files)} files verified and written to "
        f"{args.out} (bundle {digest(blob)}, signer {signer}, KEK {kek_id(kek)})"
    )
    return 0


def _fail(message: str) -> int:
    print(f"secureai: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)
    return EXIT_FAILURE
