"""The API reference (docs/api.md), generated from the CRD schemas and the Policy model.

Pure: it reads only `secureai.api`, so the reference can never drift from what the API server
enforces. `markdown()` is deterministic; a test keeps docs/api.md equal to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from secureai.api.base import API_VERSION
from secureai.api.crd import all_crds
from secureai.api.kinds import KINDS
from secureai.api.policy import Policy
from secureai.api.quarantine import Quarantine, QuarantineSpec, QuarantineStatus
from secureai.api.status import WorkloadStatus

Schema = dict[str, Any]

HEADER = """\
# secureai API reference

<!-- Generated from the pydantic models by secureai.api.reference.markdown(); do not edit.
     Regenerate: python -c "from secureai.api.reference import markdown;
     print(markdown(), end='')" > docs/api.md   (tests/unit/test_api_reference.py checks it) -->

Group `{api_version}`. Both kinds are namespaced. The operator never writes `spec`; it reports
in `status`. Fields are camelCase, as in YAML; `a[].b` is field `b` of every item of list `a`,
and `a.<key>` a value of map `a`. Unknown fields are rejected.
"""


@dataclass(frozen=True)
class Row:
    """One documented field."""

    path: str
    type: str
    required: bool
    description: str
    constraints: str
    default: str | None = None


# ---------------------------------------------------------------------------- schema walking


def _resolve(node: Schema, defs: Schema) -> Schema:
    """Inline a `$ref` and unwrap `anyOf: [X, null]` (pydantic's optional fields)."""
    if "$ref" in node:
        target = defs[str(node["$ref"]).rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**_resolve(variants[0], defs), **rest}
    return node


def _type(node: Schema, defs: Schema) -> str:
    node = _resolve(node, defs)
    kind = node.get("type")
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    if kind == "array":
        return "[]" + _type(node.get("items") or {}, defs)
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict) and "properties" not in node:
            return f"map[string]{_type(values, defs)}"
        return "object"
    return str(kind) if kind else "any"


def _number(value: Any) -> str:
    return json.dumps(value)


def _constraints(node: Schema) -> str:
    out: list[str] = []
    if "enum" in node:
        out.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None:
        sign = ">" if node.get("exclusiveMinimum") is True else ">="
        out.append(f"{sign} {_number(low)}")
    elif isinstance(node.get("exclusiveMinimum"), int | float):
        out.append(f"> {_number(node['exclusiveMinimum'])}")
    if high is not None:
        sign = "<" if node.get("exclusiveMaximum") is True else "<="
        out.append(f"{sign} {_number(high)}")
    elif isinstance(node.get("exclusiveMaximum"), int | float):
        out.append(f"< {_number(node['exclusiveMaximum'])}")
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ):
        if key in node:
            out.append(f"{label} {node[key]}")
    if "pattern" in node:
        out.append(f"pattern `{node['pattern']}`")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(node.get("x-kubernetes-list-map-keys") or [])
        out.append(f"list map keyed by `{keys}`")
    for rule in node.get("x-kubernetes-validations") or []:
        out.append(f"rule: {rule.get('message') or rule.get('rule')}")
    return "; ".join(out)


def _rows(node: Schema, path: str, defs: Schema, defaults: Any = None) -> Iterator[Row]:
    """A row for every field under `node`, depth first, in declaration order."""
    node = _resolve(node, defs)
    required = set(node.get("required") or [])
    for name, raw in (node.get("properties") or {}).items():
        child = _resolve(raw, defs)
        child_path = f"{path}.{name}" if path else name
        default = _default(child, name, defaults)
        yield Row(
            path=child_path,
            type=_type(child, defs),
            required=name in required,
            description=str(child.get("description") or ""),
            constraints=_constraints(child),
            default=default,
        )
        nested = defaults.get(name) if isinstance(defaults, dict) else None
        yield from _children(child, child_path, defs, nested)


def _children(node: Schema, path: str, defs: Schema, defaults: Any) -> Iterator[Row]:
    if "properties" in node:
        yield from _rows(node, path, defs, defaults)
        return
    items = node.get("items")
    if node.get("type") == "array" and isinstance(items, dict):
        item = _resolve(items, defs)
        yield from _children(item, f"{path}[]", defs, None)
        return
    values = node.get("additionalProperties")
    if node.get("type") == "object" and isinstance(values, dict):
        value = _resolve(values, defs)
        if "properties" in value:
            yield from _rows(value, f"{path}.<key>", defs, None)


def _default(node: Schema, name: str, defaults: Any) -> str | None:
    if isinstance(defaults, dict) and name in defaults:
        value = defaults[name]
        if value is None:
            return "`null`"  # a policy setting that is off unless set
    elif "default" in node:
        value = node["default"]
    else:
        return None
    if value is None:
        return None  # optional: documented by its description
    if isinstance(value, dict) and value:
        return "see [Defaults](#defaults)"
    return f"`{json.dumps(value)}`"


