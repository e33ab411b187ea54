"""Model signing: a SHA-256 manifest of a model directory, signed with ECDSA P-256.

The signature bundle is the OpenSSF ``model-signing`` (v1.x) "key" format: a Sigstore bundle
v0.3 holding a DSSE envelope over an in-toto Statement whose predicate
(``https://model_signing/signature/v1.0``, serialization ``files``/``sha256``) lists every file
and its digest. Bundles made here verify with ``model_signing verify key`` and vice versa, without
depending on that package or on Sigstore.

The *model digest* reported for lineage is ``sha256:`` over the canonical manifest
``{"files":[{"path":..,"sha256":..},..]}`` (sorted paths, compact JSON with sorted keys).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secureai.crypto.ca import fingerprint

__all__ = [
    "BUNDLE_FILENAME",
    "GIT_PATHS",
    "SignatureError",
    "SignatureMismatchError",
    "SignedModel",
    "SigningKeyPair",
    "VerifiedModel",
    "canonical_manifest",
    "dsse_sign",
    "dsse_verify",
    "generate_signing_key",
    "hash_model",
    "key_hint",
    "load_private_key",
    "load_public_key",
    "pae",
    "sign_model",
    "verify_model",
]

BUNDLE_FILENAME: Final = "model.sig.json"
GIT_PATHS: Final = (".git", ".gitattributes", ".github", ".gitignore")
BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://model_signing/signature/v1.0"
_MAX_BUNDLE: Final = 64 << 20
_MAX_PRIVATE_KEY: Final = 64 << 10


class SignatureError(Exception):
    """The model does not verify, or signing input is invalid. The message is user-safe."""


class SignatureMismatchError(SignatureError):
    """A well-formed DSSE signature that does not verify with the given key."""


@dataclass(frozen=True)
class SigningKeyPair:
    private_key_pem: bytes
    public_key_pem: bytes
    fingerprint: str


@dataclass(frozen=True)
class SignedModel:
    bundle_path: Path
    bundle: dict[str, Any]
    digest: str
    signer_fingerprint: str
    files: int


@dataclass(frozen=True)
class VerifiedModel:
    digest: str
    signer_fingerprint: str
    files: int


def generate_signing_key(password: bytes | None = None) -> SigningKeyPair:
    """A new ECDSA P-256 signing key (PKCS#8 PEM, encrypted if ``password``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public = key.public_key()
    return SigningKeyPair(private_pem, _public_pem(public), fingerprint(public))


def _public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes, password: bytes | None) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except TypeError:
        raise SignatureError("private key is encrypted: a password is required") from None
    except ValueError:
        raise SignatureError("not a PEM private key (or wrong password)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SignatureError("signing key must be ECDSA P-256")
    return key


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise SignatureError("not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SignatureError("public key must be ECDSA P-256")
    return key


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding (also used by the evidence bundles)."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


_pae = pae  # the name the signing tests use


def key_hint(key: ec.EllipticCurvePublicKey) -> str:
    """model-signing's key hint: sha256 hex of the PEM SubjectPublicKeyInfo."""
    return hashlib.sha256(_public_pem(key)).hexdigest()


def _check_rel(name: str) -> str:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or str(p) != name or name == ".":
        raise SignatureError(f"malformed bundle: invalid path {name!r}")
    return name


def _is_ignored(rel: str, ignore: Iterable[str]) -> bool:
    return any(rel == ig or rel.startswith(ig + "/") for ig in ignore)


def _sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _raise(exc: OSError) -> None:
    raise exc


def hash_model(
    model_dir: str | os.PathLike[str], ignore: Iterable[str] = ()
) -> tuple[dict[str, str], bool]:
    """SHA-256 of every file under ``model_dir`` keyed by relative POSIX path.

    Returns ``(digests, has_symlinks)``. A symlink is hashed as the file it points to, but only
    if that file lies inside the model directory; directory symlinks, dangling or escaping
    links and special files are refused.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise SignatureError(f"model directory not found: {root}")
    real_root = root.resolve(strict=True)
    ignore = list(ignore)
    digests: dict[str, str] = {}
    has_symlinks = False
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        base = Path(dirpath)
        kept = []
        for name in sorted(dirnames):
            rel = (base / name).relative_to(root).as_posix()
            if _is_ignored(rel, ignore):
                continue
            if (base / name).is_symlink():
                raise SignatureError(f"symlinked directories are not supported: {rel}")
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            full = base / name
            rel = full.relative_to(root).as_posix()
            if _is_ignored(rel, ignore):
                continue
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                has_symlinks = True
                try:
                    target = full.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise SignatureError(f"dangling symlink: {rel}") from None
                if not target.is_relative_to(real_root):
                    raise SignatureError(f"symlink escapes the model directory: {rel}")
                if not target.is_file():
                    raise SignatureError(f"symlink to a non-regular file: {rel}")
            elif not stat.S_ISREG(mode):
                raise SignatureError(f"unsupported file type: {rel}")
            digests[rel] = _sha256_file(full)
    return dict(sorted(digests.items())), has_symlinks


def canonical_manifest(digests: Mapping[str, str]) -> bytes:
    """The canonical manifest bytes; the model digest is ``sha256:`` of these."""
    files = [{"path": p, "sha256": d} for p, d in sorted(digests.items())]
    return json.dumps({"files": files}, sort_keys=True, separators=(",", ":")).encode()


def tree_digest(directory: str | os.PathLike[str]) -> str:
    """``sha256:`` of the canonical manifest of a directory tree, as a model's digest is made
    (a dataset's envelope and plaintext digests in lineage and provenance)."""
    digests, _ = hash_model(directory)
    return _model_digest(digests)


def _model_digest(digests: Mapping[str, str]) -> str:
    return "sha256:" + hashlib.sha256(canonical_manifest(digests)).hexdigest()


def _subject_digest(digests: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for _, d in sorted(digests.items()):
        h.update(bytes.fromhex(d))
    return h.hexdigest()


def _bundle_rel(model_dir: Path, bundle_path: Path) -> str | None:
    try:
        return bundle_path.resolve().relative_to(model_dir.resolve()).as_posix()
    except ValueError:
        return None


def sign_model(
    model_dir: str | os.PathLike[str],
    private_key_pem: bytes,
    *,
    bundle_path: str | os.PathLike[str] | None = None,
    password: bytes | None = None,
    ignore_paths: Iterable[str] = (),
    ignore_git_paths: bool = True,
) -> SignedModel:
    """Hash ``model_dir``, sign the manifest and write the bundle (default
    ``<model_dir>/model.sig.json``, which is then left out of the manifest)."""
    if len(private_key_pem) > _MAX_PRIVATE_KEY:
        raise SignatureError("not a PEM private key")
    key = load_private_key(private_key_pem, password)
    root = Path(model_dir)
    out = Path(bundle_path) if bundle_path is not None else root / BUNDLE_FILENAME
    ignore = [_check_rel(p.strip("/")) for p in ignore_paths]
    if ignore_git_paths:
        ignore += [p for p in GIT_PATHS if p not in ignore]
    inside = _bundle_rel(root, out) if root.is_dir() else None
    if inside is not None and inside not in ignore:
        ignore.append(inside)
    digests, has_symlinks = hash_model(root, ignore)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": root.resolve().name, "digest": {"sha256": _subject_digest(digests)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": has_symlinks,
                "ignore_paths": ignore,
            },
            "resources": [
                {"name": p, "algorithm": "sha256", "digest": d} for p, d in digests.items()
            ],
        },
    }
    bundle: dict[str, Any] = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key_hint(key.public_key())},
            "tlogEntries": [],
        },
        "dsseEnvelope": dsse_sign(statement, key),
    }
    _write_atomic(out, (json.dumps(bundle, indent=2) + "\n").encode())
    return SignedModel(
        bundle_path=out,
        bundle=bundle,
        digest=_model_digest(digests),
        signer_fingerprint=fingerprint(key.public_key()),
        files=len(digests),
    )


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _get(obj: Any, key: str, kind: type) -> Any:
    if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
        raise SignatureError(f"malformed bundle: missing or invalid {key!r}")
    return obj[key]


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"malformed bundle: {what} is not base64") from None


