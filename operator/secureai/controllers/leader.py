"""Leadership: one replica writes, the others keep warm caches and wait.

A short Lease (1 s), renewed every 0.2 s; a standby tries every 0.1 s and takes over once it
has seen the record unchanged for a lease duration, or at once when the leader releases it
on a graceful shutdown. The leader stops writing when it could not renew within 3/4 of the
duration, before any standby may take over. Standalone (no Lease name): always the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from secureai.controllers import metrics
from secureai.k8s.lease import LeaseLock

log = logging.getLogger("secureai")

RENEW_SECONDS = 0.2
RETRY_SECONDS = 0.1


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
        late is resumed even when no transition was seen)."""
        self.lock = lock
        self.on_started, self.on_stopped, self.on_held = on_started, on_stopped, on_held
        self._valid_until = 0.0
        self._leading = lock is None
        self._task: asyncio.Task[None] | None = None
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
        if self.lock is not None and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self.lock is not None
        duration = self.lock.duration
        while True:
            started = time.monotonic()
            try:
                held = await self.lock.try_acquire_or_renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("leader lease: %s", str(exc)[:300])
                held = self._leading and time.monotonic() < self._valid_until
            else:
                if held:
                    self._valid_until = started + duration * 0.75
            self._set(held and time.monotonic() < self._valid_until)
            if self.leading():
                self.on_held()
            await asyncio.sleep(RENEW_SECONDS if self._leading else RETRY_SECONDS)

    def _set(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        metrics.LEADER.set(1 if leading else 0)
        log.info("leadership %s", "acquired" if leading else "lost")
        (self.on_started if leading else self.on_stopped)()

    async def stop(self) -> None:
        """Release the Lease so that a standby takes over at once (graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.lock is not None and self._leading:
            self._leading = False
            metrics.LEADER.set(0)
            with contextlib.suppress(Exception):
                await self.lock.release()
