"""Diagnostic: `secureai run` under tracemalloc, dumping who holds its memory on request.

    python -X tracemalloc=12 -m bench.scenarios_tracemalloc TRIGGER OUT run --policy ...

A daemon thread waits for the TRIGGER file; it then snapshots the heap and writes OUT (JSON):
live bytes by the code that allocated them (the innermost secureai or kopf frame, else the
innermost aiohttp/pydantic/yaml frame, else the oldest frame's file) and the top sites. The
operator itself runs unchanged in the main thread. Used by `BENCH_TRACEMALLOC=1`; tracemalloc
slows the process and adds its own memory, so no figure of the benchmark is read from it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

OWNERS = ("secureai", "kopf")  # code that keeps objects; libraries below only allocate
LIBRARIES = ("aiohttp", "pydantic", "yaml", "prometheus_client")
MIB = 1024 * 1024


def _owner(trace: tracemalloc.Traceback) -> tuple[str, str]:
    """(package, site): the innermost secureai or kopf frame, else the innermost library."""
    for packages in (OWNERS, LIBRARIES):
        for frame in trace:  # most recent frame first
            parts = Path(frame.filename).parts
            for package in packages:
                if package in parts:
                    rel = "/".join(parts[parts.index(package) :])
                    return package, f"{rel}:{frame.lineno}"
    last = trace[-1] if len(trace) else None
    if last is None:
        return "?", "?"
    return "other", f"{Path(last.filename).name}:{last.lineno}"


def summarize(snapshot: tracemalloc.Snapshot, top: int = 25) -> dict[str, Any]:
    by_package: Counter[str] = Counter()
    by_site: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    total = 0
    for stat in snapshot.statistics("traceback"):
        package, site = _owner(stat.traceback)
        by_package[package] += stat.size
        by_site[f"{package}: {site}"] += stat.size
        by_file[Path(stat.traceback[0].filename).name] += stat.size
        total += stat.size
    return {
        "traced_mib": round(total / MIB, 1),
        "by_package_mib": {k: round(v / MIB, 1) for k, v in by_package.most_common()},
        "top_sites_mib": [[k, round(v / MIB, 2)] for k, v in by_site.most_common(top)],
        "top_allocating_files_mib": [[k, round(v / MIB, 2)] for k, v in by_file.most_common(12)],
    }


def _dumper(trigger: Path, out: Path) -> None:
    while True:
        if trigger.exists():
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            out.write_text(json.dumps(summarize(snapshot), indent=2))
            trigger.unlink()
        time.sleep(0.5)  # polls for the trigger file


def main(argv: list[str]) -> int:
    trigger, out, rest = Path(argv[0]), Path(argv[1]), argv[2:]
    if not tracemalloc.is_tracing():
        tracemalloc.start(12)
    threading.Thread(target=_dumper, args=(trigger, out), daemon=True).start()
    from secureai.cli.main import main as cli  # noqa: PLC0415 - after tracing starts

    return cli(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
