"""`make bench` in quick mode: the benchmark runs end to end and its JSON keeps its shape.

Runs ``python -m bench.run`` with BENCH_QUICK=1 (tiny counts) against the local control plane
and checks every stable key of bench/results/latest.json with sane values. It checks the
shape, not the targets: figures on a shared 2-core machine under a test suite say little.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clusterkit import REPO, Cluster

LATENCIES = ("watch_floor_ms", "drift_revert_ms", "create_applied_ms", "create_ready_ms")
STABLE_KEYS = (
    *LATENCIES,
    "drift_revert_by_kind",
    "burst_1000_s",
    "idle_writes_per_min",
    "rss_mib",
    "machine",
    "versions",
    "ratios",
    "render",
    "crypto",
    "guard",
)


@pytest.fixture(scope="module")
def quick_run(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    env = {**os.environ, "BENCH_QUICK": "1", "BENCH_OUT": str(out)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert out.exists(), f"no JSON written (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(out.read_text())
    result["_stderr"] = proc.stderr
    result["_png"] = out.with_suffix(".png")
    return result


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_every_stable_key(quick_run: dict[str, Any]) -> None:
    missing = [k for k in STABLE_KEYS if k not in quick_run]
    assert not missing, missing
    assert quick_run["quick"] is True
    assert not quick_run["errors"], f"{quick_run['errors']}\n{quick_run['_stderr'][-3000:]}"


@pytest.mark.parametrize("key", LATENCIES)
def test_latency_summaries(quick_run: dict[str, Any], key: str) -> None:
    figure = quick_run[key]
    assert figure["n"] > 0, figure
    assert _finite(figure["p50"]) and _finite(figure["p99"]), figure
    assert 0 <= figure["p50"] <= figure["p99"], figure


def test_drift_covers_every_child_kind(quick_run: dict[str, Any]) -> None:
    by_kind = quick_run["drift_revert_by_kind"]
    reverted = {kind for kind, figure in by_kind.items() if figure["n"] > 0}
    assert {"Deployment", "NetworkPolicy", "ServiceAccount", "Service", "Secret"} <= reverted
    for kind in reverted:
        assert by_kind[kind]["p50"] <= by_kind[kind]["p99"], by_kind[kind]
    assert quick_run["ratios"]["drift_p50_over_watch_floor_p50"] > 0


def test_burst_idle_and_memory(quick_run: dict[str, Any]) -> None:
    burst = quick_run["burst"]
    assert burst["ready"] == burst["count"] == quick_run["config"]["burst"]
    assert _finite(quick_run["burst_1000_s"]) and quick_run["burst_1000_s"] > 0
    assert burst["operator_cpu_s"] > 0 and burst["operator_peak_rss_mib"] > 0
    idle = quick_run["idle"]
    # an idle operator writes nothing: a correctness claim, not a machine-dependent figure
    assert quick_run["idle_writes_per_min"] == 0, idle
    assert quick_run["targets"]["idle_writes_per_min"]["met"] is True
    assert idle["window_s"] >= quick_run["config"]["idle_s"] - 0.5
    assert idle["resyncs_in_window"] >= 1, "the idle window should contain a resync"
    rss = quick_run["rss_mib"]
    assert sorted(int(k) for k in rss) == sorted(quick_run["config"]["rss_counts"])
    assert all(_finite(v) and 20 < v < 4096 for v in rss.values()), rss


def test_machine_versions_targets_and_plot(quick_run: dict[str, Any]) -> None:
    assert quick_run["machine"]["cpus"] >= 1
    assert quick_run["versions"]["kube_apiserver"]
    assert quick_run["versions"]["kopf"]
    targets = quick_run["targets"]
    assert set(targets) >= {"drift_revert_p99_ms", "idle_writes_per_min", "rss_mib"}
    assert all(isinstance(t["met"], bool) for t in targets.values()), targets
    png = Path(quick_run["_png"])
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cleaned_up(quick_run: dict[str, Any], cluster: Cluster) -> None:
    run = quick_run["run_id"]
    left = cluster.kubectl_json("get", "namespaces", "-l", f"bench.secureai.dev/run={run}")
    assert not left["items"], [n["metadata"]["name"] for n in left["items"]]
