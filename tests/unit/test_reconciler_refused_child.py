"""Issue 14 item 8, second net: a child the API server refuses (422) means Rejected, not retry.

The validators refuse every value the API server is known to refuse in a child; should one slip
through (a future API server rule), the apply's 422 must not loop as a ReconcileError on every
retry with no status: the workload is Rejected (Stalled, the server's reason) and not retried
until its spec changes.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any, cast

import yaml

from secureai.api import Policy
from secureai.controllers.reconciler import Reconciler
from secureai.k8s.client import ApiError, KubeClient

REPO = Path(__file__).resolve().parents[2]
POLICY = Policy.from_yaml(REPO / "examples" / "policy.yaml")


class RefusingApi:
    """Applies succeed, except NetworkPolicies, which the API server refuses with 422."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.applied: list[str] = []
        self.status_patches: list[dict[str, Any]] = []

    async def apply_created(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if manifest["kind"] == "NetworkPolicy":
            raise ApiError(422, "Invalid", "spec.ingress[0].from[0].podSelector: Invalid value")
        self.applied.append(manifest["kind"])
        return {**copy.deepcopy(manifest), "metadata": {**manifest["metadata"]}}, True

    async def apply_namespace_labels(self, namespace: str, labels: dict[str, str]) -> Any:
        return {"metadata": {"name": namespace, "labels": labels, "resourceVersion": "1"}}

    async def dry_run_create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(manifest)

    async def patch_status(
        self, resource: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.status_patches.append(patch)
        return {
            **self.body,
            "metadata": {**self.body["metadata"], "resourceVersion": "9"},
            "status": patch,
        }

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call: {name}")


def test_a_refused_child_rejects_the_workload_instead_of_retrying() -> None:
    body: dict[str, Any] = yaml.safe_load((REPO / "examples" / "inference-cpu.yaml").read_text())
    body["metadata"].update(namespace="ml", uid="u-1", generation=1, resourceVersion="5")
    api = RefusingApi(body)
    events: list[str] = []
    r = Reconciler(cast(KubeClient, api), POLICY, lambda b, t, reason, m: events.append(reason))

    async def run() -> None:
        entry = r.observe_workload(body)
        assert entry is not None
        await r.reconcile(entry)  # no ApiError escapes: nothing to retry
        assert entry.reconciled_generation == 1
        assert r.observe_workload(body) is None  # the same generation is not queued again

    asyncio.run(run())
    assert "ReconcileError" not in events and "Rejected" in events
    (status,) = api.status_patches
    assert status["phase"] == "Rejected"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Stalled"]["status"] == "True"
    assert "NetworkPolicy" in conditions["Ready"]["message"]
    assert "422" in conditions["Ready"]["message"]
