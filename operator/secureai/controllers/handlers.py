"""Thin kopf handlers: hand each watch event to the Reconciler."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, cast

import kopf

from secureai.controllers import metrics
from secureai.controllers.quarantine import QuarantineController
from secureai.controllers.reconciler import Reconciler
from secureai.controllers.state import workload_key_of_child, workload_key_of_cr
from secureai.k8s.client import NotLeader
from secureai.k8s.resources import CHILD_RESOURCES, QUARANTINE, WORKLOAD_RESOURCES
from secureai.render.meta import LABEL_MANAGED_BY, LABEL_WORKLOAD, MANAGED_BY

log = logging.getLogger("secureai")


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


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    quarantines: QuarantineController | None = None,
) -> None:
    """Each watch event updates the caches; work that fails goes to the reconciler's queue."""

    async def guarded(body: dict[str, Any], work: Awaitable[None]) -> None:
        try:
            await work
        except NotLeader:  # a standby keeps its caches and writes nothing
            key = workload_key_of_child(body)
            if key is not None and key in reconciler.state.workloads:
                reconciler.deferred.add(key)  # compared once leading again
            return
        except Exception as exc:
            # Never lost: the workload is compared again by the queue, with backoff.
            metrics.WORK_FAILURES.labels("watch", type(exc).__name__).inc()
            log.warning(
                "event on %s/%s failed: %s", body.get("kind"), body["metadata"].get("name"), exc
            )
            key = workload_key_of_child(body)
            if key is not None and key in reconciler.state.workloads:
                reconciler.queue.add_after(key, reconciler.queue.backoff(key))

    for resource in WORKLOAD_RESOURCES.values():

        @kopf.on.event(resource.api_version, resource.plural, registry=registry, id=resource.plural)
        async def on_workload(event: kopf.RawEvent, **_: Any) -> None:
            body = cast(dict[str, Any], event["object"])
            if event.get("type") == "DELETED":
                reconciler.observe_workload(body, deleted=True)
                return
            entry = reconciler.observe_workload(body)
            if entry is not None:
                reconciler.enqueue(workload_key_of_cr(entry.body))

    for resource in CHILD_RESOURCES.values():
        if resource.kind == "NetworkPolicy":
            continue

        @kopf.on.event(resource.api_version, resource.plural, registry=registry, id=resource.plural)
        async def on_child(event: kopf.RawEvent, **_: Any) -> None:
            body = cast(dict[str, Any], event["object"])
            deleted = event.get("type") == "DELETED"
            await guarded(body, reconciler.on_child(body, deleted=deleted))

    @kopf.on.event("networking.k8s.io/v1", "networkpolicies", registry=registry)
    async def on_network_policy(event: kopf.RawEvent, **_: Any) -> None:
        body = cast(dict[str, Any], event["object"])
        deleted = event.get("type") == "DELETED"
        await guarded(body, reconciler.on_watch_event(body, deleted=deleted))

    @kopf.on.event("v1", "pods", registry=registry)
    async def on_pod(event: kopf.RawEvent, **_: Any) -> None:
        body = cast(dict[str, Any], event["object"])
        await guarded(body, reconciler.on_pod(body, deleted=event.get("type") == "DELETED"))

    if quarantines is not None:

        @kopf.on.event(QUARANTINE.api_version, QUARANTINE.plural, registry=registry)
        async def on_quarantine(event: kopf.RawEvent, **_: Any) -> None:
            body = cast(dict[str, Any], event["object"])
            try:
                await quarantines.on_quarantine(body, deleted=event.get("type") == "DELETED")
            except NotLeader:
                return  # the new leader contains from its own caches (take-over)
            except Exception as exc:  # each workload's failure is already queued
                metrics.WORK_FAILURES.labels("quarantine", type(exc).__name__).inc()
                log.warning("Quarantine/%s: %s", body["metadata"].get("name"), exc)

    @kopf.on.event("v1", "namespaces", registry=registry)
    async def on_namespace(event: kopf.RawEvent, **_: Any) -> None:
        body = cast(dict[str, Any], event["object"])
        await guarded(body, reconciler.on_namespace(body, deleted=event.get("type") == "DELETED"))
