"""Envelope encryption throughput against raw AES-256-GCM on the same data, in the same run.

    python -m bench.bench_crypto [--size-mib 512] [--repeats 3] [--json OUT]

Every variant reads the same page-cached temp file in 1 MiB chunks with ``readinto`` and writes
to ``/dev/null``, so the ratios isolate the envelope's own cost (header, nonce/AAD building, the
final-chunk lookahead) from disk speed. ``raw_aesgcm_mem_mib_s`` is the in-memory ceiling (no
I/O at all). Each figure is the best of ``--repeats`` interleaved runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secureai.crypto.envelope import DEFAULT_CHUNK_SIZE, decrypt_stream, encrypt_stream

MIB = 1 << 20
TAG = 16


def _raw_encrypt(src: Path, chunk: int) -> None:
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    buf = memoryview(bytearray(chunk))
    out = memoryview(bytearray(chunk + TAG))
    with src.open("rb") as fh, open(os.devnull, "wb") as sink:
        i = 0
        while n := fh.readinto(buf):
            aead.encrypt_into(i.to_bytes(12, "big"), buf[:n], b"", out[: n + TAG])
            sink.write(out[: n + TAG])
            i += 1


def _raw_decrypt(src: Path, key: bytes, chunk: int) -> None:
    aead = AESGCM(key)
    buf = memoryview(bytearray(chunk + TAG))
    out = memoryview(bytearray(chunk))
    with src.open("rb") as fh, open(os.devnull, "wb") as sink:
        i = 0
        while n := fh.readinto(buf):
            aead.decrypt_into(i.to_bytes(12, "big"), buf[:n], b"", out[: n - TAG])
            sink.write(out[: n - TAG])
            i += 1


def _raw_memory(size: int, chunk: int) -> None:
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    buf = memoryview(bytearray(os.urandom(chunk)))
    out = memoryview(bytearray(chunk + TAG))
    for i in range(size // chunk):
        aead.encrypt_into(i.to_bytes(12, "big"), buf, b"", out)


def _envelope_encrypt(src: Path, kek: bytes) -> None:
    with src.open("rb") as fh, open(os.devnull, "wb") as sink:
        encrypt_stream(fh, sink, kek)


def _envelope_decrypt(src: Path, kek: bytes) -> None:
    with src.open("rb") as fh, open(os.devnull, "wb") as sink:
        decrypt_stream(fh, sink, kek)


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _prepare(workdir: Path, size: int, kek: bytes, raw_key: bytes) -> tuple[Path, Path, Path]:
    plain, env, raw = workdir / "plain.bin", workdir / "plain.sae", workdir / "plain.raw"
    block = os.urandom(MIB)
    with plain.open("wb") as fh:
        for i in range(size // MIB):
            fh.write(block[i % 251 :] + block[: i % 251])
    with plain.open("rb") as src, env.open("wb") as dst:
        encrypt_stream(src, dst, kek)
    aead = AESGCM(raw_key)
    with plain.open("rb") as src, raw.open("wb") as dst:
        i = 0
        while data := src.read(DEFAULT_CHUNK_SIZE):
            dst.write(aead.encrypt(i.to_bytes(12, "big"), data, b""))
            i += 1
    return plain, env, raw


def run(size_mib: int = 512, repeats: int = 3) -> dict[str, float]:
    """Benchmark ``size_mib`` MiB; return MiB/s figures and envelope/raw ratios."""
    size = size_mib * MIB
    kek, raw_key = os.urandom(32), AESGCM.generate_key(bit_length=256)
    chunk = DEFAULT_CHUNK_SIZE
    with tempfile.TemporaryDirectory(prefix="bench-crypto-") as tmp:
        plain, env, raw = _prepare(Path(tmp), size, kek, raw_key)
        variants: dict[str, Callable[[], None]] = {
            "raw_aesgcm": lambda: _raw_encrypt(plain, chunk),
            "encrypt": lambda: _envelope_encrypt(plain, kek),
            "raw_aesgcm_decrypt": lambda: _raw_decrypt(raw, raw_key, chunk),
            "decrypt": lambda: _envelope_decrypt(env, kek),
            "raw_aesgcm_mem": lambda: _raw_memory(size, chunk),
        }
        for fn in variants.values():  # warm the page cache and the code paths
            fn()
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(repeats):
            for name, fn in variants.items():
                best[name] = min(best[name], _timed(fn))
    mib_s = {f"{name}_mib_s": round(size_mib / secs, 1) for name, secs in best.items()}
    result: dict[str, float] = {
        **mib_s,
        "ratio_encrypt": round(mib_s["encrypt_mib_s"] / mib_s["raw_aesgcm_mib_s"], 3),
        "ratio_decrypt": round(mib_s["decrypt_mib_s"] / mib_s["raw_aesgcm_decrypt_mib_s"], 3),
        "size_mib": size_mib,
        "chunk_mib": chunk / MIB,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_crypto", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="OUT", help="also write the result to this file")
    args = parser.parse_args(argv)
    result = run(args.size_mib, args.repeats)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
