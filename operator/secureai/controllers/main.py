"""`secureai run`: the operator process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import logging
import os
import secrets
import signal
import sys
import time
from typing import Any

import kopf
from pydantic import ValidationError

from secureai.api import Policy
from secureai.api.errors import one_line
from secureai.api.quarantine import Quarantine
from secureai.clock import process_clock
from secureai.controllers import metrics
from secureai.controllers.events import EventRecorder
from secureai.controllers.handlers import configure_watches, register
from secureai.controllers.hooks import ClusterHooks
from secureai.controllers.http import serve
from secureai.controllers.leader import Leader, LeaseSpec, ProcessKeeper
from secureai.controllers.provenance import Lifecycle
from secureai.controllers.quarantine import QuarantineController, Ref
from secureai.controllers.reconciler import Reconciler
from secureai.k8s import evidence
from secureai.k8s.certs import check_cluster_domain
from secureai.k8s.client import KubeClient, load_credentials
from secureai.k8s.resources import CHILD_RESOURCES, WORKLOAD_RESOURCES
from secureai.render.meta import LABEL_MANAGED_BY, LABEL_WORKLOAD, MANAGED_BY

log = logging.getLogger("secureai")

RESYNC_SECONDS = float(os.environ.get("SECUREAI_RESYNC_SECONDS", "60"))


class NoDiffBase(kopf.DiffBaseStorage):
    """Only `on.event` handlers here: kopf's per-event deep copy of the body is never used."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def load_policy(path: str | None) -> Policy:
    path = path or os.environ.get("SECUREAI_POLICY_FILE")
    if not path:
        log.warning("no policy file given; using built-in defaults (no registry is allowed)")
        return Policy()
    return Policy.from_yaml(path)


async def warm_caches(
    reconciler: Reconciler,
    patterns: list[str] | None,
    quarantines: QuarantineController | None = None,
) -> None:
    """List children once so that a restart re-applies nothing that is already right.
    Quarantines first: no workload is ever rendered uncontained for want of them.

    With watched namespaces, list in each of them only (the RBAC may be namespaced).
    """
    if quarantines is not None:
        for body in await reconciler.kube.list("Quarantine"):
            body.setdefault("kind", "Quarantine")
            await quarantines.on_quarantine(body, deleted=False)
    for body in await reconciler.kube.list("Namespace"):
        await reconciler.on_namespace(body)
    scopes = watched_scopes(reconciler, patterns)
    managed = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    for scope in scopes:
        for kind in CHILD_RESOURCES:
            selector = None if kind == "NetworkPolicy" else managed
            for body in await reconciler.kube.list(kind, scope, label_selector=selector):
                body.setdefault("kind", kind)
                await reconciler.on_watch_event(body, deleted=False)
        for body in await reconciler.kube.list("Pod", scope, label_selector=LABEL_WORKLOAD):
            await reconciler.on_pod(body, deleted=False)


def watched_scopes(reconciler: Reconciler, patterns: list[str] | None) -> list[str | None]:
    """Namespaces to list in: all (None), or those matching the watched patterns."""
    if not patterns:
        return [None]
    return [
        ns
        for ns in sorted(reconciler.state.namespaces)
        if ns not in reconciler.state.terminating
        and any(fnmatch.fnmatchcase(ns, p) for p in patterns)
    ]


async def relist_workloads(reconciler: Reconciler, patterns: list[str] | None) -> int:
    """The safety net under the watches: a workload whose event was missed is still found."""
    bodies: list[dict[str, Any]] = []
    for scope in watched_scopes(reconciler, patterns):
        for kind in WORKLOAD_RESOURCES:
            for body in await reconciler.kube.list(kind, scope):
                body.setdefault("kind", kind)
                bodies.append(body)
    return await reconciler.adopt_missed(bodies)


async def resync_forever(reconciler: Reconciler, period: float, patterns: list[str] | None) -> None:
    """No error ends this loop: a failed round is counted, logged and tried next period."""
    while True:
        await asyncio.sleep(period)
        try:
            await relist_workloads(reconciler, patterns)
            writes = await reconciler.resync()
            metrics.RESYNCS.inc()
            log.debug("resync done, %d writes", writes)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.WORK_FAILURES.labels("resync", type(exc).__name__).inc()
            log.warning("resync failed: %s", exc)


