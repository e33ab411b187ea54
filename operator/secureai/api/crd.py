"""CustomResourceDefinitions generated from the pydantic models."""

from __future__ import annotations

import copy
import re
from typing import Any

from pydantic import BaseModel

from secureai.api.base import GROUP, VERSION
from secureai.api.kinds import KINDS, SecureInferenceService, SecureTrainingJob
from secureai.api.quarantine import Quarantine, QuarantineStatus
from secureai.api.status import WorkloadStatus

_DROPPED_KEYS = {"title", "default", "$defs"}


def _key_rule(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A map's key constraints (JSON Schema `patternProperties`/`propertyNames`, which
    structural schemas lack) as one CEL rule on the map, and its values as
    `additionalProperties`."""
    node = dict(node)
    keys = _resolve(node.pop("propertyNames", {}), defs)
    ((pattern, values),) = node.pop("patternProperties", {}).items()
    checks = [f"k.matches(r'{pattern}')"]
    if "maxLength" in keys:
        checks.append(f"k.size() <= {keys['maxLength']}")
    checks += [
        re.sub(r"\bself\b", "k", entry["rule"])
        for entry in keys.get("x-kubernetes-validations") or []
    ]
    rule = {
        "rule": f"self.all(k, {' && '.join(checks)})",
        "message": "every key must be " + keys.get("description", f"matched by {pattern}"),
    }
    node["additionalProperties"] = values
    node["x-kubernetes-validations"] = [*node.get("x-kubernetes-validations", []), rule]
    return node


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s and turn JSON Schema into a structural OpenAPI v3 schema."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "patternProperties" in node:
        node = _key_rule(node, defs)
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _resolve({**variants[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
            continue
        if key == "properties":
            out[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
            continue
        out[key] = _resolve(value, defs)
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Structural schema of a model, with descriptions and CEL rules, without defaults."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _resolve(raw, raw.get("$defs", {}))
    return schema


def _status_schema(model: type[BaseModel] = WorkloadStatus) -> dict[str, Any]:
    schema = openapi_schema(model)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    # Present from the first read, before the operator acts: kstatus then sees generation 1 not
    # yet observed (InProgress) instead of a status-less object (Current).
    schema["default"] = {}
    schema["properties"]["observedGeneration"]["default"] = 0
    return schema


def _printer_columns(kind: str) -> list[dict[str, Any]]:
    extra = (
        {"name": "Workers", "type": "integer", "jsonPath": ".spec.workers", "priority": 1}
        if kind == SecureTrainingJob.KIND
        else {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas", "priority": 1}
    )
    ready = '.status.conditions[?(@.type=="Ready")]'
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus"},
        {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
        {"name": "Drift", "type": "integer", "jsonPath": ".status.drift.revertsTotal"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        extra,
        {"name": "Reason", "type": "string", "jsonPath": f"{ready}.reason", "priority": 1},
        {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
    ]


def _spec_schema(model: type[BaseModel], kind: str) -> dict[str, Any]:
    spec_model = model.model_fields["spec"].annotation
    assert isinstance(spec_model, type) and issubclass(spec_model, BaseModel)
    spec_schema = openapi_schema(spec_model)
    spec_schema["description"] = f"Desired state of the {kind}. The operator never writes it."
    return spec_schema


def _definition(
    model: type[BaseModel],
    kind: str,
    plural: str,
    short: str,
    scope: str,
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "secureai"},
            "annotations": {"argocd.argoproj.io/sync-wave": "-10"},
        },
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["secureai"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def quarantine_crd() -> dict[str, Any]:
    """The cluster-scoped Quarantine."""
    kind = Quarantine.KIND
    status = _status_schema(QuarantineStatus)
    status.pop("default", None)
    status["properties"]["observedGeneration"].pop("default", None)
    schema = {
        "type": "object",
        "description": (Quarantine.__doc__ or kind).strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "secureai.dev/v1alpha1"},
            "kind": {"type": "string", "description": kind},
            "metadata": {"type": "object"},
            "spec": _spec_schema(Quarantine, kind),
            "status": status,
        },
    }
    columns: list[dict[str, Any]] = [
        {"name": "Action", "type": "string", "jsonPath": ".spec.action"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Contained", "type": "integer", "jsonPath": ".status.containedCount"},
        {"name": "Released", "type": "boolean", "jsonPath": ".spec.released", "priority": 1},
        {"name": "Reason", "type": "string", "jsonPath": ".spec.reason", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _definition(
        Quarantine, kind, Quarantine.PLURAL, Quarantine.SHORT, "Cluster", schema, columns
    )


def crd(kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    if kind == Quarantine.KIND:
        return quarantine_crd()
    model = KINDS[kind]
    spec_schema = _spec_schema(model, kind)
    schema = {
        "type": "object",
        "description": (model.__doc__ or kind).strip(),
        "required": ["spec"],
        "x-kubernetes-validations": [
            {
                "rule": "self.metadata.name.size() <= 47 && "
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "message": "metadata.name must be a DNS-1035 label of at most 47 characters",
            }
        ],
        "properties": {
            "apiVersion": {"type": "string", "description": "secureai.dev/v1alpha1"},
            "kind": {"type": "string", "description": kind},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": _status_schema(),
        },
    }
    return _definition(
        model, kind, model.PLURAL, model.SHORT, "Namespaced", schema, _printer_columns(kind)
    )


def all_crds() -> list[dict[str, Any]]:
    """Every CRD, in a stable order."""
    return [crd(SecureTrainingJob.KIND), crd(SecureInferenceService.KIND), quarantine_crd()]
