"""Evidence bundles: a set of files archived, envelope-encrypted and signed, as one blob.

The files go into a deterministic gzip-compressed tar (sorted names, mtime 0, owner 0/0, mode
0644, no user or group names) whose first member, ``MANIFEST.json``, lists the sha256 and size
of every file. The archive is encrypted with the envelope format of
:mod:`secureai.crypto.envelope` (a fresh data key per bundle, wrapped by the KEK). The ciphertext
is signed with ECDSA P-256: a DSSE envelope over an in-toto v1 Statement whose one subject is
the ciphertext's sha256 and whose predicate carries the caller's metadata (readable, and
verifiable, without the KEK: never put secrets there) and the KEK id.

Blob layout (integers big-endian)::

    magic       8   b"\\x89SAIEVD\\n"
    version     1   1
    dsse_len    4   length of the DSSE envelope
    dsse        *   the DSSE envelope, canonical JSON (sorted keys, no spaces)
    ciphertext  *   the envelope-encrypted archive, to the end of the blob

``open_bundle`` checks, in this order, the structure, the signature, the subject digest, the
decryption and the manifest; every byte of the blob is covered (the DSSE JSON and its base64
must be canonical), and nothing is returned unless everything verifies.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import hmac
import io
import json
import struct
import tarfile
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec

from secureai.crypto import signing
from secureai.crypto.envelope import (
    EnvelopeError,
    InvalidKeyError,
    WrongKeyError,
    decrypt_stream,
    encrypt_stream,
    kek_id,
)
from secureai.crypto.signing import (
    STATEMENT_TYPE,
    SignatureError,
    dsse_sign,
    dsse_verify,
    key_hint,
    load_private_key,
    load_public_key,
)

__all__ = [
    "MANIFEST_NAME",
    "PREDICATE_TYPE",
    "EvidenceError",
    "EvidenceKeyError",
    "MalformedEvidenceError",
    "SignatureMismatchError",
    "TamperedEvidenceError",
    "WrongSignerError",
    "archive",
    "digest",
    "open_bundle",
    "seal",
    "statement_of",
]

MAGIC: Final = b"\x89SAIEVD\n"
VERSION: Final = 1
PREDICATE_TYPE: Final = "https://secureai.dev/evidence/v1"
SUBJECT_NAME: Final = "evidence.tar.gz.enc"
MANIFEST_NAME: Final = "MANIFEST.json"
MANIFEST_FORMAT: Final = "secureai-evidence/v1"
_PREFIX: Final = struct.Struct(">8sBI")
_MAX_DSSE: Final = 1 << 20
_MAX_ARCHIVE: Final = 4 << 30  # decompressed; a bundle is authenticated before this matters


class EvidenceError(Exception):
    """Base class of every evidence-bundle failure; the message is one user-safe line."""


class MalformedEvidenceError(EvidenceError):
    """Not an evidence bundle, or its structure is broken (which a tampered byte can cause)."""


class SignatureMismatchError(EvidenceError):
    """The signature does not verify: the statement or signature was modified."""


class WrongSignerError(SignatureMismatchError):
    """The bundle was signed by another key than the one given."""


class TamperedEvidenceError(EvidenceError):
    """The signed statement verifies, but the ciphertext or the archive does not match it."""


class EvidenceKeyError(EvidenceError):
    """The KEK or a signing key is malformed, or the KEK is not the one the bundle used."""


def digest(blob: bytes) -> str:
    """The bundle's digest as recorded in status: ``sha256:<hex>`` over the whole blob."""
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise EvidenceError("file names must be strings")
    path = PurePosixPath(name)
    if (
        not name
        or "\x00" in name
        or "\\" in name
        or path.is_absolute()
        or ".." in path.parts
        or str(path) != name
        or name == "."
    ):
        raise EvidenceError(f"invalid file name in evidence: {name!r}")
    return name


def _check_names(names: list[str]) -> None:
    """Every name well-formed; none the manifest's; none a directory of another."""
    for name in names:
        _check_name(name)
    if MANIFEST_NAME in names:
        raise EvidenceError(f"{MANIFEST_NAME} is reserved for the bundle's manifest")
    present = set(names)
    for name in names:
        for parent in PurePosixPath(name).parents:
            if str(parent) != "." and str(parent) in present:
                raise EvidenceError(f"{parent} is both a file and a directory in the evidence")


