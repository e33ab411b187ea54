"""An encrypted dataset's digests (issue 18 point 2, issue 16 datasetDigests): the decrypting
init container reports the envelope and plaintext digests of the tree; the operator puts them
in status lineage, the Quarantine matches on them and the provenance records them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from secureai.api import SecureTrainingJob
from secureai.api.quarantine import Quarantine
from secureai.cli.main import main
from secureai.crypto.signing import tree_digest
from secureai.judge.quarantine import facts_of, matched_by
from secureai.render.training import DIGESTS_SCHEMA, dataset_census


@pytest.fixture
def encrypted(tmp_path: Path) -> tuple[Path, Path, Path]:
    plain, enc, key = tmp_path / "plain", tmp_path / "enc", tmp_path / "kek"
    (plain / "sub").mkdir(parents=True)
    (plain / "a.txt").write_text("plain words only\n" * 200)
    (plain / "sub" / "b.csv").write_text("name,email\nx,jane.doe@example.org\n")
    assert main(["dataset", "keygen", "--out", str(key)]) == 0
    assert main(["dataset", "encrypt", "--key", str(key), str(plain), str(enc)]) == 0
    return plain, enc, key


def test_decrypt_reports_both_digests_of_the_tree(
    encrypted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    plain, enc, key = encrypted
    out, report = tmp_path / "out", tmp_path / "report.json"
    code = main(
        ["dataset", "decrypt", "--key", str(key), "--report", str(report), str(enc), str(out)]
    )
    assert code == 0
    body = json.loads(report.read_text())
    assert body == {
        "schema": DIGESTS_SCHEMA,
        "envelopeDigest": tree_digest(enc),
        "plaintextDigest": tree_digest(plain),
    }
    assert tree_digest(out) == tree_digest(plain) != tree_digest(enc)


def test_a_scan_while_decrypting_reports_the_digests_with_the_census(
    encrypted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    plain, enc, key = encrypted
    report = tmp_path / "census.json"
    (tmp_path / "ok").mkdir()
    (tmp_path / "no").mkdir()
    args = ["dataset", "scan", "--key", str(key), "--report", str(report), "--max-locations", "0"]
    code = main([*args, "--allow", "email", "--decrypt-to", str(tmp_path / "ok"), str(enc)])
    assert code == 0
    body = json.loads(report.read_text())
    assert body["counts"]["email"] == 1
    assert body["envelopeDigest"] == tree_digest(enc)
    assert body["plaintextDigest"] == tree_digest(plain)
    # refused: the plaintext is not handed over, and no plaintext digest is claimed
    code = main([*args, "--allow", "none", "--decrypt-to", str(tmp_path / "no"), str(enc)])
    assert code != 0
    body = json.loads(report.read_text())
    assert body["envelopeDigest"] == tree_digest(enc) and "plaintextDigest" not in body


def _training() -> SecureTrainingJob:
    return SecureTrainingJob.model_validate(
        {
            "metadata": {"name": "tune", "namespace": "ml"},
            "spec": {
                "image": "registry.example.com/t@sha256:" + "ab" * 32,
                "resources": {"cpu": "1", "memory": "1Gi"},
                "datasets": [{"claimName": "corpus", "encrypted": True, "keySecret": "k"}],
            },
        }
    )


def _pod(message: str) -> dict[str, Any]:
    done = {"terminated": {"exitCode": 0, "message": message}}
    return {"initContainerStatuses": [{"name": "decrypt-0", "state": done}]}


def test_the_operator_reads_the_digests_and_a_quarantine_matches_them(
    encrypted: tuple[Path, Path, Path],
) -> None:
    plain, enc, _ = encrypted
    report = {"schema": DIGESTS_SCHEMA, "envelopeDigest": tree_digest(enc)}
    report["plaintextDigest"] = tree_digest(plain)
    (census,) = dataset_census(_training(), _pod(json.dumps(report)))
    assert census.envelope_digest == tree_digest(enc)
    assert census.plaintext_digest == tree_digest(plain)
    assert census.files is None and census.counts is None  # nothing was scanned
    body = {
        "kind": "SecureTrainingJob",
        "metadata": {"name": "tune", "namespace": "ml"},
        "status": {"lineage": {"datasetCensus": [census.wire()]}},
    }
    leaked = Quarantine.model_validate(
        {
            "metadata": {"name": "leak"},
            "spec": {"reason": "leaked", "match": {"datasetDigests": [tree_digest(plain)]}},
        }
    )
    assert matched_by(leaked, facts_of(body)) == f"dataset {tree_digest(plain)}"


@pytest.mark.parametrize(
    "message",
    [
        "",
        "not json",
        json.dumps({"schema": DIGESTS_SCHEMA}),
        json.dumps({"schema": DIGESTS_SCHEMA, "envelopeDigest": "sha256:short"}),
        json.dumps({"schema": "other/v1", "envelopeDigest": "sha256:" + "0" * 64}),
    ],
)
def test_a_report_without_a_well_formed_digest_is_ignored(message: str) -> None:
    assert dataset_census(_training(), _pod(message)) == []


def test_the_provenance_records_each_datasets_digests() -> None:
    from test_provenance import _job, _pvc  # noqa: PLC0415
    from test_provenance import _training as training_doc  # noqa: PLC0415

    from secureai.api import Policy  # noqa: PLC0415
    from secureai.judge import lifecycle  # noqa: PLC0415

    cr, doc = training_doc()
    envelope, plaintext = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    census = [
        {"claimName": "corpus", "envelopeDigest": envelope, "plaintextDigest": plaintext},
        {"claimName": "labels", "files": 2, "bytes": 10, "counts": {"email": 1}},
    ]
    ns = cr.metadata.namespace
    statement = lifecycle.provenance_statement(
        cr, doc["spec"], Policy(), _job(cr),
        output_pvc=_pvc(ns, f"{cr.metadata.name}-output"),
        dataset_pvcs={"corpus": _pvc(ns, "corpus"), "labels": _pvc(ns, "labels")},
        census=census, nodes={},
    )  # fmt: skip
    deps = {
        d["name"]: d["annotations"]
        for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        if d["name"].startswith("dataset/")
    }
    assert deps["dataset/corpus"]["envelopeDigest"] == envelope
    assert deps["dataset/corpus"]["plaintextDigest"] == plaintext
    assert "personalDataCensus" not in deps["dataset/corpus"]  # not scanned: no counts
    assert deps["dataset/labels"]["personalDataCensus"]["counts"] == {"email": 1}
