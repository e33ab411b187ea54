"""An async Kubernetes REST client: server-side apply, replace, delete, status, tokens.

Credentials come from the kubeconfig or the in-cluster service account (loaded by the
`kubernetes` package); requests go over one pooled aiohttp session.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from kubernetes import config as kube_config
from kubernetes.client import Configuration

from secureai.k8s.resources import CHILD_RESOURCES, NAMESPACE, Resource, resource_of

FIELD_MANAGER = "secureai"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"
TRANSPORT_RETRIES = 5
TRANSPORT_BACKOFF = 0.2
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path


class ApiError(Exception):
    """A failed API call; `status` is the HTTP status (0 for transport errors)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def event_namespace(regarding: dict[str, Any]) -> str:
    """Events about a cluster-scoped object (a Quarantine) go to `default`, as kubectl's do."""
    return str(regarding["metadata"].get("namespace") or "default")


def event_name(regarding: dict[str, Any], type: str, reason: str, message: str) -> str:
    """The object's name and a digest of what the Event says about which object (its uid):
    the same occurrence always has the same name, whichever replica posts it."""
    meta = regarding["metadata"]
    said = json.dumps([meta.get("uid", ""), meta["name"], type, reason, message[:1024]])
    return f"{meta['name'][:200]}.{hashlib.sha256(said.encode()).hexdigest()[:16]}"


class NotLeader(Exception):
    """A write was refused: this replica is not the leader (a standby never writes)."""


def always(verb: str) -> bool:
    return True


def _error(status: int, reason: str, text: str) -> ApiError:
    message = text[:500]
    try:
        payload = json.loads(text)
        message = payload.get("message", message)
        reason = payload.get("reason", reason)
    except ValueError:
        pass
    return ApiError(status, reason, message)


@dataclass(frozen=True)
class Credentials:
    host: str
    ssl_context: ssl.SSLContext | bool
    token: str | None
    token_file: str | None


def _retry_after(header: str | None) -> float:
    """Seconds to wait on a 429: the server's Retry-After, bounded to 0.1-2 s."""
    try:
        seconds = float(header or "0.5")
    except ValueError:
        seconds = 0.5
    return min(max(seconds, 0.1), 2.0)


def load_credentials(kubeconfig: str | None = None) -> Credentials:
    """From $KUBECONFIG (or `kubeconfig`), else the in-cluster service account."""
    cfg = Configuration()
    token_file = None
    if kubeconfig or os.environ.get("KUBECONFIG") or not os.path.exists(IN_CLUSTER_TOKEN):
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=cfg
        )
    else:
        kube_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        token_file = IN_CLUSTER_TOKEN
    context: ssl.SSLContext | bool
    if cfg.verify_ssl:
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
    else:
        context = False
    auth = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
    token = None
    if auth:
        prefix = cfg.api_key_prefix.get("authorization", "")
        token = auth if auth.startswith("Bearer ") else f"{prefix or 'Bearer'} {auth}".strip()
    return Credentials(cfg.host.rstrip("/"), context, token, token_file)


