"""Envelope encryption of datasets and model files.

Every file gets a fresh random 256-bit data key (DEK) that is wrapped (RFC 3394 AES-KW) by a
32-byte key-encryption key (KEK). The payload is cut into fixed-size chunks, each sealed with
AES-256-GCM following the STREAM construction: the nonce is ``prefix(7) || index(4) || final(1)``
and the associated data is ``header || index || final``, so any bit flip, truncation, reordering,
dropped or duplicated chunk, appended data or wrong key fails authentication.

File layout (all integers big-endian)::

    magic       8   b"\\x89SAIENC\\n"
    version     1   1
    algorithm   1   1 = AES-256-GCM STREAM, DEK wrapped with AES-KW
    chunk_size  4   plaintext bytes per chunk (the last chunk may be shorter, even empty)
    kek_id     16   SHA-256("secureai/kek-id/v1" || KEK)[:16]
    wrapped    40   AES-KW(KEK, DEK)
    prefix      7   random nonce prefix
    header_tag 16   AES-GCM tag over the 77 bytes above (empty plaintext, reserved nonce)
    chunks      *   ciphertext(chunk) || tag(16), the last one sealed with final=1
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import os
import secrets
import shutil
import stat
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "KEK_SIZE",
    "DecryptingReader",
    "EnvelopeError",
    "EnvelopeFormatError",
    "EnvelopeInfo",
    "HeaderTamperedError",
    "InvalidKeyError",
    "TamperedError",
    "TrailingDataError",
    "TruncatedError",
    "UnsupportedVersionError",
    "WrongKeyError",
    "decrypt_dir",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_dir",
    "encrypt_file",
    "encrypt_stream",
    "generate_kek",
    "kek_id",
    "load_kek",
    "read_header",
    "reencrypt_dir",
    "reencrypt_file",
    "reencrypt_stream",
]

MAGIC: Final = b"\x89SAIENC\n"
VERSION: Final = 1
ALG_AES256GCM_STREAM_KW: Final = 1
KEK_SIZE: Final = 32
DEK_SIZE: Final = 32
TAG_SIZE: Final = 16
PREFIX_SIZE: Final = 7
KEK_ID_SIZE: Final = 16
WRAPPED_SIZE: Final = DEK_SIZE + 8
DEFAULT_CHUNK_SIZE: Final = 1 << 20
MIN_CHUNK_SIZE: Final = 16
MAX_CHUNK_SIZE: Final = 16 << 20
MAX_CHUNKS: Final = 0xFFFFFFFF

_FIXED: Final = struct.Struct(">8sBBI")
_HEADER_LEN: Final = _FIXED.size + KEK_ID_SIZE + WRAPPED_SIZE + PREFIX_SIZE
HEADER_SIZE: Final = _HEADER_LEN + TAG_SIZE
_CHUNK_SUFFIX: Final = struct.Struct(">IB")
_HEADER_NONCE_SUFFIX: Final = b"\xff\xff\xff\xff\x02"
_KEK_ID_DOMAIN: Final = b"secureai/kek-id/v1"
_MAX_KEY_FILE: Final = 4096


class EnvelopeError(Exception):
    """Base class of every envelope failure; the message is safe to show to a user."""


class InvalidKeyError(EnvelopeError):
    """The KEK material is malformed (wrong length or encoding)."""


class WrongKeyError(EnvelopeError):
    """The KEK does not unwrap this file's data key."""


class EnvelopeFormatError(EnvelopeError):
    """The input is not a secureai envelope, or its header is malformed."""


class UnsupportedVersionError(EnvelopeFormatError):
    """The envelope was written by an unknown format version."""


class TamperedError(EnvelopeError):
    """Authentication failed: the data was modified, reordered, dropped or duplicated."""


class HeaderTamperedError(TamperedError):
    """The authenticated header was modified."""


class TruncatedError(TamperedError):
    """The envelope ends before its final chunk."""


class TrailingDataError(TamperedError):
    """Data follows the final chunk."""


@dataclass(frozen=True)
class EnvelopeInfo:
    """Unauthenticated view of an envelope header (for diagnostics only)."""

    version: int
    algorithm: int
    chunk_size: int
    kek_id: str


