"""One error contract: a keyed, rate-limited work queue (client-go's workqueue, in asyncio).

A key is queued at most once; a key being worked on that is added again runs once more
after. Any exception from the worker (not only an API error) puts the key back after an
exponential, per-key backoff and counts in `secureai_work_failures_total`; a success resets
the backoff. The worker loops never end on an error: nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from secureai.controllers import metrics
from secureai.k8s.client import NotLeader

log = logging.getLogger("secureai")

K = TypeVar("K", bound=Hashable)


class Dropped(Exception):
    """Raised by a worker for work that must not be retried (say, this replica is standby)."""


class WorkQueue(Generic[K]):
    def __init__(
        self,
        name: str,
        worker: Callable[[K], Awaitable[None]],
        *,
        workers: int = 16,
        base_delay: float = 0.05,
        max_delay: float = 30.0,
    ) -> None:
        self.name = name
        self._worker = worker
        self._workers = workers
        self._base, self._max = base_delay, max_delay
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()
        self.failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def add(self, key: K) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        if key in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: K) -> None:
        """The key's object is gone: drop its backoff and any pending retry."""
        self.failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def backoff(self, key: K) -> float:
        return float(min(self._max, self._base * 2.0 ** self.failures.get(key, 0)))

    def sizes(self) -> dict[str, int]:
        """For the bounded-memory test: every per-key map."""
        return {
            "queued": len(self._queued),
            "active": len(self._active),
            "again": len(self._again),
            "failures": len(self.failures),
            "timers": len(self._timers),
        }

    async def _run(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await self._worker(key)
            except asyncio.CancelledError:
                raise
            except (Dropped, NotLeader):
                self.failures.pop(key, None)
            except Exception as exc:
                delay = self.backoff(key)
                self.failures[key] = self.failures.get(key, 0) + 1
                metrics.WORK_FAILURES.labels(self.name, type(exc).__name__).inc()
                log.warning(
                    "%s %s failed (%s), retry in %.2f s: %s",
                    self.name,
                    key,
                    type(exc).__name__,
                    delay,
                    str(exc)[:300],
                )
                self.add_after(key, delay)
            else:
                self.failures.pop(key, None)
            finally:
                self._active.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)
