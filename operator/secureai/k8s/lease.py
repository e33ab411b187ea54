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
        self._held: dict[str, Any] | None = None  # the record of this replica's last write
        # Times this replica took the Lease (free, expired or from another holder): a new
        # term means another replica may have written since this one last led.
        self.terms = 0

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
        """One round: True if this replica holds the lease after it.

        A holder renews with one PUT over the record its last write returned (no read
        first: one round trip, which halves a renewal on a slow API server); a conflict
        means someone else wrote, and the round reads and judges as a candidate."""
        held = self._held
        self._held = None
        if held is not None:
            try:
                self._held = await self._put(held)
                return True
            except ApiError as exc:
                if exc.status not in (409, 404):
                    raise
        try:
            current = await self.kube.request("GET", self._path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            try:
                self._held = await self.kube.request(
                    "POST",
                    LEASE_PATH.format(namespace=self.namespace),
                    body=self._body(None, 0),
                )
            except ApiError as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            self.terms += 1
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
            self._held = await self._put(current)
        except ApiError as exc:
            if exc.status in (409, 404):
                return False
            raise
        if not mine:
            self.terms += 1
        return True

    async def _put(self, current: dict[str, Any]) -> dict[str, Any]:
        spec = current.get("spec") or {}
        body = self._body(current, int(spec.get("leaseTransitions") or 0))
        stored: dict[str, Any] = await self.kube.request("PUT", self._path, body=body)
        return stored

    def holding(self) -> bool:
        """This replica's last write made it the holder (renewals may follow)."""
        return self._held is not None

    async def renew(self) -> bool:
        """A holder's renewal: one JSON patch that applies only while this replica is the
        holder (its `test` operation), so renewals need no read and may overlap on a slow
        API server. False (and no longer holding) when another replica holds the record."""
        patch = [
            {"op": "test", "path": "/spec/holderIdentity", "value": self.identity},
            {"op": "add", "path": "/spec/renewTime", "value": micro_iso(self.clock.now())},
        ]
        try:
            await self.kube.request(
                "PATCH", self._path, body=patch, content_type="application/json-patch+json"
            )
        except ApiError as exc:
            if exc.status in (404, 422):  # gone, or the test failed: another holder
                self._held = None
                return False
            raise  # a 409 here is the server's own retries giving up: try again
        return True

    async def release(self) -> bool:
        """Hand over at once: an empty holder is free to take (graceful shutdown). One JSON
        patch that applies only while this replica holds the record; False if it did not."""
        self._held = None
        patch = [
            {"op": "test", "path": "/spec/holderIdentity", "value": self.identity},
            {"op": "replace", "path": "/spec/holderIdentity", "value": ""},
            {"op": "add", "path": "/spec/renewTime", "value": micro_iso(self.clock.now())},
        ]
        try:
            await self.kube.request(
                "PATCH", self._path, body=patch, content_type="application/json-patch+json"
            )
        except ApiError as exc:
            if exc.status in (404, 422):
                return False
            raise
        return True

    async def holder(self) -> str:
        """Who holds the record now ("" when nobody does or there is none)."""
        try:
            current = await self.kube.request("GET", self._path)
        except ApiError as exc:
            if exc.status == 404:
                return ""
            raise
        return str((current.get("spec") or {}).get("holderIdentity") or "")
