"""`make bench`: the real operator against the local control plane, six scenarios, one JSON.

    python -m bench.run                 # full run (~10-15 min on 2 cores)
    BENCH_QUICK=1 python -m bench.run   # same code, tiny counts (~1 min; run by `make test`)

Environment: BENCH_OUT (JSON path, default bench/results/latest.json; the PNG goes next to
it with a .png suffix), BENCH_MODULES=0 (skip the in-process render/crypto/guard benches),
BENCH_RESYNC_SECONDS (the operator's resync period; default 60, the product default; 5 in
quick mode so that the short idle window still contains resyncs), BENCH_PROFILE=1 (py-spy
samples the operator during the drift, burst and restart scenarios; `pip install py-spy`).
To pin the operator code for a long run: `git archive HEAD operator | tar -x -C DIR` and
PYTHONPATH=DIR/operator, BENCH_OPERATOR_COMMIT=<sha> (versions.operator_source records both).
BENCH_CONFIG='{"burst": 200, ...}' overrides fields of the Config (experiments only).
BENCH_TRACEMALLOC=1 adds a diagnostic: the operator at the largest count under tracemalloc
(bench/scenarios_tracemalloc.py), reporting which package holds its memory.
BENCH_PHASES=b runs only scenario 4 and what follows it (the other phases: a, memory).

Scenarios (docs/performance.md explains the method and the figures):
  1. watch floor: a plain client patches a ConfigMap; time until a raw watch shows the write;
  2. drift -> revert: mixed tampers of every child kind, one at a time, timed from the
     tamper's write response to the raw-watch event showing the child back as rendered;
  3. create -> children applied, create -> Ready: CRs created one after the other;
  4. burst: N CRs created at once -> all Ready; operator CPU seconds and peak RSS;
  5. steady state: the operator's write requests during an idle window (API audit log);
  6. memory: RSS of a freshly started operator managing 100, 500 and 1,000 CRs.
  (+) `secureai audit` (the CLI, cluster-wide) with the burst's 1,000 CRs managed:
      audit_1000_workloads_s (target < 10 s); bench_audit times the pure judge alone;
  (+) drift -> revert again with the burst's 1,000 CRs under management.

The operator is the real `secureai run` process (tests/operatorkit.OperatorProcess) with a
TokenRequest kubeconfig of a dedicated ServiceAccount; its audit events are told apart by
the token's credential id. Namespaces are `bench-<run>-*`, deleted at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from bench import scenarios_failover, scenarios_quarantine  # noqa: E402
from bench import scenarios_operator as sc  # noqa: E402
from bench.scenarios_kube import Api, Tracker  # noqa: E402
from bench.scenarios_proc import (  # noqa: E402
    AuditReader,
    CpuMeter,
    Profiler,
    audit_seconds,
    audit_timestamp,
    cluster_pids,
    cpu_seconds,
    describe_writes,
    hwm_mib,
    machine,
    other_activity,
    rss_mib,
    summary,
    token_jti,
    versions,
)
from clusterkit import Cluster, ensure_cluster, release_cluster, wait_for  # noqa: E402
from operatorkit import (  # noqa: E402
    OPERATOR_NAMESPACE,
    TEST_POLICY,
    OperatorProcess,
    free_port,
    install_crds,
    operator_kubeconfig,
)
from secureai.api import Policy  # noqa: E402

RESULTS = REPO / "bench" / "results"
MANAGED = "app.kubernetes.io/managed-by=secureai"


@dataclass(frozen=True)
class Config:
    quick: bool
    floor_writes: int
    drift_crs: int
    tampers: int
    tamper_timeout_s: float
    sequential: int
    create_timeout_s: float
    burst: int
    burst_namespaces: int
    burst_concurrency: int
    burst_timeout_s: float
    idle_s: float
    settle_quiet_s: float
    settle_max_s: float
    scale_tampers: int
    rss_counts: tuple[int, ...]
    resync_s: float
    gpu_every: int
    namespace_delete_timeout_s: float
    # wait for phase A's namespaces to go, and keep only N CRs in the cluster when measuring
    # RSS at N (the operator lists children cluster-wide at start); off in quick mode
    isolate: bool


FULL = Config(
    quick=False,
    floor_writes=300,
    drift_crs=6,
    tampers=330,
    tamper_timeout_s=10,
    sequential=200,
    create_timeout_s=60,
    burst=1000,
    burst_namespaces=10,
    burst_concurrency=32,
    burst_timeout_s=600,
    idle_s=60,
    settle_quiet_s=5,
    settle_max_s=120,
    scale_tampers=66,
    rss_counts=(100, 500, 1000),
    resync_s=60,
    gpu_every=250,
    namespace_delete_timeout_s=600,
    isolate=True,
)
QUICK = Config(
    quick=True,
    floor_writes=30,
    drift_crs=2,
    tampers=30,
    tamper_timeout_s=3,
    sequential=10,
    create_timeout_s=30,
    burst=20,
    burst_namespaces=4,
    burst_concurrency=16,
    burst_timeout_s=90,
    idle_s=10,
    settle_quiet_s=2,
    settle_max_s=20,
    scale_tampers=6,
    rss_counts=(5, 10, 20),
    resync_s=5,
    gpu_every=20,
    namespace_delete_timeout_s=180,
    isolate=False,
)


def log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# --- in-process benchmarks of the other modules ------------------------------------------------


def module_benches(cfg: Config) -> dict[str, Any]:
    """render, crypto and guard, run before the cluster scenarios (small sizes when quick)."""
    from bench import (  # noqa: PLC0415
        bench_audit,
        bench_crypto,
        bench_dataset,
        bench_guard,
        bench_render,
    )

    out: dict[str, Any] = {}
    jobs: dict[str, Any] = {
        "render": lambda: bench_render.run(
            count=100 if cfg.quick else 1000, repeats=1 if cfg.quick else 3
        ),
        "crypto": lambda: bench_crypto.run(
            size_mib=16 if cfg.quick else 512, repeats=1 if cfg.quick else 3
        ),
        # scan/pseudonymize run at about 1 MiB/s per core: 1 GiB is BENCH_DATASET_MIB=1024
        "dataset": lambda: bench_dataset.run(
            size_mib=1 if cfg.quick else int(os.environ.get("BENCH_DATASET_MIB", "64"))
        ),
        "audit_judge": lambda: bench_audit.run(
            count=100 if cfg.quick else 1000, repeats=1 if cfg.quick else 3
        ),
        "guard": None
        if cfg.quick
        else lambda: bench_guard.run(nginx=bench_guard._nginx_path() is not None),
    }
    for name, job in jobs.items():
        if job is None:
            out[name] = {"skipped": "quick mode"}
            continue
        log(f"module bench: {name}")
        started = time.monotonic()
        try:
            out[name] = job()
        except Exception as exc:  # another module's bench must not sink this run
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        out[name]["bench_s"] = round(time.monotonic() - started, 1)
    return out


# --- the cluster scenarios ---------------------------------------------------------------------


class Bench:
    def __init__(self, cfg: Config, cluster: Cluster, workdir: Path) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.workdir = workdir
        self.run_id = secrets.token_hex(3)
        self.prefix = f"bench-{self.run_id}-"
        self.policy_file = workdir / "policy.yaml"
        self.policy_file.write_text(yaml.safe_dump(TEST_POLICY))
        self.policy = Policy.from_yaml(self.policy_file)
        self.kubeconfig = workdir / "operator.kubeconfig"
        self.namespaces: list[str] = []
        self.operators: list[OperatorProcess] = []
        self.result: dict[str, Any] = {}
        self.errors: list[str] = []
        self.samples: dict[str, Any] = {}
        self.meter = CpuMeter({**cluster_pids(cluster.state_dir), "bench": os.getpid()})
        self.phase_cpu: dict[str, dict[str, float]] = {}
        self.audit = AuditReader(cluster.audit_log, needle="JTI=?")
        self.jti = ""
        self.burst_namespaces: list[str] = []
        self.archive: AuditReader | None = None
        self.profiling = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
        self.tracing = os.environ.get("BENCH_TRACEMALLOC", "") not in ("", "0")
        self.profiles: dict[str, Any] = {}

    def ns(self, suffix: str) -> str:
        return self.prefix + suffix

    # --- operator processes ----------------------------------------------------------------------

    async def start_operator(self, label: str, namespaces: list[str]) -> OperatorProcess:
        op = OperatorProcess(
            self.cluster,
            self.kubeconfig,
            self.policy_file,
            self.workdir / f"operator-{label}.log",
            env_extra={"SECUREAI_RESYNC_SECONDS": str(self.cfg.resync_s)},
            namespaces=tuple(namespaces),
        )
        self.operators.append(op)
        await asyncio.to_thread(op.start)
        log(f"operator {label} up (pid {pid(op)}, {len(namespaces)} namespaces)")
        return op

    async def stop_operator(self, op: OperatorProcess) -> None:
        await asyncio.to_thread(op.stop)
        if op in self.operators:
            self.operators.remove(op)

    async def metrics(self, op: OperatorProcess) -> str:
        return await asyncio.to_thread(op.metrics)

    # --- namespaces ------------------------------------------------------------------------------

    async def make_namespaces(self, api: Api, names: list[str], prereqs: bool = True) -> None:
        for name in names:
            await sc.make_namespace(api, name, self.run_id)
            self.namespaces.append(name)
            if prereqs:
                await sc.model_prereqs(api, name)
        if prereqs:
            for name in names:
                await sc.wait_claim_bound(api, name)

    async def drop_namespaces(self, api: Api, tracker: Tracker | None, names: list[str]) -> float:
        seconds = await sc.delete_namespaces(api, names, self.cfg.namespace_delete_timeout_s)
        for name in names:
            if name in self.namespaces:
                self.namespaces.remove(name)
            if tracker is not None:
                tracker.forget_namespace(name)
        return seconds

    def profile(self, name: str, op: OperatorProcess) -> Profiler | None:
        """py-spy on the operator for one scenario, when BENCH_PROFILE=1."""
        if not self.profiling:
            return None
        profiler = Profiler(pid(op), self.workdir / f"profile-{name}.txt")
        if not profiler.start():
            self.profiles[name] = {"skipped": "py-spy not installed (pip install py-spy)"}
            return None
        return profiler

    def profile_done(self, name: str, profiler: Profiler | None) -> None:
        if profiler is not None:
            self.profiles[name] = profiler.stop()

    def cpu_phase(self, name: str, before: dict[str, float]) -> None:
        self.phase_cpu[name] = CpuMeter.delta(before, self.meter.snapshot())

    # --- the run ---------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        api = await Api.from_kubeconfig(self.cluster.kubeconfig)
        tracker = Tracker(api, self.prefix, f"{sc.RUN_LABEL}={self.run_id}", MANAGED)
        floor_tracker = Tracker(
            api, self.prefix, f"{sc.RUN_LABEL}={self.run_id}", f"{sc.FLOOR_LABEL}=1"
        )
        try:
            swept = await sc.sweep_stale_runs(api, self.run_id)
            if swept:
                log(f"deleting {len(swept)} namespaces of earlier, dead benchmark runs")
            self.result["versions"] = versions(self.cluster.bindir, await api.get("/version"))
            await asyncio.to_thread(install_crds, self.cluster)
            await asyncio.to_thread(operator_kubeconfig, self.cluster, self.kubeconfig)
            token = yaml.safe_load(self.kubeconfig.read_text())["users"][0]["user"]["token"]
            self.jti = token_jti(token)
            self.audit = AuditReader(self.cluster.audit_log, f"JTI={self.jti}")
            self.archive = AuditReader(self.cluster.audit_log, self.prefix)
            self.archive.mark()
            # BENCH_PHASES=b: only the burst phase (its 1,000 CRs also time `secureai audit`)
            phases = os.environ.get("BENCH_PHASES", "a,b,memory").split(",")
            if "a" in phases:
                await self.phase_a(api, tracker, floor_tracker)
            if "b" in phases:
                await self.phase_b(api, tracker)
            if "memory" in phases:
                await self.phase_memory(api, tracker)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            log("FAILED: " + "".join(traceback.format_exception(exc))[-2000:])
        finally:
            for op in list(self.operators):
                await self.stop_operator(op)
            if self.namespaces:
                log(f"cleanup: deleting {len(self.namespaces)} namespaces")
                try:
                    self.result["cleanup_s"] = round(
                        await self.drop_namespaces(api, None, list(self.namespaces)), 1
                    )
                except Exception as exc:
                    self.errors.append(f"cleanup: {type(exc).__name__}: {exc}")
            for t in (tracker, floor_tracker):
                await t.stop()
            if self.archive is not None:  # the run's audit events, for later analysis
                with (self.workdir / "audit.jsonl").open("w") as fh:
                    for event in self.archive.read_new():
                        fh.write(json.dumps(event) + "\n")
            self.result["watch_reconnects"] = tracker.reconnects + floor_tracker.reconnects
            await api.close()
        return self.result

    async def time_audit(self, count: int) -> None:
        """`secureai audit` (the CLI, cluster-wide, admin kubeconfig) with `count` CRs managed."""
        out = self.workdir / "audit.json"
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        cmd = [sys.executable, "-m", "secureai.cli.main", "audit", "-o", "json", "--out", str(out)]
        cmd += ["--fail-on", "none", "--policy", str(self.policy_file)]
        log(f"(+) secureai audit with {count} CRs managed")
        started = time.monotonic()
        proc = await asyncio.to_thread(
            subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=300
        )
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            self.errors.append(f"audit: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
            return
        report = json.loads(out.read_text())
        mine = [w for w in report["workloads"] if w["namespace"].startswith(self.prefix)]
        self.result["audit_1000_workloads_s"] = round(seconds, 2)
        self.result["posture_audit"] = {
            "count": count,
            "workloads_judged": len(report["workloads"]),
            "bench_workloads_judged": len(mine),
            "findings": report["summary"]["findings"],
            "skipped": report["skipped"],
            "seconds": round(seconds, 2),
        }
        log(f"   audit: {len(report['workloads'])} workloads in {seconds:.2f}s")

    # --- phase A: floor, drift, sequential creates (a few CRs) -----------------------------------

    async def phase_a(self, api: Api, tracker: Tracker, floor_tracker: Tracker) -> None:
        cfg = self.cfg
        floor_ns, drift_ns, seq_ns = self.ns("floor"), self.ns("drift"), self.ns("seq")
        await self.make_namespaces(api, [floor_ns], prereqs=False)
        await self.make_namespaces(api, [drift_ns, seq_ns])
        await tracker.start([sc.KIND], sc.CHILD_KINDS)
        await floor_tracker.start([], ["ConfigMap"])
        floor_tracker.detailed.add(floor_ns)
        op = await self.start_operator("a", [floor_ns, drift_ns, seq_ns])

        log(f"1. watch floor: {cfg.floor_writes} writes")
        before = self.meter.snapshot()
        floor = await sc.watch_floor(api, floor_tracker, floor_ns, cfg.floor_writes)
        self.cpu_phase("watch_floor", before)
        self.result["watch_floor_ms"] = summary(floor.send_to_event_ms)
        self.result["watch_floor_from_response_ms"] = summary(floor.response_to_event_ms)
        self.result["write_rtt_ms"] = summary(floor.write_rtt_ms)
        self.result["watch_floor_timeouts"] = floor.timeouts
        self.samples["watch_floor_ms"] = [round(v, 3) for v in floor.send_to_event_ms]

        log("   API server create throughput: Services (ClusterIP) vs ConfigMaps")
        small = max(cfg.floor_writes // 10, 10)
        self.result["api_create_rate"] = {
            "services_serial": await sc.create_rate(api, floor_ns, "Service", small, 1),
            "services_32": await sc.create_rate(api, floor_ns, "Service", small * 5, 32),
            "configmaps_32": await sc.create_rate(api, floor_ns, "ConfigMap", small * 5, 32),
        }

        log(f"2. drift: {cfg.drift_crs} CRs, {cfg.tampers} tampers")
        targets = []
        for i in range(cfg.drift_crs):
            guard = i % 2 == 0
            doc = sc.workload(
                drift_ns, f"drift-{i}", self.run_id, replicas=2 if guard else 1, guard=guard
            )
            await api.create(doc)
            targets.append((drift_ns, doc["metadata"]["name"], guard))
        ready = [tracker.when_ready(sc.cr_key(ns, name)) for ns, name, _ in targets]
        await asyncio.wait_for(asyncio.gather(*ready), timeout=120)
        tracker.detailed.add(drift_ns)
        metrics0 = await self.metrics(op)
        before = self.meter.snapshot()
        profiler = self.profile("drift", op)
        in_namespace = AuditReader(self.cluster.audit_log, f'"namespace":"{drift_ns}"')
        in_namespace.mark()
        interleaved = sc.FloorResult()

        async def floor_sample() -> None:
            await sc.floor_write(api, floor_tracker, floor_ns, interleaved)

        samples = await sc.drift(
            api, tracker, targets, cfg.tampers, cfg.tamper_timeout_s, between=floor_sample
        )
        self.profile_done("drift", profiler)
        self.result["watch_floor_during_drift_ms"] = summary(interleaved.send_to_event_ms)
        self.cpu_phase("drift", before)
        metrics1 = await self.metrics(op)
        self.record_drift("", samples, metrics0, metrics1)
        self.result["drift_breakdown"] = sc.drift_breakdown(
            samples, in_namespace.read_new(), self.jti
        )

        log(f"3. create -> applied / Ready: {cfg.sequential} CRs, one at a time")
        before = self.meter.snapshot()
        seq = await sc.sequential_creates(
            api,
            tracker,
            self.policy,
            seq_ns,
            self.run_id,
            cfg.sequential,
            cfg.create_timeout_s,
            cfg.gpu_every,
        )
        self.cpu_phase("create", before)
        self.result["create_applied_ms"] = summary(seq.applied_ms)
        self.result["create_ready_ms"] = summary(seq.ready_ms)
        self.result["create_timeouts"] = seq.timeouts
        self.samples["create_applied_ms"] = [round(v, 3) for v in seq.applied_ms]
        self.samples["create_ready_ms"] = [round(v, 3) for v in seq.ready_ms]
        self.result["operator_a"] = {
            "rss_mib": round(rss_mib(pid(op)), 1),
            "peak_rss_mib": round(hwm_mib(pid(op)), 1),
            "cpu_s": round(cpu_seconds(pid(op)), 2),
            "crs": cfg.drift_crs + cfg.sequential,
        }
        await self.stop_operator(op)
        log("phase A done; deleting its namespaces")
        phase_a = [floor_ns, drift_ns, seq_ns]
        if cfg.isolate:
            seconds = await self.drop_namespaces(api, tracker, phase_a)
            self.result["phase_a_cleanup_s"] = round(seconds, 1)
        else:  # quick: the final cleanup waits for them
            for name in phase_a:
                await api.delete("Namespace", None, name)

    def record_drift(self, suffix: str, samples: list[sc.DriftSample], m0: str, m1: str) -> None:
        ok = [s.ms for s in samples if s.ms is not None]
        self.result["drift_revert_ms" + suffix] = summary(ok)
        self.result["drift_timeouts" + suffix] = sum(s.ms is None for s in samples)
        by_kind: dict[str, list[float]] = {}
        by_tamper: dict[str, list[float]] = {}
        for s in samples:
            if s.ms is not None:
                by_kind.setdefault(s.kind, []).append(s.ms)
                by_tamper.setdefault(s.tamper, []).append(s.ms)
        kinds = sorted({s.kind for s in samples})
        tampers = sorted({s.tamper for s in samples})
        self.result["drift_revert_by_kind" + suffix] = {
            k: {
                **summary(by_kind.get(k, [])),
                "timeouts": sum(s.ms is None and s.kind == k for s in samples),
            }
            for k in kinds
        }
        self.result["drift_revert_by_tamper" + suffix] = {
            t: {
                **summary(by_tamper.get(t, [])),
                "timeouts": sum(s.ms is None and s.tamper == t for s in samples),
            }
            for t in tampers
        }
        self.result["drift_status_ms" + suffix] = summary(
            [s.status_ms for s in samples if s.status_ms is not None]
        )
        n = sc.metric_sum(m1, "secureai_drift_revert_duration_seconds_count") - sc.metric_sum(
            m0, "secureai_drift_revert_duration_seconds_count"
        )
        secs = sc.metric_sum(m1, "secureai_drift_revert_duration_seconds_sum") - sc.metric_sum(
            m0, "secureai_drift_revert_duration_seconds_sum"
        )
        self.result["drift_operator_side" + suffix] = {
            "reverts": int(n),
            "mean_ms": round(secs / n * 1000, 2) if n else None,
            "note": "secureai_drift_revert_duration_seconds: event received -> revert accepted",
        }
        self.samples["drift_revert_ms" + suffix] = [
            {"kind": s.kind, "tamper": s.tamper, "ms": _round(s.ms, 3)} for s in samples
        ]

    # --- phase B: burst, idle, drift at scale ----------------------------------------------------

    async def phase_b(self, api: Api, tracker: Tracker) -> None:
        cfg = self.cfg
        per_ns = cfg.burst // cfg.burst_namespaces
        names = [self.ns(f"b{j}") for j in range(cfg.burst_namespaces)]
        self.burst_namespaces = names
        await self.make_namespaces(api, names)
        op = await self.start_operator("burst", names)
        opid = pid(op)
        docs = [
            sc.workload(
                names[i // per_ns],
                f"w-{i}",
                self.run_id,
                gpu=i % cfg.gpu_every == cfg.gpu_every // 2,
            )
            for i in range(cfg.burst)
        ]
        log(f"4. burst: {cfg.burst} CRs at once in {cfg.burst_namespaces} namespaces")
        self.audit.mark()
        cpu0 = cpu_seconds(opid)
        before = self.meter.snapshot()

        def sample() -> dict[str, float]:
            return {"rss_mib": round(rss_mib(opid), 1), "cpu_s": round(cpu_seconds(opid) - cpu0, 2)}

        profiler = self.profile("burst", op)
        in_burst = AuditReader(self.cluster.audit_log, f'"namespace":"{self.prefix}b')
        in_burst.mark()
        addresses = AuditReader(self.cluster.audit_log, '"resource":"ipaddresses"')
        addresses.mark()
        t0_wall = time.time()
        res = await sc.burst(
            api,
            tracker,
            docs,
            self.policy,
            concurrency=cfg.burst_concurrency,
            timeout=cfg.burst_timeout_s,
            sample=sample,
        )
        self.profile_done("burst", profiler)
        self.cpu_phase("burst", before)
        writes = self.audit.read_new()
        self.result["burst_1000_s"] = _round(res.ready_s)
        self.result["burst"] = {
            "count": res.count,
            "ready": res.ready,
            "all_ready_s": _round(res.ready_s),
            "all_created_s": _round(res.created_s),
            "all_applied_s": _round(res.applied_s),
            "operator_cpu_s": round(cpu_seconds(opid) - cpu0, 2),
            "operator_peak_rss_mib": round(hwm_mib(opid), 1),
            "operator_rss_mib": round(rss_mib(opid), 1),
            "operator_writes": len(writes),
            "operator_writes_by_request": describe_writes(writes),
            "concurrency": cfg.burst_concurrency,
            "timeout_s": cfg.burst_timeout_s,
        }
        self.result["burst"]["audit"] = sc.burst_audit(in_burst.read_new(), self.jti, t0_wall)
        allocations = [e for e in addresses.read_new() if e.get("verb") == "create"]
        self.result["burst"]["audit"]["ipaddress_creates"] = {
            "count": len(allocations),
            "by": sorted({(e.get("user") or {}).get("username", "?") for e in allocations}),
            "latency_ms": summary(
                [
                    (
                        audit_seconds(e["stageTimestamp"])
                        - audit_seconds(e["requestReceivedTimestamp"])
                    )
                    * 1000
                    for e in allocations
                ]
            ),
        }
        self.samples["burst_timeline"] = res.timeline
        log(f"   burst: {res.ready}/{res.count} Ready in {res.ready_s}s")

        log(f"5. steady state: settle, then a {cfg.idle_s:.0f}s idle window")
        await self.idle(op)
        await self.time_audit(cfg.burst)  # on the settled cluster, as an auditor meets it

        log(f"(+) drift at scale: {cfg.scale_tampers} tampers with {cfg.burst} CRs managed")
        tracker.detailed.update(names)
        step = max(1, cfg.burst // max(cfg.scale_tampers, 1))
        targets = [
            (names[i // per_ns], f"w-{i}", False)
            for i in range(0, cfg.burst, step)
            if i % cfg.gpu_every != cfg.gpu_every // 2
        ]
        metrics0 = await self.metrics(op)
        profiler = self.profile("drift_at_scale", op)
        in_run = AuditReader(self.cluster.audit_log, f'"namespace":"{self.prefix}')
        in_run.mark()
        samples = await sc.drift(
            api, tracker, targets, cfg.scale_tampers, cfg.tamper_timeout_s, sc.SCALE_TAMPERS
        )
        self.profile_done("drift_at_scale", profiler)
        self.result["drift_breakdown_at_scale"] = sc.drift_breakdown(
            samples, in_run.read_new(), self.jti
        )
        metrics1 = await self.metrics(op)
        self.record_drift("_at_scale", samples, metrics0, metrics1)
        self.result["operator_burst"] = {
            "rss_mib": round(rss_mib(opid), 1),
            "peak_rss_mib": round(hwm_mib(opid), 1),
            "cpu_s": round(cpu_seconds(opid), 2),
            "crs": cfg.burst,
        }
        await self.stop_operator(op)

    async def idle(self, op: OperatorProcess) -> None:
        cfg = self.cfg
        start = time.monotonic()
        last = start
        self.audit.mark()
        while time.monotonic() - last < cfg.settle_quiet_s:  # quiet: no operator write for a while
            if time.monotonic() - start > cfg.settle_max_s:
                self.errors.append(f"idle: operator still writing after {cfg.settle_max_s:.0f}s")
                break
            if self.audit.read_new():
                last = time.monotonic()
            await asyncio.sleep(0.5)  # polling with a deadline
        settle_s = time.monotonic() - start
        metrics0 = await self.metrics(op)
        self.audit.mark()
        wall0 = datetime.now(UTC)
        before = self.meter.snapshot()
        cpu0 = cpu_seconds(pid(op))
        await asyncio.sleep(cfg.idle_s)  # the measurement window itself
        wall1 = datetime.now(UTC)
        cpu1 = cpu_seconds(pid(op))
        self.cpu_phase("idle", before)
        events = [
            e
            for e in self.audit.read_new()
            if wall0 <= audit_timestamp(e["requestReceivedTimestamp"]) <= wall1
        ]
        metrics1 = await self.metrics(op)
        window = (wall1 - wall0).total_seconds()
        self.result["idle_writes_per_min"] = round(len(events) * 60 / window, 2)
        self.result["idle"] = {
            "window_s": round(window, 1),
            "writes": len(events),
            "writes_by_request": describe_writes(events),
            "crs": cfg.burst,
            "settle_s": round(settle_s, 1),
            "resync_period_s": cfg.resync_s,
            "resyncs_in_window": int(
                sc.metric_sum(metrics1, "secureai_resyncs_total")
                - sc.metric_sum(metrics0, "secureai_resyncs_total")
            ),
            "operator_cpu_s": round(cpu1 - cpu0, 2),
            "operator_cpu_percent": round((cpu1 - cpu0) / window * 100, 1),
        }

    # --- phase C: memory of a fresh operator at several counts -----------------------------------

    async def phase_memory(self, api: Api, tracker: Tracker) -> None:
        cfg = self.cfg
        per_ns = cfg.burst // cfg.burst_namespaces
        remaining = list(self.burst_namespaces)
        rss: dict[str, float] = {}
        detail: dict[str, Any] = {}
        log("6. memory: the reconciler's state for these CRs, rebuilt in-process (tracemalloc)")
        footprint = await sc.state_footprint(api, remaining, self.policy)
        for count in sorted(cfg.rss_counts, reverse=True):
            keep = remaining[: max(1, count // per_ns)]
            drop = [n for n in remaining if n not in keep]
            if drop and cfg.isolate:
                log(f"6. memory: deleting {len(drop)} namespaces to leave {count} CRs")
                await self.drop_namespaces(api, tracker, drop)
                remaining = keep
            op = await self.start_operator(f"mem-{count}", keep)
            self.audit.mark()
            started = time.monotonic()
            profiler = (
                self.profile(f"restart_{count}", op) if count == max(cfg.rss_counts) else None
            )
            settled = await self.settle(op, count)
            self.profile_done(f"restart_{count}", profiler)
            writes = self.audit.read_new()
            rss[str(count)] = round(rss_mib(pid(op)), 1)
            detail[str(count)] = {
                "rss_mib": rss[str(count)],
                "peak_rss_mib": round(hwm_mib(pid(op)), 1),
                "startup_cpu_s": round(cpu_seconds(pid(op)), 2),
                "settle_s": round(time.monotonic() - started, 1),
                "settled": settled,
                "restart_writes": len(writes),
                "restart_writes_by_request": describe_writes(writes),
            }
            log(f"   {count} CRs: RSS {rss[str(count)]} MiB")
            await self.stop_operator(op)
            if self.tracing and count == max(cfg.rss_counts):
                detail[str(count)]["tracemalloc"] = await self.traced_heap(keep, count)
        empty = self.ns("empty")
        await self.make_namespaces(api, [empty], prereqs=False)
        op = await self.start_operator("mem-0", [empty])
        await self.settle(op, 0)
        baseline = round(rss_mib(pid(op)), 1)
        await self.stop_operator(op)
        self.result["rss_mib"] = dict(sorted(rss.items(), key=lambda kv: int(kv[0])))
        self.result["memory"] = {
            "method": "fresh operator started on the namespaces holding N CRs, RSS once it "
            "has reconciled them all and its CPU is quiet",
            "by_count": dict(sorted(detail.items(), key=lambda kv: int(kv[0]))),
            "baseline_rss_mib": baseline,
            "reconciler_state": footprint,
        }

    async def traced_heap(self, namespaces: list[str], count: int) -> dict[str, Any]:
        """Who holds the operator's memory at `count` CRs (BENCH_TRACEMALLOC=1, diagnostic)."""
        log(f"   tracemalloc: operator on {count} CRs")
        op = TracedOperator(
            self.cluster,
            self.kubeconfig,
            self.policy_file,
            self.workdir / "operator-tracemalloc.log",
            env_extra={"SECUREAI_RESYNC_SECONDS": str(self.cfg.resync_s)},
            namespaces=tuple(namespaces),
            trigger=self.workdir / "tracemalloc.trigger",
            out=self.workdir / "tracemalloc.json",
        )
        self.operators.append(op)
        await asyncio.to_thread(op.start)
        await self.settle(op, count)
        heap = await asyncio.to_thread(op.dump)
        heap["rss_mib_under_tracemalloc"] = round(rss_mib(pid(op)), 1)
        await self.stop_operator(op)
        return heap

    async def settle(self, op: OperatorProcess, count: int) -> bool:
        """Until the operator has reconciled `count` CRs and its CPU is quiet (bounded)."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                done = sc.metric_sum(await self.metrics(op), "secureai_reconciles_total")
            except OSError:  # a busy operator may not answer /metrics within 5 s
                done = -1
            if done >= count:
                break
            await asyncio.sleep(0.5)  # polling with a deadline
        else:
            return False
        quiet = 0
        last = cpu_seconds(pid(op))
        while time.monotonic() < deadline and quiet < 2:
            await asyncio.sleep(1.0)  # CPU sampling cadence
            now_cpu = cpu_seconds(pid(op))
            quiet = quiet + 1 if now_cpu - last < 0.03 else 0
            last = now_cpu
        return quiet >= 2


@dataclass
class TracedOperator(OperatorProcess):
    """The operator under tracemalloc (bench/scenarios_tracemalloc.py): a diagnostic only."""

    trigger: Path = Path()
    out: Path = Path()

    def start(self) -> TracedOperator:
        self.health_port, self.metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "SECUREAI_NAMESPACE": OPERATOR_NAMESPACE,
            **self.env_extra,
        }
        args = [
            sys.executable, "-X", "tracemalloc=12", "-m", "bench.scenarios_tracemalloc",
            str(self.trigger), str(self.out), "run", "--policy", str(self.policy_file),
            "--health-port", str(self.health_port), "--metrics-port", str(self.metrics_port),
            *(arg for ns in self.namespaces for arg in ("--namespace", ns)),
        ]  # fmt: skip
        with self.log_file.open("ab") as log_fh:
            self.proc = subprocess.Popen(
                args, env=env, stdout=log_fh, stderr=subprocess.STDOUT, cwd=REPO
            )
        wait_for(self.ready, timeout=180, description="traced operator /readyz")
        return self

    def dump(self, timeout: float = 300) -> dict[str, Any]:
        self.out.unlink(missing_ok=True)
        self.trigger.touch()
        wait_for(lambda: self.out.exists() and not self.trigger.exists(), timeout=timeout,
                 description="tracemalloc dump")  # fmt: skip
        data: dict[str, Any] = json.loads(self.out.read_text())
        return data


def pid(op: OperatorProcess) -> int:
    assert op.proc is not None
    return op.proc.pid


# --- results -----------------------------------------------------------------------------------


def targets(result: dict[str, Any], cfg: Config) -> dict[str, Any]:
    def p(key: str, q: str) -> float | None:
        value = (result.get(key) or {}).get(q)
        return None if value is None else float(value)

    drift_p99, drift_p50, floor_p50 = (
        p("drift_revert_ms", "p99"),
        p("drift_revert_ms", "p50"),
        p("watch_floor_ms", "p50"),
    )
    ratio = drift_p50 / floor_p50 if drift_p50 and floor_p50 else None
    ready_p50 = p("create_ready_ms", "p50")
    burst_s = result.get("burst_1000_s")
    idle = result.get("idle_writes_per_min")
    audit_s = result.get("audit_1000_workloads_s")
    top = str(max(cfg.rss_counts))
    rss = (result.get("rss_mib") or {}).get(top)
    timeouts = int(result.get("drift_timeouts") or 0)

    return {
        "drift_revert_p99_ms": {
            "target": "< 1000",
            "value": drift_p99,
            "met": (drift_p99 is not None and drift_p99 < 1000 and timeouts == 0),
        },
        "drift_p50_over_watch_floor_p50": {
            "target": "<= 5",
            "value": _round(ratio),
            "met": (ratio is not None and ratio <= 5),
        },
        "create_ready_p50_ms": {
            "target": "< 1500",
            "value": ready_p50,
            "met": (ready_p50 is not None and ready_p50 < 1500),
        },
        "burst_ready_s": {
            "target": "< 120",
            "count": cfg.burst,
            "value": burst_s,
            "met": (burst_s is not None and burst_s < 120),
        },
        "idle_writes_per_min": {"target": "0", "value": idle, "met": (idle == 0)},
        "audit_1000_workloads_s": {
            "target": "< 10",
            "count": cfg.burst,
            "value": audit_s,
            "met": (audit_s is not None and audit_s < 10),
        },
        "rss_mib": {
            "target": "< 250",
            "count": int(top),
            "value": rss,
            "met": (rss is not None and rss < 250),
        },
    }


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    def r(a: str, b: str, q: str) -> float | None:
        x, y = (result.get(a) or {}).get(q), (result.get(b) or {}).get(q)
        return round(x / y, 2) if x and y else None

    return {
        "drift_p50_over_watch_floor_p50": r("drift_revert_ms", "watch_floor_ms", "p50"),
        "drift_p99_over_watch_floor_p99": r("drift_revert_ms", "watch_floor_ms", "p99"),
        "drift_at_scale_p50_over_watch_floor_p50": r(
            "drift_revert_ms_at_scale", "watch_floor_ms", "p50"
        ),
        "create_applied_p50_over_watch_floor_p50": r("create_applied_ms", "watch_floor_ms", "p50"),
        "drift_p50_over_interleaved_floor_p50": r(
            "drift_revert_ms", "watch_floor_during_drift_ms", "p50"
        ),
    }


def out_paths() -> tuple[Path, Path]:
    out = Path(os.environ.get("BENCH_OUT") or RESULTS / "latest.json")
    return out, out.with_suffix(".png")


def _sigterm(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    cfg = QUICK if quick else FULL
    if os.environ.get("BENCH_RESYNC_SECONDS"):
        cfg = dataclasses.replace(cfg, resync_s=float(os.environ["BENCH_RESYNC_SECONDS"]))
    if os.environ.get("BENCH_CONFIG"):  # experiments: '{"burst": 200, "isolate": true}'
        overrides = json.loads(os.environ["BENCH_CONFIG"])
        if "rss_counts" in overrides:
            overrides["rss_counts"] = tuple(overrides["rss_counts"])
        cfg = dataclasses.replace(cfg, **overrides)
    out_json, out_png = out_paths()
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.monotonic()
    result: dict[str, Any] = {
        "schema": 1,
        "quick": quick,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": dataclasses.asdict(cfg),
        "machine": machine(),
    }
    result["machine"]["activity_at_start"] = other_activity()
    if os.environ.get("BENCH_MODULES", "1") != "0":
        result.update(module_benches(cfg))
    cluster = ensure_cluster()
    workdir = Path(tempfile.mkdtemp(prefix="secureai-bench-"))
    bench = Bench(cfg, cluster, workdir)
    result["run_id"] = bench.run_id
    log(f"run {bench.run_id}: namespaces {bench.prefix}*, logs in {workdir}")
    try:
        result.update(asyncio.run(bench.run()))
        if not quick:  # make test runs these scenarios as integration tests already
            result.update(scenarios_failover.run(quick))  # failover_*, fuzz_* keys
            result.update(scenarios_quarantine.run(quick))  # quarantine_* keys
    finally:
        release_cluster(cluster)
    result["ratios"] = ratios(result)
    result["targets"] = targets(result, cfg)
    result["cpu_s_by_phase"] = bench.phase_cpu
    if bench.profiles:
        result["profiles"] = bench.profiles
    result["machine"]["activity_at_end"] = other_activity()
    result["logs"] = str(workdir)
    result["errors"] = bench.errors
    result["duration_s"] = round(time.monotonic() - started, 1)
    result["samples"] = bench.samples
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    try:
        from bench.scenarios_plot import plot  # noqa: PLC0415

        plot(result, out_png)
    except Exception as exc:
        result["errors"].append(f"plot: {type(exc).__name__}: {exc}")
        out_json.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {out_json} and {out_png} in {result['duration_s']}s")
    print(json.dumps({k: result.get(k) for k in ("targets", "ratios", "errors")}, indent=2))
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
