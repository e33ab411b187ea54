"""Thin kopf handlers: hand each watch event to the Reconciler."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf

from secureai.controllers.reconciler import Reconciler
from secureai.k8s.client import ApiError
from secureai.k8s.resources import CHILD_RESOURCES, WORKLOAD_RESOURCES
from secureai.render.meta import LABEL_MANAGED_BY, LABEL_WORKLOAD, MANAGED_BY

log = logging.getLogger("secureai")

RETRY_DELAYS = (0.5, 1, 2, 5, 10, 30)


def _selector(api_version: str, plural: str) -> tuple[str, str]:
    return (api_version, plural)


def configure_watches(settings: kopf.OperatorSettings) -> None:
    """Server-side label selectors keep the watched set (and memory) small."""
    managed = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    for resource in CHILD_RESOURCES.values():
        if resource.kind != "NetworkPolicy":  # foreign policies matter too
            settings.watching.label_selectors[_selector(resource.api_version, resource.plural)] = (
                managed
            )
    settings.watching.label_selectors[_selector("v1", "pods")] = LABEL_WORKLOAD  # workloads' only
    # Namespaces stay unfiltered: kopf's own namespace discovery shares this watch.


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    retries: dict[tuple[str, str, str], int] = {}

    async def reconcile_with_retry(body: dict[str, Any]) -> None:
        entry = reconciler.observe_workload(body)
        if entry is None:
            return
        key = (entry.kind, entry.namespace, entry.name)
        try:
            await reconciler.reconcile(entry)
            retries.pop(key, None)
        except ApiError as exc:
            if exc.status == 403 and "being terminated" in exc.message:
                retries.pop(key, None)
                return
            attempt = retries.get(key, 0)
            retries[key] = attempt + 1
            delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
            asyncio.get_running_loop().call_later(delay, lambda: asyncio.ensure_future(retry(key)))

    async def retry(key: tuple[str, str, str]) -> None:
        for entry in reconciler.state.workloads.values():
            if (entry.kind, entry.namespace, entry.name) == key:
                entry.reconciled_generation = -1
                await reconcile_with_retry(entry.body)
                return

    for resource in WORKLOAD_RESOURCES.values():

        @kopf.on.event(resource.api_version, resource.plural, registry=registry, id=resource.plural)
        async def on_workload(event: kopf.RawEvent, **_: Any) -> None:
            body = cast(dict[str, Any], event["object"])
            if event.get("type") == "DELETED":
                reconciler.observe_workload(body, deleted=True)
                return
            await reconcile_with_retry(body)

    for resource in CHILD_RESOURCES.values():
        if resource.kind == "NetworkPolicy":
            continue

        @kopf.on.event(resource.api_version, resource.plural, registry=registry, id=resource.plural)
        async def on_child(event: kopf.RawEvent, **_: Any) -> None:
            body = cast(dict[str, Any], event["object"])
            await reconciler.on_child(body, deleted=event.get("type") == "DELETED")

    @kopf.on.event("networking.k8s.io/v1", "networkpolicies", registry=registry)
    async def on_network_policy(event: kopf.RawEvent, **_: Any) -> None:
        body = cast(dict[str, Any], event["object"])
        await reconciler.on_watch_event(body, deleted=event.get("type") == "DELETED")

    @kopf.on.event("v1", "pods", registry=registry)
    async def on_pod(event: kopf.RawEvent, **_: Any) -> None:
        body = cast(dict[str, Any], event["object"])
        await reconciler.on_pod(body, deleted=event.get("type") == "DELETED")

    @kopf.on.event("v1", "namespaces", registry=registry)
    async def on_namespace(event: kopf.RawEvent, **_: Any) -> None:
        await reconciler.on_namespace(
            cast(dict[str, Any], event["object"]), deleted=event.get("type") == "DELETED"
        )
