"""The Lease is kept on its own thread: a blocked operator loop delays neither a renewal nor a
take-over, transitions reach the operator's loop, and stop() releases at once and writes on
until a successor holds the Lease."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import cast

from test_leader_lease import CLOCK, LeaseApi

from clusterkit import wait_for
from secureai.controllers.leader import HAND_OVER_VALID, Leader, ThreadKeeper
from secureai.k8s.client import KubeClient
from secureai.k8s.lease import LeaseLock


def lock(api: LeaseApi, identity: str) -> LeaseLock:
    return LeaseLock(cast(KubeClient, api), "ns", "l", identity, 1, clock=CLOCK)


async def until(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_blocked_operator_loop_does_not_stop_renewals() -> None:
    api = LeaseApi()
    started_on: list[threading.Thread] = []
    leader = Leader(
        ThreadKeeper(lock(api, "a")),
        on_started=lambda: started_on.append(threading.current_thread()),
    )

    async def run() -> None:
        leader.start()
        await until(leader.leading, 5)
        before = api.version
        time.sleep(1.5)  # the operator's loop is busy (a burst of renders): no await
        # renewed meanwhile, so the gate is open at once, with no lapse
        assert api.version >= before + 3
        assert leader.leading()
        assert leader.may_write("PUT")
        await until(lambda: started_on, 1)
        assert started_on == [threading.current_thread()]  # run on the operator's loop
        await leader.stop()

    asyncio.run(run())


def test_stop_closes_the_gate_and_releases_the_lease() -> None:
    api = LeaseApi()
    leader = Leader(ThreadKeeper(lock(api, "a")))
    standby = LeaseLock(cast(KubeClient, api), "ns", "l", "b", 1, clock=CLOCK)

    async def run() -> None:
        leader.start()
        await until(leader.leading, 5)
        assert not await standby.try_acquire_or_renew()
        await leader.stop()
        assert not leader.leading()
        assert not leader.may_write("PATCH")
        assert api.lease is not None and api.lease["spec"]["holderIdentity"] == ""
        assert await standby.try_acquire_or_renew()  # released: taken at once
        await asyncio.sleep(0.3)
        assert not leader.leading()  # never takes the lead again once stopped

    asyncio.run(run())


def test_a_hand_over_writes_on_until_a_successor_holds_the_lease() -> None:
    """A graceful shutdown leaves no moment in which no replica may write."""
    api = LeaseApi()
    leader = Leader(ThreadKeeper(lock(api, "a")))
    successor = lock(api, "b")

    def holder() -> str:
        assert api.lease is not None
        return str(api.lease["spec"]["holderIdentity"])

    async def run() -> None:
        leader.start()
        await until(leader.leading, 5)
        stopping = asyncio.create_task(leader.stop())
        await until(lambda: holder() == "", 2)
        for _ in range(10):  # released and nobody holds it: still the writer
            assert leader.may_write("PATCH")
            await asyncio.sleep(0.05)
        assert await successor.try_acquire_or_renew()
        acquired = time.monotonic()
        await until(lambda: not leader.may_write("PATCH"), 1)
        assert time.monotonic() - acquired <= HAND_OVER_VALID + 0.05
        await stopping
        assert not leader.leading()
        assert holder() == "b"

    asyncio.run(run())


class SlowReleaseApi(LeaseApi):
    """The release takes longer than the leader's validity (an API server under load)."""

    async def request(self, method: str, path: str, **kw: object) -> object:
        body = kw.get("body")
        if method == "PATCH" and isinstance(body, list) and body[1]["op"] == "replace":
            await asyncio.sleep(1.0)
        return await super().request(method, path, **kw)  # type: ignore[arg-type]


def test_a_hand_over_never_starts_a_take_over() -> None:
    """The gate may lapse while a slow release is in flight and open again when the Lease is
    read free; that must not run the take-over pass (reverts, resync) a second time."""
    api = SlowReleaseApi()
    started: list[float] = []
    leader = Leader(ThreadKeeper(lock(api, "a")), on_started=lambda: started.append(1.0))

    async def run() -> None:
        leader.start()
        await until(lambda: started, 5)
        await leader.stop()
        assert started == [1.0]

    asyncio.run(run())


