"""Issue 17 point 4: the census every dataset init container reported goes into the CR's
status lineage (counts per type, never values), read from the trainer pods' termination
messages once the Job runs, and kept when the pods are gone."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any, cast

from secureai.api import Policy
from secureai.controllers.reconciler import Reconciler
from secureai.controllers.state import Entry
from secureai.k8s.client import KubeClient
from secureai.render.training import CENSUS_SCHEMA

REPO = Path(__file__).resolve().parents[2]
POLICY = Policy.from_yaml(REPO / "examples" / "policy.yaml")


def _job() -> dict[str, Any]:
    return {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": "SecureTrainingJob",
        "metadata": {
            "name": "j",
            "namespace": "ml",
            "uid": "u-1",
            "generation": 1,
            "resourceVersion": "5",
        },
        "spec": {
            "image": "registry.example.com/t@sha256:" + "a" * 64,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "datasets": [{"claimName": "data"}, {"claimName": "more"}],
            "allowedPersonalData": ["email"],
        },
    }


def _summary(counts: dict[str, int], violation: str | None = None) -> str:
    return json.dumps(
        {
            "schema": CENSUS_SCHEMA,
            "files": 3,
            "scanned": 3,
            "unreadable": 0,
            "bytes": 4096,
            "counts": counts,
            "allowed": ["email"],
            "violation": violation,
        }
    )


def _pod(messages: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "j-abc"},
        "status": {
            "initContainerStatuses": [
                {"name": name, "state": {"terminated": {"exitCode": 0, "message": msg}}}
                for name, msg in messages.items()
            ]
        },
    }


class PodsApi:
    """Applies and dry-runs succeed; pod lists answer ``pods``; status patches are kept."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.pods: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.status_patches: list[dict[str, Any]] = []

    async def apply_created(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        return copy.deepcopy(manifest), True

    async def apply_namespace_labels(self, namespace: str, labels: dict[str, str]) -> Any:
        return {"metadata": {"name": namespace, "labels": labels, "resourceVersion": "1"}}

    async def dry_run_create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(manifest)

    async def list(self, kind: str, namespace: str, **_: Any) -> list[dict[str, Any]]:
        self.calls.append(f"list {kind}")
        return copy.deepcopy(self.pods) if kind == "Pod" else []

    async def patch_status(
        self, resource: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.status_patches.append(patch)
        return {**self.body, "metadata": {**self.body["metadata"]}, "status": patch}

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call: {name}")


def _job_running(r: Reconciler, entry: Entry, status: dict[str, Any]) -> dict[str, Any]:
    job = copy.deepcopy(entry.desired[("Job", "j")])
    job["metadata"]["resourceVersion"] = "7"
    job["status"] = status
    return job


def test_the_census_of_every_dataset_goes_into_status_lineage() -> None:
    body = _job()
    api = PodsApi(body)
    r = Reconciler(cast(KubeClient, api), POLICY, lambda *a, **k: None)
    a = {"email": 12, "phone": 0}
    b = {"email": 3}

    async def run() -> None:
        entry = r.observe_workload(body)
        assert entry is not None
        await r.reconcile(entry)
        # The Job has not started: no pod is asked, and no census is claimed.
        assert "list Pod" not in api.calls
        assert "datasetCensus" not in (api.status_patches[-1].get("lineage") or {})
        # The Job runs; the first dataset's scan is done, the second not yet.
        api.pods = [_pod({"scan-0": _summary(a)})]
        await r.on_child(_job_running(r, entry, {"active": 1}), deleted=False)
        await r._write_status(entry)
        first = api.status_patches[-1]["lineage"]["datasetCensus"]
        assert [c["claimName"] for c in first] == ["data"]
        # Both scans done: both censuses, and the pods are not asked again.
        api.pods = [_pod({"scan-0": _summary(a), "scan-1": _summary(b)})]
        await r._write_status(entry)
        lineage = api.status_patches[-1]["lineage"]
        assert lineage["datasets"] == ["data", "more"]
        assert lineage["datasetCensus"] == [
            {"claimName": "data", "files": 3, "unreadable": 0, "bytes": 4096, "counts": a},
            {"claimName": "more", "files": 3, "unreadable": 0, "bytes": 4096, "counts": b},
        ]
        asked = api.calls.count("list Pod")
        api.pods = []  # the pods are gone (the Job's TTL): the census stays
        await r.on_child(_job_running(r, entry, {"succeeded": 1}), deleted=False)
        await r._write_status(entry)
        assert api.calls.count("list Pod") == asked
        assert api.status_patches[-1]["lineage"]["datasetCensus"] == lineage["datasetCensus"]

    asyncio.run(run())


def test_a_new_operator_process_keeps_the_census_written_before() -> None:
    """After a restart the pods may be gone; the census already in status is carried over."""
    body = _job()
    census = [{"claimName": "data", "files": 1, "unreadable": 0, "bytes": 10, "counts": {}}]
    body["status"] = {"observedGeneration": 1, "lineage": {"datasetCensus": census}}
    api = PodsApi(body)
    r = Reconciler(cast(KubeClient, api), POLICY, lambda *a, **k: None)

    async def run() -> None:
        entry = r.observe_workload(body)
        assert entry is not None
        await r.reconcile(entry)
        await r.on_child(_job_running(r, entry, {"succeeded": 1}), deleted=False)
        await r._write_status(entry)

    asyncio.run(run())
    assert api.status_patches[-1]["lineage"]["datasetCensus"] == census
