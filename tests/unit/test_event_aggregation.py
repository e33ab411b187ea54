"""Events are aggregated: a repeated occurrence raises the count of one Event (at most one
write a second), whichever replica posts it; an expired Event is created again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from secureai.clock import FakeClock
from secureai.controllers import events as events_module
from secureai.controllers.events import EventRecorder
from secureai.k8s.client import ApiError, KubeClient, event_name

CLOCK = FakeClock(datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC))
BODY = {
    "apiVersion": "secureai.dev/v1alpha1",
    "kind": "SecureInferenceService",
    "metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"},
}


class EventApi:
    """Events by name, as the API server keeps them; counts every request."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []

    async def post_event(
        self, regarding: dict[str, Any], type: str, reason: str, message: str, now: str
    ) -> str:
        self.requests.append("create")
        name = event_name(regarding, type, reason, message)
        if name in self.events:
            raise ApiError(409, "AlreadyExists", name)
        self.events[name] = {"reason": reason, "message": message, "count": 1}
        return name

    async def event_count(self, namespace: str, name: str) -> int:
        self.requests.append("get")
        return int(self.events[name]["count"])

    async def count_event(self, namespace: str, name: str, count: int, now: str) -> None:
        self.requests.append("patch")
        if name not in self.events:
            raise ApiError(404, "NotFound", name)
        self.events[name]["count"] = count


def recorder(api: EventApi) -> EventRecorder:
    return EventRecorder(cast(KubeClient, api), CLOCK)


def test_a_storm_of_one_occurrence_is_one_event_with_its_count(monkeypatch: Any) -> None:
    monkeypatch.setattr(events_module, "WRITE_EVERY", 0.05)
    api = EventApi()
    record = recorder(api)

    async def run() -> None:
        for _ in range(200):  # a tamper every few ms, reverted each time
            record(BODY, "Warning", "DriftReverted", "Deployment/chat: spec.replicas: changed")
            await asyncio.sleep(0.001)
        record(BODY, "Normal", "Available", "1 of 1 replicas available")
        await record.drain()

    asyncio.run(run())
    by_reason = {e["reason"]: e["count"] for e in api.events.values()}
    assert by_reason == {"DriftReverted": 200, "Available": 1}
    assert len(api.events) == 2
    assert api.requests.count("create") == 2
    assert api.requests.count("patch") < 20  # writes are batched, not one per occurrence


def test_another_replica_counts_on_in_the_same_event() -> None:
    api = EventApi()

    async def run() -> None:
        first, second = recorder(api), recorder(api)  # the old leader, then the new one
        first(BODY, "Warning", "DriftReverted", "Service/chat: spec.selector: changed")
        await first.drain()
        second(BODY, "Warning", "DriftReverted", "Service/chat: spec.selector: changed")
        await second.drain()

    asyncio.run(run())
    (event,) = api.events.values()
    assert event["count"] == 2
    assert api.requests == ["create", "create", "get", "patch"]


def test_an_expired_event_is_created_again() -> None:
    api = EventApi()
    record = recorder(api)

    async def run() -> None:
        record(BODY, "Warning", "DriftReverted", "x")
        await record.drain()
        api.events.clear()  # the API server's event TTL ran out
        record(BODY, "Warning", "DriftReverted", "x")
        await record.drain()

    asyncio.run(run())
    (event,) = api.events.values()
    assert event["count"] == 1


def test_names_differ_by_object_reason_and_message_and_are_valid() -> None:
    other = {**BODY, "metadata": {**BODY["metadata"], "uid": "u-2"}}
    names = {
        event_name(BODY, "Warning", "DriftReverted", "a"),
        event_name(BODY, "Warning", "DriftReverted", "b"),
        event_name(BODY, "Warning", "Rejected", "a"),
        event_name(other, "Warning", "DriftReverted", "a"),
    }
    assert len(names) == 4
    long = {**BODY, "metadata": {**BODY["metadata"], "name": "x" * 253}}
    assert len(event_name(long, "Normal", "R", "m")) <= 253
