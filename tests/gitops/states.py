"""Workload objects in every state, with the status the operator's own status computation
(secureai.render.status) writes, as Argo CD and kstatus receive them from the API server."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from secureai.api import Policy, parse_workload
from secureai.render.status import Observed, compute_status, rejected_status

NOW = "2026-01-01T00:00:00Z"
STJ, SIS = "SecureTrainingJob", "SecureInferenceService"
POLICY = Policy()
DIGEST = "@sha256:" + "0" * 64
SPECS: dict[str, dict[str, Any]] = {
    STJ: {
        "image": "registry.example.com/ml/trainer" + DIGEST,
        "resources": {"cpu": "4", "memory": "16Gi"},
        "gpu": {"count": 1},
    },
    SIS: {
        "image": "registry.example.com/ml/server" + DIGEST,
        "resources": {"cpu": "1", "memory": "2Gi"},
        "replicas": 1,
        "model": {"claimName": "models", "signerKeyConfigMap": "model-signer"},
    },
}


def _cr(kind: str, generation: int = 2, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": "finetune" if kind == STJ else "embeddings",
            "namespace": "ml-team",
            "generation": generation,
            "uid": "0000-1111",
            "resourceVersion": "7",
        },
        "spec": {**copy.deepcopy(SPECS[kind]), **spec},
    }


def _with(obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["status"] = status
    return out


def _job(obj: dict[str, Any], **status: Any) -> Observed:
    cond = status.pop("condition", None)
    if cond:
        status["conditions"] = [{"type": cond, "status": "True"}]
    job = {"metadata": {"name": obj["metadata"]["name"]}, "status": status}
    return Observed(children={("Job", obj["metadata"]["name"]): job})


def _deployment(obj: dict[str, Any], available: int, **kw: Any) -> Observed:
    deployment = {
        "metadata": {"name": obj["metadata"]["name"], "generation": 1},
        "status": {
            "observedGeneration": 1,
            "availableReplicas": available,
            "updatedReplicas": available,
            "readyReplicas": available,
        },
    }
    return Observed(children={("Deployment", obj["metadata"]["name"]): deployment}, **kw)


def computed(obj: dict[str, Any], obs: Observed) -> dict[str, Any]:
    status = compute_status(parse_workload(obj), POLICY, obs, None, NOW)
    return _with(obj, status)


def rejected(obj: dict[str, Any], message: str) -> dict[str, Any]:
    return _with(obj, rejected_status(obj["metadata"]["generation"], None, message, NOW))


def states() -> dict[str, dict[str, Any]]:
    """name -> object; names are `<kind>/<state>`."""
    stj, sis = _cr(STJ), _cr(SIS)
    out: dict[str, dict[str, Any]] = {}
    for kind, obj in ((STJ, stj), (SIS, sis)):
        # created, the operator not there yet: only the CRD's status default
        out[f"{kind}/new"] = _with(obj, {"observedGeneration": 0})
    out[f"{STJ}/pending"] = computed(stj, _job(stj, ready=0))
    out[f"{STJ}/running"] = computed(stj, _job(stj, ready=1))
    out[f"{STJ}/succeeded"] = computed(stj, _job(stj, succeeded=1, condition="Complete"))
    out[f"{STJ}/failed"] = computed(stj, _job(stj, failed=1, condition="Failed"))
    out[f"{STJ}/rejected"] = rejected(
        stj, "spec.network.ingress[0].podSelector: every key must be a label key"
    )
    behind = copy.deepcopy(out[f"{STJ}/running"])
    behind["metadata"]["generation"] = 3
    out[f"{STJ}/generation-behind"] = behind
    out[f"{STJ}/foreign-policy"] = computed(
        stj, Observed(children=_job(stj, ready=1).children, foreign_policies=("allow-all",))
    )
    out[f"{SIS}/pending"] = computed(sis, _deployment(sis, 0))
    out[f"{SIS}/ready"] = computed(sis, _deployment(sis, 1))
    out[f"{SIS}/scaled-to-zero"] = computed(_cr(SIS, replicas=0), _deployment(sis, 0))
    out[f"{SIS}/degraded"] = computed(
        sis, _deployment(sis, 0, init_failure="model-verify failed in pod x-1: bad signature")
    )
    out[f"{SIS}/rejected"] = rejected(sis, "spec.image: registry not allowed")
    why = "Quarantine/incident-7 (Isolate): model sha256:1f2e poisoned"
    out[f"{SIS}/quarantined"] = computed(sis, _deployment(sis, 1, quarantine=why))
    out[f"{STJ}/quarantined"] = computed(
        stj,
        Observed(children=_job(stj, ready=1).children, quarantine=why, quarantine_stopped=True),
    )
    out[f"{SIS}/unlabelled-namespace"] = computed(
        sis, _deployment(sis, 1, namespace_labelled=False)
    )
    return out


HEALTH_DIR = Path(__file__).resolve().parent / "health" / "secureai.dev"


def stored_path(name: str) -> Path:
    kind, state = name.split("/")
    return HEALTH_DIR / kind / "testdata" / f"{state}.yaml"


def dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=100)


if __name__ == "__main__":
    # Regenerate the testdata after a change of the status computation:
    #   .venv/bin/python tests/gitops/states.py
    for name, obj in states().items():
        path = stored_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(obj))