def _read_bundle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_BUNDLE + 1)
    except FileNotFoundError:
        raise SignatureError(f"signature bundle not found: {path}") from None
    except OSError as exc:
        raise SignatureError(f"cannot read signature bundle {path}: {exc.strerror}") from None
    if len(raw) > _MAX_BUNDLE:
        raise SignatureError("malformed bundle: too large")
    try:
        bundle = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SignatureError("malformed bundle: not JSON") from None
    if not isinstance(bundle, dict):
        raise SignatureError("malformed bundle: not a JSON object")
    return bundle


def _verified_payload(bundle: dict[str, Any], key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise SignatureError(f"malformed bundle: mediaType is not {BUNDLE_MEDIA_TYPE}")
    material = _get(bundle, "verificationMaterial", dict)
    public = material.get("publicKey")
    hint = public.get("hint") if isinstance(public, dict) else None
    if hint and hint != key_hint(key):
        raise SignatureError("wrong key: the bundle was signed by a different key")
    return dsse_verify(_get(bundle, "dsseEnvelope", dict), key)


def dsse_sign(
    statement: Mapping[str, Any], key: ec.EllipticCurvePrivateKey, keyid: str = ""
) -> dict[str, Any]:
    """A DSSE envelope over ``statement`` (canonical JSON, in-toto payload type)."""
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    sig = key.sign(pae(payload), ec.ECDSA(hashes.SHA256()))
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": keyid}],
    }