def generate_kek() -> bytes:
    """A fresh random 32-byte key-encryption key."""
    return secrets.token_bytes(KEK_SIZE)


def kek_id(kek: bytes) -> str:
    """Public identifier of a KEK (hex), recorded in every envelope header."""
    return _kek_id_bytes(_check_kek(kek)).hex()


def load_kek(source: str | os.PathLike[str] | bytes | bytearray) -> bytes:
    """Load a 32-byte KEK.

    ``bytes`` are key material as read from a Secret: exactly 32 raw bytes, or base64 / hex text
    (surrounding whitespace ignored). ``str`` or a path names a file holding the same.
    """
    if isinstance(source, bytes | bytearray):
        return _parse_kek(bytes(source))
    path = Path(source)
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        if _looks_like_key(os.fspath(source)):  # never echo key material as a "path"
            raise InvalidKeyError(
                "expected a key file path but got what looks like key material "
                "(pass the material as bytes)"
            ) from None
        reason = {
            FileNotFoundError: "key file not found",
            IsADirectoryError: "key file is a directory",
            PermissionError: "key file not readable",
        }.get(type(exc), f"cannot read key file ({exc.strerror})")
        raise InvalidKeyError(f"{reason}: {path}") from None
    if len(data) > _MAX_KEY_FILE:
        raise InvalidKeyError(f"key file too large to be a key: {path}")
    return _parse_kek(data)


def _looks_like_key(text: str) -> bool:
    try:
        _parse_kek(text.encode())
    except (InvalidKeyError, UnicodeEncodeError):
        return False
    return True


