"""Leadership: one replica writes, the others keep warm caches and wait.

A short Lease (1 s), renewed every 0.2 s; a standby tries every 0.1 s and takes over once it
has seen the record unchanged for a lease duration, or at once when the leader releases it
on a graceful shutdown. The leader stops writing when it could not renew within 3/4 of the
duration, before any standby may take over. Standalone (no Lease name): always the leader.

A graceful hand-over (SIGTERM) leaves no moment in which nobody writes: the leader releases
the Lease and keeps writing while every read of it (one each 50 ms) finds it free, until a
successor holds it or 2 s have passed. Both may write for at most one read's time; both
render the same desired state, so the overlap can repeat a revert, never undo one.

The Lease is kept by a small process of its own (`ProcessKeeper`), as client-go keeps it on a
goroutine of its own: in the operator's process, a busy loop (renders, bursts of watch events)
held the interpreter lock and made renewals late by up to 1.2 s on a loaded machine, which
stopped the leader's writes and delayed take-overs. The keeper writes three numbers to shared
memory (leading, valid until on the monotonic clock, renewals); the write gate reads them and
a poller hands transitions to the operator's loop. The keeper dies with the operator
(PR_SET_PDEATHSIG): a SIGKILLed leader renews nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from secureai.clock import process_clock
from secureai.controllers import metrics
from secureai.k8s.client import KubeClient, load_credentials
from secureai.k8s.lease import LeaseLock

log = logging.getLogger("secureai")

RENEW_SECONDS = 0.2
MAX_RENEWALS_IN_FLIGHT = 4
# The leader writes until this share of the duration after a renewal was *sent*; a standby
# takes over only after a whole duration without a change it *saw* (so after it landed).
VALID_SHARE = 0.75
RETRY_SECONDS = 0.1
POLL_SECONDS = 0.02  # how soon a transition reaches the operator's loop
RELEASE_TIMEOUT = 2.0
HAND_OVER_SECONDS = 2.0  # the longest a leader waits for a successor (then it just stops)
HAND_OVER_POLL = 0.05
HAND_OVER_VALID = 0.25  # writes stay allowed this long after a read that found the Lease free
PR_SET_PDEATHSIG = 1


class Shared:
    """What the keeper writes and the operator reads: plain shared memory, no locks (each
    value is one aligned word)."""

    def __init__(self) -> None:
        self.leading: Any = multiprocessing.RawValue("b", 0)
        self.valid_until: Any = multiprocessing.RawValue("d", 0.0)
        self.renewals: Any = multiprocessing.RawValue("q", 0)
        self.stopping: Any = multiprocessing.RawValue("b", 0)
        self.handing: Any = multiprocessing.RawValue("b", 0)  # release, write until succeeded
        self.rounds: Any = multiprocessing.RawValue("q", 0)  # answers seen from the API server
        self.terms: Any = multiprocessing.RawValue("q", 0)  # times this replica took the Lease

    def holds(self) -> bool:
        return bool(self.leading.value) and time.monotonic() < self.valid_until.value


class LeaseLoop:
    """The keeper: as a candidate, a round every 0.1 s (read, judge, take over); as the
    holder, a renewal every 0.2 s that does not wait for the one before (a slow API server
    then delays each renewal but not the next). Publishes the result until told to stop;
    then releases the Lease if held; told to hand over, writes on until a successor holds it."""

    def __init__(self, lock: LeaseLock, shared: Shared, parent: int | None = None) -> None:
        self.lock, self.shared, self.parent = lock, shared, parent
        self._renewals: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while not self._done():
                if self.shared.handing.value:
                    await self._hand_over()
                    break
                if self.shared.leading.value and self.lock.holding():
                    if len(self._renewals) < MAX_RENEWALS_IN_FLIGHT:
                        task = asyncio.create_task(self._renew())
                        self._renewals.add(task)
                        task.add_done_callback(self._renewals.discard)
                    await self._pause(RENEW_SECONDS)
                else:
                    await self._round()
                    if not self.shared.leading.value:
                        await self._pause(RETRY_SECONDS)
            for task in list(self._renewals):
                task.cancel()
            if self.shared.leading.value:
                self.shared.leading.value = 0
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.lock.release(), RELEASE_TIMEOUT)
        finally:
            with contextlib.suppress(Exception):
                await self.lock.kube.close()

    async def _hand_over(self) -> None:
        for task in list(self._renewals):
            task.cancel()
        if not self.shared.leading.value:
            return
        deadline = time.monotonic() + HAND_OVER_SECONDS
        try:
            released = await asyncio.wait_for(self.lock.release(), RELEASE_TIMEOUT)
        except Exception as exc:
            log.warning("leader lease: release: %s", str(exc)[:300])
            released = False
        if released:  # held until the release landed: the gate stays open as after a read
            self.shared.valid_until.value = time.monotonic() + HAND_OVER_VALID - HAND_OVER_POLL
        while released and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                holder = await asyncio.wait_for(self.lock.holder(), HAND_OVER_VALID)
            except Exception:
                break
            if holder:  # a successor: it writes from now on
                break
            self.shared.valid_until.value = started + HAND_OVER_VALID
            await asyncio.sleep(max(0.0, started + HAND_OVER_POLL - time.monotonic()))
        self.shared.valid_until.value = 0.0
        self.shared.leading.value = 0
        log.info("lease handed over" if released else "lease not held at hand-over")

    async def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._done():
            await asyncio.sleep(min(POLL_SECONDS, seconds))

    def _done(self) -> bool:
        orphaned = self.parent is not None and os.getppid() != self.parent
        return bool(self.shared.stopping.value) or orphaned

    async def _round(self) -> None:
        started = time.monotonic()
        try:
            held = await self.lock.try_acquire_or_renew()
        except Exception as exc:
            log.warning("leader lease: %s", str(exc)[:300])
            held = self.shared.holds()
        self._publish(held, started)

    async def _renew(self) -> None:
        started = time.monotonic()
        try:
            held = await self.lock.renew()
        except Exception as exc:  # the validity runs out by itself if this goes on
            log.warning("leader lease: %s", str(exc)[:300])
            return
        self._publish(held, started)

    def _publish(self, held: bool, started: float) -> None:
        self.shared.rounds.value += 1
        took = time.monotonic() - started
        if took > self.lock.duration / 2:
            log.warning("leader lease: a round took %.2f s", took)
        if self.shared.stopping.value or self.shared.handing.value:
            return  # the operator gave up writing: never take the lead again
        if held and self.lock.holding():
            until = started + self.lock.duration * VALID_SHARE
            self.shared.valid_until.value = max(self.shared.valid_until.value, until)
        elif not held:
            self.shared.valid_until.value = 0.0
        leading = held and time.monotonic() < self.shared.valid_until.value
        if leading != bool(self.shared.leading.value):
            log.info("lease %s", "held" if leading else "not held")
        if leading:
            self.shared.terms.value = self.lock.terms
        self.shared.leading.value = 1 if leading else 0
        if leading:
            self.shared.renewals.value += 1


class Keeper(Protocol):
    shared: Shared

    def start(self) -> None: ...

    def alive(self) -> bool: ...

    def join(self, timeout: float) -> None: ...


class ThreadKeeper:
    """The rounds on a thread of this process (tests, with an in-memory API)."""

    def __init__(self, lock: LeaseLock) -> None:
        self.lock, self.shared = lock, Shared()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = LeaseLoop(self.lock, self.shared)
        self._thread = threading.Thread(target=lambda: asyncio.run(loop.run()), daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


@dataclass(frozen=True)
class LeaseSpec:
    """What the keeper process needs to build its own client and lock (picklable)."""

    namespace: str
    name: str
    identity: str
    duration: int


class ProcessKeeper:
    def __init__(self, spec: LeaseSpec) -> None:
        self.spec, self.shared = spec, Shared()
        self._process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._process = context.Process(
            target=keep_lease,
            args=(self.spec, self.shared, os.getpid()),
            name="lease",
            daemon=True,
        )
        # Under an empty __main__: a spawned interpreter imports the parent's main module
        # first (the whole CLI, seconds of start-up during which it could not take over).
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            self._process.start()
        finally:
            sys.modules["__main__"] = main

    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def join(self, timeout: float) -> None:
        if self._process is None:
            return
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()


def keep_lease(spec: LeaseSpec, shared: Shared, parent: int) -> None:
    """The keeper process: dies with its parent, logs as the operator does (JSON lines)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        return  # the parent died before prctl took effect
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the operator decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    kube = KubeClient(load_credentials(), pool_size=2)  # the operator's environment
    clock = process_clock(os.environ)
    lock = LeaseLock(kube, spec.namespace, spec.name, spec.identity, spec.duration, clock=clock)
    asyncio.run(LeaseLoop(lock, shared, parent).run())


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "message": record.getMessage(),
                "timestamp": self.formatTime(record),
                "severity": record.levelname.lower(),
                "process": "lease",
            }
        )


