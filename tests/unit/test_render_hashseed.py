"""Rendering is deterministic across processes: output must not depend on the hash seed.

Rendering twice in one process shares one seed, so set- or hash-order bugs hide there. Every
example is rendered by the CLI in subprocesses with different PYTHONHASHSEED values; with two
seeds a two-item order bug still escapes half the time, so a few seeds are used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKLOADS = sorted(str(p) for p in EXAMPLES.glob("*.yaml") if p.name != "policy.yaml")
SEEDS = ("0", "1", "2", "3", "4242")

# one process renders every example through the CLI's own code path
_SCRIPT = """
import contextlib, io, json, sys
from secureai.cli.main import main
out = {}
for path in sys.argv[2:]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["render", "-f", path, "--policy", sys.argv[1]])
    out[path] = [code, buf.getvalue()]
print(json.dumps(out))
"""


def _render_all(seed: str) -> dict[str, list[object]]:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(EXAMPLES / "policy.yaml"), *WORKLOADS],
        env={**os.environ, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    rendered: dict[str, list[object]] = json.loads(proc.stdout)
    return rendered


def test_render_of_every_example_is_identical_under_several_hash_seeds() -> None:
    assert len(WORKLOADS) >= 4
    first = _render_all(SEEDS[0])
    assert sorted(first) == WORKLOADS
    for path, (code, text) in first.items():
        assert code == 0 and "kind: NetworkPolicy" in str(text), path
    for seed in SEEDS[1:]:
        other = _render_all(seed)
        for path in WORKLOADS:
            assert other[path] == first[path], f"{Path(path).name}: seed {seed} != {SEEDS[0]}"


_GENERATED = """
import json
from secureai.api.crd import all_crds
from secureai.api.reference import markdown
print(json.dumps({"crds": all_crds(), "api.md": markdown()}, sort_keys=False))
"""


def test_crds_and_api_reference_are_identical_under_several_hash_seeds() -> None:
    """Replaces `markdown() == markdown()`, which compared a value with itself."""
    outputs = set()
    for seed in SEEDS[:3]:
        proc = subprocess.run(
            [sys.executable, "-c", _GENERATED],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
        assert '"api.md"' in proc.stdout
        outputs.add(proc.stdout)
    assert len(outputs) == 1
