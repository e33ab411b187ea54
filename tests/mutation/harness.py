"""Mutation testing with mutmut, in a scratch copy of the repository.

mutmut mutates the copy only (never the shared working tree), one module group at a time,
and runs only the unit tests that cover each mutated function. Usage:

    python tests/mutation/harness.py                  # every group, every mutant
    python tests/mutation/harness.py crypto drift     # some groups
    python tests/mutation/harness.py --sample         # the fixed sample `make test` runs

The summary (killed/total per group, surviving mutant names) is printed and written as JSON
to <workdir>/report.json. Exit status 1 if a group is below its target (--check).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "secureai"
COPIED = ("tests", "examples", "crds", "charts", "bench")
PLUGIN = "no_shrink"  # tests/mutation/no_shrink.py, on PYTHONPATH for every mutmut run
KILLED = {1, 3}  # mutmut: a test failed, or pytest itself failed on the mutant
SURVIVED = {0}


@dataclass(frozen=True)
class Group:
    """Source files to mutate (globs under operator/secureai; "a|b" takes the first that
    exists, for modules that moved), the tests that cover them (globs)."""

    name: str
    sources: tuple[str, ...]
    tests: tuple[str, ...]
    target: float
    # the fixed sample `make test` runs: globs over mutant names (module.x_function__mutmut_N),
    # checked against the few fast tests that pin those functions
    sample: tuple[str, ...] = ()
    sample_tests: tuple[str, ...] = ()
    sample_sources: tuple[str, ...] = ()  # default: sources (generation costs time too)
    # tests that cannot pass on any mutant (they check what the trampoline changes: imports)
    deselect: tuple[str, ...] = ()


GROUPS = {
    g.name: g
    for g in (
        Group(
            "crypto",
            ("crypto/*.py",),
            (
                "tests/unit/test_crypto_*.py",
                "tests/unit/test_review_findings.py",
            ),
            0.90,
            ("*.envelope.x__parse_header__mutmut_*", "*.envelope.x__check_kek__mutmut_*"),
            ("tests/unit/test_review_findings.py",),
            ("crypto/envelope.py",),
        ),
        Group(
            "drift",
            ("judge/drift.py|render/drift.py",),
            (
                "tests/unit/test_drift_*.py",
                "tests/unit/test_reconciler_offline.py",
            ),
            0.90,
            ("*.x_repaired__mutmut_*",),
            ("tests/unit/test_drift_repair.py",),
        ),
        Group(
            "validation",
            ("render/validate.py",),
            (
                "tests/unit/test_render_validate_offline.py",
                "tests/unit/test_render_examples.py",
                "tests/unit/test_render_properties.py",
                "tests/unit/test_inadmissible.py",
                "tests/unit/test_validate_messages.py",
            ),
            0.80,
        ),
        Group(
            "network",
            ("render/network.py",),
            (
                "tests/unit/test_render_examples.py",
                "tests/unit/test_render_properties.py",
                "tests/unit/test_render_network.py",
            ),
            0.80,
        ),
        Group(
            "pii",
            ("pii/*.py|guard/redact.py",),
            (
                "tests/unit/test_pii*.py",
                "tests/unit/test_guard_redact.py",
                "tests/unit/test_guard_corpus.py",
            ),
            0.80,
            # every mutated module imports mutmut's trampoline
            deselect=("tests/unit/test_pii_api.py::test_pii_imports_only_the_standard_library",),
        ),
        Group(
            "status",
            ("render/status.py", "api/status.py"),
            (
                "tests/unit/test_status.py",
                "tests/unit/test_status_exact.py",
                "tests/unit/test_reconciler_offline.py",
                "tests/unit/test_model_report.py",
            ),
            0.80,
        ),
    )
}


def _resolve(workdir: Path, group: Group, sample: bool) -> tuple[list[str], list[str]]:
    """The group's source globs and test files as they exist in the copy."""
    package = workdir / "src" / "secureai"
    only = []
    for entry in (sample and group.sample_sources) or group.sources:
        found = [alt for alt in entry.split("|") if any(package.glob(alt))]
        if found:
            only.append(f"src/secureai/{found[0]}")
    globs = group.sample_tests if sample else group.tests
    tests = sorted({str(p.relative_to(workdir)) for t in globs for p in workdir.glob(t)})
    return only, tests


