"""The benchmark's own view of the API server: a plain aiohttp client and raw watches.

Nothing here goes through the operator or kopf. The client authenticates with the admin
kubeconfig (client certificate) on loopback; watches are plain ``?watch=1`` streams whose
events are timestamped (``time.perf_counter()``) as their bytes arrive from the socket.

    api = await Api.from_kubeconfig(path)
    tracker = Tracker(api, prefix="bench-abc123-", workload_selector=..., child_selector=...)
    await tracker.start(workload_kinds, child_kinds)   # list + watch each kind, cluster-wide
    t = await tracker.wait(tracker.expect(key, predicate, min_rv=rv), timeout=10)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from secureai.k8s.resources import resource_of

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (kind, namespace, name)
Predicate = Callable[[str, Obj], bool]  # (event type, object) -> matches

WATCH_SERVER_TIMEOUT_S = 290
HISTORY = 8


class ApiFailure(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def now() -> float:
    return time.perf_counter()


def resource_version(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def path_of(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    return resource_of(kind).path(namespace, name)


@dataclass
class Api:
    """A minimal async REST client (one pooled session for requests, one for watches)."""

    server: str
    ssl_context: ssl.SSLContext
    session: aiohttp.ClientSession
    watch_session: aiohttp.ClientSession

    @classmethod
    async def from_kubeconfig(cls, path: Path) -> Api:
        cfg = yaml.safe_load(path.read_text())
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        context = ssl.create_default_context(cafile=cluster["certificate-authority"])
        context.load_cert_chain(user["client-certificate"], user["client-key"])

        def session(limit: int) -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=limit, ssl=context, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=60, connect=5),
            )

        return cls(cluster["server"].rstrip("/"), context, session(64), session(0))

    async def close(self) -> None:
        await self.session.close()
        await self.watch_session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        allow: tuple[int, ...] = (),
    ) -> Obj:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with self.session.request(
            method, self.server + path, params=params, data=data, headers=headers
        ) as resp:
            text = await resp.text()
            if resp.status in allow:
                return {}
            if resp.status >= 400:
                raise ApiFailure(resp.status, text[:400])
            result: Obj = json.loads(text) if text else {}
            return result

    async def text(self, path: str, params: dict[str, str] | None = None) -> str:
        """A GET's raw body (to parse where its allocations are measured)."""
        async with self.session.get(self.server + path, params=params) as resp:
            body = await resp.text()
            if resp.status >= 400:
                raise ApiFailure(resp.status, body[:400])
            return body

    async def get(self, path: str, params: dict[str, str] | None = None) -> Obj | None:
        try:
            return await self.request("GET", path, params=params)
        except ApiFailure as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        return await self.request("POST", path_of(obj["kind"], meta.get("namespace")), obj)

    async def merge_patch(self, kind: str, ns: str, name: str, patch: Obj) -> Obj:
        return await self.request(
            "PATCH", path_of(kind, ns, name), patch, content_type="application/merge-patch+json"
        )

    async def json_patch(self, kind: str, ns: str, name: str, ops: list[Obj]) -> Obj:
        return await self.request(
            "PATCH", path_of(kind, ns, name), ops, content_type="application/json-patch+json"
        )

    async def delete(self, kind: str, ns: str | None, name: str) -> Obj:
        return await self.request(
            "DELETE",
            path_of(kind, ns, name),
            {"propagationPolicy": "Background"},
            allow=(404,),
        )


@dataclass
class _Waiter:
    predicate: Predicate
    min_rv: int
    future: asyncio.Future[float]


@dataclass
class _Group:
    missing: set[Key]
    future: asyncio.Future[float]


def is_ready(obj: Obj) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return True
    return False


