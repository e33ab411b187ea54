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
import errno
import fcntl
import hashlib
import hmac
import io
import os
import re
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
    "KEY_FORMS",
    "PARTIAL_SUFFIX",
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
    "format_kek",
    "generate_kek",
    "kek_id",
    "load_kek",
    "read_header",
    "reencrypt_dir",
    "reencrypt_file",
    "reencrypt_stream",
    "rekey_in_place",
    "remove_leftovers",
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


KEY_FORMS: Final = (
    "32 raw bytes, or one line 'base64:<44 base64 characters>' or 'hex:<64 hex digits>'"
)
"""The key file format, named in every rejection."""

_B64_KEY = re.compile(rb"[A-Za-z0-9+/]{43}=")
_HEX_KEY = re.compile(rb"[0-9A-Fa-f]{64}")
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def format_kek(kek: bytes) -> bytes:
    """The text form of a KEK that ``secureai dataset keygen`` writes: ``base64:<44>\\n``."""
    return b"base64:" + base64.b64encode(_check_kek(kek)) + b"\n"


def load_kek(source: str | os.PathLike[str] | bytes | bytearray) -> bytes:
    """Load a 32-byte KEK.

    ``bytes`` are key material as read from a file or a Secret; ``str`` or a path names a file.
    The one accepted format (:data:`KEY_FORMS`): exactly 32 raw bytes that are not text, or one
    line ``base64:`` + the 44-character standard base64 of 32 bytes, or ``hex:`` + 64 hex
    digits, optionally ending with a newline. The bare 44-character base64 line written by
    ``secureai dataset keygen`` before the prefix was introduced is still read. Anything else
    (a passphrase, a 128-bit key, a line with stray spaces) raises ``InvalidKeyError``.
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


def _canonical_b64(body: bytes) -> bytes | None:
    """The 32 bytes of a canonical 44-character base64 key, else None."""
    if not _B64_KEY.fullmatch(body):
        return None
    decoded = base64.b64decode(body, validate=True)
    return decoded if base64.b64encode(decoded) == body else None


def _parse_kek(data: bytes) -> bytes:
    if len(data) == KEK_SIZE and not set(data) <= _TEXT_BYTES:
        return data  # raw binary key (a random key is text with probability < 1e-13)
    line = data[:-1] if data.endswith(b"\n") else data
    if line.startswith(b"base64:"):
        key = _canonical_b64(line[7:])
        if key is None:
            raise InvalidKeyError(
                f"invalid KEK: 'base64:' must be followed by exactly 44 characters of standard "
                f"base64 encoding 32 bytes (expected {KEY_FORMS})"
            )
        return key
    if line.startswith(b"hex:"):
        if not _HEX_KEY.fullmatch(line[4:]):
            raise InvalidKeyError(
                f"invalid KEK: 'hex:' must be followed by exactly 64 hex digits "
                f"(expected {KEY_FORMS})"
            )
        return bytes.fromhex(line[4:].decode("ascii"))
    legacy = _canonical_b64(line)  # what keygen wrote before the prefix existed
    if legacy is not None:
        return legacy
    raise InvalidKeyError(f"invalid KEK: {_describe(data)} (expected {KEY_FORMS})")


def _describe(data: bytes) -> str:
    """Why ``data`` is not a key, without echoing any of it."""
    if not set(data) <= _TEXT_BYTES:
        return f"{len(data)} bytes of binary data"
    line = data.strip()
    if _HEX_KEY.fullmatch(line):
        return "hex text needs the 'hex:' prefix"
    if line != data.rstrip(b"\n") or data.endswith(b"\n\n"):
        return "text with surrounding whitespace"
    if len(data) == KEK_SIZE or len(line) == KEK_SIZE:
        return "32 characters of text (a passphrase or a 128-bit hex key is not a 256-bit key)"
    return f"{len(line)} characters of text"


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
    yield from _chunks_after_header(src, _open_header(_read_header_bytes(src), kek))


def _chunks_after_header(
    src: BinaryIO, opened: tuple[AESGCM, int, bytes, bytes]
) -> Iterator[memoryview | bytes]:
    aead, chunk_size, prefix, header = opened
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

    def __init__(
        self,
        src: BinaryIO,
        kek: bytes,
        *,
        _opened: tuple[AESGCM, int, bytes, bytes] | None = None,
    ) -> None:
        super().__init__()
        self._chunks = (
            _plaintext_chunks(src, _check_kek(kek))
            if _opened is None
            else _chunks_after_header(src, _opened)
        )
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
    chunk_size: int | None = None,
) -> int:
    """Re-encrypt an envelope under ``new_kek`` (fresh data key) without materialising it.

    The output keeps the source's chunk size unless ``chunk_size`` is given.
    """
    opened = _open_header(_read_header_bytes(src), _check_kek(old_kek))
    reader = DecryptingReader(src, old_kek, _opened=opened)
    size = opened[1] if chunk_size is None else chunk_size
    return encrypt_stream(cast(BinaryIO, reader), dst, new_kek, chunk_size=size)


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


# --- output files: nothing readable under a final name until complete -----------------------
#
# A file being written has no name at all (O_TMPFILE, linked in with linkat once complete)
# where the filesystem supports it; otherwise it has a recognisable temporary name
# (".<name>.<random>.secureai-partial"). Either way its writer holds an exclusive flock on it,
# so a later run can tell a leftover of a killed writer (no lock holder) from a file still in
# progress, and removes only the former. Directory trees are built in a locked staging
# directory of the same recognisable form inside the destination.

PARTIAL_SUFFIX: Final = ".secureai-partial"
_USE_O_TMPFILE = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
_UNSUPPORTED_TMPFILE: Final = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
_STAGE_TREE: Final = "tree"
_STAGE_ENTRIES: Final = "entries"


def _partial_name(stem: str) -> str:
    return f".{stem}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}"


def _is_partial(name: str) -> bool:
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _PendingFile:
    """An output file that gets its final name only in ``publish``; ``discard`` leaves nothing."""

    def __init__(self, dst: Path) -> None:
        self.dst = dst
        self.tmp: Path | None = None
        fd = -1
        if _USE_O_TMPFILE:
            try:
                fd = os.open(dst.parent, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED_TMPFILE:
                    raise
        if fd < 0:
            self.tmp = dst.parent / _partial_name(dst.name)
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fh: BinaryIO = os.fdopen(fd, "wb")

    def publish(self, *, replace: bool) -> None:
        """Make the complete file visible as ``dst`` (over an existing one only if ``replace``)."""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        if self.tmp is None:
            try:
                self._link_unnamed(self.dst)
            except FileExistsError:
                if not replace:
                    raise
                self.tmp = self.dst.parent / _partial_name(self.dst.name)
                self._link_unnamed(self.tmp)
                os.replace(self.tmp, self.dst)
        elif replace:
            os.replace(self.tmp, self.dst)
        else:
            try:
                os.link(self.tmp, self.dst)  # fails if dst appeared meanwhile
            except FileExistsError:
                raise
            except OSError:  # no hard links on this filesystem
                if self.dst.exists():
                    raise FileExistsError(errno.EEXIST, "file exists", str(self.dst)) from None
                os.rename(self.tmp, self.dst)
            else:
                os.unlink(self.tmp)
        self.tmp = None
        _fsync_dir(self.dst.parent)
        self.fh.close()

    def _link_unnamed(self, name: Path) -> None:
        # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N; os.link uses plain link() without a dir fd
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.link(str(self.fh.fileno()), name, src_dir_fd=proc, follow_symlinks=True)
        finally:
            os.close(proc)

    def discard(self) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
        self.fh.close()


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path``, or None if a live writer holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # gone, or a symlink (not ours)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_leftovers(directory: str | os.PathLike[str], stem: str | None = None) -> list[str]:
    """Remove partial outputs of killed runs from ``directory``; return their names.

    Only names of the recognisable form whose writer is gone (no flock holder) are touched;
    ``stem`` limits it to leftovers of one destination name. A staging tree whose commit was
    interrupted is rolled back: the entries it had already moved into ``directory`` go too.
    """
    directory = Path(directory)
    removed: list[str] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return removed
    for name in names:
        if not _is_partial(name) or (stem is not None and not name.startswith(f".{stem}.")):
            continue
        path = directory / name
        fd = _try_lock(path)
        if fd is None:
            continue
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                _roll_back_stage(path, directory)
                shutil.rmtree(path)
            else:
                path.unlink()
        finally:
            os.close(fd)
        removed.append(name)
    return removed


def _roll_back_stage(stage: Path, dst_dir: Path) -> None:
    """Undo an interrupted commit: remove the entries already moved out of the stage."""
    try:
        entries = (stage / _STAGE_ENTRIES).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return  # never started committing
    for name in entries:
        if not name or "/" in name or name in (".", ".."):
            continue
        if (stage / _STAGE_TREE / name).exists() or (stage / _STAGE_TREE / name).is_symlink():
            continue  # not moved yet
        moved = dst_dir / name
        if moved.is_dir() and not moved.is_symlink():
            shutil.rmtree(moved)
        else:
            moved.unlink(missing_ok=True)


def _transform_file(
    src_path: Path,
    dst_path: Path,
    op: Callable[[BinaryIO, BinaryIO], int],
    *,
    replace: bool = True,
) -> int:
    """Run ``op(src, out)``; ``dst_path`` appears only if it succeeds, and nothing otherwise."""
    dst_path = Path(dst_path)
    with Path(src_path).open("rb") as src:
        out = _PendingFile(dst_path)
        try:
            size = op(src, out.fh)
            out.publish(replace=replace)
        except BaseException:
            out.discard()
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
    remove_leftovers(Path(dst_path).parent, Path(dst_path).name)
    return _transform_file(
        Path(src_path),
        Path(dst_path),
        lambda src, dst: encrypt_stream(src, dst, kek, chunk_size=chunk_size),
    )


def decrypt_file(
    src_path: str | os.PathLike[str], dst_path: str | os.PathLike[str], kek: bytes
) -> int:
    """Decrypt one file; ``dst_path`` appears (mode 0600) only if every chunk authenticates.

    Partial plaintext never has a name where ``O_TMPFILE`` works; elsewhere it has a locked,
    recognisable temporary name that this function removes on any exception and that the next
    call for the same destination removes if a killed run left it behind.
    """
    remove_leftovers(Path(dst_path).parent, Path(dst_path).name)
    return _transform_file(
        Path(src_path), Path(dst_path), lambda src, dst: decrypt_stream(src, dst, kek)
    )


def reencrypt_file(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    old_kek: bytes,
    new_kek: bytes,
    *,
    chunk_size: int | None = None,
) -> int:
    """KEK rotation for one file (``dst_path`` may equal ``src_path``); atomic like the others.

    The chunk size is the source's unless ``chunk_size`` is given.
    """
    remove_leftovers(Path(dst_path).parent, Path(dst_path).name)
    return _transform_file(
        Path(src_path),
        Path(dst_path),
        lambda src, dst: reencrypt_stream(src, dst, old_kek, new_kek, chunk_size=chunk_size),
    )


def _raise(exc: OSError) -> None:
    raise exc


def _walk_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (relative, sorted); symlinks and special files are refused.

    Partial outputs (``.*.secureai-partial``) are never part of a tree.
    """
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        base = Path(dirpath)
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                raise EnvelopeError(f"refusing symlink: {base / name}")
        dirnames[:] = sorted(d for d in dirnames if not _is_partial(d))
        for name in sorted(filenames):
            if _is_partial(name):
                continue
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
    """Build the tree in a locked staging directory inside ``dst_dir``, then move it in.

    ``dst_dir`` itself is never renamed or replaced, so it may be a mount point. Nothing is
    created outside it (except ``dst_dir`` itself when absent, removed again on failure).
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise EnvelopeError(f"not a directory: {src_dir}")
    if dst_dir.resolve().is_relative_to(src_dir.resolve()):
        raise EnvelopeError(f"destination is inside the source directory: {dst_dir}")
    created = False
    if dst_dir.is_dir() and not dst_dir.is_symlink():
        remove_leftovers(dst_dir)
        if any(dst_dir.iterdir()):
            raise EnvelopeError(f"destination exists and is not an empty directory: {dst_dir}")
    elif dst_dir.exists() or dst_dir.is_symlink():
        raise EnvelopeError(f"destination exists and is not an empty directory: {dst_dir}")
    else:
        dst_dir.mkdir(parents=True, mode=0o700)
        created = True
    stage = Path(tempfile.mkdtemp(prefix=".stage.", suffix=PARTIAL_SUFFIX, dir=dst_dir))
    lock = os.open(stage, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    files = total = 0
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tree = stage / _STAGE_TREE
        tree.mkdir()
        for rel in _walk_files(src_dir):
            target = tree / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            op: Callable[[BinaryIO, BinaryIO], int]
            if encrypt:
                op = lambda s, d: encrypt_stream(s, d, kek, chunk_size=chunk)  # noqa: E731
            else:
                op = lambda s, d: decrypt_stream(s, d, kek)  # noqa: E731
            try:
                total += _transform_file(src_dir / rel, target, op, replace=False)
            except EnvelopeError as exc:
                raise type(exc)(f"{rel}: {exc}") from None
            files += 1
        entries = sorted(os.listdir(tree))
        (stage / _STAGE_ENTRIES).write_text("".join(f"{n}\n" for n in entries), "utf-8")
        for name in entries:  # the commit: renames only, rolled back if interrupted
            os.rename(tree / name, dst_dir / name)
        shutil.rmtree(stage)
        _fsync_dir(dst_dir)
    except BaseException:
        _roll_back_stage(stage, dst_dir)
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(dst_dir, ignore_errors=True)
        raise
    finally:
        os.close(lock)
    return files, total


def encrypt_dir(
    src_dir: str | os.PathLike[str],
    dst_dir: str | os.PathLike[str],
    kek: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[int, int]:
    """Encrypt every file of a tree (same relative names). Returns (files, plaintext bytes).

    ``dst_dir`` must be absent or an empty directory (a mount point is fine); the tree is built
    in a hidden staging directory inside it and moved into place on success.
    """
    return _transform_dir(Path(src_dir), Path(dst_dir), kek, encrypt=True, chunk=chunk_size)


def decrypt_dir(
    src_dir: str | os.PathLike[str], dst_dir: str | os.PathLike[str], kek: bytes
) -> tuple[int, int]:
    """Decrypt a tree made by ``encrypt_dir`` into ``dst_dir`` (absent or an empty directory,
    for example an emptyDir mount point). Nothing appears in it unless every file
    authenticates, and nothing is ever created beside it. Returns (files, plaintext bytes)."""
    return _transform_dir(Path(src_dir), Path(dst_dir), kek, encrypt=False, chunk=0)


def _authenticate(path: Path, kek: bytes) -> None:
    with path.open("rb") as fh:
        for _ in _plaintext_chunks(fh, kek):
            pass


def reencrypt_dir(
    root: str | os.PathLike[str],
    old_kek: bytes,
    new_kek: bytes,
    *,
    chunk_size: int | None = None,
) -> tuple[int, int]:
    """Rotate every envelope under ``root`` in place from ``old_kek`` to ``new_kek``.

    Each file is replaced atomically and keeps its chunk size unless ``chunk_size`` is given.
    Resumable whenever it was interrupted: partial outputs left by a killed run are removed,
    and a file already under ``new_kek`` is skipped only after it fully authenticates under
    it. Returns (rotated, skipped).
    """
    root = Path(root)
    if not root.is_dir():
        raise EnvelopeError(f"not a directory: {root}")
    new_id = kek_id(new_kek)
    _check_kek(old_kek)
    for dirpath, dirnames, _ in os.walk(root, onerror=_raise):
        remove_leftovers(dirpath)
        dirnames[:] = [d for d in dirnames if not _is_partial(d)]
    rotated = skipped = 0
    for rel in list(_walk_files(root)):
        try:
            done = rekey_in_place(root / rel, old_kek, new_kek, chunk_size=chunk_size, _id=new_id)
        except EnvelopeError as exc:
            raise type(exc)(f"{rel}: {exc}") from None
        rotated += done
        skipped += not done
    return rotated, skipped


def rekey_in_place(
    path: str | os.PathLike[str],
    old_kek: bytes,
    new_kek: bytes,
    *,
    chunk_size: int | None = None,
    _id: str | None = None,
) -> bool:
    """Rotate one envelope in place; False (skipped) if it already fully authenticates under
    ``new_kek``, so rerunning an interrupted rotation converges."""
    path = Path(path)
    with path.open("rb") as fh:
        current = read_header(fh).kek_id
    if current == (_id or kek_id(new_kek)):
        _authenticate(path, new_kek)
        return False
    reencrypt_file(path, path, old_kek, new_kek, chunk_size=chunk_size)
    return True
