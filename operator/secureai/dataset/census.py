"""Scanning and pseudonymising a dataset's files, streaming in bounded memory.

Text, CSV and JSON Lines are read as a byte stream in 1 MiB pieces (Latin-1, so offsets are
byte offsets) through the shared detection engine's prefilter (``secureai.pii.prefilter``):
the detectors run only on the windows around candidate bytes, and a window still open at the
end of a piece is carried into the next, so a value split across pieces or lines is found
whole. Parquet is read batch by batch with pyarrow, each string cell scanned on its own.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from secureai.dataset.detect import ENCODING, Engine, Match
from secureai.dataset.files import (
    MAX_ENCRYPTED_PARQUET,
    DatasetError,
    Entry,
    Opened,
    Unreadable,
    read_all,
    read_chunks,
)
from secureai.dataset.pseudonym import Pseudonymizer

SCHEMA = "secureai.dev/dataset-census/v1"
SUMMARY_SCHEMA = "secureai.dev/dataset-census-summary/v1"
PARQUET_BATCH_ROWS = 4096

Progress = Callable[[int], None]


def _nothing(_: int) -> None:
    return None


@dataclass
class FileResult:
    """What one file holds (counts and locations, never values)."""

    path: str
    size: int
    format: str | None = None
    encrypted: bool = False
    bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    locations: list[dict[str, Any]] = field(default_factory=list)
    locations_truncated: bool = False
    unscanned_columns: list[str] = field(default_factory=list)
    error: str | None = None

    def add(self, kind: str, where: dict[str, Any], max_locations: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.locations) < max_locations:
            self.locations.append(where)
        else:
            self.locations_truncated = True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "format": self.format,
            "encrypted": self.encrypted,
            "bytes": self.bytes,
            "findings": sum(self.counts.values()),
            "counts": dict(sorted(self.counts.items())),
            "locations": self.locations,
            "locations_truncated": self.locations_truncated,
        }
        if self.unscanned_columns:
            out["unscanned_columns"] = self.unscanned_columns
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Census:
    """The census of a file or a directory tree."""

    path: str
    types: tuple[str, ...]
    files: list[FileResult] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for f in self.files:
            for k, v in f.counts.items():
                total[k] = total.get(k, 0) + v
        return dict(sorted(total.items()))

    def unreadable(self) -> int:
        return sum(1 for f in self.files if f.error is not None or f.unscanned_columns)

    def totals(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "files": len(self.files),
            "scanned": sum(1 for f in self.files if f.error is None),
            "unreadable": self.unreadable(),
            "bytes": sum(f.bytes for f in self.files),
            "findings": sum(counts.values()),
            "counts": counts,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "path": self.path,
            "types": list(self.types),
            "totals": self.totals(),
            "files": [f.to_json() for f in self.files],
        }

    def violation(self, allowed: Iterable[str]) -> str | None:
        """One line naming the forbidden types found and their counts, or None."""
        ok = set(allowed)
        bad = {k: v for k, v in self.counts().items() if k not in ok and v}
        parts = []
        if bad:
            found = ", ".join(f"{k}={v}" for k, v in bad.items())
            allowed_txt = ", ".join(sorted(ok)) or "none"
            parts.append(f"personal data the policy forbids: {found} (allowed: {allowed_txt})")
        if self.unreadable():
            parts.append(f"{self.unreadable()} file(s) could not be fully scanned")
        return "; ".join(parts) if parts else None

    def summary(self, allowed: Iterable[str] | None, violation: str | None) -> dict[str, Any]:
        """The compact form written to a termination message (well under 4 KiB)."""
        totals = self.totals()
        return {
            "schema": SUMMARY_SCHEMA,
            "files": totals["files"],
            "scanned": totals["scanned"],
            "unreadable": totals["unreadable"],
            "bytes": totals["bytes"],
            "counts": totals["counts"],
            "allowed": None if allowed is None else sorted(set(allowed)),
            "violation": violation,
        }


# --------------------------------------------------------------------------- text


def text_pass(
    chunks: Iterable[bytes],
    engine: Engine,
    result: FileResult,
    max_locations: int,
    progress: Progress,
    pseudo: Pseudonymizer | None = None,
) -> Iterator[bytes]:
    """Scan a byte stream; yield the (pseudonymised when ``pseudo``) output pieces."""
    stream = engine.stream()
    line = 1

    def handle(piece: tuple[int, bytes, list[Match]]) -> bytes:
        nonlocal line
        offset, data, matches = piece
        if matches:
            cur, cur_line = 0, line
            for m in matches:
                rel = m.start - offset
                cur_line += data.count(b"\n", cur, rel)
                cur = rel
                where = {"type": m.type, "offset": m.start, "line": cur_line}
                where["length"] = m.end - m.start
                result.add(m.type, where, max_locations)
        line += data.count(b"\n")
        if pseudo is None:
            return b""
        if matches:
            out: list[bytes] = []
            cur = 0
            for m in matches:
                s, e = m.start - offset, m.end - offset
                out.append(data[cur:s])
                out.append(pseudo(m.type, data[s:e].decode(ENCODING)).encode(ENCODING))
                cur = e
            out.append(data[cur:])
            return b"".join(out)
        return data

    for chunk in chunks:
        result.bytes += len(chunk)
        progress(len(chunk))
        yield handle(stream.feed(chunk))
    yield handle(stream.flush())


# --------------------------------------------------------------------------- parquet


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa  # noqa: PLC0415 - optional, heavy: only for Parquet files
        import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError:
        raise Unreadable("Parquet needs pyarrow (pip install 'secureai[parquet]')") from None
    return pa, pq


def _parquet_source(opened: Opened, entry: Entry) -> Any:
    pa, _ = _pyarrow()
    if opened.encrypted:
        return pa.BufferReader(read_all(opened, entry.rel, MAX_ENCRYPTED_PARQUET))
    return str(entry.path)


def _parquet_pass(
    opened: Opened,
    entry: Entry,
    engine: Engine,
    result: FileResult,
    max_locations: int,
    progress: Progress,
    pseudo: Pseudonymizer | None = None,
    sink: BinaryIO | None = None,
) -> None:
    pa, pq = _pyarrow()
    try:
        pf = pq.ParquetFile(_parquet_source(opened, entry))
    except (pa.ArrowException, OSError) as exc:
        raise Unreadable(f"not a readable Parquet file ({type(exc).__name__})") from None
    schema = pf.schema_arrow
    texty = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary)
    text_cols: set[int] = set()
    for i, f in enumerate(schema):
        if any(t(f.type) for t in (*texty, pa.types.is_large_binary)):
            text_cols.add(i)
        elif pa.types.is_nested(f.type) or pa.types.is_dictionary(f.type):
            result.unscanned_columns.append(f.name)
    if pseudo is not None and result.unscanned_columns:
        raise DatasetError(
            f"{entry.rel}: cannot pseudonymise nested Parquet columns "
            f"({', '.join(result.unscanned_columns)})"
        )
    writer = None
    if sink is not None:
        writer = pq.ParquetWriter(sink, schema)
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            cols = []
            for i, col in enumerate(batch.columns):
                if i not in text_cols:
                    cols.append(col)
                    continue
                name = schema.field(i).name
                binary = not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type))
                new: list[Any] = []
                for r, value in enumerate(col.to_pylist()):
                    if value is None:
                        new.append(None)
                        continue
                    text = value.decode(ENCODING) if binary else value
                    matches = engine.find(text)
                    for m in matches:
                        where = {"type": m.type, "row": row + r, "column": name}
                        where.update(offset=m.start, length=m.end - m.start)
                        result.add(m.type, where, max_locations)
                    if pseudo is not None and matches:
                        text = _replace(text, matches, pseudo)
                        new.append(text.encode(ENCODING) if binary else text)
                    else:
                        new.append(value)
                cols.append(pa.array(new, type=col.type) if pseudo is not None else col)
            row += batch.num_rows
            result.bytes += batch.nbytes
            progress(0)
            if writer is not None:
                writer.write_batch(pa.record_batch(cols, schema=schema))
    finally:
        if writer is not None:
            writer.close()


def _replace(text: str, matches: list[Match], pseudo: Pseudonymizer) -> str:
    out: list[str] = []
    cur = 0
    for m in matches:
        out.append(text[cur : m.start])
        out.append(pseudo(m.type, text[m.start : m.end]))
        cur = m.end
    out.append(text[cur:])
    return "".join(out)


# --------------------------------------------------------------------------- entry points


def scan_file(
    opened: Opened,
    entry: Entry,
    engine: Engine,
    result: FileResult,
    max_locations: int,
    progress: Progress = _nothing,
) -> None:
    result.format, result.encrypted = opened.format, opened.encrypted
    if opened.unreadable is not None:
        raise Unreadable(opened.unreadable)
    if opened.format == "parquet":
        _parquet_pass(opened, entry, engine, result, max_locations, progress)
        return
    for _ in text_pass(read_chunks(opened, entry.rel), engine, result, max_locations, progress):
        pass


def pseudonymize_file(
    opened: Opened,
    entry: Entry,
    engine: Engine,
    result: FileResult,
    pseudo: Pseudonymizer,
    sink: BinaryIO,
    progress: Progress = _nothing,
) -> None:
    """Write the pseudonymised plaintext of one file to ``sink``."""
    result.format, result.encrypted = opened.format, opened.encrypted
    if opened.unreadable is not None:
        raise DatasetError(f"{entry.rel}: cannot pseudonymise: {opened.unreadable}")
    if opened.format == "parquet":
        if sink.seekable():
            _parquet_pass(opened, entry, engine, result, 0, progress, pseudo, sink)
            return
        buf = io.BytesIO()  # bounded: only encrypted Parquet (<= MAX_ENCRYPTED_PARQUET) is piped
        _parquet_pass(opened, entry, engine, result, 0, progress, pseudo, buf)
        sink.write(buf.getvalue())
        return
    for piece in text_pass(read_chunks(opened, entry.rel), engine, result, 0, progress, pseudo):
        sink.write(piece)