class StallingApi(LeaseApi):
    """Renewals stall while `stalled` is set (an API server briefly overloaded)."""

    stalled = False

    async def request(self, method: str, path: str, **kw: object) -> object:
        if method == "PATCH" and self.stalled:
            await asyncio.sleep(1.0)
        return await super().request(method, path, **kw)  # type: ignore[arg-type]


def test_a_late_renewal_resumes_the_lead_without_a_second_take_over() -> None:
    """The gate lapses while renewals stall and reopens when they land: the same term, so no
    other replica wrote meanwhile and the take-over pass (reverts, full resync) must not run
    again (on a loaded cluster it re-ran on every lapse and the load fed the next lapse).
    Only a new term (the Lease taken again after another holder) runs it."""
    api = StallingApi()
    started: list[int] = []
    held: list[int] = []
    leader = Leader(
        ThreadKeeper(lock(api, "a")),
        on_started=lambda: started.append(1),
        on_held=lambda: held.append(1),
    )
    other = lock(api, "b")

    async def run() -> None:
        leader.start()
        await until(lambda: started, 5)
        api.stalled = True
        await until(lambda: not leader.leading(), 3)
        api.stalled = False
        await until(leader.leading, 3)
        await asyncio.sleep(0.3)
        assert started == [1]
        held.clear()
        await until(lambda: held, 2)  # the deferred work is resumed
        # another replica takes the Lease, then this one again: a new term
        assert api.lease is not None
        api.lease["spec"]["holderIdentity"] = ""
        assert await other.try_acquire_or_renew()
        await until(lambda: not leader.leading(), 3)
        await other.release()
        await until(leader.leading, 3)
        await until(lambda: len(started) == 2, 2)
        await leader.stop()

    asyncio.run(run())


def test_a_standby_takes_over_a_dead_leader_while_its_loop_is_blocked() -> None:
    api = LeaseApi()
    dead = lock(api, "dead")
    standby = Leader(ThreadKeeper(lock(api, "b")))

    async def run() -> None:
        assert await dead.try_acquire_or_renew()  # then never renews again
        standby.start()
        time.sleep(1.6)  # blocked for longer than the lease lasts
        assert standby.leading()
        await standby.stop()

    asyncio.run(run())
    wait_for(lambda: api.lease is not None, timeout=1)


class SlowApi(LeaseApi):
    """Every request takes 0.5 s, as on an API server under heavy load."""

    async def request(self, method: str, path: str, **kw: object) -> object:
        await asyncio.sleep(0.5)
        return await super().request(method, path, **kw)  # type: ignore[arg-type]


def test_renewals_do_not_wait_for_each_other_on_a_slow_api_server() -> None:
    """0.5 s per request: sequential rounds (read, then write, then wait) would leave the
    leader without a valid lease part of every cycle; overlapping renewals keep it."""
    api = SlowApi()
    leader = Leader(ThreadKeeper(lock(api, "a")))

    async def run() -> None:
        leader.start()
        await until(leader.leading, 10)
        keeper = cast(ThreadKeeper, leader.keeper)
        await until(lambda: keeper.shared.renewals.value >= 4, 10)  # the steady state
        lapses = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            lapses += not leader.leading()
            await asyncio.sleep(0.02)
        assert lapses == 0
        await leader.stop()

    asyncio.run(run())


class SilentApi(LeaseApi):
    """An API server that never answers."""

    async def request(self, method: str, path: str, **kw: object) -> object:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_readiness_waits_for_the_keepers_first_answer() -> None:
    """A standby is ready only once its keeper watches the Lease (else it could not take over)."""

    async def run() -> None:
        silent = Leader(ThreadKeeper(lock(SilentApi(), "a")))
        silent.start()
        assert not await silent.watching(timeout=0.3)
        answering = Leader(ThreadKeeper(lock(LeaseApi(), "b")))
        answering.start()
        assert await answering.watching(timeout=5)
        await answering.stop()
        silent_keeper = cast(ThreadKeeper, silent.keeper)
        silent_keeper.shared.stopping.value = 1  # its thread stays blocked: a daemon

    asyncio.run(run())