def _config(workdir: Path, group: Group, sample: bool) -> str:
    """The [tool.mutmut] table for the scratch copy's pyproject.toml."""
    only, tests = _resolve(workdir, group, sample)
    if not only or not tests:
        raise SystemExit(f"{group.name}: no sources ({group.sources}) or tests in the copy")
    pytest_args = [
        "-p",
        "no:cacheprovider",
        "-p",
        PLUGIN,
        "-m",
        "not integration and not slow",
        "-x",
        "-q",
        *(f"--deselect={t}" for t in group.deselect),
    ]
    return "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["src/secureai"]',
            f"only_mutate = {json.dumps(only)}",
            f"also_copy = {json.dumps(list(COPIED))}",
            f"pytest_add_cli_args = {json.dumps(pytest_args)}",
            f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
            "use_git_change_detection = false",
            "timeout_multiplier = 5.0",
            "timeout_constant = 5.0",
            "",
        ]
    )


def _export(dest: Path, worktree: bool) -> Path:
    """The tree to mutate: the committed HEAD by default (others may be mid-edit)."""
    if not worktree:
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=False
        )
        if archive.returncode == 0:
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
            return dest
        shutil.rmtree(dest)
    return REPO


def _prepare(workdir: Path, group: Group, worktree: bool, sample: bool) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    source = _export(workdir.with_name(workdir.name + ".src"), worktree)
    skip = shutil.ignore_patterns("__pycache__", "results")
    (workdir / "src").mkdir(parents=True)
    shutil.copytree(source / "operator" / "secureai", workdir / "src" / "secureai", ignore=skip)
    for name in COPIED:
        if (source / name).exists():
            shutil.copytree(source / name, workdir / name, ignore=skip)
    pyproject = (source / "pyproject.toml").read_text()
    (workdir / "pyproject.toml").write_text(pyproject + _config(workdir, group, sample))
    if source != REPO:
        shutil.rmtree(source)
    # exists before mutmut starts, or the import system caches PYTHONPATH's entry as missing
    (workdir / "mutants" / "src").mkdir(parents=True)


