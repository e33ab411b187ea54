"""The Lease lock's rules, on an in-memory API with the API server's optimistic concurrency."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from secureai.clock import FakeClock
from secureai.k8s.client import ApiError, KubeClient
from secureai.k8s.lease import LeaseLock

CLOCK = FakeClock(datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC))


class LeaseApi:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> Any:
        if method == "GET":
            if self.lease is None:
                raise ApiError(404, "NotFound", "")
            return copy.deepcopy(self.lease)
        if method == "PATCH":  # JSON patch: a `test` of the holder, then `add`s and `replace`s
            if self.lease is None:
                raise ApiError(404, "NotFound", "")
            for op in body:
                field = op["path"].rsplit("/", 1)[1]
                if op["op"] == "test" and self.lease["spec"].get(field) != op["value"]:
                    raise ApiError(422, "Invalid", "test failed")
                if op["op"] in ("add", "replace"):
                    self.lease["spec"][field] = op["value"]
            self.version += 1
            self.lease["metadata"]["resourceVersion"] = str(self.version)
            return copy.deepcopy(self.lease)
        if method == "POST":
            if self.lease is not None:
                raise ApiError(409, "AlreadyExists", "")
        elif method == "PUT":
            assert self.lease is not None
            if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "")
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)


def locks(api: LeaseApi) -> tuple[LeaseLock, LeaseLock]:
    kube = cast(KubeClient, api)
    return (
        LeaseLock(kube, "ns", "l", "a", 1, clock=CLOCK),
        LeaseLock(kube, "ns", "l", "b", 1, clock=CLOCK),
    )


def test_one_holder_expiry_and_release(monkeypatch: pytest.MonkeyPatch) -> None:
    api = LeaseApi()
    a, b = locks(api)
    clock = [100.0]
    monkeypatch.setattr("secureai.k8s.lease.time.monotonic", lambda: clock[0])

    async def run() -> None:
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()  # held, seen just now
        clock[0] += 0.5
        assert await a.try_acquire_or_renew()  # renewed: b sees a new version
        assert not await b.try_acquire_or_renew()
        clock[0] += 0.9
        assert not await b.try_acquire_or_renew()  # unchanged for 0.9 s only
        clock[0] += 0.2
        assert await b.try_acquire_or_renew()  # unchanged for a whole duration: taken
        assert not await a.try_acquire_or_renew()  # a lost it
        await b.release()
        assert await a.try_acquire_or_renew()  # released: taken at once
        assert api.lease is not None and api.lease["spec"]["leaseTransitions"] == 2

    asyncio.run(run())


def test_two_candidates_never_both_win_the_same_version(monkeypatch: pytest.MonkeyPatch) -> None:
    api = LeaseApi()
    a, b = locks(api)

    async def run() -> None:
        results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
        assert sorted(results) == [False, True]

    asyncio.run(run())


def test_lease_times_come_from_the_injected_clock() -> None:
    """renewTime and acquireTime are stamped by the process's one clock, not the system's."""
    api = LeaseApi()
    clock = FakeClock(datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC))
    lock = LeaseLock(cast(KubeClient, api), "ns", "l", "a", 1, clock=clock)

    async def run() -> None:
        assert await lock.try_acquire_or_renew()
        assert api.lease is not None
        assert api.lease["spec"]["acquireTime"] == "2031-05-06T07:08:09.123456Z"
        assert api.lease["spec"]["renewTime"] == "2031-05-06T07:08:09.123456Z"
        clock.advance(2.5)
        assert await lock.try_acquire_or_renew()
        assert api.lease["spec"]["acquireTime"] == "2031-05-06T07:08:09.123456Z"
        assert api.lease["spec"]["renewTime"] == "2031-05-06T07:08:11.623456Z"

    asyncio.run(run())


class CountingApi(LeaseApi):
    def __init__(self) -> None:
        super().__init__()
        self.methods: list[str] = []

    async def request(self, method: str, path: str, *, body: Any = None, **kw: Any) -> Any:
        self.methods.append(method)
        return await super().request(method, path, body=body, **kw)


def test_a_holder_renews_with_one_write_and_a_conflict_sends_it_back_to_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One round trip per renewal; when another replica wrote meanwhile, the holder's PUT
    conflicts, it reads, and it does not take the record back."""
    api = CountingApi()
    kube = cast(KubeClient, api)
    a = LeaseLock(kube, "ns", "l", "a", 1, clock=CLOCK)
    b = LeaseLock(kube, "ns", "l", "b", 1, clock=CLOCK)
    clock = [100.0]
    monkeypatch.setattr("secureai.k8s.lease.time.monotonic", lambda: clock[0])

    async def run() -> None:
        assert await a.try_acquire_or_renew()
        api.methods.clear()
        for _ in range(3):
            assert await a.try_acquire_or_renew()
        assert api.methods == ["PUT", "PUT", "PUT"]
        assert not await b.try_acquire_or_renew()
        clock[0] += 1.1  # a stalls for longer than the lease lasts: b takes over
        assert await b.try_acquire_or_renew()
        api.methods.clear()
        assert not await a.try_acquire_or_renew()
        assert api.methods == ["PUT", "GET"]  # conflict, then read: b holds it
        assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "b"

    asyncio.run(run())
