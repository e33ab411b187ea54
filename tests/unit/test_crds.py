"""The CRDs in crds/ are generated from the models, structural, documented and usable.

`secureai crds --check crds` is the gate (make crds-check): it must pass on the committed
files and fail on any edit. The schema must be structural (the API server refuses anything
else): a type on every node, no $ref, no nullable anyOf, no defaults in spec (the operator never
mutates spec, so GitOps stays in sync; status has one, `observedGeneration: 0`, for kstatus), no
`additionalProperties: false`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from secureai.api import KINDS
from secureai.api.crd import all_crds
from secureai.cli.main import crd_files
from strategies import ROOT

CRDS = ROOT / "crds"
FORBIDDEN_KEYS = ("$ref", "$defs", "definitions", "default", "oneOf", "allOf", "not", "nullable")
CEL_WORDS = {"all", "exists", "exists_one", "size", "matches", "has", "self", "startsWith"}
# the string extension and Kubernetes' IP, CIDR and quantity libraries
CEL_WORDS |= {"indexOf", "split", "ip", "masked", "containsCIDR", "prefixLength", "isGreaterThan"}
STATUS_DEFAULTS = {".status": {}, ".status.observedGeneration": 0}

Node = dict[str, Any]


def secureai(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "secureai.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def schema_of(crd: Node) -> Node:
    (version,) = crd["spec"]["versions"]
    schema: Node = version["schema"]["openAPIV3Schema"]
    return schema


def walk(node: Node, path: str = "") -> Iterator[tuple[str, Node]]:
    """Every schema node with its path (`.spec.network.ingress[].cidr`)."""
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


WORKLOAD_CRDS = [c for c in all_crds() if c["spec"]["names"]["kind"] in KINDS]
CRD_IDS = [c["spec"]["names"]["kind"] for c in WORKLOAD_CRDS]


@pytest.fixture(params=WORKLOAD_CRDS, ids=CRD_IDS)
def crd(request: pytest.FixtureRequest) -> Node:
    value: Node = request.param
    return value


# ---------------------------------------------------------------------------- generated


def test_committed_crds_equal_the_generated_ones() -> None:
    result = secureai("crds", "--check", str(CRDS))
    assert result.returncode == 0, result.stderr
    files = crd_files()
    assert sorted(files) == sorted(p.name for p in CRDS.glob("*.yaml"))
    for name, text in files.items():
        assert (CRDS / name).read_text() == text
    assert [yaml.safe_load(t) for t in files.values()] == all_crds()


def test_check_fails_on_an_edited_copy(tmp_path: Path) -> None:
    copy = tmp_path / "crds"
    shutil.copytree(CRDS, copy)
    assert secureai("crds", "--check", str(copy)).returncode == 0
    victim = copy / "securetrainingjobs.secureai.dev.yaml"
    victim.write_text(victim.read_text().replace("maxLength: 512", "maxLength: 513", 1))
    result = secureai("crds", "--check", str(copy))
    assert result.returncode == 1
    assert victim.name in result.stderr
    assert result.stdout == ""


def test_check_fails_on_a_missing_or_an_extra_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    shutil.copytree(CRDS, missing)
    (missing / "secureinferenceservices.secureai.dev.yaml").unlink()
    assert secureai("crds", "--check", str(missing)).returncode == 1
    extra = tmp_path / "extra"
    shutil.copytree(CRDS, extra)
    (extra / "old.secureai.dev.yaml").write_text("kind: CustomResourceDefinition\n")
    assert secureai("crds", "--check", str(extra)).returncode == 1


def test_out_dir_writes_what_check_accepts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert secureai("crds", "--out-dir", str(out)).returncode == 0
    assert secureai("crds", "--check", str(out)).returncode == 0
    for path in out.glob("*.yaml"):
        assert path.read_text() == (CRDS / path.name).read_text()


def test_crds_validate_as_kubernetes_objects(crd: Node) -> None:
    kubernetes_validate.validate(crd, "1.37", strict=True)


# ---------------------------------------------------------------------------- structural


def test_schema_is_structural(crd: Node) -> None:
    problems = []
    for path, node in walk(schema_of(crd)):
        if path == ".metadata":
            continue  # the API server owns metadata's schema
        untyped = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        if "type" not in node and not untyped:
            problems.append(f"{path}: no type")
        for key in FORBIDDEN_KEYS:
            if key == "default" and node.get(key) == STATUS_DEFAULTS.get(path, ...):
                continue
            if key in node:
                problems.append(f"{path}: has {key}")
        for variant in node.get("anyOf") or []:
            if variant.get("type") == "null" or "type" in variant:
                problems.append(f"{path}: anyOf must not carry types (structural rule)")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties: false")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: both properties and additionalProperties")
        bare = "properties" not in node and "additionalProperties" not in node
        if node.get("type") == "object" and bare and not untyped:
            problems.append(f"{path}: an object without properties drops all its fields")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{path}: array without items")
    assert problems == []


def test_every_spec_field_is_described(crd: Node) -> None:
    spec = schema_of(crd)["properties"]["spec"]
    missing = [
        path
        for path, node in walk(spec, ".spec")
        if path != ".spec" and not node.get("description")
    ]
    # list items and map values are described by their parent field
    missing = [p for p in missing if not p.endswith(("[]", "{}"))]
    assert missing == []
    assert spec.get("description")


def test_required_fields_match_the_model(crd: Node) -> None:
    kind = crd["spec"]["names"]["kind"]
    spec_model = KINDS[kind].model_fields["spec"].annotation
    assert isinstance(spec_model, type)
    required = sorted(
        (field.alias or name)
        for name, field in spec_model.model_fields.items()
        if field.is_required()
    )
    assert sorted(schema_of(crd)["properties"]["spec"].get("required", [])) == required
    assert schema_of(crd)["required"] == ["spec"]


# ---------------------------------------------------------------------------- usability


def test_names_scope_and_subresources(crd: Node) -> None:
    kind = crd["spec"]["names"]["kind"]
    assert crd["spec"]["group"] == "secureai.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert names["shortNames"] == [
        {"SecureTrainingJob": "stj", "SecureInferenceService": "sis"}[kind]
    ]
    assert names["categories"] == ["secureai"]
    assert crd["metadata"]["name"] == f"{names['plural']}.secureai.dev"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns(crd: Node) -> None:
    (version,) = crd["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    wanted = {
        "Phase": ("string", ".status.phase"),
        "GPUs": ("integer", ".status.gpus"),
        "Ready": ("string", '.status.conditions[?(@.type=="Ready")].status'),
        "Drift": ("integer", ".status.drift.revertsTotal"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }
    for name, (kind, path) in wanted.items():
        assert name in columns, name
        assert (columns[name]["type"], columns[name]["jsonPath"]) == (kind, path)
        assert columns[name].get("priority", 0) == 0, f"{name} must show in plain `kubectl get`"
    first = [c["name"] for c in version["additionalPrinterColumns"]][:5]
    assert first == list(wanted)
    # every column points at a field the schema has
    status = schema_of(crd)["properties"]["status"]["properties"]
    assert {"phase", "gpus", "conditions", "drift"} <= set(status)
    assert "revertsTotal" in status["drift"]["properties"]


def test_status_conditions_are_a_map_keyed_by_type(crd: Node) -> None:
    conditions = schema_of(crd)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert "type" in item.get("required", [])
    assert {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    } <= set(item["properties"])


# ---------------------------------------------------------------------------- CEL


def rules(crd: Node) -> dict[str, list[str]]:
    return {
        path: [r["rule"] for r in node["x-kubernetes-validations"]]
        for path, node in walk(schema_of(crd))
        if node.get("x-kubernetes-validations")
    }


def test_cel_rules_for_network_peers(crd: Node) -> None:
    found = rules(crd)
    for direction in ("ingress", "egress"):
        peer_rules = found[f".spec.network.{direction}[]"]
        assert any(
            "cidr" in r and "namespaceSelector" in r and "podSelector" in r for r in peer_rules
        )
        assert any("except" in r and "cidr" in r for r in peer_rules)


def test_cel_rules_for_gpu_product_and_name(crd: Node) -> None:
    found = rules(crd)
    assert any("product" in r and "count" in r for r in found[".spec.gpu"])
    assert any("metadata.name" in r for r in found[""])


def test_cel_rule_for_encrypted_datasets() -> None:
    found = rules(all_crds()[0])
    assert any("keySecret" in r and "encrypted" in r for r in found[".spec"])


def test_cel_rule_for_tls_secret() -> None:
    found = rules(all_crds()[1])
    (rule,) = found[".spec.tls"]
    assert "Secret" in rule and "secretName" in rule


def test_cel_rule_for_gpu_product_needs_gpus(crd: Node) -> None:
    """validate.py rejects `gpu.product` with `count: 0`; the API server should too, so that
    `kubectl apply` fails at once instead of the CR sitting Rejected."""
    found = rules(crd)
    assert any("product" in r and "count" in r for r in found.get(".spec.gpu", [])), found


def test_cel_rules_name_real_fields(crd: Node) -> None:
    for path, node in walk(schema_of(crd)):
        for entry in node.get("x-kubernetes-validations") or []:
            assert entry.get("message"), f"{path}: a rule needs a message"
            known = {p.rsplit(".", 1)[-1].rstrip("[]{}") for p, _n in walk(node)}
            for word in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)", entry["rule"]):
                assert word in known or word in CEL_WORDS, f"{path}: {word!r} in {entry['rule']!r}"


# ---------------------------------------------------------------------------- Quarantine


def test_quarantine_crd_is_cluster_scoped_with_status_and_columns() -> None:
    (crd,) = [c for c in all_crds() if c["spec"]["names"]["kind"] == "Quarantine"]
    kubernetes_validate.validate(crd, "1.30.0", strict=True)
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["shortNames"] == ["qt"]
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Contained"] == ".status.containedCount"
    spec = schema_of(crd)["properties"]["spec"]
    assert sorted(spec["required"]) == ["match", "reason"]
    digests = spec["properties"]["match"]["properties"]["modelDigests"]["items"]
    assert digests["pattern"] == "^sha256:[0-9a-f]{64}$"
    (rule,) = spec["properties"]["match"]["x-kubernetes-validations"]
    assert "imageDigests" in rule["rule"] and "workloads" in rule["rule"]
    for path, node in walk(schema_of(crd)):
        for key in FORBIDDEN_KEYS:
            assert key not in node, f"{path}: {key}"