def dsse_verify(envelope: Mapping[str, Any], key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The statement of a DSSE envelope with one signature by ``key``; fail closed.

    Raises ``SignatureMismatchError`` if the signature does not verify, ``SignatureError`` if
    the envelope or its payload is malformed."""
    if _get(envelope, "payloadType", str) != PAYLOAD_TYPE:
        raise SignatureError(f"malformed bundle: payloadType is not {PAYLOAD_TYPE}")
    payload = _b64(_get(envelope, "payload", str), "payload")
    signatures = _get(envelope, "signatures", list)
    if len(signatures) != 1:
        raise SignatureError("malformed bundle: expected exactly one signature")
    sig = _b64(_get(signatures[0], "sig", str), "signature")
    try:
        key.verify(sig, pae(payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureMismatchError(
            "signature does not verify: the bundle was modified or signed by another key"
        ) from None
    try:
        statement = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SignatureError("malformed bundle: signed payload is not JSON") from None
    if not isinstance(statement, dict):
        raise SignatureError("malformed bundle: signed payload is not a JSON object")
    return statement


def _expected_digests(statement: dict[str, Any]) -> tuple[dict[str, str], list[str], bool]:
    if statement.get("_type") != STATEMENT_TYPE:
        raise SignatureError("malformed bundle: not an in-toto v1 statement")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise SignatureError(f"malformed bundle: predicateType is not {PREDICATE_TYPE}")
    subjects = _get(statement, "subject", list)
    if len(subjects) != 1:
        raise SignatureError("malformed bundle: expected exactly one subject")
    subject_digest = _get(_get(subjects[0], "digest", dict), "sha256", str)
    predicate = _get(statement, "predicate", dict)
    ser = _get(predicate, "serialization", dict)
    if ser.get("method") != "files" or ser.get("hash_type") != "sha256":
        raise SignatureError(
            "unsupported bundle: only the 'files' serialization with sha256 is supported"
        )
    allow_symlinks = ser.get("allow_symlinks", False)
    if not isinstance(allow_symlinks, bool):
        raise SignatureError("malformed bundle: invalid 'allow_symlinks'")
    ignore_raw = ser.get("ignore_paths", [])
    if not isinstance(ignore_raw, list) or not all(isinstance(p, str) for p in ignore_raw):
        raise SignatureError("malformed bundle: invalid 'ignore_paths'")
    ignore = [_check_rel(p.strip("/")) for p in ignore_raw]
    digests: dict[str, str] = {}
    for res in _get(predicate, "resources", list):
        name = _check_rel(_get(res, "name", str))
        if _get(res, "algorithm", str) != "sha256":
            raise SignatureError("unsupported bundle: resource digest is not sha256")
        digest = _get(res, "digest", str)
        if len(digest) != 64 or digest != digest.lower() or not _is_hex(digest):
            raise SignatureError(f"malformed bundle: invalid digest for {name!r}")
        if name in digests:
            raise SignatureError(f"malformed bundle: duplicate entry {name!r}")
        digests[name] = digest
    if _subject_digest(digests) != subject_digest:
        raise SignatureError("malformed bundle: subject digest does not match the resources")
    return digests, ignore, allow_symlinks


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _describe(expected: Mapping[str, str], actual: Mapping[str, str]) -> str:
    parts = []
    for label, names in (
        (
            "modified",
            sorted(p for p in expected.keys() & actual.keys() if expected[p] != actual[p]),
        ),
        ("missing", sorted(expected.keys() - actual.keys())),
        ("unexpected", sorted(actual.keys() - expected.keys())),
    ):
        if names:
            shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def verify_model(
    model_dir: str | os.PathLike[str],
    public_key_pem: bytes,
    bundle_path: str | os.PathLike[str] | None = None,
) -> VerifiedModel:
    """Verify ``model_dir`` against a bundle signed by ``public_key_pem``; fail closed.

    Raises ``SignatureError`` for a wrong key, a malformed or modified bundle, and for any
    modified, missing or added file.
    """
    key = load_public_key(public_key_pem)
    root = Path(model_dir)
    if not root.is_dir():
        raise SignatureError(f"model directory not found: {root}")
    path = Path(bundle_path) if bundle_path is not None else root / BUNDLE_FILENAME
    statement = _verified_payload(_read_bundle(path), key)
    expected, ignore, allow_symlinks = _expected_digests(statement)
    inside = _bundle_rel(root, path)
    if inside is not None:
        ignore.append(inside)
    actual, has_symlinks = hash_model(root, ignore)
    if has_symlinks and not allow_symlinks:
        raise SignatureError("model contains symlinks but was signed without any")
    if actual != expected:
        raise SignatureError(f"model does not match its signature: {_describe(expected, actual)}")
    return VerifiedModel(
        digest=_model_digest(actual), signer_fingerprint=fingerprint(key), files=len(actual)
    )
