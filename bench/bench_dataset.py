"""Throughput and memory of `secureai dataset scan|pseudonymize` on a generated dataset.

    python -m bench.bench_dataset [--size-mib 1024] [--json OUT]

The dataset is one text file of generated lines with planted personal data of every type (a
value every ~2 KB), plus its envelope-encrypted copy. Each command runs as its own process
(the real CLI), timed wall-clock, its peak RSS taken from the kernel (``wait4``). Baselines on
the same data, in this process: envelope decryption to /dev/null (``decrypt_stream``) and a
single-regex scan (one email regex over the Latin-1 text in 1 MiB pieces); and the share of
the bytes the detectors still see behind the prefilter (``secureai.pii.prefilter``).
Targets (issue 17): scanning an encrypted dataset at >= 50 % of decryption throughput, peak
RSS <= 128 MiB whatever the size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from secureai.crypto.envelope import decrypt_stream, encrypt_stream
from secureai.pii.prefilter import windows

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from datasetgen import text_with  # noqa: E402

MIB = 1 << 20
BLOCK = 4 * MIB
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def _generate(path: Path, size: int) -> int:
    """Write ``size`` bytes (rounded to whole blocks); return the number of planted values."""
    rng = random.Random(7)
    planted = 0
    with path.open("wb") as fh:
        written = 0
        while written < size:
            block, values = text_with(rng, min(BLOCK, size - written), 2000)
            fh.write(block)
            written += len(block)
            planted += len(values)
    return planted


def _run(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB, from the kernel) and stdout of one CLI process."""
    cmd = [sys.executable, "-m", "secureai.cli.main", *argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {err.read().decode().strip()}")
        return secs, usage.ru_maxrss / 1024, out.read().decode()


def _decrypt(src: Path, kek: bytes) -> float:
    start = time.perf_counter()
    with src.open("rb") as fh, open(os.devnull, "wb") as sink:
        decrypt_stream(fh, sink, kek)
    return time.perf_counter() - start


def _single_regex(src: Path) -> tuple[float, int]:
    start = time.perf_counter()
    found = 0
    carry = ""
    with src.open("rb") as fh:
        while piece := fh.read(MIB):
            text = carry + piece.decode("latin-1")
            cut = max(0, len(text) - 256)
            found += sum(1 for m in EMAIL.finditer(text, 0, cut) if m.end() <= cut)
            carry = text[cut:]
    found += sum(1 for _ in EMAIL.finditer(carry))
    return time.perf_counter() - start, found


def _window_share(src: Path) -> float:
    """The share of the bytes the detectors see after the prefilter (windows per 4 MiB)."""
    seen = total = 0
    with src.open("rb") as fh:
        while block := fh.read(BLOCK):
            seen += sum(e - s for s, e in windows(block))
            total += len(block)
    return seen / total if total else 0.0


def run(size_mib: int = 1024) -> dict[str, Any]:
    size = size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        work = Path(tmp)
        plain = work / "data.txt"
        enc = work / "data.txt.sae"
        planted = _generate(plain, size)
        kek = os.urandom(32)
        (work / "kek").write_bytes(kek)
        (work / "p.key").write_bytes(os.urandom(32))
        with plain.open("rb") as src, enc.open("wb") as dst:
            encrypt_stream(src, dst, kek)
        real = plain.stat().st_size
        mib = real / MIB

        decrypt_s = _decrypt(enc, kek)
        regex_s, _ = _single_regex(plain)
        key = ["--key", str(work / "kek")]
        pkey = ["--pseudonym-key", str(work / "p.key")]
        figures: dict[str, Any] = {"size_mib": round(mib, 1), "planted": planted}
        runs = {
            "scan_plain": ["dataset", "scan", "-o", "json", "--max-locations", "0", str(plain)],
            "scan_encrypted": [
                "dataset", "scan", "-o", "json", "--max-locations", "0", *key, str(enc),
            ],
            "pseudonymize_plain": ["dataset", "pseudonymize", *pkey, str(plain), str(work / "p")],
            "pseudonymize_encrypted": [
                "dataset", "pseudonymize", *pkey, *key, str(enc), str(work / "pe"),
            ],
        }  # fmt: skip
        for name, argv in runs.items():
            secs, rss, out = _run(argv)
            figures[f"{name}_mib_s"] = round(mib / secs, 2)
            figures[f"{name}_peak_rss_mib"] = round(rss, 1)
            if name.startswith("scan"):
                figures[f"{name}_findings"] = json.loads(out)["totals"]["findings"]
            for leftover in (work / "p", work / "pe"):
                leftover.unlink(missing_ok=True)
        figures["prefilter_window_share"] = round(_window_share(plain), 4)
        figures["decrypt_mib_s"] = round(mib / decrypt_s, 1)
        figures["single_regex_mib_s"] = round(mib / regex_s, 1)
        figures["ratio_scan_encrypted_to_decrypt"] = round(
            figures["scan_encrypted_mib_s"] / figures["decrypt_mib_s"], 4
        )
        figures["ratio_scan_plain_to_single_regex"] = round(
            figures["scan_plain_mib_s"] / figures["single_regex_mib_s"], 4
        )
        figures["ratio_pseudonymize_encrypted_to_decrypt"] = round(
            figures["pseudonymize_encrypted_mib_s"] / figures["decrypt_mib_s"], 4
        )
        peak = max(v for k, v in figures.items() if k.endswith("_peak_rss_mib"))
        figures["targets"] = {
            "scan_encrypted_ge_half_decrypt": figures["ratio_scan_encrypted_to_decrypt"] >= 0.5,
            "peak_rss_le_128_mib": peak <= 128,
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_dataset", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--json", metavar="OUT", help="also write the result to this file")
    args = parser.parse_args(argv)
    result = run(args.size_mib)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
