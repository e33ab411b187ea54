"""Generated inadmissible specs are refused: by `render` (naming the broken field) and by the
CLI (exit 2, one line on stderr, nothing on stdout). Each breakage starts from an admissible
case, so the refusal is about that one rule."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from secureai.api import Policy, parse_workload
from secureai.cli.main import main as cli_main
from secureai.render import render
from secureai.render.validate import PolicyViolation
from strategies import BREAKAGES, cases, inadmissible_cases


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
@settings(max_examples=15)
@given(data=st.data())
def test_render_refuses_and_names_the_field(breakage: str, data: st.DataObject) -> None:
    policy, manifest, _, field = data.draw(inadmissible_cases(breakage))
    with pytest.raises(PolicyViolation) as err:
        render(parse_workload(manifest), policy)
    assert field in [v.field for v in err.value.violations], str(err.value)
    assert "\n" not in str(err.value)


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _write(folder: Path, name: str, doc: dict[str, Any]) -> str:
    path = folder / name
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@settings(max_examples=40)
@given(inadmissible_cases())
def test_cli_render_exits_2_with_one_line(case: tuple[Policy, dict[str, Any], str, str]) -> None:
    policy, manifest, _, field = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        policy_file = _write(folder, "policy.yaml", policy.wire())
        cr_file = _write(folder, "cr.yaml", manifest)
        code, out, err = _cli(["render", "-f", cr_file, "--policy", policy_file])
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1, err
    assert field in err and "Traceback" not in err


@settings(max_examples=10)
@given(cases())
def test_cli_renders_the_admissible_starting_point(case: tuple[Policy, dict[str, Any]]) -> None:
    """Positive control: the same CLI path, policy file and manifest file print manifests."""
    policy, manifest = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        policy_file = _write(folder, "policy.yaml", policy.wire())
        cr_file = _write(folder, "cr.yaml", manifest)
        code, out, err = _cli(["render", "-f", cr_file, "--policy", policy_file])
    assert (code, err) == (0, "")
    assert "kind: NetworkPolicy" in out