def run(args: argparse.Namespace) -> int:
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=bool(args.verbose))
    if not args.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        policy = load_policy(args.policy)
    except ValidationError as exc:
        print(f"secureai: policy: {one_line(exc)}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"secureai: policy: {exc}", file=sys.stderr)
        return 2
    try:
        clock = process_clock(os.environ)  # the process's one clock, handed to all below
        check_cluster_domain()
    except ValueError as exc:
        print(f"secureai: {exc}", file=sys.stderr)
        return 2
    credentials = load_credentials()
    namespace = os.environ.get("SECUREAI_NAMESPACE", "secureai-system")
    ready = asyncio.Event()
    stop_flag = asyncio.Event()  # set on SIGTERM once the Lease is released (hand_over)
    background: list[asyncio.Task[None]] = []
    keeper = None
    if args.peering:
        identity = f"{os.environ.get('HOSTNAME', 'secureai')}-{secrets.token_hex(4)}"
        keeper = ProcessKeeper(LeaseSpec(namespace, args.peering, identity, 1))
    leader = Leader(
        keeper,
        on_started=lambda: background.append(asyncio.create_task(take_over())),
        on_held=lambda: reconciler.resume(),  # noqa: PLW0108 - reconciler is made below
    )
    # The one client of the process: every write passes the leader's gate.
    kube = KubeClient(credentials, may_write=leader.may_write)
    hooks = ClusterHooks(kube, policy, namespace, clock)
    events = EventRecorder(kube, clock)
    quarantines = QuarantineController(kube, policy, events, clock)
    reconciler = Reconciler(
        kube,
        policy,
        events,
        hooks=hooks,
        clock=clock,
        leading=leader.leading,
        containments=quarantines,
    )
    quarantines.attach(reconciler)
    lifecycle = reconciler.lifecycle = Lifecycle(kube, policy, namespace, clock, events)

    async def collect_evidence(quarantine: Quarantine, refs: list[Ref]) -> tuple[str, str]:
        name = quarantine.metadata.name
        return await evidence.seal_and_store(
            kube, namespace, name, quarantine.spec.reason, refs, clock=clock
        )

    quarantines.collect_evidence = collect_evidence
    registry = kopf.OperatorRegistry()
    register(registry, reconciler, quarantines)

    async def take_over() -> None:
        """A new leader: revert whatever stood meanwhile, from warm caches."""
        await ready.wait()
        try:
            started = time.perf_counter()
            reverted = await reconciler.revert_from_cache()  # no render, no reads
            log.info(
                "take-over: %d reverted from the caches in %.3f s",
                reverted,
                time.perf_counter() - started,
            )
            await quarantines.resync()  # containment before any reconcile
            await hooks.ca.ensure()
            await reconciler.resync()
            await lifecycle.resume()  # the retention timers: after the reverts, never before
        except Exception as exc:  # the periodic resync and the queue carry on
            metrics.WORK_FAILURES.labels("takeover", type(exc).__name__).inc()
            log.warning("take-over: %s", exc)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 270
        settings.watching.client_timeout = 300
        settings.watching.connect_timeout = 10
        settings.watching.reconnect_backoff = 0.2
        settings.networking.request_timeout = 30
        settings.batching.worker_limit = None
        settings.batching.idle_timeout = 1.0  # per-object workers end soon after a burst
        settings.persistence.diffbase_storage = NoDiffBase()
        configure_watches(settings)
        await serve("0.0.0.0", args.health_port, args.metrics_port, ready.is_set)  # noqa: S104
        if keeper is None:
            await hooks.ca.ensure()  # the CA exists from the first start on (leader: take_over)
            await lifecycle.resume()
        reconciler.queue.start()
        leader.start()
        # SIGTERM (a rollout, a drain): release the Lease before kopf starts shutting down, so
        # the standby takes over while this replica still watches; then stop as kopf would.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: background.append(asyncio.create_task(hand_over()))
            )
        await warm_caches(reconciler, args.namespace, quarantines)
        await reconciler.prepare_all()  # a standby is ready once it could take over at once
        if not await leader.watching(timeout=60):
            log.warning("leader lease: no answer from the API server yet; ready regardless")
        background.append(
            asyncio.create_task(resync_forever(reconciler, RESYNC_SECONDS, args.namespace))
        )
        ready.set()

    async def hand_over() -> None:
        await leader.stop()
        stop_flag.set()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await leader.stop()  # hand over at once
        await reconciler.queue.stop()
        await lifecycle.stop()
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await events.drain()
        await kube.close()

    kopf.run(
        registry=registry,
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        # Replicas coordinate through a Lease (--peering), not kopf's peering, whose pause
        # waits out a 60 s lifetime: every replica watches, and only the leader writes.
        standalone=True,
        stop_flag=stop_flag,
    )
    return 0
