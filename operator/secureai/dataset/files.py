"""Finding a dataset's files, telling their format, and reading them (plain or envelope).

An envelope is decrypted in memory, chunk by authenticated chunk (``secureai.crypto``); the
plaintext is never written anywhere by this module.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from secureai.crypto import DecryptingReader, EnvelopeError
from secureai.crypto.envelope import MAGIC

READ_SIZE = 1 << 20
SNIFF_SIZE = 64 << 10
# An encrypted Parquet file must be decrypted whole (its footer is at the end): up to this.
MAX_ENCRYPTED_PARQUET = 64 << 20

TEXT_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
PARQUET_MAGIC = b"PAR1"
# Formats recognised by their first bytes that are not readable as text.
_BINARY_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "zip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x89PNG", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"%PDF", "pdf"),
    (b"\x93NUMPY", "numpy"),
    (b"ARROW1", "arrow"),
    (b"Obj\x01", "avro"),
    (b"ORC", "orc"),
)


class DatasetError(Exception):
    """A failure that stops the whole command (the message is one line, safe to show)."""


class Unreadable(Exception):
    """This file cannot be read as a supported format; reported, the command goes on."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of the dataset: ``rel`` is its name relative to the dataset root."""

    rel: str
    path: Path
    size: int


def walk(root: Path) -> Iterator[Entry | tuple[str, str]]:
    """Regular files under ``root`` (sorted); anything else as ``(rel, reason)``."""
    try:
        st = root.lstat()
    except OSError as exc:
        raise DatasetError(f"{root}: {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        yield Entry(root.name, root, st.st_size)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise DatasetError(f"{root}: not a regular file or directory")

    def fail(exc: OSError) -> None:
        raise DatasetError(f"{exc.filename}: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        base = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                yield (str((base / name).relative_to(root)), "symlink (not followed)")
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            full = base / name
            rel = str(full.relative_to(root))
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                yield (rel, "symlink (not followed)")
            elif not stat.S_ISREG(mode):
                yield (rel, "not a regular file")
            else:
                yield Entry(rel, full, full.stat().st_size)


class _Prefixed(io.RawIOBase):
    """``head`` followed by the rest of ``src`` (so sniffed bytes are not read twice)."""

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._src = src

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        got = self._src.readinto(view)  # type: ignore[attr-defined]
        return int(got or 0)


def _read_some(src: BinaryIO, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    total = 0
    while total < size:
        n = src.readinto(view[total:])  # type: ignore[attr-defined]
        if not n:
            break
        total += n
    return bytes(buf[:total])


_CONTROL = bytes(c for c in range(32) if chr(c) not in "\t\n\r\f\b\x1b") + b"\x7f"


def _looks_binary(head: bytes) -> bool:
    """Not UTF-8 and full of control or high bytes: not text in any common encoding."""
    if not head:
        return False
    try:
        head.decode("utf-8")
        return False
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3:  # a character cut by the sniff window
            return False
    control = len(head) - len(head.translate(None, _CONTROL))
    high = sum(head.count(bytes([b])) for b in range(128, 256))
    return control > len(head) // 20 or high > len(head) * 3 // 10


def sniff(head: bytes, name: str) -> tuple[str, str | None]:
    """(format, why it cannot be read or None) of a plaintext file's first bytes and name."""
    if head.startswith(PARQUET_MAGIC):
        return "parquet", None
    for magic, fmt in _BINARY_MAGIC:
        if head.startswith(magic):
            return fmt, f"unsupported format ({fmt})"
    if b"\x00" in head or _looks_binary(head):
        return "binary", "binary data (not text, CSV, JSON Lines or Parquet)"
    return TEXT_SUFFIXES.get(Path(name).suffix.lower(), "text"), None


@dataclass(slots=True)
class Opened:
    """An opened dataset file: its plaintext ``stream`` and what it is."""

    stream: BinaryIO
    format: str
    encrypted: bool
    unreadable: str | None = None  # why the format cannot be scanned


@contextmanager
def open_plain(entry: Entry, kek: bytes | None) -> Iterator[Opened]:
    """Open ``entry``'s plaintext (decrypting an envelope in memory when ``kek`` is given)."""
    with entry.path.open("rb") as fh:
        magic = fh.read(len(MAGIC))
        fh.seek(0)
        encrypted = magic == MAGIC
        src: BinaryIO = fh
        if encrypted:
            if kek is None:
                raise Unreadable("envelope-encrypted (pass --key to scan it)")
            src = cast(BinaryIO, DecryptingReader(fh, kek))
        try:
            head = _read_some(src, SNIFF_SIZE)
        except EnvelopeError as exc:
            raise DatasetError(f"{entry.rel}: {exc}") from None
        fmt, why = sniff(head, entry.rel)
        yield Opened(cast(BinaryIO, _Prefixed(head, src)), fmt, encrypted, why)


def read_chunks(opened: Opened, rel: str, size: int = READ_SIZE) -> Iterator[bytes]:
    """The plaintext in pieces of at most ``size`` bytes; tampering is a DatasetError."""
    buf = bytearray(size)
    view = memoryview(buf)
    src = opened.stream
    while True:
        try:
            n = _read_into(src, view)
        except EnvelopeError as exc:
            raise DatasetError(f"{rel}: {exc}") from None
        if not n:
            return
        yield bytes(view[:n])


def _read_into(src: BinaryIO, view: memoryview) -> int:
    total = 0
    while total < len(view):
        n = src.readinto(view[total:])  # type: ignore[attr-defined]
        if not n:
            break
        total += n
    return total


def read_all(opened: Opened, rel: str, limit: int) -> bytes:
    """The whole plaintext (for an encrypted Parquet file), refusing more than ``limit``."""
    out = bytearray()
    for piece in read_chunks(opened, rel):
        out += piece
        if len(out) > limit:
            raise Unreadable(
                f"encrypted Parquet larger than {limit >> 20} MiB cannot be read in bounded "
                "memory (decrypt it to a memory volume first)"
            )
    return bytes(out)
