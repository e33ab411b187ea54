"""`secureai quarantine create|list|release`: bad input exits 2 with one line, never a
traceback; `--dry-run` prints the object the API would get, valid against the models."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from secureai.api.quarantine import Quarantine
from secureai.cli.main import main

DIGEST = "sha256:" + hashlib.sha256(b"poisoned model").hexdigest()


def test_dry_run_prints_a_valid_quarantine(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "quarantine", "create", "incident-1", "--reason", "poisoned", "--model-digest",
            DIGEST, "--workload", "ml/chat", "--selector", "team=a,tier=web", "--action", "Stop",
            "--no-block", "--dry-run",
        ]
    )  # fmt: skip
    assert code == 0
    body = yaml.safe_load(capsys.readouterr().out)
    q = Quarantine.model_validate(body)
    assert q.spec.match.model_digests == [DIGEST]
    assert q.spec.match.workloads is not None and q.spec.match.workloads[0].name == "chat"
    assert q.spec.match.selector is not None
    assert q.spec.match.selector.match_labels == {"team": "a", "tier": "web"}
    assert q.spec.action == "Stop" and not q.spec.block_admission and q.spec.collect_evidence


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--reason", "r"], "name at least one of"),
        (["--reason", "r", "--model-digest", "md5:abc"], "modelDigests"),
        (["--reason", "r", "--workload", "no-slash"], "NAMESPACE/NAME"),
        (["--reason", "r", "--selector", "novalue"], "key=value"),
        (["--reason", "", "--in-namespace", "ml"], "reason"),
        (["--reason", "r", "--in-namespace", "Not_A_Namespace"], "namespaces"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["quarantine", "create", "q1", *args, "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("secureai: ") and err.count("\n") == 1, err
    assert needle in err and "Traceback" not in err


def test_no_cluster_is_one_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    code = main(["quarantine", "list"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("secureai: ") and err.count("\n") == 1, err