def _parse_kek(data: bytes) -> bytes:
    if len(data) == KEK_SIZE:
        return data
    text = data.strip()
    decoded: bytes | None = None
    if len(text) == 2 * KEK_SIZE:
        try:
            decoded = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            decoded = None
    if decoded is None:
        try:
            altchars = b"-_" if b"-" in text or b"_" in text else None
            decoded = base64.b64decode(text, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidKeyError(
                "KEK must be 32 bytes: raw, base64 or hex (could not decode the key material)"
            ) from None
    if len(decoded) != KEK_SIZE:
        raise InvalidKeyError(
            f"KEK must be 32 bytes: raw, base64 or hex (got {len(decoded)} bytes)"
        )
    return decoded


def _check_kek(kek: bytes) -> bytes:
    if not isinstance(kek, bytes | bytearray) or len(kek) != KEK_SIZE:
        raise InvalidKeyError("KEK must be exactly 32 bytes (use load_kek to decode base64 or hex)")
    return bytes(kek)


def _kek_id_bytes(kek: bytes) -> bytes:
    return hashlib.sha256(_KEK_ID_DOMAIN + kek).digest()[:KEK_ID_SIZE]


def _header_nonce(prefix: bytes) -> bytes:
    return prefix + _HEADER_NONCE_SUFFIX


def _read_full(src: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``src``; return bytes read (short only at EOF)."""
    total = 0
    size = len(view)
    while total < size:
        n = src.readinto(view[total:])  # type: ignore[attr-defined]
        if n is None:
            raise EnvelopeError("non-blocking streams are not supported")
        if n == 0:
            break
        total += n
    return int(total)


def _read_header_bytes(src: BinaryIO) -> bytes:
    buf = bytearray(HEADER_SIZE)
    return bytes(buf[: _read_full(src, memoryview(buf))])


def encrypt_stream(
    src: BinaryIO, dst: BinaryIO, kek: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> int:
    """Encrypt everything readable from ``src`` into ``dst``; return the plaintext size.

    ``src`` must support ``readinto`` (any binary file or ``io.BytesIO``). Memory use is about
    three chunk buffers whatever the input size.
    """
    kek = _check_kek(kek)
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise EnvelopeError(
            f"chunk size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes"
        )
    dek = AESGCM.generate_key(bit_length=256)
    prefix = secrets.token_bytes(PREFIX_SIZE)
    header = (
        _FIXED.pack(MAGIC, VERSION, ALG_AES256GCM_STREAM_KW, chunk_size)
        + _kek_id_bytes(kek)
        + aes_key_wrap(kek, dek)
        + prefix
    )
    aead = AESGCM(dek)
    dst.write(header)
    dst.write(aead.encrypt(_header_nonce(prefix), b"", header))

    cur = memoryview(bytearray(chunk_size))
    nxt = memoryview(bytearray(chunk_size))
    out = memoryview(bytearray(chunk_size + TAG_SIZE))
    encrypt_into = getattr(aead, "encrypt_into", None)
    index = 0
    total = 0
    n_cur = _read_full(src, cur)
    while True:
        n_nxt = _read_full(src, nxt) if n_cur == chunk_size else 0
        final = n_nxt == 0
        suffix = _CHUNK_SUFFIX.pack(index, final)
        nonce = prefix + suffix
        aad = header + suffix
        if encrypt_into is not None:
            encrypt_into(nonce, cur[:n_cur], aad, out[: n_cur + TAG_SIZE])
            dst.write(out[: n_cur + TAG_SIZE])
        else:  # cryptography < 46
            dst.write(aead.encrypt(nonce, cur[:n_cur], aad))
        total += n_cur
        if final:
            return total
        if index == MAX_CHUNKS - 1:
            raise EnvelopeError("input too large for one envelope")
        index += 1
        cur, nxt = nxt, cur
        n_cur = n_nxt


def _parse_header(raw: bytes) -> tuple[int, bytes, bytes, bytes]:
    """Return (chunk_size, kek_id, wrapped DEK, prefix) of a structurally valid header."""
    if len(raw) < len(MAGIC) or raw[: len(MAGIC)] != MAGIC:
        raise EnvelopeFormatError("not a secureai envelope (bad magic)")
    if len(raw) < _FIXED.size:
        raise TruncatedError("envelope truncated inside its header")
    _, version, alg, chunk_size = _FIXED.unpack_from(raw)
    if version != VERSION:
        raise UnsupportedVersionError(
            f"unsupported envelope version {version} (this build reads version {VERSION})"
        )
    if alg != ALG_AES256GCM_STREAM_KW:
        raise EnvelopeFormatError(f"unsupported envelope algorithm {alg}")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise HeaderTamperedError(f"envelope header is corrupt (chunk size {chunk_size})")
    if len(raw) < HEADER_SIZE:
        raise TruncatedError("envelope truncated inside its header")
    pos = _FIXED.size
    kid = raw[pos : pos + KEK_ID_SIZE]
    pos += KEK_ID_SIZE
    wrapped = raw[pos : pos + WRAPPED_SIZE]
    pos += WRAPPED_SIZE
    prefix = raw[pos : pos + PREFIX_SIZE]
    return chunk_size, kid, wrapped, prefix


def read_header(src: BinaryIO) -> EnvelopeInfo:
    """Parse (without authenticating) the header at the current position of ``src``."""
    chunk_size, kid, _, _ = _parse_header(_read_header_bytes(src))
    return EnvelopeInfo(VERSION, ALG_AES256GCM_STREAM_KW, chunk_size, kid.hex())


def _open_header(raw: bytes, kek: bytes) -> tuple[AESGCM, int, bytes, bytes]:
    chunk_size, kid, wrapped, prefix = _parse_header(raw)
    header = raw[:_HEADER_LEN]
    own_id = _kek_id_bytes(kek)
    try:
        dek = aes_key_unwrap(kek, wrapped)
    except InvalidUnwrap:
        if not hmac.compare_digest(kid, own_id):
            raise WrongKeyError(
                f"wrong key: the file was encrypted under KEK id {kid.hex()}, "
                f"the supplied KEK has id {own_id.hex()}"
            ) from None
        raise HeaderTamperedError("envelope header is corrupt (wrapped data key)") from None
    aead = AESGCM(dek)
    try:
        aead.decrypt(_header_nonce(prefix), raw[_HEADER_LEN:HEADER_SIZE], header)
    except InvalidTag:
        raise HeaderTamperedError("envelope header failed authentication") from None
    return aead, chunk_size, prefix, header


def _plaintext_chunks(src: BinaryIO, kek: bytes) -> Iterator[memoryview | bytes]:
    """Authenticated plaintext chunks of an envelope; each view is valid until the next one."""
    kek = _check_kek(kek)
    aead, chunk_size, prefix, header = _open_header(_read_header_bytes(src), kek)
    record = chunk_size + TAG_SIZE
    cur = memoryview(bytearray(record))
    nxt = memoryview(bytearray(record))
    out = memoryview(bytearray(chunk_size))
    decrypt_into = getattr(aead, "decrypt_into", None)
    index = 0
    n_cur = _read_full(src, cur)
    while True:
        if n_cur < TAG_SIZE:
            raise TruncatedError(f"envelope truncated: chunk {index} is missing or incomplete")
        n_nxt = _read_full(src, nxt) if n_cur == record else 0
        final = n_nxt == 0
        suffix = _CHUNK_SUFFIX.pack(index, final)
        plain = n_cur - TAG_SIZE
        try:
            if decrypt_into is not None:
                decrypt_into(prefix + suffix, cur[:n_cur], header + suffix, out[:plain])
                piece: memoryview | bytes = out[:plain]
            else:  # cryptography < 46
                piece = aead.decrypt(prefix + suffix, cur[:n_cur], header + suffix)
        except InvalidTag:
            raise _diagnose(aead, prefix, header, cur[:n_cur], index=index, final=final) from None
        yield piece
        if final:
            return
        if index == MAX_CHUNKS - 1:
            raise TamperedError("envelope has too many chunks")
        index += 1
        cur, nxt = nxt, cur
        n_cur = n_nxt


def decrypt_stream(src: BinaryIO, dst: BinaryIO, kek: bytes) -> int:
    """Decrypt an envelope from ``src`` into ``dst``; return the plaintext size.

    Only authenticated chunks are written, but on failure ``dst`` may already hold a prefix of
    the plaintext: callers must discard it (``decrypt_file`` does this for you).
    """
    total = 0
    for piece in _plaintext_chunks(src, kek):
        dst.write(piece)
        total += len(piece)
    return total


class DecryptingReader(io.RawIOBase):
    """A readable stream of an envelope's authenticated plaintext (bounded memory).

    Errors surface from ``read``/``readinto``; data returned before an error is authentic but
    may be incomplete, so treat the stream as valid only once EOF has been reached.
    """

    def __init__(self, src: BinaryIO, kek: bytes) -> None:
        super().__init__()
        self._chunks = _plaintext_chunks(src, _check_kek(kek))
        self._pending = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            if self._eof:
                return 0
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                self._eof = True
                return 0
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def reencrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    old_kek: bytes,
    new_kek: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Re-encrypt an envelope under ``new_kek`` (fresh data key) without materialising it."""
    reader = DecryptingReader(src, old_kek)
    return encrypt_stream(cast(BinaryIO, reader), dst, new_kek, chunk_size=chunk_size)


def _diagnose(
    aead: AESGCM, prefix: bytes, header: bytes, chunk: memoryview, *, index: int, final: bool
) -> TamperedError:
    """Name the failure more precisely when the chunk is authentic under the other flag."""
    suffix = _CHUNK_SUFFIX.pack(index, not final)
    try:
        aead.decrypt(prefix + suffix, chunk, header + suffix)
    except InvalidTag:
        return TamperedError(
            f"chunk {index} failed authentication: the data was modified, reordered, "
            "duplicated, truncated or extended"
        )
    if final:
        return TruncatedError(f"envelope truncated after chunk {index}")
    return TrailingDataError(f"unexpected data after the final chunk ({index})")


def _atomic_write(dst_path: Path) -> tuple[BinaryIO, Path]:
    fd, tmp = tempfile.mkstemp(prefix=f".{dst_path.name}.", suffix=".tmp", dir=dst_path.parent)
    return os.fdopen(fd, "wb"), Path(tmp)


def _transform_file(src_path: Path, dst_path: Path, op: Callable[[BinaryIO, BinaryIO], int]) -> int:
    """Run ``op(src, tmp)`` and rename tmp over ``dst_path`` only if it succeeds."""
    dst_path = Path(dst_path)
    with Path(src_path).open("rb") as src:
        out, tmp = _atomic_write(dst_path)
        try:
            with out:
                size = op(src, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dst_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return size


def encrypt_file(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    kek: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt one file; ``dst_path`` appears (mode 0600) only when complete. Returns bytes."""
    return _transform_file(
        Path(src_path),
        Path(dst_path),
        lambda src, dst: encrypt_stream(src, dst, kek, chunk_size=chunk_size),
    )


def decrypt_file(
    src_path: str | os.PathLike[str], dst_path: str | os.PathLike[str], kek: bytes
) -> int:
    """Decrypt one file; ``dst_path`` appears (mode 0600) only if every chunk authenticates."""
    return _transform_file(
        Path(src_path), Path(dst_path), lambda src, dst: decrypt_stream(src, dst, kek)
    )


def reencrypt_file(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    old_kek: bytes,
    new_kek: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """KEK rotation for one file (``dst_path`` may equal ``src_path``); atomic like the others."""
    return _transform_file(
        Path(src_path),
        Path(dst_path),
        lambda src, dst: reencrypt_stream(src, dst, old_kek, new_kek, chunk_size=chunk_size),
    )


def _raise(exc: OSError) -> None:
    raise exc


def _walk_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (relative, sorted); symlinks and special files are refused."""
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        base = Path(dirpath)
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                raise EnvelopeError(f"refusing symlink: {base / name}")
        dirnames.sort()
        for name in sorted(filenames):
            full = base / name
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise EnvelopeError(f"refusing symlink: {full}")
            if not stat.S_ISREG(mode):
                raise EnvelopeError(f"refusing non-regular file: {full}")
            yield full.relative_to(root)


def _transform_dir(
    src_dir: Path, dst_dir: Path, kek: bytes, *, encrypt: bool, chunk: int
) -> tuple[int, int]:
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise EnvelopeError(f"not a directory: {src_dir}")
    if dst_dir.resolve().is_relative_to(src_dir.resolve()):
        raise EnvelopeError(f"destination is inside the source directory: {dst_dir}")
    if dst_dir.exists() and (not dst_dir.is_dir() or any(dst_dir.iterdir())):
        raise EnvelopeError(f"destination exists and is not an empty directory: {dst_dir}")
    dst_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst_dir.name}.", suffix=".tmp", dir=dst_dir.parent))
    files = total = 0
    try:
        for rel in _walk_files(src_dir):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                if encrypt:
                    total += encrypt_file(src_dir / rel, target, kek, chunk_size=chunk)
                else:
                    total += decrypt_file(src_dir / rel, target, kek)
            except EnvelopeError as exc:
                raise type(exc)(f"{rel}: {exc}") from None
            files += 1
        os.replace(tmp, dst_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files, total


def encrypt_dir(
    src_dir: str | os.PathLike[str],
    dst_dir: str | os.PathLike[str],
    kek: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[int, int]:
    """Encrypt every file of a tree (same relative names). Returns (files, plaintext bytes).

    ``dst_dir`` must be absent or empty; it is populated atomically (built in a temporary
    sibling directory, renamed on success).
    """
    return _transform_dir(Path(src_dir), Path(dst_dir), kek, encrypt=True, chunk=chunk_size)


def decrypt_dir(
    src_dir: str | os.PathLike[str], dst_dir: str | os.PathLike[str], kek: bytes
) -> tuple[int, int]:
    """Decrypt a tree made by ``encrypt_dir``; nothing appears in ``dst_dir`` unless all files
    authenticate. Returns (files, plaintext bytes)."""
    return _transform_dir(Path(src_dir), Path(dst_dir), kek, encrypt=False, chunk=0)


def reencrypt_dir(
    root: str | os.PathLike[str],
    old_kek: bytes,
    new_kek: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[int, int]:
    """Rotate every envelope under ``root`` in place from ``old_kek`` to ``new_kek``.

    Each file is replaced atomically; files already under ``new_kek`` are skipped, so an
    interrupted rotation is resumed by running it again. Returns (rotated, skipped).
    """
    root = Path(root)
    if not root.is_dir():
        raise EnvelopeError(f"not a directory: {root}")
    new_id = kek_id(new_kek)
    _check_kek(old_kek)
    rotated = skipped = 0
    for rel in list(_walk_files(root)):
        path = root / rel
        try:
            with path.open("rb") as fh:
                current = read_header(fh).kek_id
            if current == new_id:
                skipped += 1
                continue
            reencrypt_file(path, path, old_kek, new_kek, chunk_size=chunk_size)
        except EnvelopeError as exc:
            raise type(exc)(f"{rel}: {exc}") from None
        rotated += 1
    return rotated, skipped