class KubeClient:
    """The only code that talks to the API server."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        pool_size: int = 64,
        may_write: Callable[[str], bool] = always,
    ) -> None:
        """`may_write(method)` gates every request that could change the cluster (all but
        GET and dry-runs): the one place where a standby's writes are refused."""
        self._may_write = may_write
        self._creds = credentials
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._token_mtime = 0.0
        self._token = credentials.token

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _auth_header(self) -> dict[str, str]:
        token_file = self._creds.token_file
        if token_file:
            mtime = os.stat(token_file).st_mtime
            if mtime != self._token_mtime:
                with open(token_file, encoding="ascii") as fh:
                    self._token = "Bearer " + fh.read().strip()
                self._token_mtime = mtime
        return {"Authorization": self._token} if self._token else {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, ssl=self._creds.ssl_context, keepalive_timeout=60
            )
            # No `connect` or `total`: those include the wait for a pooled connection,
            # which a burst makes long without anything being wrong.
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        allow: tuple[int, ...] = (),
        accept: str = "application/json",
    ) -> dict[str, Any]:
        url = self._creds.host + path + (f"?{urlencode(params)}" if params else "")
        headers = {"Accept": accept, **self._auth_header()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body, separators=(",", ":"))
        status, reason, text = await self._send(method, url, data, headers)
        if status in allow:
            return {}
        if status >= 400:
            raise _error(status, reason, text)
        result: dict[str, Any] = json.loads(text) if text else {}
        return result

    async def _send(
        self, method: str, url: str, data: str | None, headers: dict[str, str]
    ) -> tuple[int, str, str]:
        if method != "GET" and "dryRun=" not in url and not self._may_write(method):
            raise NotLeader(f"{method} refused: not the leader")
        for attempt in range(TRANSPORT_RETRIES + 1):
            try:
                async with self._get_session().request(
                    method, url, data=data, headers=headers
                ) as resp:
                    text = await resp.text()
                    if resp.status == 429 and attempt < TRANSPORT_RETRIES:
                        # not processed (a CRD's storage starting, priority and fairness):
                        # any method may be sent again after the wait the server asks for
                        await asyncio.sleep(_retry_after(resp.headers.get("Retry-After")))
                        continue
                    return resp.status, resp.reason or "", text
            except aiohttp.ClientConnectionError as exc:
                # A restarted API server drops pooled connections: reconnect and retry.
                if attempt == TRANSPORT_RETRIES:
                    raise ApiError(0, type(exc).__name__, str(exc) or "connection lost") from exc
                await asyncio.sleep(TRANSPORT_BACKOFF * (attempt + 1))
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ApiError(0, type(exc).__name__, str(exc) or "timed out") from exc
        raise AssertionError("unreachable")

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", resource_of(kind).path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", resource_of(kind).path(namespace), params=params)
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with the operator's single field manager."""
        meta = manifest["metadata"]
        resource = resource_of(manifest["kind"])
        return await self.request(
            "PATCH",
            resource.path(meta.get("namespace"), meta["name"]),
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=manifest,
            content_type=APPLY_CONTENT_TYPE,
        )

    async def apply_created(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Server-side apply; also whether this apply created the object (HTTP 201)."""
        meta = manifest["metadata"]
        resource = resource_of(manifest["kind"])
        url = self._creds.host + resource.path(meta.get("namespace"), meta["name"])
        url += "?" + urlencode({"fieldManager": FIELD_MANAGER, "force": "true"})
        headers = {
            "Accept": "application/json",
            "Content-Type": APPLY_CONTENT_TYPE,
            **self._auth_header(),
        }
        data = json.dumps(manifest, separators=(",", ":"))
        status, reason, text = await self._send("PATCH", url, data, headers)
        if status >= 400:
            raise _error(status, reason, text)
        result: dict[str, Any] = json.loads(text) if text else {}
        return result, status == 201

    async def merge_patch(
        self, kind: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch of the named fields only (cheaper for the API server than an
        apply of the whole object: no merge of field sets, a small body)."""
        return await self.request(
            "PATCH",
            resource_of(kind).path(namespace, name),
            params={"fieldManager": FIELD_MANAGER},
            body=patch,
            content_type=MERGE_CONTENT_TYPE,
        )

    async def dry_run_create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The object as the API server would store it if created now (defaults, admission),
        persisting nothing. A generated name keeps it clear of the live object, whose
        fields from other managers an apply would merge in."""
        meta = {k: v for k, v in manifest["metadata"].items() if k != "name"}
        meta["generateName"] = manifest["metadata"]["name"][:40] + "-dryrun-"
        resource = resource_of(manifest["kind"])
        return await self.request(
            "POST",
            resource.path(meta.get("namespace")),
            params={"fieldManager": FIELD_MANAGER, "dryRun": "All"},
            body={**manifest, "metadata": meta},
        )

    async def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """PUT: removes what others added (which server-side apply would keep)."""
        meta = manifest["metadata"]
        resource = resource_of(manifest["kind"])
        return await self.request(
            "PUT",
            resource.path(meta.get("namespace"), meta["name"]),
            params={"fieldManager": FIELD_MANAGER},
            body=manifest,
        )

    async def delete(
        self, kind: str, namespace: str | None, name: str, *, propagation: str = "Background"
    ) -> None:
        await self.request(
            "DELETE",
            resource_of(kind).path(namespace, name),
            body={"propagationPolicy": propagation},
            allow=(404,),
        )

    async def patch_status(
        self, resource: Resource, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.request(
            "PATCH",
            resource.path(namespace, name) + "/status",
            params={"fieldManager": FIELD_MANAGER},
            body={"status": status},
            content_type=MERGE_CONTENT_TYPE,
        )

    async def apply_namespace_labels(
        self, namespace: str, labels: dict[str, str]
    ) -> dict[str, Any]:
        return await self.request(
            "PATCH",
            NAMESPACE.path(None, namespace),
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            body={
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": labels},
            },
            content_type=APPLY_CONTENT_TYPE,
        )

    async def post_event(
        self, regarding: dict[str, Any], type: str, reason: str, message: str, now: str
    ) -> str:
        """Create a core/v1 Event about `regarding` (a workload) under a name derived from
        what it says (`event_name`), so that every replica aggregates one occurrence into the
        same object; raises ApiError 409 when it exists. Returns the name."""
        meta = regarding["metadata"]
        involved = {
            "apiVersion": regarding["apiVersion"],
            "kind": regarding["kind"],
            "name": meta["name"],
            "uid": meta.get("uid", ""),
        }
        if meta.get("namespace"):
            involved["namespace"] = meta["namespace"]
        name = event_name(regarding, type, reason, message)
        await self.request(
            "POST",
            f"/api/v1/namespaces/{event_namespace(regarding)}/events",
            body={
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": event_namespace(regarding)},
                "involvedObject": involved,
                "type": type,
                "reason": reason,
                "message": message[:1024],
                "source": {"component": FIELD_MANAGER},
                "reportingComponent": f"{FIELD_MANAGER}.dev/operator",
                "reportingInstance": os.environ.get("HOSTNAME", FIELD_MANAGER),
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        )
        return name

    async def event_count(self, namespace: str, name: str) -> int:
        """How often an existing Event says it happened."""
        event = await self.request("GET", f"/api/v1/namespaces/{namespace}/events/{name}")
        return int(event.get("count") or 1)

    async def count_event(self, namespace: str, name: str, count: int, now: str) -> None:
        """Record further occurrences on an existing Event (as kubectl shows "x5 over 2m")."""
        await self.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/events/{name}",
            body={"count": count, "lastTimestamp": now},
            content_type=MERGE_CONTENT_TYPE,
        )

    async def request_token(
        self, namespace: str, service_account: str, audience: str, seconds: int
    ) -> str:
        """TokenRequest: a short-lived, audience-bound token for a ServiceAccount."""
        path = CHILD_RESOURCES["ServiceAccount"].path(namespace, service_account) + "/token"
        result = await self.request(
            "POST",
            path,
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"audiences": [audience], "expirationSeconds": seconds},
            },
        )
        token: str = result["status"]["token"]
        return token
