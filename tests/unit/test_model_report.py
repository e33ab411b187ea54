"""`secureai model verify --report` leaves the verdict where the kubelet picks it up."""

from __future__ import annotations

import json
from pathlib import Path

from secureai.cli.main import main


def test_verify_report_carries_digest_and_signer(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x00" * 1024)
    key, pub = tmp_path / "signer.key", tmp_path / "signer.pub"
    assert main(["model", "keygen", "--private-key", str(key), "--public-key", str(pub)]) == 0
    assert main(["model", "sign", "--model", str(model), "--private-key", str(key)]) == 0
    report = tmp_path / "termination-log"
    args = ["model", "verify", "--model", str(model), "--public-key", str(pub)]
    assert main([*args, "--report", str(report)]) == 0
    verdict = json.loads(report.read_text())
    assert verdict["digest"].startswith("sha256:")
    assert verdict["signer_fingerprint"].startswith("sha256:")
    (model / "weights.bin").write_bytes(b"\x01" * 1024)
    assert main([*args, "--report", str(tmp_path / "second")]) == 2
    assert not (tmp_path / "second").exists()