class Leader:
    def __init__(
        self,
        keeper: Keeper | None,
        *,
        on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None,
        on_held: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_held` runs after renewals (work deferred while a renewal was late is resumed
        even when no transition was seen). Callbacks run on the loop that called `start`."""
        self.keeper = keeper
        self.on_started, self.on_stopped, self.on_held = on_started, on_stopped, on_held
        self._leading = keeper is None
        self._renewals = 0
        self._term = 0
        self._task: asyncio.Task[None] | None = None
        metrics.LEADER.set(1 if self._leading else 0)

    def leading(self) -> bool:
        return self.keeper is None or self.keeper.shared.holds()

    def may_write(self, verb: str) -> bool:
        """The write gate of the process's API client."""
        if self.leading():
            return True
        metrics.REFUSED_WRITES.labels(verb).inc()
        return False

    def start(self) -> None:
        if self.keeper is not None and self._task is None:
            self.keeper.start()
            self._task = asyncio.create_task(self._watch())

    async def watching(self, timeout: float) -> bool:
        """Wait until the keeper has had an answer from the API server, so that a standby that
        says it is ready could also take over; False at the deadline."""
        deadline = time.monotonic() + timeout
        while self.keeper is not None and not self.keeper.shared.rounds.value:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True

    async def _watch(self) -> None:
        """Hand the keeper's transitions to this loop; restart a keeper that died."""
        keeper = self.keeper
        assert keeper is not None
        while True:
            await asyncio.sleep(POLL_SECONDS)
            stopping = keeper.shared.stopping.value or keeper.shared.handing.value
            if not keeper.alive() and not stopping:
                log.warning("leader lease: the keeper stopped; starting it again")
                keeper.start()
            leading = self.leading()
            if not (leading and keeper.shared.handing.value):  # a hand-over only ends the lead
                self._set(leading, keeper.shared.terms.value)
            renewals = keeper.shared.renewals.value
            if renewals != self._renewals and self._leading:
                self._renewals = renewals
                self.on_held()

    def _set(self, leading: bool, term: int) -> None:
        """A new term runs the take-over pass (`on_started`); the gate reopening within the
        same term (a late renewal) only resumes the work deferred meanwhile (`on_held`, from
        the renewals): no other replica can have written in between."""
        if leading == self._leading:
            return
        self._leading = leading
        metrics.LEADER.set(1 if leading else 0)
        if not leading:
            log.info("leadership lost")
            self.on_stopped()
        elif term != self._term:
            self._term = term
            log.info("leadership acquired (term %d)", term)
            self.on_started()
        else:
            log.info("leadership resumed (term %d)", term)

    async def stop(self) -> None:
        """Hand over (graceful shutdown): the keeper releases the Lease and the gate stays
        open until a successor holds it; then stop writing for good."""
        keeper = self.keeper
        if keeper is None or self._task is None:
            return
        keeper.shared.handing.value = 1
        if keeper.alive():
            await asyncio.to_thread(keeper.join, HAND_OVER_SECONDS + RELEASE_TIMEOUT + 1)
        keeper.shared.stopping.value = 1
        keeper.shared.valid_until.value = 0.0  # no write passes the gate from here on
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._leading = False
        metrics.LEADER.set(0)
        await asyncio.to_thread(keeper.join, RELEASE_TIMEOUT + 1)
