"""The test helpers that other integration tests trust: Event matching and the audit filter.

- `events_for(..., uid=, since=)` ignores Events about an earlier object of the same name and
  Events older than the action, which the loose form (name and reason only) counts;
- `audit_control` sees a known write by the operator's identity, and fails when the audit
  filter matches nothing (so "the operator wrote nothing" cannot pass on a blind filter).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

import operatorkit
from clusterkit import Cluster
from operatorkit import audit_control, events_for, operator_kubeconfig, utc_now


def _configmap_uid(cluster: Cluster, namespace: str, name: str) -> str:
    cluster.kubectl("create", "configmap", name, "-n", namespace)
    uid: str = cluster.kubectl_json("get", "configmap", name, "-n", namespace)["metadata"]["uid"]
    return uid


def _post_event(
    cluster: Cluster, namespace: str, name: str, uid: str, reason: str, when: str
) -> None:
    event: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        "reason": reason,
        "message": f"test event for {uid}",
        "type": "Normal",
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
        "source": {"component": "secureai-tests"},
    }
    cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(event))


def _stamp(delta: timedelta = timedelta(0)) -> str:
    return (utc_now() + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_events_are_matched_by_uid_and_time(cluster: Cluster, namespace: str) -> None:
    name, reason = "child", "DriftReverted"
    old_uid = _configmap_uid(cluster, namespace, name)
    _post_event(cluster, namespace, name, old_uid, reason, _stamp(-timedelta(hours=1)))
    _post_event(cluster, namespace, name, old_uid, reason, _stamp(-timedelta(seconds=5)))
    cluster.kubectl("delete", "configmap", name, "-n", namespace)
    new_uid = _configmap_uid(cluster, namespace, name)
    assert new_uid != old_uid

    since = utc_now()
    _post_event(cluster, namespace, name, new_uid, reason, _stamp(-timedelta(hours=1)))
    assert len(events_for(cluster, namespace, name, reason)) == 3  # the loose form
    assert events_for(cluster, namespace, name, reason, since=since, uid=new_uid) == []
    assert len(events_for(cluster, namespace, name, reason, uid=old_uid)) == 2
    assert len(events_for(cluster, namespace, name, reason, since=since)) == 0

    _post_event(cluster, namespace, name, new_uid, reason, _stamp())
    mine = events_for(cluster, namespace, name, reason, since=since, uid=new_uid)
    assert [e["involvedObject"]["uid"] for e in mine] == [new_uid]
    assert events_for(cluster, namespace, name, "Reconciled", since=since, uid=new_uid) == []


@dataclass
class _Identity:
    """What `audit_control` needs of an operator: the kubeconfig it writes with."""

    kubeconfig: Path


def test_audit_control_sees_a_known_write(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    identity = _Identity(operator_kubeconfig(cluster, tmp_path / "kubeconfig"))
    audit_control(cluster, identity, namespace)  # type: ignore[arg-type]


def test_audit_control_fails_on_a_filter_that_matches_nothing(
    cluster: Cluster, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = _Identity(operator_kubeconfig(cluster, tmp_path / "kubeconfig"))
    monkeypatch.setattr(operatorkit, "OPERATOR_USER", "system:serviceaccount:nowhere:nobody")
    with pytest.raises(TimeoutError, match="a known write audited"):
        audit_control(cluster, identity, namespace, timeout=5)  # type: ignore[arg-type]