def _manifest(files: Mapping[str, bytes]) -> bytes:
    entries = [
        {"path": name, "sha256": hashlib.sha256(files[name]).hexdigest(), "size": len(files[name])}
        for name in sorted(files)
    ]
    return _canonical({"format": MANIFEST_FORMAT, "files": entries})


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def archive(files: Mapping[str, bytes]) -> bytes:
    """The deterministic compressed tar of ``files`` (plus the manifest), as sealed."""
    names = list(files)
    _check_names(names)
    for name in names:
        if not isinstance(files[name], bytes | bytearray):
            raise EvidenceError(f"content of {name!r} is not bytes")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        manifest = _manifest(files)
        tar.addfile(_member(MANIFEST_NAME, len(manifest)), io.BytesIO(manifest))
        for name in sorted(names):
            data = bytes(files[name])
            tar.addfile(_member(name, len(data)), io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def seal(
    files: Mapping[str, bytes], kek: bytes, signing_key_pem: bytes, meta: Mapping[str, str]
) -> bytes:
    """Archive, encrypt under ``kek`` and sign with ``signing_key_pem``: one bundle blob.

    CPU-bound (about 0.1 s per MiB of logs on a busy 2-core machine, mostly compression): an
    event loop should run it in a thread (``asyncio.to_thread``)."""
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise EvidenceError("evidence metadata must map strings to strings")
    try:
        key_id = kek_id(kek)
        signer = load_private_key(signing_key_pem, None)
    except (InvalidKeyError, SignatureError) as exc:
        raise EvidenceKeyError(f"cannot seal evidence: {exc}") from None
    ciphertext = io.BytesIO()
    encrypt_stream(io.BytesIO(archive(files)), ciphertext, kek)
    sealed = ciphertext.getvalue()
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": SUBJECT_NAME, "digest": {"sha256": hashlib.sha256(sealed).hexdigest()}}
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"meta": dict(sorted(meta.items())), "kekId": key_id, "files": len(files)},
    }
    dsse = _canonical(dsse_sign(statement, signer, key_hint(signer.public_key())))
    return _PREFIX.pack(MAGIC, VERSION, len(dsse)) + dsse + sealed


def _split(blob: bytes) -> tuple[bytes, bytes]:
    if not isinstance(blob, bytes | bytearray) or len(blob) < len(MAGIC):
        raise MalformedEvidenceError("not an evidence bundle (too short)")
    if blob[: len(MAGIC)] != MAGIC:
        raise MalformedEvidenceError("not an evidence bundle (bad magic)")
    if len(blob) < _PREFIX.size:
        raise MalformedEvidenceError("evidence bundle truncated in its header")
    _, version, size = _PREFIX.unpack_from(blob)
    if version != VERSION:
        raise MalformedEvidenceError(
            f"unsupported evidence bundle version {version} (this build reads {VERSION})"
        )
    if not 0 < size <= _MAX_DSSE or len(blob) < _PREFIX.size + size:
        raise MalformedEvidenceError("evidence bundle header is corrupt (signature length)")
    end = _PREFIX.size + size
    return bytes(blob[_PREFIX.size : end]), bytes(blob[end:])