@dataclass
class Tracker:
    """Raw watches of the kinds the benchmark looks at, in the run's namespaces only.

    Keeps, per object, the arrival time of its first sighting; for workloads (CRs) the last
    body and when Ready first became True; for namespaces marked ``detailed`` a short history
    of events (so a wait registered after a write still sees an event that beat it).
    """

    api: Api
    prefix: str
    workload_selector: str
    child_selector: str
    first_seen: dict[Key, float] = field(default_factory=dict)
    ready_at: dict[Key, float] = field(default_factory=dict)
    workloads: dict[Key, Obj] = field(default_factory=dict)
    detailed: set[str] = field(default_factory=set)
    events: int = 0
    reconnects: int = 0
    last_event: dict[str, float] = field(default_factory=dict)  # namespace -> arrival
    _history: dict[Key, deque[tuple[float, str, int, Obj]]] = field(default_factory=dict)
    _waiters: dict[Key, list[_Waiter]] = field(default_factory=dict)
    _groups: dict[Key, list[_Group]] = field(default_factory=dict)
    _ready_waiters: dict[Key, list[asyncio.Future[float]]] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _workload_kinds: set[str] = field(default_factory=set)

    async def start(self, workload_kinds: Iterable[str], child_kinds: Iterable[str]) -> None:
        established: list[asyncio.Event] = []
        for kind, selector in [(k, self.workload_selector) for k in workload_kinds] + [
            (k, self.child_selector) for k in child_kinds
        ]:
            if selector == self.workload_selector:
                self._workload_kinds.add(kind)
            ready = asyncio.Event()
            established.append(ready)
            self._tasks.append(asyncio.create_task(self._watch(kind, selector, ready)))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in established)), timeout=60)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- the watch loop ------------------------------------------------------------------------

    async def _watch(self, kind: str, selector: str, established: asyncio.Event) -> None:
        path = path_of(kind)
        rv = ""
        while True:
            try:
                if not rv:
                    listed = await self.api.request("GET", path, params={"labelSelector": selector})
                    rv = listed["metadata"]["resourceVersion"]
                    t = now()
                    for item in listed.get("items", []):
                        item["kind"] = kind
                        self._dispatch(kind, "ADDED", item, t)
                params = {
                    "watch": "1",
                    "resourceVersion": rv,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(WATCH_SERVER_TIMEOUT_S),
                    "labelSelector": selector,
                }
                timeout = aiohttp.ClientTimeout(total=None, sock_read=WATCH_SERVER_TIMEOUT_S + 30)
                async with self.api.watch_session.get(
                    self.api.server + path, params=params, timeout=timeout
                ) as resp:
                    if resp.status == 410:
                        rv = ""
                        continue
                    if resp.status != 200:
                        raise ApiFailure(resp.status, (await resp.text())[:300])
                    established.set()
                    buffer = b""
                    async for chunk in resp.content.iter_any():
                        t = now()
                        buffer += chunk
                        while b"\n" in buffer:
                            line, buffer = buffer.split(b"\n", 1)
                            if line.strip():
                                rv = self._line(kind, line, t, rv)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, ApiFailure, ValueError):
                await asyncio.sleep(0.2)  # reconnect backoff after a broken stream
            self.reconnects += 1

    def _line(self, kind: str, line: bytes, t: float, rv: str) -> str:
        event = json.loads(line)
        etype = event.get("type", "")
        obj = event.get("object") or {}
        if etype == "ERROR":
            return "" if obj.get("code") == 410 else rv
        new_rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
        if etype == "BOOKMARK":
            return str(new_rv)
        obj["kind"] = kind
        self._dispatch(kind, etype, obj, t)
        return str(new_rv)

    def _dispatch(self, kind: str, etype: str, obj: Obj, t: float) -> None:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or ""
        if not ns.startswith(self.prefix):
            return
        self.events += 1
        self.last_event[ns] = t
        key: Key = (kind, ns, meta.get("name", ""))
        rv = resource_version(obj)
        if etype != "DELETED" and key not in self.first_seen:
            self.first_seen[key] = t
            for group in self._groups.pop(key, []):
                group.missing.discard(key)
                if not group.missing and not group.future.done():
                    group.future.set_result(t)
        if kind in self._workload_kinds:
            if etype == "DELETED":
                self.workloads.pop(key, None)
            else:
                self.workloads[key] = obj
                if key not in self.ready_at and is_ready(obj):
                    self.ready_at[key] = t
                    for fut in self._ready_waiters.pop(key, []):
                        if not fut.done():
                            fut.set_result(t)
        if ns in self.detailed:
            self._history.setdefault(key, deque(maxlen=HISTORY)).append((t, etype, rv, obj))
        waiters = self._waiters.get(key)
        if waiters:
            keep = []
            for w in waiters:
                if w.future.done():
                    continue
                if rv > w.min_rv and w.predicate(etype, obj):
                    w.future.set_result(t)
                else:
                    keep.append(w)
            self._waiters[key] = keep

    # --- waiting -------------------------------------------------------------------------------

    def expect(self, key: Key, predicate: Predicate, min_rv: int = 0) -> asyncio.Future[float]:
        """A future for the arrival time of the first event on ``key`` newer than ``min_rv``
        that matches; events already kept in the history count (they may beat the caller)."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        for t, etype, rv, obj in self._history.get(key, ()):
            if rv > min_rv and predicate(etype, obj):
                fut.set_result(t)
                return fut
        self._waiters.setdefault(key, []).append(_Waiter(predicate, min_rv, fut))
        return fut

    @staticmethod
    async def wait(fut: asyncio.Future[float], timeout: float) -> float | None:
        """The future's time, or None at the deadline (the future is then cancelled)."""
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None

    async def quiet(self, ns: str, quiet_s: float, timeout: float) -> bool:
        """Until no watched object in ``ns`` has changed for ``quiet_s`` (bounded)."""
        deadline = now() + timeout
        while now() < deadline:
            idle = now() - self.last_event.get(ns, 0.0)
            if idle >= quiet_s:
                return True
            await asyncio.sleep(quiet_s - idle + 0.005)  # polling with a deadline
        return False

    def when_seen(self, keys: Iterable[Key]) -> asyncio.Future[float]:
        """Resolves with the arrival time of the last of ``keys`` to be first seen."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        wanted = set(keys)
        missing = {k for k in wanted if k not in self.first_seen}
        if not missing:
            fut.set_result(max(self.first_seen[k] for k in wanted))
            return fut
        group = _Group(missing, fut)
        for key in missing:
            self._groups.setdefault(key, []).append(group)
        return fut

    def when_ready(self, key: Key) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if key in self.ready_at:
            fut.set_result(self.ready_at[key])
        else:
            self._ready_waiters.setdefault(key, []).append(fut)
        return fut

    def forget_namespace(self, ns: str) -> None:
        """Drop what is kept about a deleted namespace (bounded memory over a long run)."""
        tables: list[dict[Key, Any]] = [
            self.first_seen,
            self.ready_at,
            self.workloads,
            self._history,
        ]
        for table in tables:
            for key in [k for k in table if k[1] == ns]:
                del table[key]