# ---------------------------------------------------------------------------- markdown


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or "—"


def _table(rows: list[Row], *, required: bool = True) -> list[str]:
    head = ["Field", "Type", *(["Required"] if required else []), "Default"]
    out = [
        "| " + " | ".join([*head, "Description", "Constraints"]) + " |",
        "|" + "---|" * (len(head) + 2),
    ]
    for row in rows:
        cells = [f"`{row.path}`", f"`{row.type}`"]
        if required:
            cells.append("yes" if row.required else "")
        cells += [row.default or "", row.description, row.constraints]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return out


def _model_defaults(kind: str, part: str) -> dict[str, str]:
    """Defaults the operator applies (the CRD has none: the API server never fills spec)."""
    model: Any
    if kind == Quarantine.KIND:
        model = QuarantineStatus if part == "status" else QuarantineSpec
    else:
        model = WorkloadStatus if part == "status" else KINDS[kind].model_fields[part].annotation
    schema_of = getattr(model, "model_json_schema", None)
    if schema_of is None:
        return {}
    schema: Schema = schema_of(by_alias=True, mode="validation")
    rows = _rows(schema, part, schema.get("$defs", {}))
    return {row.path: row.default for row in rows if row.default is not None}


def _crd_section(crd: Schema) -> list[str]:
    names = crd["spec"]["names"]
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    props = schema["properties"]
    out = [
        f"## {names['kind']}",
        "",
        f"{schema.get('description', '')}",
        "",
        f"- apiVersion: `{crd['spec']['group']}/{version['name']}`, kind: `{names['kind']}`",
        f"- plural `{names['plural']}`, short names "
        + ", ".join(f"`{s}`" for s in names.get("shortNames") or [])
        + ", categories "
        + ", ".join(f"`{c}`" for c in names.get("categories") or []),
        "- subresources: " + ", ".join(f"`{s}`" for s in version.get("subresources") or {}),
        "",
        "### Printer columns",
        "",
        "| Column | Type | JSONPath | Shown |",
        "|---|---|---|---|",
    ]
    for column in version.get("additionalPrinterColumns") or []:
        shown = "always" if not column.get("priority") else "`-o wide`"
        out.append(
            f"| {column['name']} | `{column['type']}` | `{_cell(column['jsonPath'])}` | {shown} |"
        )
    for part in ("spec", "status"):
        out += ["", f"### {part}", "", _cell(str(props[part].get("description", ""))), ""]
        defaults = _model_defaults(names["kind"], part)
        rows = [
            Row(r.path, r.type, r.required, r.description, r.constraints, defaults.get(r.path))
            for r in _rows(props[part], part, {})
        ]
        out += _table(rows)
    rules = [
        (path, rule)
        for path, node in _nodes(props["spec"], "spec")
        for rule in node.get("x-kubernetes-validations") or []
    ]
    if rules:
        out += ["", "### Validation rules (CEL, enforced by the API server)", ""]
        out += [f"- `{path}`: {rule['message']} — `{rule['rule']}`" for path, rule in rules]
    return out


def _nodes(node: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")


def _policy_section() -> list[str]:
    schema = Policy.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    defaults = Policy().wire()
    rows = list(_rows(schema, "", defs, defaults))
    out = [
        "## Cluster policy",
        "",
        _cell(str(schema.get("description", ""))),
        "",
        "The platform team sets it in the Helm values; the operator reads it from a ConfigMap, "
        "and `secureai render --policy FILE` from a file. Unknown keys are rejected.",
        "",
    ]
    out += _table(rows, required=False)
    out += [
        "",
        "### Defaults",
        "",
        "```yaml",
        *_yaml_lines(defaults),
        "```",
    ]
    return out


def _yaml_lines(value: Any, indent: int = 0) -> list[str]:
    """A tiny block-YAML writer for the defaults (JSON scalars are valid YAML)."""
    pad = "  " * indent
    out: list[str] = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            out.append(f"{pad}{key}:")
            out += _yaml_lines(item, indent + 1)
        elif isinstance(item, list) and item:
            out.append(f"{pad}{key}:")
            out += [f"{pad}  - {json.dumps(v)}" for v in item]
        else:
            out.append(f"{pad}{key}: {json.dumps(item)}")
    return out


def markdown() -> str:
    """The whole API reference as Markdown."""
    lines = [HEADER.format(api_version=API_VERSION)]
    lines.append(
        "Contents: "
        + ", ".join(
            f"[{c['spec']['names']['kind']}](#{c['spec']['names']['kind'].lower()})"
            for c in all_crds()
        )
        + ", [Cluster policy](#cluster-policy)."
    )
    for crd in all_crds():
        lines += ["", *_crd_section(crd)]
    lines += ["", *_policy_section()]
    return "\n".join(lines).rstrip("\n") + "\n"
