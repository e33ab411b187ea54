"""In-memory state: workloads, their desired children and the live children seen by watches."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from secureai.api import Workload
from secureai.judge.drift import Expected
from secureai.judge.isolation import Verdict
from secureai.render.containment import Containment
from secureai.render.meta import LABEL_KIND, LABEL_WORKLOAD

WorkloadKey = tuple[str, str, str]  # (kind label: training|inference, namespace, name)
ChildKey = tuple[str, str]  # (kind, name)

KIND_LABELS = {"SecureTrainingJob": "training", "SecureInferenceService": "inference"}


def slim(body: dict[str, Any]) -> dict[str, Any]:
    """A body without managedFields, which are large and never compared."""
    meta = body.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        body = {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return body


def resource_version(body: dict[str, Any]) -> int:
    try:
        return int(body.get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass
class Entry:
    """One workload: its last seen body, model and rendered children."""

    body: dict[str, Any]
    model: Workload | None = None
    desired: dict[ChildKey, dict[str, Any]] = field(default_factory=dict)
    # The desired children as the API server stores them (by the desired manifest's digest).
    expected: dict[ChildKey, Expected] = field(default_factory=dict)
    isolation: Verdict | None = None
    reconciled_generation: int = -1
    prepared_generation: int = -1  # a standby's render and dry-runs (no writes)
    rejected: str | None = None
    rejected_by_cluster: bool = False
    foreign: set[str] = field(default_factory=set)
    drift_total: int = 0
    drift_last_time: str | None = None
    drift_last_object: str | None = None
    drift_last_change: str | None = None
    tls_not_after: str | None = None
    model_digest: str | None = None
    model_signer: str | None = None
    lineage_generation: int = -1
    job_failure: str | None = None
    job_failure_generation: int = -1
    # The personal-data census the dataset init containers reported (status lineage).
    dataset_census: tuple[dict[str, Any], ...] = ()
    census_generation: int = -1
    # The containment rendered by the last reconcile (None: not contained).
    containment: Containment | None = None
    containing: bool = False  # containment's lane is at work: its reconcile compares all
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # reconcile and revert
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # status writes
    status_pending: bool = False
    counted_phase: str | None = None

    def __post_init__(self) -> None:
        self.body = slim(self.body)
        self.resume_drift()

    def resume_drift(self) -> None:
        """Carry the drift history over from status written by an earlier process."""
        status = self.body.get("status") or {}
        drift = status.get("drift") or {}
        self.drift_total = int(drift.get("revertsTotal") or 0)
        self.drift_last_time = drift.get("lastRevertTime")
        self.drift_last_object = drift.get("lastObject")
        for cond in status.get("conditions") or []:
            prefix = f"reverted {self.drift_last_object}: "
            if cond.get("type") == "Drift" and str(cond.get("message", "")).startswith(prefix):
                self.drift_last_change = cond["message"][len(prefix) :]

    @property
    def phase(self) -> str:
        return str((self.body.get("status") or {}).get("phase") or "Pending")

    @property
    def generation(self) -> int:
        return int(self.body.get("metadata", {}).get("generation") or 0)

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def kind(self) -> str:
        return str(self.body["kind"])


def workload_key_of_cr(body: dict[str, Any]) -> WorkloadKey:
    meta = body["metadata"]
    return (KIND_LABELS[body["kind"]], meta["namespace"], meta["name"])


def workload_key_of_child(body: dict[str, Any]) -> WorkloadKey | None:
    """The workload a child belongs to: its controller owner reference first (labels can be
    edited by anyone who can edit the child), else its workload labels."""
    meta = body.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") in KIND_LABELS and ref.get("name"):
            return (KIND_LABELS[ref["kind"]], meta.get("namespace", ""), ref["name"])
    labels = meta.get("labels") or {}
    name, kind = labels.get(LABEL_WORKLOAD), labels.get(LABEL_KIND)
    if not name or not kind:
        return None
    return (kind, meta.get("namespace", ""), name)


class LiveChildren(MutableMapping[ChildKey, dict[str, Any]]):
    """A workload's live children, each kept as compact JSON text.

    A parsed body costs several times its JSON size in Python objects; reads are rare
    (status, resync), so each is decoded on access. Callers get a fresh dict every time.
    """

    def __init__(self) -> None:
        self._text: dict[ChildKey, str] = {}
        self._versions: dict[ChildKey, int] = {}

    def version(self, key: ChildKey) -> int | None:
        """The stored copy's resourceVersion, without decoding it."""
        return self._versions.get(key)

    def __getitem__(self, key: ChildKey) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self._text[key])
        return body

    def __setitem__(self, key: ChildKey, body: dict[str, Any]) -> None:
        self._text[key] = json.dumps(body, separators=(",", ":"))
        self._versions[key] = resource_version(body)

    def __delitem__(self, key: ChildKey) -> None:
        del self._text[key]
        del self._versions[key]

    def __iter__(self) -> Iterator[ChildKey]:
        return iter(self._text)

    def __len__(self) -> int:
        return len(self._text)

    def __contains__(self, key: object) -> bool:
        return key in self._text


@dataclass
class State:
    workloads: dict[WorkloadKey, Entry] = field(default_factory=dict)
    live: dict[WorkloadKey, LiveChildren] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    terminating: set[str] = field(default_factory=set)
    # Every live NetworkPolicy of the watched namespaces (ours and foreign): namespace -> name.
    policies: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # Labels of the workloads' live pods: workload -> pod name -> labels.
    pods: dict[WorkloadKey, dict[str, dict[str, str]]] = field(default_factory=dict)

    def live_children(self, key: WorkloadKey) -> LiveChildren:
        children = self.live.get(key)
        if children is None:
            children = self.live[key] = LiveChildren()
        return children

    def remember_child(self, body: dict[str, Any]) -> WorkloadKey | None:
        """Store a child seen by a watch or returned by a write; newer versions win."""
        key = workload_key_of_child(body)
        if key is None:
            return None
        child = (body["kind"], body["metadata"]["name"])
        children = self.live_children(key)
        known = children.version(child)
        if known is None or resource_version(body) >= known:
            children[child] = slim(body)
        return key

    def forget_child(self, body: dict[str, Any]) -> WorkloadKey | None:
        key = workload_key_of_child(body)
        if key is not None:
            children = self.live_children(key)
            children.pop((body["kind"], body["metadata"]["name"]), None)
            if not children and key not in self.workloads:
                del self.live[key]
        return key

    def in_namespace(self, namespace: str) -> list[Entry]:
        return [e for (_, ns, _), e in self.workloads.items() if ns == namespace]
