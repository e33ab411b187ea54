"""The Lease is kept on its own thread: a blocked operator loop delays neither a renewal nor a
take-over, transitions reach the operator's loop, and stop() releases at once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import cast

from test_leader_lease import CLOCK, LeaseApi

from clusterkit import wait_for
from secureai.controllers.leader import Leader
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
        lock(api, "a"), on_started=lambda: started_on.append(threading.current_thread())
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
    leader = Leader(lock(api, "a"))
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


def test_a_standby_takes_over_a_dead_leader_while_its_loop_is_blocked() -> None:
    api = LeaseApi()
    dead = lock(api, "dead")
    standby = Leader(lock(api, "b"))

    async def run() -> None:
        assert await dead.try_acquire_or_renew()  # then never renews again
        standby.start()
        time.sleep(1.6)  # blocked for longer than the lease lasts
        assert standby.leading()
        await standby.stop()

    asyncio.run(run())
    wait_for(lambda: api.lease is not None, timeout=1)
