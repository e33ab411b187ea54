"""Whole-dataset operations: scan, scan while decrypting, pseudonymise (all or nothing).

Outputs are built under temporary names inside the destination's directory and renamed into
place only when every file succeeded; any failure or interruption (the CLI turns SIGTERM into
an exception) removes them, so no partial output is ever left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from secureai.crypto import EnvelopeError, encrypt_stream
from secureai.dataset.census import (
    Census,
    FileResult,
    Progress,
    pseudonymize_file,
    scan_file,
    text_pass,
)
from secureai.dataset.detect import Engine
from secureai.dataset.files import (
    DatasetError,
    Entry,
    Unreadable,
    open_plain,
    read_chunks,
    walk,
)
from secureai.dataset.pseudonym import Pseudonymizer


def _nothing(_: int) -> None:
    return None


def dataset_size(root: Path) -> int:
    return sum(e.size for e in walk(root) if isinstance(e, Entry))


def scan(
    root: Path,
    engine: Engine,
    *,
    kek: bytes | None = None,
    max_locations: int = 100,
    progress: Progress = _nothing,
    copy_to: Path | None = None,
) -> Census:
    """Census of a file or tree; with ``copy_to``, also write its plaintext there (all or
    nothing: the tree appears in ``copy_to`` only when every file was read)."""
    census = Census(str(root), engine.types)
    with _staged_dir(copy_to) as stage:
        for item in walk(root):
            if not isinstance(item, Entry):
                census.files.append(FileResult(item[0], 0, error=item[1]))
                continue
            result = FileResult(item.rel, item.size)
            census.files.append(result)
            seen = 0

            def tick(n: int) -> None:
                nonlocal seen
                seen += n
                progress(n)

            try:
                if stage is None:
                    with open_plain(item, kek) as opened:
                        scan_file(opened, item, engine, result, max_locations, tick)
                else:
                    _scan_and_copy(item, engine, result, max_locations, tick, kek, stage)
            except Unreadable as exc:
                result.error = str(exc)
            progress(max(0, item.size - seen))
    return census


def _scan_and_copy(
    entry: Entry,
    engine: Engine,
    result: FileResult,
    max_locations: int,
    progress: Progress,
    kek: bytes | None,
    stage: Path,
) -> None:
    target = stage / entry.rel
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_plain(entry, kek) as opened, _create(target) as out:
        result.format, result.encrypted = opened.format, opened.encrypted
        if opened.format == "parquet" or opened.unreadable is not None:
            for piece in read_chunks(opened, entry.rel):
                out.write(piece)
            out.flush()
            if opened.unreadable is not None:
                raise Unreadable(opened.unreadable)
            with open_plain(Entry(entry.rel, target, entry.size), None) as copy:
                copy.encrypted = opened.encrypted
                scan_file(copy, Entry(entry.rel, target, entry.size), engine, result, max_locations)
            return

        def tee(chunks: Iterator[bytes]) -> Iterator[bytes]:
            for c in chunks:
                out.write(c)
                yield c

        chunks = tee(read_chunks(opened, entry.rel))
        for _ in text_pass(chunks, engine, result, max_locations, progress):
            pass
        result.encrypted = opened.encrypted


def _create(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


@contextmanager
def _staged_dir(dst: Path | None) -> Iterator[Path | None]:
    """A temporary directory inside ``dst`` whose contents move into ``dst`` on success."""
    if dst is None:
        yield None
        return
    if not dst.is_dir():
        raise DatasetError(f"not a directory: {dst}")
    if any(dst.iterdir()):
        raise DatasetError(f"destination is not empty: {dst}")
    stage = Path(tempfile.mkdtemp(prefix=".secureai-partial-", dir=dst))
    try:
        yield stage
        for child in sorted(stage.iterdir()):
            os.replace(child, dst / child.name)
        stage.rmdir()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for child in dst.iterdir():  # a rename loop cut short: dst held nothing before
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        raise


@contextmanager
def _encrypting(dst: BinaryIO, kek: bytes) -> Iterator[BinaryIO]:
    """A writable stream whose bytes are envelope-encrypted into ``dst`` (bounded memory)."""
    r, w = os.pipe()
    errors: list[BaseException] = []

    def run() -> None:
        with os.fdopen(r, "rb") as src:
            try:
                encrypt_stream(src, dst, kek)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                src.read()  # drain so the writer is never stuck on a full pipe

    thread = threading.Thread(target=run, name="encrypt", daemon=True)
    thread.start()
    writer = os.fdopen(w, "wb")
    try:
        yield writer
    finally:
        writer.close()
        thread.join()
    if errors:
        raise errors[0]


def pseudonymize(
    src: Path,
    dst: Path,
    engine: Engine,
    pseudo: Pseudonymizer,
    *,
    kek: bytes | None = None,
    new_kek: bytes | None = None,
    progress: Progress = _nothing,
) -> Census:
    """Pseudonymise a file into a file, or a tree into a new tree; all or nothing.

    Each envelope-encrypted input file gives an envelope under ``new_kek`` (default ``kek``)
    with a fresh data key; plaintext files stay plaintext.
    """
    census = Census(str(src), engine.types)
    if not src.exists():
        raise DatasetError(f"not found: {src}")
    if src.is_dir():
        if dst.resolve().is_relative_to(src.resolve()):
            raise DatasetError(f"destination is inside the source: {dst}")
        if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
            raise DatasetError(f"destination exists and is not an empty directory: {dst}")
    elif dst.is_dir():
        raise DatasetError(f"destination is a directory: {dst}")
    elif dst.exists():
        raise DatasetError(f"destination exists: {dst}")
    if not dst.parent.is_dir():
        raise DatasetError(f"destination directory not found: {dst.parent}")
    out_kek = new_kek or kek

    def each(into: Path) -> None:
        for item in walk(src):
            if not isinstance(item, Entry):
                raise DatasetError(f"{item[0]}: cannot pseudonymise: {item[1]}")
            target = into if not src.is_dir() else into / item.rel
            target.parent.mkdir(parents=True, exist_ok=True)
            result = FileResult(item.rel, item.size)
            census.files.append(result)
            _pseudonymize_one(item, target, engine, pseudo, result, kek, out_kek, progress)

    if src.is_dir() and dst.is_dir():  # an existing empty directory (a mount point, say)
        with _staged_dir(dst) as stage:
            assert stage is not None
            each(stage)
        return census
    if src.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        each(tmp)
        os.replace(tmp, dst)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    return census


def _pseudonymize_one(
    entry: Entry,
    target: Path,
    engine: Engine,
    pseudo: Pseudonymizer,
    result: FileResult,
    kek: bytes | None,
    out_kek: bytes | None,
    progress: Progress,
) -> None:
    try:
        with open_plain(entry, kek) as opened, target.open("wb") as out:
            os.fchmod(out.fileno(), 0o600)
            if opened.encrypted:
                if out_kek is None:  # open_plain needs a key to get here
                    raise DatasetError(f"{entry.rel}: no key to encrypt the output")
                with _encrypting(out, out_kek) as sink:
                    pseudonymize_file(opened, entry, engine, result, pseudo, sink, progress)
            else:
                pseudonymize_file(opened, entry, engine, result, pseudo, out, progress)
            out.flush()
            os.fsync(out.fileno())
    except Unreadable as exc:
        raise DatasetError(f"{entry.rel}: cannot pseudonymise: {exc}") from None
    except EnvelopeError as exc:
        raise DatasetError(f"{entry.rel}: {exc}") from None
