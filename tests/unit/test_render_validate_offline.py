"""Issue 2, item 4: every rendered manifest validates offline against the Kubernetes OpenAPI
schemas (kubernetes-validate, strict mode: unknown fields are errors).

The version is the one the local control plane runs (hack/build.sh pins k8s v1.37), which is
also the newest that kubernetes-validate ships. The examples go through
`kubernetes_validate.validate` itself; the generated specs go through the same schemas with a
validator cached per kind (the library reloads ~2 MB of JSON per call), and a test checks
that both agree, so the cache cannot quietly validate less.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from hypothesis import HealthCheck, given, settings
from kubernetes_validate import utils as kv_utils

from secureai.api import Policy, parse_workload
from secureai.render import render
from strategies import EXAMPLE_POLICY, EXAMPLES, cases

K8S_VERSION = "1.37"
EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "policy.yaml")


def test_validating_against_a_recent_release_the_library_ships() -> None:
    shipped = {kv_utils.major_minor(v) for v in kv_utils.all_versions()}
    assert K8S_VERSION in shipped
    major, minor = (int(x) for x in K8S_VERSION.split("."))
    assert (major, minor) >= (1, 33)
    build = Path(__file__).resolve().parents[2] / "hack" / "build.sh"
    if build.is_file():
        assert f"K8S_VERSION=v{K8S_VERSION}." in build.read_text()


def _rendered(path: Path) -> list[dict[str, Any]]:
    return render(parse_workload(yaml.safe_load(path.read_text())), EXAMPLE_POLICY)


EXAMPLE_MANIFESTS = [(p.stem, m) for p in EXAMPLE_FILES for m in _rendered(p)]


def _error(exc: Exception) -> str:
    if isinstance(exc, jsonschema.ValidationError):
        path = "/".join(str(p) for p in exc.absolute_path)
        return f"{path or '(root)'}: {exc.message}"
    return getattr(exc, "message", None) or str(exc)


MANIFESTS = [m for _e, m in EXAMPLE_MANIFESTS]
IDS = [f"{e}:{m['kind']}/{m['metadata']['name']}" for e, m in EXAMPLE_MANIFESTS]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=IDS)
def test_example_manifest_validates_strictly(manifest: dict[str, Any]) -> None:
    try:
        version = kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    except Exception as exc:  # the library's errors carry the detail in different places
        pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {_error(exc)}")
    assert version == K8S_VERSION


# ---------------------------------------------------------------------------- cached validator


@cache
def _validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    """The validator `kubernetes_validate.validate(obj, K8S_VERSION, strict=True)` builds."""
    schema_dir = f"v{K8S_VERSION}.0-local-strict"
    # rbac.authorization.k8s.io/v1 → rbac-v1, as the library names its files
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    name = f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{api}.json"
    schema = kv_utils.schema_contents(name, K8S_VERSION)
    defs = kv_utils.schema_contents(
        f"kubernetes-json-schema/{schema_dir}/_definitions.json", K8S_VERSION
    )
    registry: referencing.Registry[Any] = (
        referencing.Resource.from_contents(schema) @ referencing.Registry()
    )
    registry = referencing.Resource.from_contents(defs) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def strict_errors(manifest: dict[str, Any]) -> list[str]:
    validator = _validator(manifest["kind"], manifest["apiVersion"])
    return sorted(_error(e) for e in validator.iter_errors(manifest))


def _broken(manifest: dict[str, Any]) -> dict[str, Any]:
    bad = copy.deepcopy(manifest)
    bad["spec"]["unexpectedField"] = True  # strict mode rejects unknown fields
    return bad


@pytest.mark.parametrize("manifest", MANIFESTS, ids=IDS)
def test_cached_validator_agrees_with_the_library(manifest: dict[str, Any]) -> None:
    assert strict_errors(manifest) == []
    if "spec" in manifest:
        bad = _broken(manifest)
        assert strict_errors(bad) != []
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_strict_mode_catches_typos_and_wrong_types() -> None:
    _e, job = next((e, m) for e, m in EXAMPLE_MANIFESTS if m["kind"] == "Job")
    typo = copy.deepcopy(job)
    pod = typo["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    assert any("readOnlyRootFilesytem" in e for e in strict_errors(typo))
    wrong = copy.deepcopy(job)
    wrong["spec"]["template"]["spec"]["automountServiceAccountToken"] = "false"
    assert strict_errors(wrong) != []


@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_generated_manifests_validate_strictly(case: tuple[Policy, dict[str, Any]]) -> None:
    policy, doc = case
    problems = {
        f"{m['kind']}/{m['metadata']['name']}": errors
        for m in render(parse_workload(doc), policy)
        if (errors := strict_errors(m))
    }
    assert problems == {}
