"""Events on workloads, posted in the background so reconciles never wait on them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from secureai.clock import Clock, iso
from secureai.k8s.client import ApiError, KubeClient, NotLeader

log = logging.getLogger("secureai")


class EventRecorder:
    def __init__(self, kube: KubeClient, clock: Clock) -> None:
        self.kube = kube
        self.clock = clock
        self._pending: set[asyncio.Task[None]] = set()

    def __call__(self, body: dict[str, Any], type: str, reason: str, message: str) -> None:
        log.info("event %s %s on %s: %s", type, reason, body["metadata"].get("name"), message)
        task = asyncio.get_running_loop().create_task(self._post(body, type, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, body: dict[str, Any], type: str, reason: str, message: str) -> None:
        try:
            await self.kube.post_event(body, type, reason, message, iso(self.clock.now()))
        except NotLeader:
            return
        except ApiError as exc:
            if exc.status not in (403, 404):  # namespace gone or terminating
                log.warning("could not post event %s: %s", reason, exc)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
