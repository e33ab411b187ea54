"""The pure posture judge of `secureai audit` over 1,000 synthetic managed workloads.

    python -m bench.bench_audit [--count 1000] [--repeats 3]

The world is what the renderer makes for the guarded GPU inference example (children, one pod
per template, claims), copied `count` times over 10 namespaces; it is built before the clock
starts. The figure is `judge()` alone; the end-to-end audit against the API server is
`audit_1000_workloads_s` in bench/run.py. A benchmark: it reports, never fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from posturekit import synthetic  # noqa: E402
from secureai.api import Policy  # noqa: E402
from secureai.judge.posture import judge  # noqa: E402

TARGET_S = 10.0  # the whole audit's budget; the judge is a part of it


def run(count: int = 1000, repeats: int = 3) -> dict[str, Any]:
    policy = Policy.from_yaml(ROOT / "examples" / "policy.yaml")
    base = yaml.safe_load((ROOT / "examples" / "inference-gpu-guarded.yaml").read_text())
    world = synthetic(base, policy, count)
    now = datetime.now(UTC)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        posture = judge(world, policy, now)
        times.append(time.perf_counter() - started)
    assert len(posture.workloads) == count
    best = min(times)
    return {
        "count": count,
        "pods": len(world.pods),
        "network_policies": len(world.network_policies),
        "findings": len(posture.findings),
        "judge_s": round(best, 3),
        "judge_1000_s": round(best * 1000 / count, 3),
        "target_s": TARGET_S,
        "met": best < TARGET_S,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.count, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
