"""Issue 14 item 13: Flux, cli-utils' wait and Config Sync judge the workloads right.

They use kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), run here as the library itself
(tests/gitops/harness). kstatus reads `Stalled=True` as Failed, `Reconciling=True` and
`Ready=False` as InProgress, an `observedGeneration` behind `metadata.generation` as InProgress,
and an object without status as Current. The objects carry the status the operator's own status
computation writes in each state; Argo CD's health checks are judged on the same objects.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gitops.states import NOW, POLICY, states
from gitopskit import argocd_health, kstatus
from secureai.api import parse_workload
from secureai.render.status import Observed, compute_status

# state -> (kstatus, Argo CD); a terminal failure is Failed for both tools' users
EXPECTED = {
    "new": ("InProgress", "Progressing"),
    "pending": ("InProgress", "Progressing"),
    "running": ("Current", "Healthy"),
    "succeeded": ("Current", "Healthy"),
    "ready": ("Current", "Healthy"),
    "scaled-to-zero": ("Current", "Suspended"),
    "failed": ("Failed", "Degraded"),
    "degraded": ("Failed", "Degraded"),
    "rejected": ("Failed", "Degraded"),
    "generation-behind": ("InProgress", "Progressing"),
    # a security regression on a running workload: Argo CD shows it; kstatus has no word for it
    "foreign-policy": ("Current", "Degraded"),
    "unlabelled-namespace": ("Current", "Degraded"),
    # contained by a Quarantine: stalled until released (kstatus Failed, Argo CD Degraded)
    "quarantined": ("Failed", "Degraded"),
}
STATES = states()


@pytest.mark.parametrize("name", list(STATES))
def test_kstatus_and_argocd_agree_with_the_state(name: str) -> None:
    obj = STATES[name]
    kind, state = name.split("/")
    (ks,) = kstatus([obj])
    (argo,) = argocd_health(kind, [obj])
    assert (ks["status"], argo["status"]) == EXPECTED[state], (ks, argo)
    if ks["status"] == "Failed":
        # the reason reaches Flux's message instead of a timeout
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert ks["message"] == ready["message"] != ""


def test_a_workload_without_any_status_would_be_current() -> None:
    """Why the CRD defaults status.observedGeneration to 0: without it a just-created workload
    counts as Current before the operator has acted."""
    bare = copy.deepcopy(STATES["SecureTrainingJob/new"])
    del bare["status"]
    (ks,) = kstatus([bare])
    assert ks["status"] == "Current"
    (ks,) = kstatus([STATES["SecureTrainingJob/new"]])
    assert ks["status"] == "InProgress"


def _status_of(conditions: list[dict[str, Any]], kind: str) -> str:
    return next(c["status"] for c in conditions if c["type"] == kind)


def test_stalled_is_cleared_when_a_new_generation_is_reconciled() -> None:
    rejected = STATES["SecureTrainingJob/rejected"]
    assert _status_of(rejected["status"]["conditions"], "Stalled") == "True"
    fixed = copy.deepcopy(rejected)
    fixed["metadata"]["generation"] = 3
    (ks,) = kstatus([fixed])
    assert ks["status"] == "InProgress"  # the operator has not seen generation 3 yet
    running = STATES["SecureTrainingJob/running"]
    job = {"status": {"ready": 1}, "metadata": {"name": fixed["metadata"]["name"]}}
    obs = Observed(children={("Job", fixed["metadata"]["name"]): job})
    fixed["status"] = compute_status(
        parse_workload(fixed), POLICY, obs, rejected["status"], "2026-01-02T00:00:00Z"
    )
    conditions = fixed["status"]["conditions"]
    assert _status_of(conditions, "Stalled") == "False"
    assert _status_of(conditions, "Reconciling") == "False"
    stalled = next(c for c in conditions if c["type"] == "Stalled")
    assert stalled["lastTransitionTime"] == "2026-01-02T00:00:00Z" != NOW
    (ks,) = kstatus([fixed])
    assert ks["status"] == "Current"
    assert running["status"]["phase"] == fixed["status"]["phase"] == "Running"


def test_reconciling_while_work_is_in_flight_only() -> None:
    for name, obj in STATES.items():
        conditions = (obj.get("status") or {}).get("conditions")
        if not conditions:
            continue
        in_flight = obj["status"]["phase"] == "Pending"
        assert _status_of(conditions, "Reconciling") == ("True" if in_flight else "False"), name
        terminal = obj["status"]["phase"] in ("Failed", "Degraded", "Rejected", "Quarantined")
        assert _status_of(conditions, "Stalled") == ("True" if terminal else "False"), name
        for c in conditions:
            assert c["observedGeneration"] == obj["metadata"]["generation"] or name.endswith(
                "generation-behind"
            )
