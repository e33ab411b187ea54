"""Fixtures for integration tests: they run against the real local control plane.

- ``cluster`` (session): a running cluster; started by the session only if none was up. At
  the end it is stopped only if a test session started it and no other test session still
  uses it; a cluster from `make cluster` is left alone. SECUREAI_KEEP_CLUSTER=1 keeps it.
- ``k8s`` (session): a ``kubernetes.client.ApiClient`` with the admin kubeconfig.
- ``namespace`` (function): a fresh namespace whose ``default`` ServiceAccount exists,
  deleted after the test.
- ``namespace_factory`` (function): ``namespace_factory(labels={...})`` for more/labelled ones.

Every test under tests/integration is marked ``integration``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from clusterkit import Cluster, ClusterUnavailable, ensure_cluster, release_cluster, wait_for

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    try:
        c = ensure_cluster()
    except ClusterUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield c
    release_cluster(c, keep=os.environ.get("SECUREAI_KEEP_CLUSTER") == "1")


@pytest.fixture(scope="session")
def k8s(cluster: Cluster) -> Any:
    return cluster.api_client()


def _ns_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"t-{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace_factory(
    cluster: Cluster, k8s: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    core = client.CoreV1Api(k8s)
    created: list[str] = []

    def make(labels: dict[str, str] | None = None) -> str:
        name = _ns_name(request)
        core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(
                    name=name, labels={"secureai.dev/test": "true", **(labels or {})}
                )
            )
        )
        created.append(name)
        # pods are refused until the ServiceAccount controller has made "default"
        wait_for(
            lambda: core.read_namespaced_service_account("default", name),
            timeout=30,
            description=f"ServiceAccount {name}/default",
        )
        return name

    yield make
    for name in created:
        try:
            core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def namespace(namespace_factory: Callable[..., str]) -> str:
    return namespace_factory()
