"""The CR's guard fields reach the guard's configuration, and the guard accepts what is rendered."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from secureai.api import SecureInferenceService, parse_workload
from secureai.guard.config import parse_config
from secureai.render.inference import guard_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "inference-gpu-guarded.yaml"


def _cr(**guard: object) -> SecureInferenceService:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["guard"].update(guard)
    cr = parse_workload(body)
    assert isinstance(cr, SecureInferenceService)
    return cr


def test_defaults_keep_prompts_and_refuse_uninspectable_answers() -> None:
    cfg = guard_config(_cr())
    assert cfg["redact_request_bodies"] is False
    assert cfg["allow_uninspectable_paths"] == []
    parse_config(json.dumps(cfg))


def test_request_redaction_and_allowed_paths_are_rendered() -> None:
    cr = _cr(
        redaction={"requests": True, "types": ["email"]},
        allowUninspectablePaths=["/v2/models/*/infer"],
    )
    cfg = guard_config(cr)
    assert cfg["redact_request_bodies"] is True
    assert cfg["allow_uninspectable_paths"] == ["/v2/models/*/infer"]
    parsed = parse_config(json.dumps(cfg))
    assert parsed.redact_request_bodies and parsed.allow_uninspectable_paths == [
        "/v2/models/*/infer"
    ]
