"""Process, audit-log and machine facts for the benchmark (all read from /proc and files)."""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


# --- statistics --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values_ms: list[float]) -> dict[str, Any]:
    """{p50, p99, n} plus mean/min/max, in milliseconds, rounded to 0.01 ms."""
    if not values_ms:
        return {"p50": None, "p99": None, "n": 0}
    return {
        "p50": round(percentile(values_ms, 50), 2),
        "p99": round(percentile(values_ms, 99), 2),
        "n": len(values_ms),
        "mean": round(sum(values_ms) / len(values_ms), 2),
        "min": round(min(values_ms), 2),
        "max": round(max(values_ms), 2),
    }


# --- processes ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (from /proc/PID/stat), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def status_mib(pid: int, field: str) -> float:
    """A memory line of /proc/PID/status (VmRSS, VmHWM...) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def rss_mib(pid: int) -> float:
    return status_mib(pid, "VmRSS")


def hwm_mib(pid: int) -> float:
    return status_mib(pid, "VmHWM")


def cluster_pids(state_dir: Path) -> dict[str, int]:
    """The control-plane components hack/cluster.sh started (pid files in .cluster/pids)."""
    pids = {}
    for f in sorted((state_dir / "pids").glob("*.pid")):
        try:
            pid = int(f.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, OSError):
            continue
        pids[f.stem] = pid
    return pids


@dataclass
class CpuMeter:
    """CPU seconds used by a set of processes between two points in time."""

    pids: dict[str, int]

    def snapshot(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            try:
                out[name] = cpu_seconds(pid)
            except OSError:
                continue
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: round(after[k] - before[k], 2) for k in after if k in before}


def other_activity() -> dict[str, Any]:
    """What else runs on this machine (other test sessions or operators skew the figures)."""
    pytest_sessions = 0
    operators: list[str] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if re.search(r"/pytest( |$)|-m pytest", cmd):
            pytest_sessions += 1
        elif "secureai.cli.main run" in cmd:
            operators.append(cmd.split(" run ", 1)[1][:160])
    load1, load5, load15 = os.getloadavg()
    return {
        "loadavg": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "pytest_processes": pytest_sessions,
        "other_operators": operators,
    }


# --- audit log ---------------------------------------------------------------------------------


def token_jti(token: str) -> str:
    """The `jti` claim of a ServiceAccount token (audit events name it as credential-id)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["jti"])


def audit_timestamp(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def audit_seconds(value: str) -> float:
    """An audit timestamp as Unix seconds."""
    return audit_timestamp(value).timestamp()


@dataclass
class AuditReader:
    """Incremental reader of the API server's JSON audit log (writes only, per its policy).

    Keeps the lines that contain ``needle``: the operator token's credential id
    (``JTI=...``), or a namespace name. Follows the API server's log rotation
    (``--audit-log-maxsize``): the rest of the rotated file is read before the new one.
    """

    path: Path
    needle: str
    offset: int = 0
    inode: int = 0

    def mark(self) -> None:
        if self.path.exists():
            st = self.path.stat()
            self.offset, self.inode = st.st_size, st.st_ino
        else:
            self.offset, self.inode = 0, 0

    def _rotated_to(self) -> Path | None:
        """The file that now holds the inode being read, if the log was rotated away."""
        for candidate in self.path.parent.glob(self.path.stem + "-*" + self.path.suffix):
            if candidate.stat().st_ino == self.inode:
                return candidate
        return None

    def _read_from(self, path: Path) -> bytes:
        with path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a line being written stays for the next read
        self.offset += end
        return data[:end]

    def read_new(self) -> list[dict[str, Any]]:
        """Matching events appended since the last mark/read."""
        if not self.path.exists():
            return []
        data = b""
        inode = self.path.stat().st_ino
        if self.inode and inode != self.inode:
            rotated = self._rotated_to()
            if rotated is not None:
                data += self._read_from(rotated)
            self.offset = 0
        self.inode = inode
        data += self._read_from(self.path)
        needle = self.needle.encode()
        out = []
        for line in data.splitlines():
            if needle not in line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def describe_writes(events: list[dict[str, Any]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for e in events:
        ref = e.get("objectRef") or {}
        resource = ref.get("resource", "?") + (
            "/" + ref["subresource"] if ref.get("subresource") else ""
        )
        counts[f"{e.get('verb')} {resource}"] += 1
    return dict(counts.most_common())


# --- machine and versions ----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _binary_version(binary: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0][:120] if text else None


def operator_source() -> dict[str, Any]:
    """Where `secureai` is imported from (PYTHONPATH may point at a snapshot) and its commit."""
    spec = importlib.util.find_spec("secureai")
    where = Path(spec.origin).parent if spec and spec.origin else None
    out: dict[str, Any] = {"path": str(where) if where else None}
    if where is None:
        return out

    def git(*args: str) -> str | None:
        proc = subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 else None

    out["commit"] = git("rev-parse", "HEAD") or os.environ.get("BENCH_OPERATOR_COMMIT")
    status = git("status", "--porcelain", "--", ".")
    out["dirty"] = None if status is None else bool(status)
    return out


def versions(bindir: Path, server_version: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"python": sys.version.split()[0]}
    for dist in ("secureai", "kopf", "aiohttp", "kubernetes", "pydantic", "cryptography"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["operator_source"] = operator_source()
    out["kube_apiserver"] = (server_version or {}).get("gitVersion")
    out["etcd"] = _binary_version(bindir / "etcd", "--version")
    out["kwok"] = _binary_version(bindir / "kwok", "--version")
    return out


# --- profiles ----------------------------------------------------------------------------------


def py_spy() -> str | None:
    """The py-spy binary (pip install py-spy), if installed next to this Python or on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


@dataclass
class Profiler:
    """py-spy sampling the operator (without pausing it) while one scenario runs."""

    pid: int
    out: Path
    rate: int = 200
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        binary = py_spy()
        if binary is None:
            return False
        self.proc = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return True

    def stop(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return top_frames(self.out) if self.out.exists() else None


def _frame(frame: str) -> str:
    """'f (/x/secureai/render/drift.py:12)' -> 'f (secureai/render/drift.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    for anchor in ("secureai", "kopf", "aiohttp", "asyncio", "pydantic", "json", "yaml"):
        if anchor in parts:
            path = "/".join(parts[parts.index(anchor) :])
            break
    else:
        path = Path(path).name
    return f"{name} ({path})"


def top_frames(collapsed: Path, n: int = 20) -> dict[str, Any]:
    """Self and inclusive shares of the busiest functions in a py-spy raw (collapsed) profile."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[f, round(c / total * 100, 1)] for f, c in counter.most_common(n)] if total else []

    return {
        "file": str(collapsed),
        "samples": total,
        "self_percent": share(own),
        "inclusive_percent": share(inclusive),
    }
