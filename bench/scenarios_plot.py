"""The benchmark's figure: latency CDFs, drift by kind, memory and the burst, from the JSON."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt


def _cdf(ax: Any, values: list[float], label: str, **kw: Any) -> None:
    if not values:
        return
    xs = sorted(values)
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})", **kw)


def plot(result: dict[str, Any], path: Path) -> None:
    samples = result.get("samples") or {}
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (lat, kinds), (mem, burst) = axes

    drift = [s["ms"] for s in samples.get("drift_revert_ms", []) if s.get("ms") is not None]
    scale = [
        s["ms"] for s in samples.get("drift_revert_ms_at_scale", []) if s.get("ms") is not None
    ]
    _cdf(lat, samples.get("watch_floor_ms", []), "watch floor")
    _cdf(lat, drift, "drift → revert")
    if scale:
        n = (result.get("burst") or {}).get("count", "")
        _cdf(lat, scale, f"drift → revert, {n} CRs managed", linestyle="--")
    _cdf(lat, samples.get("create_applied_ms", []), "create → children applied")
    _cdf(lat, samples.get("create_ready_ms", []), "create → Ready")
    lat.axvline(1000, color="grey", linestyle=":", linewidth=1)
    lat.set_xscale("log")
    lat.set_xlabel("latency (ms, log scale)")
    lat.set_ylabel("fraction of samples ≤ x")
    lat.set_title("Latency CDFs (dotted: 1 s)")
    lat.grid(True, which="both", alpha=0.3)
    lat.legend(fontsize=8, loc="lower right")

    by_kind: dict[str, list[float]] = {}
    for s in samples.get("drift_revert_ms", []):
        if s.get("ms") is not None:
            by_kind.setdefault(s["kind"], []).append(s["ms"])
    for kind, values in sorted(by_kind.items()):
        _cdf(kinds, values, kind)
    kinds.axvline(1000, color="grey", linestyle=":", linewidth=1)
    kinds.set_xscale("log")
    kinds.set_xlabel("drift → revert (ms, log scale)")
    kinds.set_ylabel("fraction ≤ x")
    kinds.set_title("Drift → revert by child kind")
    kinds.grid(True, which="both", alpha=0.3)
    kinds.legend(fontsize=8, loc="lower right")

    rss = result.get("rss_mib") or {}
    counts = sorted(int(k) for k in rss)
    timeline = samples.get("burst_timeline", [])
    if timeline:
        mem.plot(
            [p["ready"] for p in timeline],
            [p["rss_mib"] for p in timeline],
            color="tab:orange",
            alpha=0.7,
            label="during the burst (x = CRs Ready)",
        )
    if counts:
        mem.plot(
            counts,
            [rss[str(c)] for c in counts],
            marker="o",
            color="tab:blue",
            label="fresh operator, all reconciled",
        )
        for c in counts:
            mem.annotate(
                f"{rss[str(c)]:.0f}",
                (c, rss[str(c)]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
            )
    mem.axhline(250, color="grey", linestyle=":", linewidth=1)
    mem.set_xlabel("workloads (CRs) managed")
    mem.set_ylabel("operator RSS (MiB)")
    mem.set_ylim(bottom=0)
    mem.set_title("Operator memory vs workloads (dotted: 250 MiB)")
    mem.grid(True, alpha=0.3)
    mem.legend(fontsize=8, loc="lower right")

    if timeline:
        ts = [p["t"] for p in timeline]
        burst.plot(ts, [p["ready"] for p in timeline], color="tab:green", label="CRs Ready")
        burst.set_xlabel("seconds since the first create")
        burst.set_ylabel("CRs Ready")
        cpu = burst.twinx()
        pct = [0.0] + [
            (b["cpu_s"] - a["cpu_s"]) / max(b["t"] - a["t"], 1e-6) * 100
            for a, b in itertools.pairwise(timeline)
        ]
        cpu.plot(ts, pct, color="tab:red", alpha=0.6, label="operator CPU %")
        cpu.set_ylabel("operator CPU (% of one core)")
        cpu.set_ylim(bottom=0)
        lines = burst.get_legend_handles_labels()
        more = cpu.get_legend_handles_labels()
        burst.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="center right")
    b = result.get("burst") or {}
    burst.set_title(
        f"Burst: {b.get('count', '?')} CRs created at once, Ready in {b.get('all_ready_s')} s"
    )
    burst.grid(True, alpha=0.3)

    mode = "quick" if result.get("quick") else "full"
    m = result.get("machine") or {}
    fig.suptitle(
        f"secureai benchmarks ({mode} run, {m.get('cpus_usable')} CPUs, {m.get('cpu_model', '')})",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
