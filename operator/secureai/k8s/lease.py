"""A coordination.k8s.io/v1 Lease as a leader lock (client-go's leaderelection, in short).

Optimistic concurrency does the locking: every take-over or renewal is a PUT carrying the
resourceVersion that was read, so two replicas can never both win the same version. A
candidate takes over only after it has seen the record unchanged for a whole lease
duration (on its own monotonic clock: no clock skew between replicas matters), or when it is
released.
"""

from __future__ import annotations

import time
from typing import Any

from secureai.clock import Clock, micro_iso
from secureai.k8s.client import ApiError, KubeClient

LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


class LeaseLock:
    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        duration: int,
        *,
        clock: Clock,
    ) -> None:
        """`clock` stamps renewTime and acquireTime (what people read); who may take over is
        judged on time.monotonic alone."""
        self.kube = kube
        self.clock = clock
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration = duration
        self._seen: tuple[str, str] | None = None  # (holder, resourceVersion) last observed
        self._seen_at = 0.0

    @property
    def _path(self) -> str:
        return LEASE_PATH.format(namespace=self.namespace) + f"/{self.name}"

    def _body(self, current: dict[str, Any] | None, transitions: int) -> dict[str, Any]:
        now = micro_iso(self.clock.now())
        spec = dict((current or {}).get("spec") or {})
        taking = spec.get("holderIdentity") != self.identity
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=self.duration,
            renewTime=now,
            leaseTransitions=transitions + (1 if taking and current else 0),
        )
        if taking:
            spec["acquireTime"] = now
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One round: True if this replica holds the lease after it."""
        try:
            current = await self.kube.request("GET", self._path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            try:
                await self.kube.request(
                    "POST",
                    LEASE_PATH.format(namespace=self.namespace),
                    body=self._body(None, 0),
                )
            except ApiError as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            return True
        spec = current.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        version = str(current["metadata"]["resourceVersion"])
        now = time.monotonic()
        if (holder, version) != self._seen:
            self._seen, self._seen_at = (holder, version), now
        mine = holder == self.identity
        expired = now - self._seen_at >= float(spec.get("leaseDurationSeconds") or self.duration)
        if not (mine or not holder or expired):
            return False
        try:
            await self.kube.request(
                "PUT", self._path, body=self._body(current, int(spec.get("leaseTransitions") or 0))
            )
        except ApiError as exc:
            if exc.status in (409, 404):
                return False
            raise
        return True

    async def release(self) -> None:
        """Hand over at once: an empty holder is free to take (graceful shutdown)."""
        try:
            current = await self.kube.request("GET", self._path)
        except ApiError:
            return
        spec = current.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        body = self._body(current, int(spec.get("leaseTransitions") or 0))
        body["spec"]["holderIdentity"] = ""
        body["spec"]["leaseDurationSeconds"] = 1
        await self.kube.request("PUT", self._path, body=body)
