"""Issue 2, item 5: `secureai render` fails closed on bad input, and renders good input.

Every case runs the real CLI in a subprocess. A bad input must exit 2 with EMPTY stdout (no
partial manifest) and exactly one stderr line, `secureai: <file>: <reason>`, whose reason
names the offending field, with no traceback. The bad inputs are files in tests/data/bad/,
each starting with a comment that says what is wrong with it.

The subprocesses are started together once per module (each CLI start costs ~0.5 s of
imports), then every test reads its own result.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from secureai.api import parse_workload
from secureai.cli.main import main
from secureai.render import render
from strategies import EXAMPLE_POLICY, EXAMPLE_POLICY_FILE, EXAMPLES, ROOT

BAD = ROOT / "tests" / "data" / "bad"
GOOD_CR = EXAMPLES / "training-single-gpu.yaml"
EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "policy.yaml")
MISSING = BAD / "does-not-exist.yaml"


@dataclass(frozen=True)
class Case:
    """A bad input: the CR (and policy) to render, and what the one-line reason must say."""

    cr: Path
    expect: tuple[str, ...]
    policy: Path | None = EXAMPLE_POLICY_FILE
    secret: str | None = None  # must never be echoed back


def _cr(name: str, *expect: str, secret: str | None = None) -> Case:
    return Case(BAD / f"{name}.yaml", expect, secret=secret)


def _policy(name: str, *expect: str) -> Case:
    return Case(GOOD_CR, expect, policy=BAD / f"{name}.yaml")


BAD_CASES: dict[str, Case] = {
    # the ones issue 2 names
    "image-by-tag": _cr("image-by-tag", "spec.image", "digest"),
    "registry-not-allowed": _cr("registry-not-allowed", "spec.image", "registry"),
    "unencrypted-class": _cr("unencrypted-class", "spec.output.storageClassName", "'standard'"),
    "token-1s": _cr("token-1s", "spec.identity.expirationSeconds", "1s"),
    "token-100-days": _cr("token-100-days", "spec.identity.tokens[0].expirationSeconds", "8640000"),
    "gpus-1000": _cr("gpus-1000", "spec.gpu.count"),
    "unknown-pool": _cr("unknown-pool", "spec.gpu.pool", "'moon'"),
    "secret-env-name": _cr("secret-env-name", "spec.env[0].name", "DB_PASSWORD", secret="hunter2"),
    "secret-env-value": _cr("secret-env-value", "spec.env[1].value", secret="AKIAIOSFODNN7EXAMPLE"),
    "negative-workers": _cr("negative-workers", "spec.workers"),
    "missing-file": Case(MISSING, (str(MISSING), "No such file")),
    "broken-yaml": _cr("broken-yaml", "broken YAML", "line 5"),
    "unknown-kind": _cr("unknown-kind", "kind", "SecureNotebook"),
    "unknown-field": _cr("unknown-field", "spec.gpus", "Extra inputs"),
    "policy-unknown-key": _policy("policy-unknown-key", "policy", "allowedRegistry"),
    "policy-missing": Case(GOOD_CR, ("policy", str(MISSING), "no such file"), policy=MISSING),
}

# More of the same family: run in-process through the same `main()` (subprocesses cost ~0.5 s
# each); an exception escaping `main()` fails the test just as a traceback would.
MORE_BAD_CASES: dict[str, Case] = {
    "gpus-over-policy": _cr("gpus-over-policy", "spec.gpu.count", "maximum of 8"),
    "product-without-gpus": _cr("product-without-gpus", "spec.gpu.product"),
    "bad-cidr": _cr("bad-cidr", "spec.network.egress[0].cidr", "10.0.0.0/33"),
    "bad-quantity": _cr("bad-quantity", "spec.resources.memory"),
    "missing-resources": _cr("missing-resources", "spec.resources", "required"),
    "wrong-api-version": _cr("wrong-api-version", "apiVersion"),
    "name-too-long": _cr("name-too-long", "metadata.name", "47"),
    "encrypted-dataset-without-key": _cr(
        "encrypted-dataset-without-key", "spec.datasets[0].keySecret"
    ),
    "reserved-token-name": _cr("reserved-token-name", "spec.identity.tokens[0].name"),
    "tls-secret-without-name": _cr("tls-secret-without-name", "spec.tls.secretName"),
    "bad-deny-regex": _cr("bad-deny-regex", "spec.guard.denyPatterns[0]"),
    "inference-without-model": _cr("inference-without-model", "spec.model", "required"),
    "not-a-mapping": _cr("not-a-mapping", "mapping"),
    "empty": _cr("empty", "no YAML document"),
    "policy-token-bounds": _policy("policy-token-bounds", "policy", "tokens", "defaultSeconds"),
}

BAD_CASES |= {
    # regression tests: when written, the first two crashed with a traceback (exit 1) and
    # the third gave a Python internals message instead of a reason
    "not-utf8": _cr("not-utf8", "not-utf8.yaml"),
    "policy-broken-yaml": _policy("policy-broken-yaml", "policy-broken-yaml.yaml", "YAML"),
    "policy-not-a-mapping": _policy("policy-not-a-mapping", "policy", "mapping"),
}


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def secureai(*args: str) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "secureai.cli.main", *args],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    return Result(
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def _argv(case: Case) -> list[str]:
    args = ["render", "-f", str(case.cr)]
    if case.policy is not None:
        args += ["--policy", str(case.policy)]
    return args


GOOD_RUNS = {f"{p.stem}#{n}": p for p in EXAMPLE_FILES for n in (1, 2)}


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, Result]]:
    jobs = {name: _argv(case) for name, case in BAD_CASES.items()}
    jobs |= {
        run: ["render", "-f", str(path), "--policy", str(EXAMPLE_POLICY_FILE)]
        for run, path in GOOD_RUNS.items()
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(secureai, *argv) for name, argv in jobs.items()}
        yield {name: f.result() for name, f in futures.items()}


def test_bad_inputs_cover_what_issue_2_asks() -> None:
    assert len(BAD_CASES) >= 12
    every = [*BAD_CASES.values(), *MORE_BAD_CASES.values()]
    files = {c.cr for c in every} | {c.policy for c in every}
    for path in sorted(BAD.glob("*.yaml")):
        assert path in files, f"{path.name} is not used by any case"
        assert path.read_bytes().startswith(b"# "), f"{path.name}: say what is wrong with it"


def check_bad(case: Case, result: Result) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code == 2, result.stderr
    assert result.stdout == "", "a bad input must print no manifest"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"the reason must be one line: {result.stderr!r}"
    (line,) = lines
    assert line.startswith("secureai: "), line
    # match the reason, not the file names (a name may contain the very word expected)
    reason = line.replace(str(case.cr), "<cr>").replace(str(case.policy), "<policy>")
    for fragment in case.expect:
        where = line if fragment.endswith(".yaml") else reason
        assert fragment in where, f"{fragment!r} not in {line!r}"
    if case.secret is not None:
        assert case.secret not in line, "the reason must not echo the secret"


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_bad_input_exits_2_with_one_line_reason(name: str, results: dict[str, Result]) -> None:
    check_bad(BAD_CASES[name], results[name])


@pytest.mark.parametrize("name", list(MORE_BAD_CASES))
def test_more_bad_input_in_process(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    case = MORE_BAD_CASES[name]
    code = main(_argv(case))
    out, err = capsys.readouterr()
    check_bad(case, Result(code, out, err))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_renders_with_exit_0(path: Path, results: dict[str, Result]) -> None:
    result = results[f"{path.stem}#1"]
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    expected = render(parse_workload(yaml.safe_load(path.read_text())), EXAMPLE_POLICY)
    assert list(yaml.safe_load_all(result.stdout)) == expected


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_render_is_byte_identical_across_runs(path: Path, results: dict[str, Result]) -> None:
    first, second = results[f"{path.stem}#1"], results[f"{path.stem}#2"]
    assert first.code == second.code == 0
    assert first.stdout.encode() == second.stdout.encode()
    assert first.stdout.startswith("apiVersion: ")


def test_several_documents_render_in_one_stream(tmp_path: Path) -> None:
    stream = tmp_path / "all.yaml"
    stream.write_text("---\n".join(p.read_text() for p in EXAMPLE_FILES))
    result = secureai("render", "-f", str(stream), "--policy", str(EXAMPLE_POLICY_FILE))
    assert result.code == 0, result.stderr
    kinds = [m["kind"] for m in yaml.safe_load_all(result.stdout)]
    assert kinds.count("Job") == 2
    assert kinds.count("Deployment") == 2


def test_one_bad_document_prints_no_manifest_at_all(tmp_path: Path) -> None:
    stream = tmp_path / "mixed.yaml"
    stream.write_text(GOOD_CR.read_text() + "\n---\n" + (BAD / "image-by-tag.yaml").read_text())
    result = secureai("render", "-f", str(stream), "--policy", str(EXAMPLE_POLICY_FILE))
    assert result.code == 2
    assert result.stdout == ""
    assert "spec.image" in result.stderr
