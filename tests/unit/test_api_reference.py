"""docs/api.md is the reference generated from the models, complete and pure.

Regenerate it with:
    .venv/bin/python -c "from secureai.api.reference import markdown; print(markdown(), end='')" \
        > docs/api.md
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from typing import Any

from secureai.api import Policy
from secureai.api import reference as reference_module
from secureai.api.crd import all_crds
from secureai.api.reference import markdown
from strategies import ROOT

DOC = ROOT / "docs" / "api.md"
REGENERATE = (
    '.venv/bin/python -c "from secureai.api.reference import markdown; '
    "print(markdown(), end='')\" > docs/api.md"
)


def _walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")


def _paths(node: dict[str, Any], path: str) -> list[str]:
    return [p for p, _n in _walk(node, path)]


def test_docs_api_md_is_up_to_date() -> None:
    assert DOC.is_file(), f"missing; generate it: {REGENERATE}"
    assert DOC.read_text(encoding="utf-8") == markdown(), f"stale; regenerate it: {REGENERATE}"


def test_markdown_ends_with_one_newline() -> None:
    # determinism across processes: tests/unit/test_render_hashseed.py
    assert markdown().endswith("\n") and not markdown().endswith("\n\n")


def test_every_crd_field_is_documented() -> None:
    text = markdown()
    for crd in all_crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert f"## {crd['spec']['names']['kind']}" in text
        for part in ("spec", "status"):
            for path in _paths(schema["properties"][part], part):
                assert f"| `{path}` |" in text, path
        for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
            assert f"| {column['name']} |" in text


def test_every_cel_rule_is_documented() -> None:
    text = markdown()
    for crd in all_crds():
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        nodes = [("spec", spec), *_walk(spec, "spec")]
        found = [r for _p, n in nodes for r in n.get("x-kubernetes-validations") or []]
        assert found
        for rule in found:
            assert f"{rule['message']} — `{rule['rule']}`" in text


def test_every_policy_field_is_documented_with_its_default() -> None:
    text = markdown()
    defaults = Policy().wire()
    for name, field in Policy.model_fields.items():
        alias = field.serialization_alias or name
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{alias}` |")]
        value = defaults[alias]
        if not isinstance(value, dict) or not value:
            shown = json.dumps(value).replace("|", "\\|")
            assert f"| `{shown}` |" in row, (alias, row)
    assert "| `tokens.maxSeconds` | `integer` | `3600` |" in text
    assert "| `dns.port` | `integer` | `53` |" in text


def test_spec_defaults_are_the_model_defaults() -> None:
    text = markdown()
    for fragment in (
        "| `spec.workers` | `integer` |  | `1` |",
        "| `spec.port` | `integer` |  | `8080` |",
        '| `spec.tls.mode` | `string` |  | `"OperatorCA"` |',
        "| `spec.network.allowDNS` | `boolean` |  | `true` |",
        "| `spec.image` | `string` | yes |",
    ):
        assert fragment.replace("|  |", "| — |") in text, fragment


def test_reference_module_is_pure() -> None:
    """It may import the standard library and secureai.api only."""
    tree = ast.parse((ROOT / "operator" / "secureai" / "api" / "reference.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            ok = name.startswith("secureai.api") or top in sys.stdlib_module_names
            assert ok or top == "__future__", f"reference.py imports {name}"
    assert reference_module.markdown is markdown
