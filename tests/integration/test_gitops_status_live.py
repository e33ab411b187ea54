"""Issue 14 items 12 and 13 with the real operator: objects captured from the cluster in each
state, judged by kstatus (the library Flux and cli-utils use) and by the Argo CD health checks in
Argo CD's Lua VM (tests/gitops/harness).

A spec Rejected by policy and a Degraded model server (model verification fails: kwok reports the
init container's exit for the claim `tampered-model`) must be Failed for kstatus with the
operator's reason; a finished training job and a serving model server Current; nothing Current
before the operator has acted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clusterkit import Cluster, wait_for
from gitopskit import argocd_health, kstatus
from operatorkit import TEST_POLICY, OperatorProcess, apply_yaml, example, get_json, model_prereqs

DIGEST = "@sha256:" + "1" * 64


def _image(name: str) -> str:
    return f"{TEST_POLICY['allowedRegistries'][0]}/ml/{name}{DIGEST}"


def _captured(
    cluster: Cluster, kind: str, namespace: str, name: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    def state() -> dict[str, Any] | None:
        obj = get_json(cluster, kind, name, "-n", namespace)
        return obj if obj and done(obj) else None

    found: dict[str, Any] = wait_for(state, timeout=120, description=f"{kind} {name}")
    return found


def _phase(phase: str) -> Callable[[dict[str, Any]], bool]:
    return lambda obj: (obj.get("status") or {}).get("phase") == phase


def _verdicts(kind: str, obj: dict[str, Any]) -> tuple[str, str, str, str]:
    (ks,) = kstatus([obj])
    (argo,) = argocd_health(kind, [obj])
    assert "error" not in ks and "error" not in argo, (ks, argo)
    return ks["status"], ks["message"], argo["status"], argo.get("message", "")


def test_live_objects_in_each_state(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    stj, sis = "SecureTrainingJob", "SecureInferenceService"
    rejected = example("training-single-gpu.yaml", namespace, image="evil.example.net/x" + DIGEST)
    rejected["metadata"]["name"] = "rejected"
    done = example("training-single-gpu.yaml", namespace, image=_image("trainer"))
    done["metadata"]["name"] = "done"
    done["spec"].pop("gpu", None)
    serving = example("inference-cpu.yaml", namespace, image=_image("server"))
    serving["metadata"]["name"] = "serving"
    tampered = example("inference-cpu.yaml", namespace, image=_image("server"))
    tampered["metadata"]["name"] = "tampered"
    tampered["spec"]["model"]["claimName"] = "tampered-model"
    model_prereqs(cluster, namespace, [serving["spec"]["model"]["claimName"], "tampered-model"])
    apply_yaml(cluster, [rejected, done, serving, tampered])

    obj = _captured(cluster, "stj", namespace, "rejected", _phase("Rejected"))
    ks, ks_message, argo, argo_message = _verdicts(stj, obj)
    assert (ks, argo) == ("Failed", "Degraded")
    assert "evil.example.net" in ks_message and "evil.example.net" in argo_message

    obj = _captured(cluster, "sis", namespace, "tampered", _phase("Degraded"))
    ks, ks_message, argo, _m = _verdicts(sis, obj)
    assert (ks, argo) == ("Failed", "Degraded")
    assert "model-verify failed" in ks_message

    obj = _captured(cluster, "stj", namespace, "done", _phase("Succeeded"))
    assert _verdicts(stj, obj)[0::2] == ("Current", "Healthy")

    obj = _captured(cluster, "sis", namespace, "serving", _phase("Ready"))
    assert _verdicts(sis, obj)[0::2] == ("Current", "Healthy")
