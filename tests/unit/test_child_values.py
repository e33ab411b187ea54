"""Issue 14 item 8, offline: a value that the API server would refuse in a child is refused
in the spec, before anything is applied.

Every case was admitted by the old schema and rendered, and its NetworkPolicy, Job, Deployment
or PVC then failed with 422 on every retry. Now `secureai render` exits 2 with one line naming
the field and prints nothing, and the operator's parse (the same models) rejects the spec
before the first child. The API server half (CEL refusing the same CRs at admission, and the
rendered children of many generated specs passing a server-side dry run) is in
tests/integration/test_child_values_admission.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from childcases import CASES, STJ, set_field
from secureai.api import parse_workload
from secureai.cli.main import main
from strategies import EXAMPLE_POLICY_FILE


@pytest.mark.parametrize(("obj", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_render_refuses_a_value_the_api_server_would_refuse(
    obj: dict[str, Any], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cr = tmp_path / "cr.yaml"
    cr.write_text(yaml.safe_dump(obj))
    code = main(["render", "--policy", str(EXAMPLE_POLICY_FILE), "-f", str(cr)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert field in err, err


@pytest.mark.parametrize("obj", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_the_operator_rejects_it_before_rendering(obj: dict[str, Any]) -> None:
    """The reconciler parses with the same models (then renders and validates policy): the
    spec is Rejected and no child is applied."""
    from secureai.render import PolicyViolation, render  # noqa: PLC0415
    from strategies import EXAMPLE_POLICY  # noqa: PLC0415

    with pytest.raises((ValidationError, PolicyViolation)):
        render(parse_workload(obj), EXAMPLE_POLICY)


def test_valid_neighbours_still_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The edges the API server accepts: 63-character values, prefixed keys, empty values,
    nested except blocks, IPv6, dots in names."""
    ok = set_field(
        STJ,
        "network",
        {
            "ingress": [
                {"podSelector": {"example.com/tier": "a" * 63, "app": ""}},
                {"namespaceSelector": {"kubernetes.io/metadata.name": "team-a"}},
            ],
            "egress": [
                {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.3.0/24"]},
                {"cidr": "fd00::/8", "except": ["fd00:1::/32"]},
            ],
        },
    )
    ok["spec"]["secrets"] = [{"name": "hf.token"}]
    ok["spec"]["gpu"]["product"] = "NVIDIA-H100-80GB-HBM3"
    cr = tmp_path / "cr.yaml"
    cr.write_text(yaml.safe_dump(ok))
    code = main(["render", "--policy", str(EXAMPLE_POLICY_FILE), "-f", str(cr)])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    kinds = [d["kind"] for d in yaml.safe_load_all(out)]
    assert "NetworkPolicy" in kinds and "Job" in kinds


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"gpuPools": {"a": {"nodeSelector": {"pool name": "a"}}}}, "gpuPools.a.nodeSelector"),
        (
            {"gpuPools": {"a": {"tolerations": [{"key": "k", "value": "two words"}]}}},
            "gpuPools.a.tolerations[0].value",
        ),
        ({"dns": {"podSelector": {"k8s-app": "kube dns"}}}, "dns.podSelector.k8s-app"),
        ({"dns": {"namespace": "Kube-System"}}, "dns.namespace"),
        ({"encryptedStorageClasses": ["Fast SSD"]}, "encryptedStorageClasses[0]"),
    ],
)
def test_policy_values_that_end_up_in_children_are_checked(
    policy: dict[str, Any], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    (tmp_path / "cr.yaml").write_text(yaml.safe_dump(STJ))
    code = main(
        ["render", "--policy", str(tmp_path / "policy.yaml"), "-f", str(tmp_path / "cr.yaml")]
    )
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and field in err, err
