"""Envelope encryption: round trips, every tamper class, atomic output, bounded memory."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secureai.crypto import envelope as env
from secureai.crypto.envelope import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    EnvelopeError,
    EnvelopeFormatError,
    HeaderTamperedError,
    InvalidKeyError,
    TamperedError,
    TrailingDataError,
    TruncatedError,
    UnsupportedVersionError,
    WrongKeyError,
    decrypt_dir,
    decrypt_file,
    decrypt_stream,
    encrypt_dir,
    encrypt_file,
    encrypt_stream,
    generate_kek,
    kek_id,
    load_kek,
)

KEK = bytes(range(32))
OTHER_KEK = bytes(range(1, 33))
CS = 64  # small chunk size so tamper tests cover many chunks cheaply
GIB = 1 << 30


def enc(data: bytes, kek: bytes = KEK, chunk_size: int = CS) -> bytes:
    out = io.BytesIO()
    assert encrypt_stream(io.BytesIO(data), out, kek, chunk_size=chunk_size) == len(data)
    return out.getvalue()


def dec(blob: bytes, kek: bytes = KEK) -> bytes:
    out = io.BytesIO()
    n = decrypt_stream(io.BytesIO(blob), out, kek)
    assert n == len(out.getvalue())
    return out.getvalue()


def det_bytes(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def split(blob: bytes, chunk_size: int = CS) -> tuple[bytes, list[bytes]]:
    """Header and the list of sealed chunk records of an envelope."""
    rec = chunk_size + TAG_SIZE
    body = blob[HEADER_SIZE:]
    return blob[:HEADER_SIZE], [body[i : i + rec] for i in range(0, len(body), rec)]


def flip(blob: bytes, pos: int, bit: int = 0) -> bytes:
    b = bytearray(blob)
    b[pos] ^= 1 << bit
    return bytes(b)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        DEFAULT_CHUNK_SIZE - 1,
        DEFAULT_CHUNK_SIZE,
        DEFAULT_CHUNK_SIZE + 1,
        3 * DEFAULT_CHUNK_SIZE,
    ],
)
def test_round_trip_default_chunk(size: int) -> None:
    data = det_bytes(size)
    blob = enc(data, chunk_size=DEFAULT_CHUNK_SIZE)
    chunks = max(1, -(-size // DEFAULT_CHUNK_SIZE))
    assert len(blob) == HEADER_SIZE + size + chunks * TAG_SIZE
    assert dec(blob) == data


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 2 * CS, 5 * CS + 7])
def test_round_trip_small_chunks(size: int) -> None:
    data = det_bytes(size)
    assert dec(enc(data)) == data


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=2000), chunk_size=st.integers(16, 300))
def test_round_trip_property(data: bytes, chunk_size: int) -> None:
    assert dec(enc(data, chunk_size=chunk_size)) == data


def test_fresh_data_key_and_nonce_per_encryption() -> None:
    data = det_bytes(500)
    a, b = enc(data), enc(data)
    assert a != b
    assert a[env._FIXED.size : env._FIXED.size + 16] == b[env._FIXED.size : env._FIXED.size + 16]
    assert data not in a


def test_short_reads_from_source_are_handled() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.src = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> int:  # type: ignore[override]
            return self.src.readinto(memoryview(b)[:7])

    data = det_bytes(1000)
    out = io.BytesIO()
    encrypt_stream(Trickle(data), out, KEK, chunk_size=CS)  # type: ignore[arg-type]
    assert out.getvalue()[HEADER_SIZE:] != b""
    back = io.BytesIO()
    decrypt_stream(Trickle(out.getvalue()), back, KEK)  # type: ignore[arg-type]
    assert back.getvalue() == data
    assert dec(out.getvalue()) == data


def test_chunk_size_bounds() -> None:
    with pytest.raises(EnvelopeError, match="chunk size"):
        enc(b"x", chunk_size=8)
    with pytest.raises(EnvelopeError, match="chunk size"):
        enc(b"x", chunk_size=env.MAX_CHUNK_SIZE + 1)


def test_read_header_reports_kek_id_without_decrypting() -> None:
    info = env.read_header(io.BytesIO(enc(b"abc")))
    assert info.kek_id == kek_id(KEK)
    assert info.chunk_size == CS
    assert info.version == 1


# --- tampering -------------------------------------------------------------------------------

DATA = det_bytes(4 * CS + 44)  # 5 chunks, the last one partial
BLOB = enc(DATA)
EXACT = det_bytes(4 * CS)  # 4 full chunks, the last one full
EXACT_BLOB = enc(EXACT)


def _field_of(pos: int) -> str:
    layout = [
        ("magic", 8),
        ("version", 1),
        ("algorithm", 1),
        ("chunk_size", 4),
        ("kek_id", 16),
        ("wrapped", 40),
        ("prefix", 7),
        ("tag", 16),
    ]
    start = 0
    for name, size in layout:
        if pos < start + size:
            return name
        start += size
    raise AssertionError(pos)


@pytest.mark.parametrize("pos", range(HEADER_SIZE))
def test_header_bit_flip_detected(pos: int) -> None:
    field = _field_of(pos)
    for bit in (0, 7):
        with pytest.raises(EnvelopeError) as exc:
            dec(flip(BLOB, pos, bit))
        expected: type[EnvelopeError] = {
            "magic": EnvelopeFormatError,
            "version": UnsupportedVersionError,
            "algorithm": EnvelopeFormatError,
        }.get(field, HeaderTamperedError)
        assert isinstance(exc.value, expected), (field, exc.value)
        assert str(exc.value)


def test_every_ciphertext_bit_flip_detected() -> None:
    for pos in range(HEADER_SIZE, len(BLOB)):
        with pytest.raises(TamperedError, match="chunk"):
            dec(flip(BLOB, pos, pos % 8))


@pytest.mark.parametrize("blob", [BLOB, EXACT_BLOB], ids=["partial-tail", "exact-tail"])
def test_truncation_at_every_offset_detected(blob: bytes) -> None:
    for cut in range(len(blob)):
        with pytest.raises(EnvelopeError):
            dec(blob[:cut])


def test_truncation_at_chunk_boundaries_is_named() -> None:
    header, chunks = split(BLOB)
    for keep in range(1, len(chunks)):
        with pytest.raises(TruncatedError, match=f"truncated after chunk {keep - 1}"):
            dec(header + b"".join(chunks[:keep]))
    with pytest.raises(TruncatedError):
        dec(header)
    with pytest.raises(TruncatedError):
        dec(BLOB[: HEADER_SIZE - 1])


def test_chunk_reorder_detected() -> None:
    header, chunks = split(BLOB)
    for i in range(len(chunks) - 2):
        swapped = chunks.copy()
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        with pytest.raises(TamperedError, match=f"chunk {i} failed"):
            dec(header + b"".join(swapped))


def test_chunk_duplication_detected() -> None:
    header, chunks = split(BLOB)
    for i in range(len(chunks)):
        dup = [*chunks[: i + 1], chunks[i], *chunks[i + 1 :]]
        with pytest.raises(TamperedError):
            dec(header + b"".join(dup))
    header, chunks = split(EXACT_BLOB)
    with pytest.raises(TrailingDataError, match="after the final chunk"):
        dec(header + b"".join([*chunks, chunks[-1]]))


def test_chunk_drop_detected() -> None:
    header, chunks = split(BLOB)
    for i in range(len(chunks) - 1):
        with pytest.raises(TamperedError):
            dec(header + b"".join(chunks[:i] + chunks[i + 1 :]))
    with pytest.raises(TruncatedError):
        dec(header + b"".join(chunks[:-1]))


@pytest.mark.parametrize("extra", [b"\x00", b"x" * TAG_SIZE, b"y" * (CS + TAG_SIZE), b"z" * 1000])
@pytest.mark.parametrize("blob", [BLOB, EXACT_BLOB, enc(b"")], ids=["partial", "exact", "empty"])
def test_appended_bytes_detected(blob: bytes, extra: bytes) -> None:
    with pytest.raises(TamperedError):
        dec(blob + extra)


def test_wrong_key_detected() -> None:
    with pytest.raises(WrongKeyError) as exc:
        dec(BLOB, OTHER_KEK)
    assert kek_id(KEK) in str(exc.value)
    assert kek_id(OTHER_KEK) in str(exc.value)
    assert KEK.hex() not in str(exc.value)


def test_wrong_version_detected() -> None:
    blob = bytearray(BLOB)
    blob[8] = 2
    with pytest.raises(UnsupportedVersionError, match="version 2"):
        dec(bytes(blob))


def test_not_an_envelope() -> None:
    for junk in (b"", b"hello world", det_bytes(500)):
        with pytest.raises(EnvelopeFormatError, match="not a secureai envelope"):
            dec(junk)


def test_chunks_spliced_from_another_file_detected() -> None:
    other = enc(DATA)  # same key and plaintext, different data key and nonce prefix
    header, _ = split(BLOB)
    _, other_chunks = split(other)
    with pytest.raises(TamperedError):
        dec(header + b"".join(other_chunks))
    _, chunks = split(BLOB)
    with pytest.raises(TamperedError):
        dec(header + b"".join([chunks[0], other_chunks[1], *chunks[2:]]))


# --- keys ------------------------------------------------------------------------------------


def test_load_kek_formats(tmp_path: Path) -> None:
    key = generate_kek()
    assert len(key) == 32
    assert load_kek(KEK) == KEK
    assert load_kek(b"base64:" + base64.b64encode(key) + b"\n") == key
    assert load_kek(b"hex:" + key.hex().encode()) == key
    assert load_kek(base64.b64encode(key) + b"\n") == key  # keygen's output before the prefix
    f = tmp_path / "kek"
    f.write_bytes(KEK)
    assert load_kek(f) == KEK
    f.write_bytes(env.format_kek(key))
    assert load_kek(str(f)) == key


@pytest.mark.parametrize(
    "material",
    [b"", b"short", base64.b64encode(bytes(16)), base64.b64encode(bytes(33)), b"!" * 44],
)
def test_load_kek_rejects_bad_material(material: bytes) -> None:
    with pytest.raises(InvalidKeyError, match="expected 32 raw bytes") as exc:
        load_kek(material)
    if material:
        assert material.decode(errors="replace") not in str(exc.value)


def test_load_kek_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError, match="not found"):
        load_kek(tmp_path / "missing")
    with pytest.raises(InvalidKeyError, match="directory"):
        load_kek(tmp_path)
    big = tmp_path / "big"
    big.write_bytes(b"a" * 10_000)
    with pytest.raises(InvalidKeyError, match="too large"):
        load_kek(big)


def test_raw_kek_must_be_32_bytes() -> None:
    with pytest.raises(InvalidKeyError):
        enc(b"x", kek=b"k" * 16)


# --- files and directories: no partial plaintext ---------------------------------------------


def test_file_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(det_bytes(3 * CS + 5))
    encrypt_file(src, tmp_path / "data.enc", KEK, chunk_size=CS)
    assert (tmp_path / "data.enc").stat().st_mode & 0o777 == 0o600
    assert decrypt_file(tmp_path / "data.enc", tmp_path / "out.bin", KEK) == 3 * CS + 5
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: flip(b, len(b) - 3),
        lambda b: b[:-TAG_SIZE],
        lambda b: b + b"x",
        lambda b: flip(b, 20),
    ],
    ids=["last-chunk-flip", "truncated", "appended", "header-flip"],
)
def test_failed_decrypt_leaves_no_output(tmp_path: Path, mutate: object) -> None:
    enc_path = tmp_path / "in" / "data.enc"
    enc_path.parent.mkdir()
    enc_path.write_bytes(mutate(BLOB))  # type: ignore[operator]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(TamperedError):
        decrypt_file(enc_path, out_dir / "data.bin", KEK)
    assert list(out_dir.iterdir()) == []


def test_failed_decrypt_keeps_existing_destination(tmp_path: Path) -> None:
    (tmp_path / "bad.enc").write_bytes(flip(BLOB, len(BLOB) - 1))
    dst = tmp_path / "dst"
    dst.write_bytes(b"previous")
    with pytest.raises(TamperedError):
        decrypt_file(tmp_path / "bad.enc", dst, KEK)
    assert dst.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.enc", "dst"]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_dir_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "ds"
    (src / "a" / "b").mkdir(parents=True)
    (src / "top.csv").write_bytes(det_bytes(300, 1))
    (src / "a" / "mid.bin").write_bytes(b"")
    (src / "a" / "b" / "deep.txt").write_bytes(det_bytes(CS, 2))
    assert encrypt_dir(src, tmp_path / "enc", KEK, chunk_size=CS) == (3, 300 + CS)
    assert set(_tree(tmp_path / "enc")) == set(_tree(src))
    assert decrypt_dir(tmp_path / "enc", tmp_path / "plain", KEK) == (3, 300 + CS)
    assert _tree(tmp_path / "plain") == _tree(src)


def test_dir_decrypt_is_all_or_nothing(tmp_path: Path) -> None:
    src = tmp_path / "ds"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(det_bytes(200, i))
    encrypt_dir(src, tmp_path / "enc", KEK, chunk_size=CS)
    victim = tmp_path / "enc" / "f2"
    victim.write_bytes(flip(victim.read_bytes(), HEADER_SIZE + 3))
    with pytest.raises(TamperedError, match=r"^f2: chunk 0"):
        decrypt_dir(tmp_path / "enc", tmp_path / "plain", KEK)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "enc"]
    with pytest.raises(WrongKeyError):
        decrypt_dir(tmp_path / "enc", tmp_path / "plain", OTHER_KEK)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "enc"]


def test_dir_refuses_nonempty_destination_and_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "ds"
    src.mkdir()
    (src / "f").write_bytes(b"1")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep").write_bytes(b"mine")
    with pytest.raises(EnvelopeError, match="not an empty directory"):
        encrypt_dir(src, dst, KEK)
    assert _tree(dst) == {"keep": b"mine"}
    (src / "link").symlink_to(src / "f")
    with pytest.raises(EnvelopeError, match="symlink"):
        encrypt_dir(src, tmp_path / "other", KEK)
    assert not (tmp_path / "other").exists()


# --- 1 GiB: streamed round trip and bounded memory -------------------------------------------

GENERATOR_SRC = textwrap.dedent(
    """
    import hashlib, io, random

    class PatternReader(io.RawIOBase):
        '''Deterministic pseudo-random stream of `size` bytes; never materialised.'''

        BLOCK = 1 << 20

        def __init__(self, size, seed=1):
            self.size, self.pos = size, 0
            self.pool = memoryview(random.Random(seed).randbytes(self.BLOCK + 4096))
            self.hash = hashlib.sha256()

        def readable(self):
            return True

        def readinto(self, b):
            view = memoryview(b).cast("B")
            n = min(len(view), self.size - self.pos)
            done = 0
            while done < n:
                block, off = divmod(self.pos + done, self.BLOCK)
                start = (block * 61) % 4096 + off
                take = min(n - done, self.BLOCK - off)
                view[done : done + take] = self.pool[start : start + take]
                done += take
            self.hash.update(view[:n])
            self.pos += n
            return n

    class HashingSink(io.RawIOBase):
        def __init__(self):
            self.hash, self.size = hashlib.sha256(), 0

        def writable(self):
            return True

        def write(self, b):
            self.hash.update(b)
            self.size += len(b)
            return len(b)
    """
)
_gen: dict[str, object] = {}
exec(GENERATOR_SRC, _gen)  # the same code runs in the memory-measuring subprocess
PatternReader = _gen["PatternReader"]
HashingSink = _gen["HashingSink"]


MEMORY_PROBE = textwrap.dedent(
    """
    import json, os, sys
    from secureai.crypto.envelope import decrypt_stream, encrypt_stream

    def peak_mib():
        # VmHWM, not ru_maxrss: ru_maxrss keeps the high-water mark of the process image
        # before exec, i.e. of the (large) pytest parent that spawned this interpreter.
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def current_mib():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    kek, path = bytes(range(32)), sys.argv[1]
    src = PatternReader(1 << 30)
    result = {"baseline_current": current_mib(), "baseline_peak": peak_mib()}
    with open(path, "wb") as out:
        encrypt_stream(src, out, kek)
    result["encrypt_peak"] = peak_mib()
    result["ciphertext_size"] = os.path.getsize(path)
    sink = HashingSink()
    with open(path, "rb") as fh:
        decrypt_stream(fh, sink, kek)
    result["decrypt_peak"] = peak_mib()
    result["same"] = sink.hash.digest() == src.hash.digest() and sink.size == 1 << 30
    print(json.dumps(result))
    """
)


@pytest.mark.slow
def test_one_gib_streamed_round_trip_in_bounded_memory(tmp_path: Path) -> None:
    """A fresh interpreter encrypts 1 GiB generated on the fly, decrypts it into a hashing
    sink, and reports its own max RSS: the plaintext is never materialised."""
    proc = subprocess.run(
        [sys.executable, "-c", GENERATOR_SRC + MEMORY_PROBE, str(tmp_path / "big.enc")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    r = json.loads(proc.stdout)
    assert r["same"], "decrypted stream differs from the generated plaintext"
    chunks = GIB // DEFAULT_CHUNK_SIZE
    assert r["ciphertext_size"] == HEADER_SIZE + GIB + chunks * TAG_SIZE
    for phase in ("encrypt_peak", "decrypt_peak"):
        growth = r[phase] - r["baseline_current"]
        assert growth < 64, f"{phase}: max RSS grew by {growth:.1f} MiB over 1 GiB"


# --- KEK rotation ----------------------------------------------------------------------------


def test_decrypting_reader_streams_plaintext() -> None:
    reader = env.DecryptingReader(io.BytesIO(BLOB), KEK)
    got = bytearray()
    while piece := reader.read(10):
        got += piece
    assert bytes(got) == DATA
    assert env.DecryptingReader(io.BytesIO(BLOB), KEK).read() == DATA
    with pytest.raises(TamperedError):
        env.DecryptingReader(io.BytesIO(flip(BLOB, len(BLOB) - 1)), KEK).read()


def test_reencrypt_stream_rotates_the_kek() -> None:
    out = io.BytesIO()
    assert env.reencrypt_stream(io.BytesIO(BLOB), out, KEK, OTHER_KEK, chunk_size=CS) == len(DATA)
    assert env.read_header(io.BytesIO(out.getvalue())).kek_id == kek_id(OTHER_KEK)
    assert dec(out.getvalue(), OTHER_KEK) == DATA
    with pytest.raises(WrongKeyError):
        dec(out.getvalue(), KEK)
    with pytest.raises(WrongKeyError):
        env.reencrypt_stream(io.BytesIO(BLOB), io.BytesIO(), OTHER_KEK, KEK)


def test_reencrypt_file_in_place_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "d.enc"
    tampered = flip(BLOB, len(BLOB) - 2)
    path.write_bytes(tampered)
    with pytest.raises(TamperedError):
        env.reencrypt_file(path, path, KEK, OTHER_KEK)
    assert path.read_bytes() == tampered
    assert [p.name for p in tmp_path.iterdir()] == ["d.enc"]
    path.write_bytes(BLOB)
    env.reencrypt_file(path, path, KEK, OTHER_KEK)
    assert decrypt_file(path, tmp_path / "plain", OTHER_KEK) == len(DATA)
    assert (tmp_path / "plain").read_bytes() == DATA


def test_reencrypt_dir_is_resumable(tmp_path: Path) -> None:
    src = tmp_path / "ds"
    (src / "sub").mkdir(parents=True)
    for i, rel in enumerate(["a", "b", "sub/c"]):
        (src / rel).write_bytes(det_bytes(150, i))
    encrypt_dir(src, tmp_path / "enc", KEK, chunk_size=CS)
    env.reencrypt_file(tmp_path / "enc" / "b", tmp_path / "enc" / "b", KEK, OTHER_KEK)  # half done
    assert env.reencrypt_dir(tmp_path / "enc", KEK, OTHER_KEK) == (2, 1)
    assert env.reencrypt_dir(tmp_path / "enc", KEK, OTHER_KEK) == (0, 3)
    decrypt_dir(tmp_path / "enc", tmp_path / "plain", OTHER_KEK)
    assert _tree(tmp_path / "plain") == _tree(src)


def test_non_blocking_source_is_refused() -> None:
    class WouldBlock(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: memoryview) -> None:  # type: ignore[override]
            return None

    with pytest.raises(EnvelopeError, match="non-blocking"):
        encrypt_stream(WouldBlock(), io.BytesIO(), KEK)  # type: ignore[arg-type]


def test_dir_destination_inside_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"1")
    with pytest.raises(EnvelopeError, match="inside the source"):
        encrypt_dir(tmp_path, tmp_path / "enc", KEK)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_key_material_passed_as_a_path_is_not_echoed() -> None:
    material = "base64:" + base64.b64encode(KEK).decode()
    with pytest.raises(InvalidKeyError, match="looks like key material") as exc:
        load_kek(material)
    assert material not in str(exc.value)
