"""Evidence of quarantined workloads: collected from the API, stored as Secrets, keys kept.

``collect`` reads, per workload, the CR, its children, its pods, the Events about any of them,
every container's log (``previous`` too after a restart), the guard's audit lines, and the
NetworkPolicies that select its pods; objects are kept as the API returns them, managedFields
included. The one exception is credentials: a Secret child's values are replaced by their
sha256 (``index.json`` says so), so a bundle never carries a usable key or token. Every failed
read is an error entry in ``index.json`` and never stops the collection.

``store``/``load`` keep one sealed bundle (``secureai.crypto.evidence``) in the operator
namespace as immutable Secrets of type ``secureai.dev/evidence``, each below 1 MiB, named
``<prefix>-<index>``; chunk 0 is written last, so its presence means the others were written.
``evidence_keys`` creates the KEK and the signing key on first use (one winner when replicas
race) and publishes the public key in a ConfigMap anyone may read.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

import aiohttp

from secureai.clock import Clock, SystemClock
from secureai.crypto.envelope import InvalidKeyError, format_kek, generate_kek, load_kek
from secureai.crypto.evidence import EvidenceError, seal
from secureai.crypto.signing import SignatureError, generate_signing_key, load_private_key
from secureai.judge.isolation import selects
from secureai.k8s.client import ApiError, KubeClient, NotLeader
from secureai.k8s.resources import CHILD_RESOURCES, POD
from secureai.render.meta import LABEL_KIND, LABEL_WORKLOAD

__all__ = [
    "CHUNK_SIZE",
    "EVIDENCE_TYPE",
    "KEK_SECRET",
    "SIGNER_CONFIGMAP",
    "SIGNING_SECRET",
    "EvidenceExistsError",
    "StoredEvidenceError",
    "audit_lines",
    "collect",
    "evidence_keys",
    "load",
    "public_key",
    "reference",
    "store",
]

EVIDENCE_TYPE: Final = "secureai.dev/evidence"
KEK_SECRET: Final = "secureai-evidence-key"  # noqa: S105 - a name
SIGNING_SECRET: Final = "secureai-evidence-signing"  # noqa: S105 - a name
SIGNER_CONFIGMAP: Final = "secureai-evidence-signer"
KEK_KEY: Final = "kek"
SIGNING_KEY: Final = "signer.key"
PUBLIC_KEY: Final = "signer.pub"
LABEL_QUARANTINE: Final = "secureai.dev/quarantine"
ANN_QUARANTINE: Final = "secureai.dev/quarantine-name"
ANN_DIGEST: Final = "secureai.dev/evidence-digest"
ANN_INDEX: Final = "secureai.dev/evidence-chunk-index"
ANN_COUNT: Final = "secureai.dev/evidence-chunk-count"
CHUNK_KEY: Final = "chunk"
CHUNK_SIZE: Final = 768 << 10  # a Secret holds at most 1 MiB of data
GUARD_CONTAINER: Final = "guard"
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
KIND_LABELS: Final = {"SecureTrainingJob": "training", "SecureInferenceService": "inference"}
CONCURRENCY: Final = 8
_AUDIT_KEYS: Final = frozenset({"time", "client", "method", "path", "status", "latency_ms"})
# managed-by: the chart's admission policies let only the operator write or delete these
_PART_OF: Final = {
    "app.kubernetes.io/part-of": "secureai",
    "app.kubernetes.io/managed-by": "secureai",
}
_CREATE_ATTEMPTS: Final = 5

T = TypeVar("T")


class StoredEvidenceError(EvidenceError):
    """The stored bundle is missing, incomplete or does not match its recorded digest."""


class EvidenceExistsError(EvidenceError):
    """Another complete bundle is already stored for this quarantine (evidence is immutable)."""


# --- collection ----------------------------------------------------------------------------


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _safe(part: str) -> str:
    """A path component from an API name (names never hold '/', but be sure)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", part)
    return cleaned if cleaned not in {"", ".", ".."} else f"_{cleaned}"


