"""Leadership: one replica writes, the others keep warm caches and wait.

A short Lease (1 s), renewed every 0.2 s; a standby tries every 0.1 s and takes over once it
has seen the record unchanged for a lease duration, or at once when the leader releases it
on a graceful shutdown. The leader stops writing when it could not renew within 3/4 of the
duration, before any standby may take over. Standalone (no Lease name): always the leader.

The Lease is kept on a thread of its own, with its own event loop and HTTP session (as
client-go keeps it on its own goroutine): a busy reconcile loop (renders, a burst of watch
events) must neither delay a renewal, which would stop the leader's writes, nor a standby's
take-over. Transitions are handed to the operator's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from secureai.controllers import metrics
from secureai.k8s.lease import LeaseLock

log = logging.getLogger("secureai")

RENEW_SECONDS = 0.2
RETRY_SECONDS = 0.1
RELEASE_TIMEOUT = 2.0


class Leader:
    def __init__(
        self,
        lock: LeaseLock | None,
        *,
        on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None,
        on_held: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_held` runs after every successful renewal (work deferred while a renewal was
        late is resumed even when no transition was seen). Callbacks run on the loop that
        called `start`."""
        self.lock = lock
        self.on_started, self.on_stopped, self.on_held = on_started, on_stopped, on_held
        self._valid_until = 0.0
        self._leading = lock is None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the operator's loop
        self._lease_loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None  # on the lease loop: stop now
        self._stopping = threading.Event()
        metrics.LEADER.set(1 if self._leading else 0)

    def leading(self) -> bool:
        if self.lock is None:
            return True
        return self._leading and time.monotonic() < self._valid_until

    def may_write(self, verb: str) -> bool:
        """The write gate of the process's API client."""
        if self.leading():
            return True
        metrics.REFUSED_WRITES.labels(verb).inc()
        return False

    def start(self) -> None:
        if self.lock is None or self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._thread_main, name="lease", daemon=True)
        self._thread.start()

    def _thread_main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        lock = self.lock
        assert lock is not None
        self._lease_loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        try:
            while not self._stopping.is_set():
                await self._round(lock)
                with contextlib.suppress(asyncio.TimeoutError):
                    interval = RENEW_SECONDS if self._leading else RETRY_SECONDS
                    await asyncio.wait_for(self._wake.wait(), interval)
            if self._leading:
                self._leading = False
                metrics.LEADER.set(0)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(lock.release(), RELEASE_TIMEOUT)
        finally:
            with contextlib.suppress(Exception):
                await lock.kube.close()

    async def _round(self, lock: LeaseLock) -> None:
        started = time.monotonic()
        try:
            held = await lock.try_acquire_or_renew()
        except Exception as exc:
            log.warning("leader lease: %s", str(exc)[:300])
            held = self._leading and time.monotonic() < self._valid_until
        else:
            if held:
                self._valid_until = started + lock.duration * 0.75
        if self._stopping.is_set():
            return  # stop() already gave up writing: never take the lead again
        self._set(held and time.monotonic() < self._valid_until)
        if self.leading():
            self._call(self.on_held)

    def _set(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        metrics.LEADER.set(1 if leading else 0)
        log.info("leadership %s", "acquired" if leading else "lost")
        self._call(self.on_started if leading else self.on_stopped)

    def _call(self, callback: Callable[[], None]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the operator's loop is shutting down
                self._loop.call_soon_threadsafe(callback)

    async def stop(self) -> None:
        """Stop writing now, then release the Lease so that a standby takes over at once
        (graceful shutdown)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._valid_until = 0.0  # no write passes the gate from here on
        lease_loop, wake = self._lease_loop, self._wake
        if lease_loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                lease_loop.call_soon_threadsafe(wake.set)
        await asyncio.to_thread(thread.join, RELEASE_TIMEOUT + 1)
        self._thread = None
