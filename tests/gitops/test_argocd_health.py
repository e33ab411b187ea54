"""Issue 14 item 12: the Argo CD health checks work in Argo CD's own Lua VM.

Argo CD runs `resource.customizations.health.*` from argocd-cm in gopher-lua (Lua 5.1) with only
the package, base and table libraries and a safe `os` (time and date, under `require("os")`):
no `string`, no `math`, no global `os`. The harness (tests/gitops/harness) builds that VM the
way argo-cd's util/lua/lua.go does with useOpenLibs off, hands the object over as the global
`obj` with every number a float, and validates the returned table as Argo CD does (a status
outside Healthy/Progressing/Degraded/Suspended/Missing/Unknown becomes Unknown). The cases are
in Argo CD's health_test.yaml format, over objects from the operator's status computation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitops.states import HEALTH_DIR, dump, states, stored_path
from gitopskit import argocd_health, judge

KINDS = ("SecureTrainingJob", "SecureInferenceService")
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def _cases() -> list[tuple[str, str, dict[str, str]]]:
    out = []
    for kind in KINDS:
        spec = yaml.safe_load((HEALTH_DIR / kind / "health_test.yaml").read_text())
        out += [(kind, t["inputPath"], t["healthStatus"]) for t in spec["tests"]]
    return out


CASES = _cases()


@pytest.mark.parametrize(
    ("kind", "input_path", "want"), CASES, ids=[f"{k}/{p}" for k, p, _w in CASES]
)
def test_health_in_argocd_lua_vm(kind: str, input_path: str, want: dict[str, str]) -> None:
    obj = yaml.safe_load((HEALTH_DIR / kind / input_path).read_text())
    (got,) = argocd_health(kind, [obj])
    assert got == want


def test_every_testdata_file_has_a_case_and_every_state_a_file() -> None:
    for kind in KINDS:
        files = {f"testdata/{p.name}" for p in (HEALTH_DIR / kind / "testdata").glob("*.yaml")}
        assert files == {p for k, p, _w in CASES if k == kind}, kind
    assert {s.split("/")[0] for s in states()} == set(KINDS)


def test_testdata_is_what_the_status_computation_writes() -> None:
    """Regenerate with `.venv/bin/python tests/gitops/states.py` after changing render/status.py
    (then check the expectations in health_test.yaml still hold)."""
    stale = [name for name, obj in states().items() if stored_path(name).read_text() != dump(obj)]
    assert stale == []


def _probe(script: str) -> dict[str, Any]:
    obj = {"apiVersion": "v1", "kind": "X", "metadata": {"generation": 2}}
    (got,) = judge([{"op": "health", "script": script, "object": obj}])
    return got


def test_the_vm_is_argo_cds_default_one() -> None:
    """The harness is no more lenient than Argo CD: the libraries it withholds are absent."""
    got = _probe(
        "local absent = string == nil and math == nil and os == nil and io == nil\n"
        'local os = require("os")\n'
        'local ok = absent and type(os.time()) == "number" and os.exit == nil\n'
        'return {status = ok and "Healthy" or "Degraded", '
        "message = tostring(obj.metadata.generation / 4)}"
    )
    assert got == {"status": "Healthy", "message": "0.5"}  # numbers are floats
    assert "error" in _probe('return {status = string.lower("Healthy")}')


def test_an_invalid_status_is_unknown_as_in_argo_cd() -> None:
    assert _probe('return {status = "Fine", message = "x"}') == {
        "status": "Unknown",
        "message": "Lua returned an invalid health status",
    }
    assert "error" in _probe('return "Healthy"')


# ---------------------------------------------------------------------------- any status

PHASES = ["Pending", "Running", "Ready", "Succeeded", "Failed", "Rejected", "Degraded", None]
CONDITION_TYPES = ["Ready", "Stalled", "Reconciling", "Isolated", "Hardened", "Placed", "Drift"]


@st.composite
def statuses(draw: st.DrawFn) -> dict[str, Any]:
    conditions = [
        {
            "type": t,
            "status": draw(st.sampled_from(["True", "False", "Unknown"])),
            **draw(st.fixed_dictionaries({}, optional={"reason": st.text(max_size=8)})),
            **draw(st.fixed_dictionaries({}, optional={"message": st.text(max_size=20)})),
        }
        for t in draw(st.lists(st.sampled_from(CONDITION_TYPES), unique=True))
    ]
    status: dict[str, Any] = {"conditions": conditions}
    phase = draw(st.sampled_from(PHASES))
    if phase is not None:
        status["phase"] = phase
    if draw(st.booleans()):
        status["observedGeneration"] = draw(st.integers(0, 3))
    return status


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), status=st.one_of(st.none(), statuses()))
def test_any_status_gives_a_valid_verdict_never_an_error(
    kind: str, status: dict[str, Any] | None
) -> None:
    obj: dict[str, Any] = {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "generation": 2},
        "spec": {"replicas": 1},
    }
    if status is not None:
        obj["status"] = status
    (got,) = argocd_health(kind, [obj])
    assert "error" not in got, got
    assert got["status"] in ARGO_STATUSES - {"Unknown", "Missing"}
    assert got.get("message")


def test_the_shipped_copies_are_the_tested_scripts() -> None:
    cm = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "examples" / "gitops" / "argocd-cm.yaml").read_text()
    )
    for kind in KINDS:
        key = f"resource.customizations.health.secureai.dev_{kind}"
        from gitopskit import health_script  # noqa: PLC0415

        assert cm["data"][key] == health_script(kind)