def audit_lines(log: bytes) -> list[str]:
    """The guard's audit records among a log's lines (``secureai.guard.audit`` writes them)."""
    found = []
    for raw in log.splitlines():
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.keys() >= _AUDIT_KEYS:
            found.append(line)
    return found


def _redact_secret(obj: dict[str, Any]) -> dict[str, Any]:
    """A Secret with every value replaced by ``sha256:<hex>`` of its decoded bytes (and the
    copy of them a client-side ``kubectl apply`` leaves in an annotation)."""
    out = dict(obj)
    data = obj.get("data") or {}
    out["data"] = {
        key: "sha256:" + hashlib.sha256(base64.b64decode(value or "")).hexdigest()
        for key, value in data.items()
    }
    meta = dict(obj.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    if LAST_APPLIED in annotations:
        copy = str(annotations[LAST_APPLIED]).encode()
        annotations[LAST_APPLIED] = "sha256:" + hashlib.sha256(copy).hexdigest()
        meta["annotations"] = annotations
        out["metadata"] = meta
    return out


class _Collector:
    """One collection: a shared semaphore, the files gathered and the errors met."""

    def __init__(self, kube: KubeClient, log_limit: int) -> None:
        self.kube = kube
        self.log_limit = log_limit
        self.gate = asyncio.Semaphore(CONCURRENCY)
        self._shared: dict[tuple[str, str], asyncio.Task[list[dict[str, Any]]]] = {}

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        async with self.gate:
            return await fn()

    def namespace_list(self, kind: str, namespace: str) -> Awaitable[list[dict[str, Any]]]:
        """Every Event or NetworkPolicy of ``namespace``, read once per collection (the
        workloads of one namespace share them)."""
        key = (kind, namespace)
        if key not in self._shared:
            self._shared[key] = asyncio.ensure_future(
                self.call(lambda: self._list(kind, namespace))
            )
        return asyncio.shield(self._shared[key])

    async def _list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        if kind == "Event":
            found = await self.kube.request("GET", f"/api/v1/namespaces/{namespace}/events")
            items: list[dict[str, Any]] = found.get("items") or []
            return items
        return await self.kube.list(kind, namespace)

    async def get_log(self, namespace: str, pod: str, params: dict[str, str]) -> tuple[bytes, int]:
        """The newest ``log_limit`` bytes of a container log and the log's size in bytes.

        Streams the log, keeping only its tail (the API's ``limitBytes`` keeps the oldest
        part); ApiError on failure. The API client parses JSON only, hence the raw request."""
        kube = self.kube
        path = POD.path(namespace, pod) + "/log"
        url = kube._creds.host + path + "?" + urlencode(params)
        headers = {"Accept": "*/*", **kube._auth_header()}
        tail = bytearray()
        total = 0
        async with self.gate:
            try:
                session = kube._get_session()
                async with session.get(url, headers=headers) as resp:
                    status, reason = resp.status, resp.reason or ""
                    if status >= 400:
                        tail += await resp.content.read(4096)
                    else:
                        async for piece in resp.content.iter_chunked(1 << 16):
                            total += len(piece)
                            tail += piece
                            if len(tail) > self.log_limit:
                                del tail[: len(tail) - self.log_limit]
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ApiError(0, type(exc).__name__, str(exc) or "failed") from exc
        if status >= 400:
            text = tail.decode("utf-8", "replace")[:500]
            try:
                payload = json.loads(text)
                text = payload.get("message", text) if isinstance(payload, dict) else text
            except ValueError:
                pass
            raise ApiError(status, reason, text)
        return bytes(tail), total


def _error(item: str, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ApiError):
        return {"item": item, "status": exc.status, "reason": exc.reason, "message": exc.message}
    return {"item": item, "status": 0, "reason": type(exc).__name__, "message": str(exc)[:500]}


def _containers(pod: dict[str, Any]) -> list[tuple[str, int]]:
    """(container, restart count) of every container: init (sidecars too), main, ephemeral."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    restarts: dict[str, int] = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for st in status.get(key) or []:
            restarts[st.get("name", "")] = int(st.get("restartCount") or 0)
    names = [
        c["name"]
        for key in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(key) or []
        if c.get("name")
    ]
    return [(n, restarts.get(n, 0)) for n in names]


def _involves(event: dict[str, Any], uids: set[str], names: set[tuple[str, str]]) -> bool:
    for ref in (event.get("involvedObject"), event.get("regarding"), event.get("related")):
        if not isinstance(ref, dict):
            continue
        if ref.get("uid") and ref["uid"] in uids:
            return True
        if (ref.get("kind", ""), ref.get("name", "")) in names:
            return True
    return False


def _lister(
    c: _Collector, kind: str, namespace: str, selector: str | None
) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    return lambda: c.call(lambda: c.kube.list(kind, namespace, selector))


async def _workload(
    c: _Collector, kind: str, namespace: str, name: str
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Everything about one workload: (index entry, files)."""
    base = f"{_safe(namespace)}/{_safe(kind)}/{_safe(name)}"
    files: dict[str, bytes] = {}
    errors: list[dict[str, Any]] = []
    redacted: list[str] = []
    if kind not in KIND_LABELS:
        raise ValueError(f"not a workload kind: {kind}")
    selector = f"{LABEL_WORKLOAD}={name},{LABEL_KIND}={KIND_LABELS[kind]}"

    async def attempt(item: str, fn: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await fn()
        except (ApiError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
            errors.append(_error(item, exc))
            return None

    cr, children_lists, pods, events, policies = await asyncio.gather(
        attempt(f"{base}/cr.json", lambda: c.call(lambda: c.kube.get(kind, namespace, name))),
        asyncio.gather(
            *(
                attempt(f"{base}/children/{child}", _lister(c, child, namespace, selector))
                for child in CHILD_RESOURCES
            )
        ),
        attempt(f"{base}/pods", _lister(c, "Pod", namespace, selector)),
        attempt(f"{base}/events.json", lambda: c.namespace_list("Event", namespace)),
        attempt(
            f"{base}/networkpolicies.json", lambda: c.namespace_list("NetworkPolicy", namespace)
        ),
    )
    if cr is not None:
        files[f"{base}/cr.json"] = _dump(cr)
    elif not any(e["item"] == f"{base}/cr.json" for e in errors):
        errors.append(
            {
                "item": f"{base}/cr.json",
                "status": 404,
                "reason": "NotFound",
                "message": f"{kind} {namespace}/{name} not found",
            }
        )
    uids: set[str] = set()
    names: set[tuple[str, str]] = {(kind, name)}
    if cr is not None and (cr.get("metadata") or {}).get("uid"):
        uids.add(cr["metadata"]["uid"])
    templates: list[dict[str, str]] = []
    for child_kind, items in zip(CHILD_RESOURCES, children_lists, strict=True):
        for obj in items or []:
            meta = obj.get("metadata") or {}
            child_name = meta.get("name", "")
            if meta.get("uid"):
                uids.add(meta["uid"])
            names.add((child_kind, child_name))
            labels = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
                "labels"
            )
            if labels:
                templates.append(labels)
            stored = obj
            if child_kind == "Secret":
                stored = _redact_secret(obj)
                redacted.append(f"{base}/children/Secret-{_safe(child_name)}.json")
            files[f"{base}/children/{child_kind}-{_safe(child_name)}.json"] = _dump(stored)
    pod_labels: list[dict[str, str]] = []
    log_jobs: list[tuple[str, str, str, bool]] = []
    for pod in pods or []:
        meta = pod.get("metadata") or {}
        pod_name = meta.get("name", "")
        if meta.get("uid"):
            uids.add(meta["uid"])
        names.add(("Pod", pod_name))
        pod_labels.append(meta.get("labels") or {})
        files[f"{base}/pods/{_safe(pod_name)}.json"] = _dump(pod)
        for container, restarts in _containers(pod):
            log_jobs.append((pod_name, container, f"{base}/logs/{_safe(pod_name)}", False))
            if restarts > 0:
                log_jobs.append((pod_name, container, f"{base}/logs/{_safe(pod_name)}", True))
    if events is not None:
        involved = [e for e in events if _involves(e, uids, names)]
        files[f"{base}/events.json"] = _dump(involved)
    if policies is not None:
        labelsets = pod_labels + templates
        selecting = [
            p
            for p in policies
            if any(selects((p.get("spec") or {}).get("podSelector"), lb) for lb in labelsets)
        ]
        files[f"{base}/networkpolicies.json"] = _dump(selecting)

    async def fetch_log(pod_name: str, container: str, folder: str, previous: bool) -> None:
        suffix = ".previous.log" if previous else ".log"
        item = f"{folder}/{_safe(container)}{suffix}"
        params = {"container": container}
        if previous:
            params["previous"] = "true"
        got = await attempt(item, lambda: c.get_log(namespace, pod_name, params))
        if got is None:
            return
        body, size = got
        files[item] = body
        if size > len(body):
            truncated.append({"item": item, "bytes": size, "kept": len(body)})
        if container == GUARD_CONTAINER:
            audit.extend(
                json.dumps(
                    {"pod": pod_name, "container": container, "previous": previous, "line": line},
                    separators=(",", ":"),
                    sort_keys=True,
                )
                for line in audit_lines(body)
            )

    audit: list[str] = []
    truncated: list[dict[str, Any]] = []
    await asyncio.gather(*(fetch_log(*job) for job in log_jobs))
    files[f"{base}/guard-audit.jsonl"] = "".join(line + "\n" for line in sorted(audit)).encode()
    entry = {
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "found": cr is not None,
        "files": sorted(files),
        "errors": sorted(errors, key=lambda e: str(e["item"])),
        "redacted": sorted(redacted),
        "truncated": sorted(truncated, key=lambda t: str(t["item"])),
    }
    return entry, files


async def collect(
    kube: KubeClient,
    workloads: Sequence[tuple[str, str, str]],
    *,
    log_limit_bytes: int = 1 << 20,
    clock: Clock | None = None,
) -> dict[str, bytes]:
    """The evidence files of ``workloads`` ((kind, namespace, name) each), with ``index.json``.

    Reads only; a failed read is an error entry in the index, a failed workload is recorded
    and the others are still collected.
    """
    clock = clock or SystemClock()
    started = clock.now().astimezone(UTC)
    collector = _Collector(kube, log_limit_bytes)
    unique = sorted(set(workloads))
    results = await asyncio.gather(
        *(_workload(collector, kind, ns, name) for kind, ns, name in unique),
        return_exceptions=True,
    )
    files: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []
    for (kind, ns, name), result in zip(unique, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            entries.append(
                {
                    "kind": kind,
                    "namespace": ns,
                    "name": name,
                    "found": False,
                    "files": [],
                    "errors": [_error(f"{ns}/{kind}/{name}", result)],
                    "redacted": [],
                    "truncated": [],
                }
            )
            continue
        entry, got = result
        entries.append(entry)
        files.update(got)
    finished = clock.now().astimezone(UTC)
    files["index.json"] = _dump(
        {
            "format": "secureai-evidence-index/v1",
            "collectionStarted": started.isoformat(),
            "collectionFinished": finished.isoformat(),
            "logLimitBytes": log_limit_bytes,
            "workloads": entries,
            "notes": [
                "objects are as the API returned them, managedFields included",
                "Secret values are replaced by sha256:<hex> of their bytes (see 'redacted')",
                "a failed read is listed under 'errors' with its HTTP status",
                "a log longer than logLimitBytes keeps its newest bytes (see 'truncated')",
            ],
        }
    )
    return files


# --- storage -------------------------------------------------------------------------------


def _prefix(quarantine: str) -> str:
    """Name prefix of a quarantine's chunks (a Secret name has at most 253 characters)."""
    prefix = f"secureai-evidence-{quarantine}"
    if len(prefix) > 240:
        tail = hashlib.sha256(quarantine.encode()).hexdigest()[:10]
        prefix = f"{prefix[:229].rstrip('.-')}-{tail}"
    return prefix


def _label_value(quarantine: str) -> str:
    if len(quarantine) <= 63:
        return quarantine
    tail = hashlib.sha256(quarantine.encode()).hexdigest()[:10]
    return f"{quarantine[:52].rstrip('.-_')}-{tail}"


def reference(namespace: str, quarantine: str) -> str:
    """Where a quarantine's evidence is stored: ``secret/<namespace>/<prefix>``."""
    return f"secret/{namespace}/{_prefix(quarantine)}"


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _chunk_secret(
    namespace: str, quarantine: str, index: int, count: int, data: bytes, blob_digest: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": EVIDENCE_TYPE,
        "immutable": True,
        "metadata": {
            "name": f"{_prefix(quarantine)}-{index}",
            "namespace": namespace,
            "labels": {**_PART_OF, LABEL_QUARANTINE: _label_value(quarantine)},
            "annotations": {
                ANN_QUARANTINE: quarantine,
                ANN_DIGEST: blob_digest,
                ANN_INDEX: str(index),
                ANN_COUNT: str(count),
            },
        },
        "data": {CHUNK_KEY: base64.b64encode(data).decode("ascii")},
    }


async def _create(kube: KubeClient, body: dict[str, Any]) -> dict[str, Any] | None:
    """POST an object; None if one of that name already exists."""
    ns = body["metadata"]["namespace"]
    plural = "secrets" if body["kind"] == "Secret" else "configmaps"
    try:
        return await kube.request("POST", f"/api/v1/namespaces/{ns}/{plural}", body=body)
    except ApiError as exc:
        if exc.status == 409:
            return None
        raise


async def store(
    kube: KubeClient, namespace: str, quarantine: str, blob: bytes, *, chunk_size: int = CHUNK_SIZE
) -> str:
    """Store ``blob`` as the evidence of ``quarantine``; return its reference.

    Storing the same bundle again is a no-op. A different complete bundle already stored
    raises ``EvidenceExistsError``; the chunks of an incomplete one (a writer that died) are
    replaced.
    """
    if not 0 < chunk_size <= CHUNK_SIZE:
        raise ValueError(f"chunk size must be between 1 and {CHUNK_SIZE} bytes")
    blob_digest = _digest(blob)
    pieces = [blob[i : i + chunk_size] for i in range(0, len(blob), chunk_size)] or [b""]
    count = len(pieces)
    for _ in range(2):
        order = [*range(1, count), 0]  # chunk 0 last: its presence marks a complete write
        clash = False
        for index in order:
            body = _chunk_secret(namespace, quarantine, index, count, pieces[index], blob_digest)
            if await _create(kube, body) is not None:
                continue
            live = await kube.get("Secret", namespace, body["metadata"]["name"])
            ann = ((live or {}).get("metadata") or {}).get("annotations") or {}
            if (
                live is not None
                and ann.get(ANN_DIGEST) == blob_digest
                and (live.get("data") or {}).get(CHUNK_KEY) == body["data"][CHUNK_KEY]
            ):
                continue  # written by an earlier attempt of the same bundle
            clash = True
            break
        if not clash:
            return reference(namespace, quarantine)
        try:
            existing = await load(kube, namespace, quarantine)
        except StoredEvidenceError:
            await _delete_chunks(kube, namespace, quarantine)
            continue
        raise EvidenceExistsError(
            f"evidence of quarantine {quarantine} is already stored with digest {_digest(existing)}"
        )
    raise StoredEvidenceError(f"evidence of quarantine {quarantine} kept changing while stored")


async def _delete_chunks(kube: KubeClient, namespace: str, quarantine: str) -> None:
    selector = f"{LABEL_QUARANTINE}={_label_value(quarantine)}"
    for secret in await kube.list("Secret", namespace, selector):
        meta = secret.get("metadata") or {}
        if (
            secret.get("type") == EVIDENCE_TYPE
            and (meta.get("annotations") or {}).get(ANN_QUARANTINE) == quarantine
        ):
            await kube.delete("Secret", namespace, meta["name"])


def _chunk(secret: dict[str, Any] | None, quarantine: str, index: int) -> tuple[bytes, str, int]:
    """(data, bundle digest, chunk count) of one stored chunk; fail closed on anything odd."""
    if secret is None:
        raise StoredEvidenceError(
            f"evidence of quarantine {quarantine}: chunk {index} is missing"
            if index
            else f"no evidence stored for quarantine {quarantine}"
        )
    meta = secret.get("metadata") or {}
    ann = meta.get("annotations") or {}
    if secret.get("type") != EVIDENCE_TYPE or ann.get(ANN_QUARANTINE) != quarantine:
        raise StoredEvidenceError(f"Secret {meta.get('name')} is not evidence of {quarantine}")
    try:
        count = int(ann.get(ANN_COUNT, ""))
        stated = int(ann.get(ANN_INDEX, ""))
        data = base64.b64decode((secret.get("data") or {}).get(CHUNK_KEY, ""), validate=True)
    except ValueError:
        raise StoredEvidenceError(f"Secret {meta.get('name')}: malformed evidence chunk") from None
    if stated != index or count < 1:
        raise StoredEvidenceError(f"Secret {meta.get('name')}: malformed evidence chunk")
    return data, str(ann.get(ANN_DIGEST, "")), count


async def load(kube: KubeClient, namespace: str, quarantine: str) -> bytes:
    """The stored bundle of ``quarantine``, reassembled and checked against its digest.

    Reads each chunk by name (``get`` on Secrets is the only permission needed)."""
    prefix = _prefix(quarantine)
    first, digest, count = _chunk(await kube.get("Secret", namespace, f"{prefix}-0"), quarantine, 0)
    rest = await asyncio.gather(
        *(kube.get("Secret", namespace, f"{prefix}-{i}") for i in range(1, count))
    )
    parts = [first]
    for index, secret in enumerate(rest, start=1):
        data, other, total = _chunk(secret, quarantine, index)
        if other != digest or total != count:
            raise StoredEvidenceError(
                f"evidence of quarantine {quarantine}: chunk {index} belongs to another bundle"
            )
        parts.append(data)
    blob = b"".join(parts)
    if _digest(blob) != digest:
        raise StoredEvidenceError(
            f"stored evidence of quarantine {quarantine} does not match its digest {digest}"
        )
    return blob


# --- keys ----------------------------------------------------------------------------------


def _secret(namespace: str, name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(_PART_OF)},
        "data": {k: base64.b64encode(v).decode("ascii") for k, v in data.items()},
    }


async def _get_or_create(
    kube: KubeClient, namespace: str, name: str, make: Callable[[], dict[str, bytes]], create: bool
) -> dict[str, bytes]:
    """The data of Secret ``name``; created from ``make()`` if absent (one winner in a race)."""
    for _ in range(_CREATE_ATTEMPTS):
        live = await kube.get("Secret", namespace, name)
        if live is not None:
            return {k: base64.b64decode(v) for k, v in (live.get("data") or {}).items()}
        if not create:
            raise StoredEvidenceError(f"Secret {namespace}/{name} not found")
        try:
            made = await _create(kube, _secret(namespace, name, make()))
        except NotLeader:
            raise ApiError(503, "NotLeader", f"Secret {name} is created by the leader") from None
        if made is not None:
            return {k: base64.b64decode(v) for k, v in (made.get("data") or {}).items()}
    raise ApiError(409, "Conflict", f"Secret {namespace}/{name} kept changing; retry later")


def _public_of(private_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    try:
        key = load_private_key(private_pem, None)
    except SignatureError as exc:
        raise StoredEvidenceError(f"Secret {SIGNING_SECRET}: {exc}") from None
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def evidence_keys(
    kube: KubeClient, namespace: str, *, create: bool = True
) -> tuple[bytes, bytes, bytes]:
    """(KEK, signing key PEM, public key PEM), created on first use; the public key is
    published in ConfigMap ``secureai-evidence-signer`` (``signer.pub``).

    ``create=False`` only reads (what ``secureai quarantine evidence`` does)."""
    kek_data = await _get_or_create(
        kube, namespace, KEK_SECRET, lambda: {KEK_KEY: format_kek(generate_kek())}, create
    )
    try:
        kek = load_kek(kek_data.get(KEK_KEY, b""))
    except InvalidKeyError as exc:
        raise StoredEvidenceError(f"Secret {KEK_SECRET}: {exc}") from None
    signing = await _get_or_create(
        kube,
        namespace,
        SIGNING_SECRET,
        lambda: {SIGNING_KEY: generate_signing_key().private_key_pem},
        create,
    )
    private_pem = signing.get(SIGNING_KEY, b"")
    public_pem = _public_of(private_pem)
    if create:
        await _publish(kube, namespace, public_pem)
    return kek, private_pem, public_pem


async def _publish(kube: KubeClient, namespace: str, public_pem: bytes) -> None:
    """Make ConfigMap ``secureai-evidence-signer`` hold the public key of the signing Secret."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": SIGNER_CONFIGMAP, "namespace": namespace, "labels": dict(_PART_OF)},
        "data": {PUBLIC_KEY: public_pem.decode("ascii")},
    }
    try:
        for _ in range(_CREATE_ATTEMPTS):
            live = await kube.get("ConfigMap", namespace, SIGNER_CONFIGMAP)
            if live is None:
                if await _create(kube, body) is not None:
                    return
                continue
            if (live.get("data") or {}).get(PUBLIC_KEY) == body["data"][PUBLIC_KEY]:
                return
            body["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
            try:
                await kube.replace(body)
                return
            except ApiError as exc:
                if exc.status != 409:
                    raise
    except NotLeader:
        return  # the leader publishes it


async def public_key(kube: KubeClient, namespace: str) -> bytes:
    """The published evidence public key (ConfigMap ``secureai-evidence-signer``)."""
    live = await kube.get("ConfigMap", namespace, SIGNER_CONFIGMAP)
    pem = ((live or {}).get("data") or {}).get(PUBLIC_KEY)
    if not pem:
        raise StoredEvidenceError(
            f"ConfigMap {namespace}/{SIGNER_CONFIGMAP} with key {PUBLIC_KEY} not found"
        )
    return str(pem).encode("ascii", "replace")


async def seal_and_store(
    kube: KubeClient,
    namespace: str,
    quarantine: str,
    reason: str,
    workloads: Sequence[tuple[str, str, str]],
    *,
    clock: Clock | None = None,
) -> tuple[str, str]:
    """Collect, seal (in a thread: CPU-bound) and store the evidence of a Quarantine; return
    (reference, bundle digest). Called once containment is in place, never before."""
    kek, signing_key, _ = await evidence_keys(kube, namespace)
    files = await collect(kube, workloads, clock=clock)
    meta = {"quarantine": quarantine, "reason": reason[:1024]}
    blob = await asyncio.to_thread(seal, files, kek, signing_key, meta)
    return await store(kube, namespace, quarantine, blob), _digest(blob)