def _field(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
        raise MalformedEvidenceError(f"evidence bundle: missing or invalid {where}{key!r}")
    return obj[key]


def _canonical_b64(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        return base64.b64encode(base64.b64decode(text, validate=True)).decode("ascii") == text
    except (binascii.Error, ValueError):
        return False


def _signed_statement(dsse_raw: bytes, public_key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The verified statement; the envelope must be byte for byte the one ``seal`` writes."""
    try:
        dsse = json.loads(dsse_raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedEvidenceError("evidence bundle: the DSSE envelope is not JSON") from None
    if not isinstance(dsse, dict) or _canonical(dsse) != dsse_raw:
        raise MalformedEvidenceError("evidence bundle: the signature envelope is not canonical")
    if set(dsse) != {"payload", "payloadType", "signatures"}:
        raise MalformedEvidenceError("evidence bundle: unexpected fields in the DSSE envelope")
    signatures = _field(dsse, "signatures", list, "")
    if len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise MalformedEvidenceError("evidence bundle: expected exactly one signature")
    if set(signatures[0]) != {"keyid", "sig"}:
        raise MalformedEvidenceError("evidence bundle: unexpected fields in the signature")
    for text, what in ((dsse["payload"], "the payload"), (signatures[0]["sig"], "the signature")):
        if not _canonical_b64(text):
            raise MalformedEvidenceError(f"evidence bundle: {what} is not canonical base64")
    keyid = _field(signatures[0], "keyid", str, "signature ")
    if not hmac.compare_digest(keyid, key_hint(public_key)):
        raise WrongSignerError("wrong key: the evidence bundle was signed by a different key")
    try:
        return dsse_verify(dsse, public_key)
    except signing.SignatureMismatchError:
        raise SignatureMismatchError(
            "signature does not verify: the evidence statement or its signature was modified"
        ) from None
    except SignatureError as exc:
        raise MalformedEvidenceError(f"evidence bundle: {exc}") from None


def _subject_and_meta(statement: dict[str, Any]) -> tuple[str, dict[str, str]]:
    if statement.get("_type") != STATEMENT_TYPE:
        raise MalformedEvidenceError("evidence bundle: not an in-toto v1 statement")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise MalformedEvidenceError(f"evidence bundle: predicateType is not {PREDICATE_TYPE}")
    subjects = _field(statement, "subject", list, "statement ")
    if len(subjects) != 1:
        raise MalformedEvidenceError("evidence bundle: expected exactly one subject")
    sha = _field(_field(subjects[0], "digest", dict, "subject "), "sha256", str, "subject ")
    predicate = _field(statement, "predicate", dict, "statement ")
    meta = _field(predicate, "meta", dict, "predicate ")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise MalformedEvidenceError("evidence bundle: metadata values must be strings")
    return sha, dict(meta)


def statement_of(blob: bytes, public_key_pem: bytes) -> dict[str, Any]:
    """The verified in-toto statement of a bundle (no KEK needed; the files stay sealed)."""
    dsse_raw, ciphertext = _split(blob)
    statement = _signed_statement(dsse_raw, _public_key(public_key_pem))
    sha, _ = _subject_and_meta(statement)
    if not hmac.compare_digest(sha, hashlib.sha256(ciphertext).hexdigest()):
        raise TamperedEvidenceError(
            "ciphertext does not match the signed digest: the evidence was modified"
        )
    return statement


def _public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        return load_public_key(pem)
    except SignatureError as exc:
        raise EvidenceKeyError(f"cannot verify evidence: {exc}") from None


def open_bundle(
    blob: bytes, kek: bytes, public_key_pem: bytes
) -> tuple[dict[str, bytes], dict[str, str]]:
    """Verify and decrypt a bundle: ``(files, meta)``, or an ``EvidenceError``."""
    statement = statement_of(blob, public_key_pem)
    _, meta = _subject_and_meta(statement)
    _, ciphertext = _split(blob)
    plain = io.BytesIO()
    try:
        decrypt_stream(io.BytesIO(ciphertext), plain, kek)
    except (InvalidKeyError, WrongKeyError) as exc:
        raise EvidenceKeyError(f"cannot decrypt evidence: {exc}") from None
    except EnvelopeError as exc:  # authentic ciphertext by signature: only a forged one fails
        raise TamperedEvidenceError(f"evidence does not decrypt: {exc}") from None
    return _unpack(plain.getvalue()), meta


def _unpack(data: bytes) -> dict[str, bytes]:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as gz:
            raw = gz.read(_MAX_ARCHIVE + 1)
    except (OSError, EOFError):
        raise TamperedEvidenceError("evidence archive is not gzip") from None
    if len(raw) > _MAX_ARCHIVE:
        raise TamperedEvidenceError("evidence archive is too large")
    files: dict[str, bytes] = {}
    manifest: bytes | None = None
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for info in tar:
                if not info.isreg():
                    raise TamperedEvidenceError(f"evidence archive holds a non-file {info.name!r}")
                fh = tar.extractfile(info)
                assert fh is not None  # a regular member always has a reader
                content = fh.read()
                if info.name == MANIFEST_NAME and manifest is None and not files:
                    manifest = content
                    continue
                if info.name in files:
                    raise TamperedEvidenceError(f"evidence archive repeats {info.name!r}")
                files[info.name] = content
    except tarfile.TarError:
        raise TamperedEvidenceError("evidence archive is not a valid tar") from None
    if manifest is None:
        raise TamperedEvidenceError("evidence archive has no manifest")
    try:
        _check_names(list(files))
    except EvidenceError as exc:
        raise TamperedEvidenceError(str(exc)) from None
    if _manifest(files) != manifest:
        raise TamperedEvidenceError("evidence files do not match the archive's manifest")
    return dict(sorted(files.items()))
