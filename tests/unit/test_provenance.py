"""Signed provenance of training runs: the SLSA v1 statement, its DSSE envelope, verification
that fails on any change (checked with our verifier and with securesystemslib's), the deletion
statement, retention limits, and `secureai lineage` on exported records."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

from clusterkit import REPO
from secureai.api import Policy, SecureTrainingJob
from secureai.cli.main import main
from secureai.controllers.provenance import (
    DELETION_ITEM,
    STATEMENT_ITEM,
    statement_digest,
    verify_record,
)
from secureai.crypto.provenance import SignatureError, sign_statement, verify_envelope
from secureai.crypto.signing import generate_signing_key
from secureai.judge import lifecycle
from secureai.render import PolicyViolation, render
from secureai.render.validate import check
from strategies import cases

KEYS = generate_signing_key()
OTHER = generate_signing_key()
EXAMPLE_POLICY = Policy.from_yaml(REPO / "examples" / "policy.yaml")
T0 = datetime(2026, 11, 30, 1, 0, 0, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _training(**retention: Any) -> tuple[SecureTrainingJob, dict[str, Any]]:
    doc = yaml.safe_load((REPO / "examples" / "training-distributed.yaml").read_text())
    doc["metadata"].update(uid=str(uuid.uuid4()), generation=3)
    doc["spec"]["datasets"] = [
        {"claimName": "corpus", "encrypted": True, "keySecret": "corpus-kek"},
        {"claimName": "labels"},
    ]
    doc["spec"]["retention"] = {**doc["spec"].get("retention", {}), **retention}
    return SecureTrainingJob.model_validate(doc), doc


def _pvc(namespace: str, name: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": str(uuid.uuid4())},
        "spec": {
            "volumeName": f"pvc-{uuid.uuid4()}",
            "storageClassName": "encrypted-ssd",
            "resources": {"requests": {"storage": "100Gi"}},
        },
        "status": {"capacity": {"storage": "100Gi"}},
    }


def _job(cr: SecureTrainingJob, *, failed: bool = False) -> dict[str, Any]:
    end = _iso(T0 + timedelta(minutes=7))
    cond = {"type": "Failed" if failed else "Complete", "status": "True"}
    cond["lastTransitionTime"] = end
    status: dict[str, Any] = {"startTime": _iso(T0), "conditions": [cond]}
    if not failed:
        status["completionTime"] = end
    meta = {"namespace": cr.metadata.namespace, "name": cr.metadata.name, "uid": str(uuid.uuid4())}
    return {"metadata": meta, "status": status}


def _statement(cr: SecureTrainingJob, doc: dict[str, Any], policy: Policy) -> dict[str, Any]:
    ns = cr.metadata.namespace
    census = [{"claimName": "corpus", "files": 4, "bytes": 1234, "counts": {"email": 2}}]
    return lifecycle.provenance_statement(
        cr,
        doc["spec"],
        policy,
        _job(cr),
        output_pvc=_pvc(ns, f"{cr.metadata.name}-output"),
        dataset_pvcs={"corpus": _pvc(ns, "corpus"), "labels": _pvc(ns, "labels")},
        census=census,
        nodes={"gpu-node-1": "training", "gpu-node-2": "training"},
    )


@pytest.fixture
def record() -> tuple[dict[str, Any], dict[str, str]]:
    cr, doc = _training(outputTtlSecondsAfterFinished=60)
    statement = _statement(cr, doc, Policy())
    envelope = sign_statement(statement, KEYS.private_key_pem)
    return statement, {STATEMENT_ITEM: json.dumps(envelope)}


# --- the statement against the specifications -----------------------------------------------


def test_statement_is_a_valid_in_toto_statement_with_an_slsa_v1_predicate(
    record: tuple[dict[str, Any], dict[str, str]],
) -> None:
    statement, _ = record
    # in-toto's own bindings: unknown fields are refused, so every name is the spec's
    pb = json_format.ParseDict(statement, statement_pb2.Statement(), ignore_unknown_fields=False)
    Statement.copy_from_pb(pb).validate()
    provenance = json_format.ParseDict(
        statement["predicate"], provenance_pb2.Provenance(), ignore_unknown_fields=False
    )
    assert provenance.build_definition.build_type == lifecycle.BUILD_TYPE
    assert provenance.run_details.metadata.started_on.ToDatetime(UTC) == T0
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"


def test_statement_records_what_the_issue_asks_for(
    record: tuple[dict[str, Any], dict[str, str]],
) -> None:
    statement, _ = record
    cr, _ = _training(outputTtlSecondsAfterFinished=60)
    build = statement["predicate"]["buildDefinition"]
    deps = {d["name"]: d for d in build["resolvedDependencies"]}
    image_digest = cr.spec.image.rpartition("@sha256:")[2]
    assert deps["trainer-image"]["digest"] == {"sha256": image_digest}
    assert deps["dataset/corpus"]["annotations"]["encrypted"] is True
    assert deps["dataset/corpus"]["annotations"]["personalDataCensus"]["counts"] == {"email": 2}
    assert "personalDataCensus" not in deps["dataset/labels"]["annotations"]
    volume = deps["dataset/corpus"]["annotations"]["volume"]
    assert deps["dataset/corpus"]["digest"] == {"sha256": lifecycle.sha256_hex(volume)}
    external = build["externalParameters"]
    assert external["workload"]["generation"] == 3
    assert external["policyDigest"]["sha256"] == lifecycle.sha256_hex(Policy().wire())
    assert external["outputTtlSecondsAfterFinished"] == 60
    facts = lifecycle.summary(statement)
    assert facts["nodes"] == {"gpu-node-1": "training", "gpu-node-2": "training"}
    assert facts["outcome"] == "Succeeded"
    assert facts["deleteAfter"] == _iso(T0 + timedelta(minutes=7, seconds=60))
    subject = statement["subject"][0]
    output = lifecycle.output_volume(statement)
    assert output is not None and output["name"] == "pretrain-4x-output"
    assert subject["digest"] == {"sha256": lifecycle.sha256_hex(output)}


def test_spec_digest_changes_with_the_spec() -> None:
    cr, doc = _training()
    a = _statement(cr, doc, Policy())
    doc["spec"]["args"] = ["--epochs", "2"]
    b = _statement(cr, doc, Policy())
    key = ("predicate", "buildDefinition", "externalParameters", "specDigest")
    pick = lambda s: s[key[0]][key[1]][key[2]][key[3]]  # noqa: E731
    assert pick(a) != pick(b)


def test_a_run_without_output_has_its_job_as_subject_and_no_deadline() -> None:
    cr, doc = _training()
    doc["spec"].pop("output")
    cr = SecureTrainingJob.model_validate(doc)
    job = _job(cr, failed=True)
    statement = lifecycle.provenance_statement(
        cr, doc["spec"], Policy(max_output_ttl_seconds=5), job,
        output_pvc=None, dataset_pvcs={}, census=[], nodes={},
    )  # fmt: skip
    assert statement["subject"][0]["name"] == f"job/ml-team/{cr.metadata.name}"
    assert lifecycle.delete_after(statement) is None
    assert lifecycle.summary(statement)["outcome"] == "Failed"


def test_an_unfinished_job_has_no_provenance() -> None:
    cr, doc = _training()
    job = _job(cr)
    job["status"]["conditions"] = []
    with pytest.raises(ValueError, match="not finished"):
        lifecycle.provenance_statement(
            cr, doc["spec"], Policy(), job, output_pvc=None, dataset_pvcs={}, census=[], nodes={}
        )


# --- signature: ours and a standard DSSE verifier -------------------------------------------


def _sslib_key(public_pem: bytes, keyid: str) -> SSlibKey:
    key = serialization.load_pem_public_key(public_pem)
    return SSlibKey.from_crypto(key, keyid=keyid)  # type: ignore[arg-type]


def test_envelope_verifies_with_securesystemslib(
    record: tuple[dict[str, Any], dict[str, str]],
) -> None:
    statement, data = record
    envelope = json.loads(data[STATEMENT_ITEM])
    keyid = envelope["signatures"][0]["keyid"]
    verified = Envelope.from_dict(envelope).verify([_sslib_key(KEYS.public_key_pem, keyid)], 1)
    assert list(verified) == [keyid]
    assert json.loads(base64.b64decode(envelope["payload"])) == statement
    ours = verify_record(data, KEYS.public_key_pem, "r")
    assert ours.statement == statement
    assert (
        ours.digest == "sha256:" + hashlib.sha256(base64.b64decode(envelope["payload"])).hexdigest()
    )


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value is None:
        return "x"
    return str(value) + "x"


def _with_payload(data: dict[str, str], statement: dict[str, Any]) -> dict[str, str]:
    envelope = json.loads(data[STATEMENT_ITEM])
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return {**data, STATEMENT_ITEM: json.dumps(envelope)}


def test_changing_any_field_of_the_statement_fails_verification(
    record: tuple[dict[str, Any], dict[str, str]],
) -> None:
    statement, data = record
    paths = list(_leaves(statement))
    assert len(paths) > 60
    for path in paths:
        tampered = copy.deepcopy(statement)
        _set(tampered, path, _changed(_get(statement, path)))
        forged = _with_payload(data, tampered)
        with pytest.raises(SignatureError, match="does not verify"):
            verify_record(forged, KEYS.public_key_pem, "r")
        envelope = Envelope.from_dict(json.loads(forged[STATEMENT_ITEM]))
        keyid = json.loads(data[STATEMENT_ITEM])["signatures"][0]["keyid"]
        with pytest.raises(Exception, match="Accepted signatures do not match threshold"):
            envelope.verify([_sslib_key(KEYS.public_key_pem, keyid)], 1)


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        obj = obj[step]
    return obj


_CR, _DOC = _training(outputTtlSecondsAfterFinished=10)
ENVELOPE = sign_statement(_statement(_CR, _DOC, Policy()), KEYS.private_key_pem)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_change_to_the_envelope_fails(data: st.DataObject) -> None:
    envelope = copy.deepcopy(ENVELOPE)
    field = data.draw(st.sampled_from(["payload", "payloadType", "sig", "keyid", "extra"]))
    if field == "payload":
        raw = bytearray(base64.b64decode(envelope["payload"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
        envelope["payload"] = base64.b64encode(bytes(raw)).decode()
    elif field == "payloadType":
        envelope["payloadType"] = data.draw(
            st.text(min_size=1).filter(lambda t: t != envelope["payloadType"])
        )
    elif field == "sig":
        sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
        i = data.draw(st.integers(0, len(sig) - 1))
        sig[i] ^= data.draw(st.integers(1, 255))
        envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    elif field == "keyid":
        envelope["signatures"][0]["keyid"] = data.draw(st.text(min_size=1))
    else:
        envelope[data.draw(st.text(min_size=1).filter(lambda k: k not in envelope))] = "x"
    with pytest.raises(SignatureError):
        verify_envelope(envelope, KEYS.public_key_pem, lifecycle.PROVENANCE_TYPE)


def test_another_key_is_refused(record: tuple[dict[str, Any], dict[str, str]]) -> None:
    statement, data = record
    with pytest.raises(SignatureError, match="wrong key"):
        verify_record(data, OTHER.public_key_pem, "r")
    # re-signed by another key, its key id included: still not ours
    forged = {STATEMENT_ITEM: json.dumps(sign_statement(statement, OTHER.private_key_pem))}
    with pytest.raises(SignatureError, match="wrong key"):
        verify_record(forged, KEYS.public_key_pem, "r")
    envelope = json.loads(forged[STATEMENT_ITEM])
    envelope["signatures"][0]["keyid"] = ""
    with pytest.raises(SignatureError, match="does not verify"):
        verify_record({STATEMENT_ITEM: json.dumps(envelope)}, KEYS.public_key_pem, "r")


# --- the deletion statement ---------------------------------------------------------------


def _deleted(data: dict[str, str], statement: dict[str, Any], key: bytes) -> dict[str, str]:
    digest = statement_digest(json.loads(data[STATEMENT_ITEM])).removeprefix("sha256:")
    note = lifecycle.deletion_statement(
        statement, digest, T0 + timedelta(hours=1), "retention ended"
    )
    return {**data, DELETION_ITEM: json.dumps(sign_statement(note, key))}


def test_the_deletion_note_verifies_and_is_bound_to_its_record(
    record: tuple[dict[str, Any], dict[str, str]],
) -> None:
    statement, data = record
    done = verify_record(_deleted(data, statement, KEYS.private_key_pem), KEYS.public_key_pem)
    assert done.deleted_on == _iso(T0 + timedelta(hours=1))
    with pytest.raises(SignatureError, match="wrong key"):
        verify_record(_deleted(data, statement, OTHER.private_key_pem), KEYS.public_key_pem)
    # a deletion note of another run, moved over: refused
    cr, doc = _training()
    other = _statement(cr, doc, Policy())
    other_data = {STATEMENT_ITEM: json.dumps(sign_statement(other, KEYS.private_key_pem))}
    moved = {
        **data,
        DELETION_ITEM: _deleted(other_data, other, KEYS.private_key_pem)[DELETION_ITEM],
    }
    with pytest.raises(SignatureError, match="another subject"):
        verify_record(moved, KEYS.public_key_pem)
    # a provenance of the right type where the deletion note goes: refused
    swapped = {**data, DELETION_ITEM: data[STATEMENT_ITEM]}
    with pytest.raises(SignatureError, match="predicateType"):
        verify_record(swapped, KEYS.public_key_pem)


# --- retention --------------------------------------------------------------------------------


def test_output_ttl_defaults_to_the_policy_maximum_and_may_not_exceed_it() -> None:
    cr, _ = _training()
    assert lifecycle.output_ttl(cr, Policy()) is None
    assert lifecycle.output_ttl(cr, Policy(max_output_ttl_seconds=3600)) == 3600
    short, _ = _training(outputTtlSecondsAfterFinished=60)
    assert lifecycle.output_ttl(short, Policy(max_output_ttl_seconds=3600)) == 60
    check(short, EXAMPLE_POLICY.model_copy(update={"max_output_ttl_seconds": 60}))
    long, _ = _training(outputTtlSecondsAfterFinished=61)
    with pytest.raises(PolicyViolation) as err:
        check(long, EXAMPLE_POLICY.model_copy(update={"max_output_ttl_seconds": 60}))
    assert (
        "spec.retention.outputTtlSecondsAfterFinished: 61 s is longer than policy allows (60 s)"
        in str(err.value)
    )


def test_decrypted_datasets_live_only_in_pod_memory() -> None:
    """The proof from the rendered spec: plaintext is written only to a memory-backed emptyDir
    of the pod (tmpfs, torn down with the pod, never on a node's disk or a volume that outlives
    it); the trainer reads it read-only; every persistent volume with dataset data is mounted
    read-only. What the trainer itself writes to its output volume is the trainer's."""
    cr, _ = _training()
    policy = EXAMPLE_POLICY
    job = next(m for m in render(cr, policy) if m["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert not any("hostPath" in v for v in volumes.values())
    plain = volumes["dataset-0-plain"]
    assert plain["emptyDir"]["medium"] == "Memory" and plain["emptyDir"]["sizeLimit"]
    writers = [
        c["name"]
        for c in pod["initContainers"] + pod["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] == "dataset-0-plain" and not m.get("readOnly")
    ]
    assert writers == ["decrypt-0"]
    for c in pod["initContainers"] + pod["containers"]:
        for m in c.get("volumeMounts", []):
            if m["name"].startswith("dataset-") and "persistentVolumeClaim" in volumes[m["name"]]:
                assert m.get("readOnly") is True, (c["name"], m)


# --- the command line -----------------------------------------------------------------------


def _export(
    tmp_path: Path, data: dict[str, str], key: bytes = KEYS.public_key_pem
) -> tuple[Path, Path]:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rec"}, "data": data}
    path, pem = tmp_path / "record.yaml", tmp_path / "key.pub"
    path.write_text(yaml.safe_dump(cm))
    pem.write_bytes(key)
    return path, pem


def test_lineage_verify_and_show_on_an_exported_record(
    record: tuple[dict[str, Any], dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    statement, data = record
    path, pem = _export(tmp_path, data)
    assert main(["lineage", "verify", "--file", str(path), "--key", str(pem)]) == 0
    assert "rec: verified (sha256:" in capsys.readouterr().out
    assert main(["lineage", "show", "--file", str(path), "--key", str(pem), "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["statement"] == statement and shown[0]["verified"] is True
    assert main(["lineage", "show", "--file", str(path), "--key", str(pem)]) == 0
    text = capsys.readouterr().out
    assert "pretrain-4x (generation 3)" in text and "Succeeded" in text


def test_lineage_verify_fails_with_exit_1_on_a_tampered_record(
    record: tuple[dict[str, Any], dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    statement, data = record
    tampered = copy.deepcopy(statement)
    tampered["predicate"]["runDetails"]["metadata"]["finishedOn"] = _iso(T0)
    path, pem = _export(tmp_path, _with_payload(data, tampered))
    assert main(["lineage", "verify", "--file", str(path), "--key", str(pem)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NOT VERIFIED: signature does not verify" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lineage", "verify"], "name exactly one of"),
        (["lineage", "verify", "justaname"], "expected NAMESPACE/NAME"),
        (["lineage", "verify", "--file", "/nonexistent"], "No such file"),
        (["lineage", "verify", "--file", "FILE"], "--file needs --key"),
        (["lineage", "verify", "--file", "FILE", "--key", "FILE"], "key: not a PEM public key"),
        (["lineage", "verify", "--file", "KEY", "--key", "KEY"], "not a ConfigMap or a DSSE"),
    ],
)
def test_lineage_bad_input_exits_2_with_one_line(
    argv: list[str],
    message: str,
    record: tuple[dict[str, Any], dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, pem = _export(tmp_path, record[1])
    argv = [str(path) if a == "FILE" else str(pem) if a == "KEY" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@settings(max_examples=40, deadline=None)
@given(case=cases("SecureTrainingJob"), data=st.data())
def test_any_training_spec_gives_a_valid_statement_that_round_trips(
    case: tuple[Policy, dict[str, Any]], data: st.DataObject
) -> None:
    """Property: for any admissible training spec and run, the statement is a valid in-toto v1
    SLSA v1 statement, it verifies once signed, and its facts are the run's."""
    policy, manifest = case
    manifest["metadata"].update(uid=str(uuid.uuid4()), generation=data.draw(st.integers(1, 50)))
    cr = SecureTrainingJob.model_validate(manifest)
    ns = cr.metadata.namespace
    failed = data.draw(st.booleans())
    output = _pvc(ns, f"{cr.metadata.name}-output") if cr.spec.output else None
    statement = lifecycle.provenance_statement(
        cr, manifest["spec"], policy, _job(cr, failed=failed), output_pvc=output,
        dataset_pvcs={d.claim_name: _pvc(ns, d.claim_name) for d in cr.spec.datasets or []},
        census=[], nodes={"n1": None},
    )  # fmt: skip
    pb = json_format.ParseDict(statement, statement_pb2.Statement(), ignore_unknown_fields=False)
    Statement.copy_from_pb(pb).validate()
    json_format.ParseDict(
        statement["predicate"], provenance_pb2.Provenance(), ignore_unknown_fields=False
    )
    data_ = {STATEMENT_ITEM: json.dumps(sign_statement(statement, KEYS.private_key_pem))}
    verified = verify_record(data_, KEYS.public_key_pem)
    facts = lifecycle.summary(verified.statement)
    assert facts["outcome"] == ("Failed" if failed else "Succeeded")
    assert facts["generation"] == cr.metadata.generation
    assert facts["datasets"] == [d.claim_name for d in cr.spec.datasets or []]
    assert (facts["deleteAfter"] is not None) == (
        output is not None and lifecycle.output_ttl(cr, policy) is not None
    )
