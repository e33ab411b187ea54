"""A small trainer for secureai's real-node tests (standard library only).

Reads every file under --data (the decrypted dataset), writes --out/model.bin (a digest of
the data, standing in for weights) and --out/manifest.json (what was read), exits 0. Exits 1
with one line when the data directory is missing or empty.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(prog="trainer")
    parser.add_argument("--data", default="/data")
    parser.add_argument("--out", default="/output")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    print(f"trainer: {args.epochs} epoch(s) over {data}", flush=True)
    files = sorted(p for p in data.rglob("*") if p.is_file()) if data.is_dir() else []
    if not files:
        print(f"trainer: no data under {data}", file=sys.stderr)
        return 1
    total = hashlib.sha256()
    manifest = []
    for path in files:
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        total.update(digest.encode())
        manifest.append({"file": str(path.relative_to(data)), "bytes": len(body), "sha256": digest})
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.bin").write_bytes(total.digest() * 32)
    (out / "manifest.json").write_text(json.dumps({"files": manifest}, indent=1) + "\n")
    print(f"trainer: read {len(files)} files, wrote {out / 'model.bin'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
