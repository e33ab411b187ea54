"""Events on workloads, posted in the background so reconciles never wait on them.

Aggregated as client-go's event correlator does, so that a storm of the same occurrence (a
tamper repeated every 200 ms, a status that flaps) makes one Event whose count grows, not
thousands: each Event has a name derived from what it says (`event_name`), the first
occurrence creates it, later ones raise its `count` and `lastTimestamp`, at most one write a
second per Event. The name is the same on every replica, so a new leader counts on in the
Event its predecessor created rather than starting another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from secureai.clock import Clock, iso
from secureai.k8s.client import ApiError, KubeClient, NotLeader, event_name, event_namespace

log = logging.getLogger("secureai")

WRITE_EVERY = 1.0  # seconds between two writes of the same Event
KNOWN_EVENTS = 4096  # tallies kept (the least recent are forgotten and adopted again)


@dataclass
class Tally:
    namespace: str
    name: str
    written: int = 0  # the count the Event holds (0: not created yet, as far as we know)
    pending: int = 0  # occurrences not yet written
    last: float = 0.0  # when it was last written (monotonic)
    task: asyncio.Task[None] | None = None


class EventRecorder:
    def __init__(self, kube: KubeClient, clock: Clock) -> None:
        self.kube = kube
        self.clock = clock
        self._pending: set[asyncio.Task[None]] = set()
        self._tallies: OrderedDict[str, Tally] = OrderedDict()

    def __call__(self, body: dict[str, Any], type: str, reason: str, message: str) -> None:
        log.info("event %s %s on %s: %s", type, reason, body["metadata"].get("name"), message)
        name = event_name(body, type, reason, message)
        tally = self._tallies.get(name) or Tally(event_namespace(body), name)
        self._tallies[name] = tally
        self._tallies.move_to_end(name)
        while len(self._tallies) > KNOWN_EVENTS:
            self._tallies.popitem(last=False)
        tally.pending += 1
        if tally.task is None or tally.task.done():
            task = asyncio.get_running_loop().create_task(
                self._write(tally, body, type, reason, message)
            )
            tally.task = task
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _write(
        self, tally: Tally, body: dict[str, Any], type: str, reason: str, message: str
    ) -> None:
        try:
            while tally.pending:
                wait = tally.last + WRITE_EVERY - time.monotonic()
                if tally.written and wait > 0:  # a storm: gather what comes meanwhile
                    await asyncio.sleep(wait)
                occurred, tally.pending = tally.pending, 0
                now = iso(self.clock.now())
                if not tally.written:
                    try:
                        await self.kube.post_event(body, type, reason, message, now)
                        tally.written, occurred = 1, occurred - 1
                    except ApiError as exc:
                        if exc.status != 409:
                            raise
                        tally.written = await self.kube.event_count(tally.namespace, tally.name)
                if occurred:
                    try:
                        count = tally.written + occurred
                        await self.kube.count_event(tally.namespace, tally.name, count, now)
                        tally.written = count
                    except ApiError as exc:
                        if exc.status != 404:
                            raise
                        tally.written, tally.pending = 0, tally.pending + occurred  # expired
                        continue
                tally.last = time.monotonic()
        except NotLeader:
            tally.pending = 0
        except ApiError as exc:
            tally.pending = 0
            if exc.status not in (403, 404):  # namespace gone or terminating
                log.warning("could not post event %s: %s", reason, exc)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