def _mutmut(workdir: Path, args: list[str], max_children: int) -> int:
    env = {
        **os.environ,
        # subprocesses the tests start (the CLI) import the mutated copy too
        # no_shrink.py is loaded from here (the harness's own directory), not from the copy
        "PYTHONPATH": os.pathsep.join(
            [str(workdir / "mutants" / "src"), str(Path(__file__).parent)]
        ),
        "SECUREAI_HYPOTHESIS_PROFILE": "mutation",
    }
    mutmut = Path(sys.executable).parent / "mutmut"
    cmd = [str(mutmut), "run", "--max-children", str(max_children), *args]
    with (workdir / "mutmut.log").open("w") as log:
        return subprocess.run(
            cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode


def _results(workdir: Path) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for meta in (workdir / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        out.update(data.get("exit_code_by_key", {}))
    return out


def run_group(
    group: Group,
    root: Path,
    *,
    sample: bool,
    max_children: int,
    worktree: bool,
    extra_patterns: tuple[str, ...] = (),
) -> dict[str, object]:
    started = time.monotonic()
    workdir = root / group.name
    _prepare(workdir, group, worktree, sample)
    patterns = list(group.sample) if sample else list(extra_patterns)
    rc = _mutmut(workdir, patterns, max_children)
    results = _results(workdir)
    if patterns:
        results = {k: v for k, v in results.items() if any(fnmatch(k, p) for p in patterns)}
    checked = {k: v for k, v in results.items() if v is not None}
    killed = sorted(k for k, v in checked.items() if v in KILLED)
    survived = sorted(k for k, v in checked.items() if v in SURVIVED)
    other = {k: v for k, v in checked.items() if v not in KILLED | SURVIVED}
    total = len(killed) + len(survived)
    return {
        "group": group.name,
        "sources": list(group.sources),
        "mutmut_exit": rc,
        "killed": len(killed),
        "survived": survived,
        "other": other,  # timeouts, no tests, ...: not in the score
        "not_checked": len(results) - len(checked),
        "score": (len(killed) / total) if total else None,
        "target": group.target,
        "log": str(workdir / "mutmut.log"),
        "seconds": round(time.monotonic() - started),
    }


def confirm(group: Group, root: Path, names: list[str]) -> dict[str, object]:
    """Apply each named mutant to the sources of a finished run's copy, one at a time, and run
    the group's tests in a fresh process. For mutants of code that runs at import time
    (module-level tables, detectors built once): mutmut imports the package before it forks
    per mutant, so those mutants are never active in its runs and count as survivors."""
    workdir = root / group.name
    if not (workdir / "mutants").is_dir():
        raise SystemExit(f"{group.name}: run the group first ({workdir} has no mutants)")
    _, tests = _resolve(workdir, group, sample=False)
    mutmut = Path(sys.executable).parent / "mutmut"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(workdir / "src"), str(Path(__file__).parent)]),
        "SECUREAI_HYPOTHESIS_PROFILE": "mutation",
    }
    env.pop("MUTANT_UNDER_TEST", None)
    pytest_cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", PLUGIN]
    pytest_cmd += ["-m", "not integration and not slow", "-x", "-q"]
    pytest_cmd += [f"--deselect={t}" for t in group.deselect] + tests

    def run_tests() -> int:
        return subprocess.run(
            pytest_cmd,
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        ).returncode

    if run_tests() != 0:  # the control: a mutant only counts as killed if this passes
        raise SystemExit(f"{group.name}: the tests fail on the unmutated copy in {workdir}")
    killed: list[str] = []
    survived: list[str] = []
    for name in names:
        module = name.rsplit(".", 1)[0].replace(".", "/")  # secureai.pii.detectors.x_f__mutmut_1
        path = workdir / "src" / f"{module}.py"
        original = path.read_text()
        try:
            subprocess.run([str(mutmut), "apply", name], cwd=workdir, env=env, check=True)
            if path.read_text() == original:
                raise SystemExit(f"{name}: mutmut apply changed nothing")
            rc = run_tests()
        finally:
            path.write_text(original)
        (killed if rc != 0 else survived).append(name)  # 0: every test passed on the mutant
        print(f"    {'killed' if name in killed else 'survived'} (pytest exit {rc}): {name}")
    return {"group": group.name, "confirmed_killed": killed, "confirmed_survived": survived}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "groups", nargs="*", help=f"module groups (default: all): {', '.join(GROUPS)}"
    )
    parser.add_argument("--sample", action="store_true", help="the small fixed sample only")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument(
        "--pattern",
        action="append",
        default=[],
        help="only mutants matching this glob, e.g. '*__mutmut_*5' for a tenth (repeatable)",
    )
    parser.add_argument("--worktree", action="store_true", help="mutate the working tree, not HEAD")
    parser.add_argument("--check", action="store_true", help="exit 1 if a group misses its target")
    parser.add_argument(
        "--confirm",
        action="append",
        default=[],
        metavar="MUTANT",
        help="after a run of one group: apply this survivor to the copy's sources and run the "
        "group's tests in a fresh process (import-time code; repeatable)",
    )
    args = parser.parse_args(argv)
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group: {', '.join(unknown)}")
    names = args.groups or [g for g in GROUPS if GROUPS[g].sample or not args.sample]
    root = args.workdir or Path(tempfile.gettempdir()) / "secureai-mutation"
    root.mkdir(parents=True, exist_ok=True)
    if args.confirm:
        if len(names) != 1:
            parser.error("--confirm takes exactly one group")
        result = confirm(GROUPS[names[0]], root, args.confirm)
        (root / "confirm.json").write_text(json.dumps(result, indent=2))
        return 0
    report = []
    for name in names:
        summary = run_group(
            GROUPS[name],
            root,
            sample=args.sample,
            max_children=args.max_children,
            worktree=args.worktree,
            extra_patterns=tuple(args.pattern),
        )
        report.append(summary)
        score = summary["score"]
        shown = "n/a" if score is None else f"{score:.1%}"
        survived = summary["survived"]
        assert isinstance(survived, list)
        print(
            f"{name:<11} killed {summary['killed']:>4}  survived {len(survived):>4}  "
            f"score {shown:>6}  target {GROUPS[name].target:.0%}  {summary['seconds']} s",
            flush=True,
        )
        for mutant in survived:
            print(f"    survived: {mutant}")
    (root / "report.json").write_text(json.dumps(report, indent=2))
    print(f"report: {root / 'report.json'}")
    missed = [
        s["group"]
        for s in report
        if s["score"] is None or float(s["score"]) < float(s["target"])  # type: ignore[arg-type]
    ]
    if args.check and missed:
        print(f"below target: {', '.join(map(str, missed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
