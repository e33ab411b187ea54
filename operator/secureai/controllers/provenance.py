"""Signed provenance of training runs, the output retention it schedules, and the lineage an
inference service gets from it (docs/provenance.md).

When a SecureTrainingJob's run ends, a DSSE-signed in-toto Statement (SLSA Provenance v1) is
written to a ConfigMap in the operator's namespace, owned by nothing: it outlives the workload
and the data. The signing key is an ECDSA P-256 key the operator generates on first use and
keeps in a Secret there; its public key is published in a ConfigMap beside it.

When the output's retention ends (``spec.retention.outputTtlSecondsAfterFinished``, or the
policy's maximum), the output PVC is deleted, with an Event before and after, and a second
signed Statement, that the volume was deleted and when, is added to the record. Each deadline is
a timer set for that moment (set again from the records when the operator starts), never a poll.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from secureai.api import Policy, SecureInferenceService, SecureTrainingJob
from secureai.clock import Clock
from secureai.controllers.state import Entry
from secureai.crypto.provenance import SignatureError, sign_statement, verify_envelope
from secureai.crypto.signing import generate_signing_key
from secureai.judge import lifecycle
from secureai.k8s.client import ApiError, KubeClient, NotLeader
from secureai.render.meta import selector
from secureai.render.training import output_claim_name

log = logging.getLogger("secureai")

KEY_SECRET: Final = "secureai-provenance-key"  # noqa: S105 - a name
PUBLIC_KEY_CONFIGMAP: Final = "secureai-provenance-key"
PUBLIC_KEY_ITEM: Final = "provenance.pub"
RECORD_PREFIX: Final = "secureai-provenance-"
STATEMENT_ITEM: Final = "provenance.dsse.json"
DELETION_ITEM: Final = "output-deleted.dsse.json"
LABEL_RECORD: Final = "secureai.dev/provenance"
LABEL_OUTPUT_UID: Final = "secureai.dev/output-uid"
LABEL_NAMESPACE: Final = "secureai.dev/workload-namespace"
LABEL_WORKLOAD: Final = "secureai.dev/workload-name"
FINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})
_RETRY_SECONDS: Final = 5.0
_LOOKUP_SECONDS: Final = 30.0
_GONE_SECONDS: Final = 30.0
_IN_USE: Final = "retention ended; deletion requested, the volume is still in use"

Emit = Callable[[dict[str, Any], str, str, str], None]


def record_name(workload_uid: str) -> str:
    return RECORD_PREFIX + workload_uid


def statement_digest(envelope: dict[str, Any]) -> str:
    """``sha256:`` of the signed payload (the Statement's bytes as signed)."""
    return "sha256:" + hashlib.sha256(base64.b64decode(envelope["payload"])).hexdigest()


@dataclass(frozen=True)
class Verified:
    """A record whose statements verified."""

    name: str
    statement: dict[str, Any]
    digest: str
    deleted_on: str | None

    def ref(self, namespace: str) -> dict[str, Any]:
        facts = lifecycle.summary(self.statement)
        volume = lifecycle.output_volume(self.statement)
        out: dict[str, Any] = {
            "record": f"{namespace}/{self.name}",
            "statementDigest": self.digest,
            "trainingJob": facts["trainingJob"],
            "verified": True,
        }
        if volume is not None:
            out["output"] = f"{volume.get('namespace')}/{volume.get('name')}"
        if facts["finishedOn"]:
            out["finishedOn"] = facts["finishedOn"]
        if self.deleted_on:
            out["outputDeletedOn"] = self.deleted_on
        return out


def verify_record(data: dict[str, str], public_key_pem: bytes, name: str = "") -> Verified:
    """Verify a record ConfigMap's ``data``: the provenance, and the deletion statement if
    there is one (which must name the same subject and this provenance). SignatureError."""
    raw = data.get(STATEMENT_ITEM)
    if not raw:
        raise SignatureError(f"record has no {STATEMENT_ITEM}")
    statement = verify_envelope(raw, public_key_pem, lifecycle.PROVENANCE_TYPE)
    _check_shape(statement)
    digest = statement_digest(json.loads(raw))
    deleted_on = None
    if DELETION_ITEM in data:
        deletion = verify_envelope(data[DELETION_ITEM], public_key_pem, lifecycle.DELETION_TYPE)
        predicate = deletion["predicate"]
        if deletion["subject"] != statement["subject"]:
            raise SignatureError("the deletion statement names another subject")
        if predicate.get("provenance") != {"sha256": digest.removeprefix("sha256:")}:
            raise SignatureError("the deletion statement is about another provenance statement")
        deleted_on = str(predicate.get("deletedOn"))
    return Verified(name, statement, digest, deleted_on)


def _check_shape(statement: dict[str, Any]) -> None:
    """The fields `show` and retention read must be there (signed, yet still checked)."""
    try:
        lifecycle.summary(statement)
        lifecycle.delete_after(statement)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        raise SignatureError("malformed provenance: missing SLSA fields") from None


class Lifecycle:
    """Records provenance, keeps retention timers, links inference services to records."""

    def __init__(
        self, kube: KubeClient, policy: Policy, namespace: str, clock: Clock, emit: Emit
    ) -> None:
        self.kube = kube
        self.policy = policy
        self.namespace = namespace
        self.clock = clock
        self.emit = emit
        self._private: bytes | None = None
        self._public: bytes | None = None
        self._key_lock = asyncio.Lock()
        self._recorded: dict[str, Verified] = {}  # by workload uid
        self._timers: dict[str, asyncio.Task[None]] = {}  # by record name
        self.expired: set[str] = set()  # workload uids whose output retention deleted
        self._invalid: set[str] = set()  # records reported as not verifying
        self._links: dict[tuple[str, str], tuple[str | None, float, dict[str, Any] | None]] = {}

    # --- the key ---------------------------------------------------------------------------

    async def keys(self) -> tuple[bytes, bytes]:
        """(private PEM, public PEM): read from the Secret, made on first use (the leader)."""
        if self._private is not None and self._public is not None:
            return self._private, self._public
        async with self._key_lock:
            for _ in range(5):
                secret = await self.kube.get("Secret", self.namespace, KEY_SECRET)
                if secret is not None:
                    data = secret.get("data") or {}
                    self._private = base64.b64decode(data.get("key.pem") or "")
                    self._public = base64.b64decode(data.get("key.pub") or "")
                    await self._publish(self._public)
                    return self._private, self._public
                pair = generate_signing_key()
                body = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "type": "Opaque",
                    "metadata": {
                        "name": KEY_SECRET,
                        "namespace": self.namespace,
                        "labels": {"app.kubernetes.io/part-of": "secureai"},
                    },
                    "data": {
                        "key.pem": base64.b64encode(pair.private_key_pem).decode(),
                        "key.pub": base64.b64encode(pair.public_key_pem).decode(),
                    },
                }
                try:
                    await self.kube.request(
                        "POST", f"/api/v1/namespaces/{self.namespace}/secrets", body=body
                    )
                except ApiError as exc:
                    if exc.status != 409:  # another replica made it first: read that one
                        raise
                    continue
                log.info("provenance signing key %s created", pair.fingerprint)
        raise ApiError(409, "Conflict", "the provenance key Secret kept changing")

    async def _publish(self, public_pem: bytes) -> None:
        with contextlib.suppress(NotLeader):
            await self.kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": PUBLIC_KEY_CONFIGMAP,
                        "namespace": self.namespace,
                        "labels": {"app.kubernetes.io/part-of": "secureai"},
                    },
                    "data": {PUBLIC_KEY_ITEM: public_pem.decode("ascii")},
                }
            )

    # --- status hook -----------------------------------------------------------------------

    async def on_status(
        self, entry: Entry, status: dict[str, Any], job: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Record a finished run (once) and put its record, or the training record of an
        inference service's model volume, in status lineage."""
        model = entry.model
        ref = None
        if isinstance(model, SecureTrainingJob):
            done = status.get("phase") in FINAL_PHASES and job is not None
            uid = model.metadata.uid
            verified = self._recorded.get(uid)
            if verified is None and done and job is not None:
                verified = await self.record(entry, model, job)
            if verified is not None:
                ref = verified.ref(self.namespace)
        elif isinstance(model, SecureInferenceService):
            ref = await self._link(model)
        if ref is None:
            return status
        return {**status, "lineage": {**(status.get("lineage") or {}), "provenance": ref}}

    # --- recording -------------------------------------------------------------------------

    async def record(
        self, entry: Entry, model: SecureTrainingJob, job: dict[str, Any]
    ) -> Verified | None:
        name = record_name(model.metadata.uid)
        _, public = await self.keys()
        live = await self.kube.get("ConfigMap", self.namespace, name)
        if live is None:
            live = await self._write_record(entry, model, job, name)
            if live is None:
                return None
        try:
            verified = verify_record(live.get("data") or {}, public, name)
        except SignatureError as exc:
            log.error("provenance record %s does not verify: %s", name, exc)
            if name not in self._invalid:  # once, not at every status write
                self._invalid.add(name)
                self.emit(entry.body, "Warning", "ProvenanceInvalid", f"ConfigMap/{name}: {exc}")
            return None
        self._invalid.discard(name)
        self._recorded[model.metadata.uid] = verified
        if verified.deleted_on:
            self.expired.add(model.metadata.uid)
        else:
            self.schedule(verified, entry.body)
        return verified

    async def _write_record(
        self, entry: Entry, model: SecureTrainingJob, job: dict[str, Any], name: str
    ) -> dict[str, Any] | None:
        private, _ = await self.keys()
        ns = model.metadata.namespace
        output = None
        if model.spec.output is not None:
            output = await self.kube.get("PersistentVolumeClaim", ns, output_claim_name(model))
        datasets = {
            d.claim_name: await self.kube.get("PersistentVolumeClaim", ns, d.claim_name)
            for d in model.spec.datasets or []
        }
        lineage = (entry.body.get("status") or {}).get("lineage") or {}
        census = list(lineage.get("datasetCensus") or entry.dataset_census)
        statement = lifecycle.provenance_statement(
            model,
            dict(entry.body.get("spec") or {}),
            self.policy,
            job,
            output_pvc=output,
            dataset_pvcs=datasets,
            census=census,
            nodes=await self._nodes(model),
        )
        envelope = sign_statement(statement, private)
        labels = {
            "app.kubernetes.io/part-of": "secureai",
            LABEL_RECORD: "true",
            LABEL_NAMESPACE: ns,
            LABEL_WORKLOAD: model.metadata.name,
        }
        if output is not None:
            labels[LABEL_OUTPUT_UID] = str(output["metadata"].get("uid"))
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "data": {STATEMENT_ITEM: json.dumps(envelope, sort_keys=True)},
        }
        try:
            created = await self.kube.request(
                "POST", f"/api/v1/namespaces/{self.namespace}/configmaps", body=body
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
            return await self.kube.get("ConfigMap", self.namespace, name)
        self.emit(
            entry.body,
            "Normal",
            "ProvenanceRecorded",
            f"signed provenance in ConfigMap {self.namespace}/{name} "
            f"({statement_digest(envelope)})",
        )
        return created

    async def _nodes(self, model: SecureTrainingJob) -> dict[str, str | None]:
        """The nodes the run's pods ran on, each with the pool that placed it (the spec's GPU
        pool, whose nodeSelector the pods carried; nodes themselves are not read)."""
        text = ",".join(f"{k}={v}" for k, v in selector(model).items())
        pods = await self.kube.list("Pod", model.metadata.namespace, label_selector=text)
        pool = model.spec.gpu.pool if model.spec.gpu is not None else None
        return {
            str(node): pool for pod in pods if (node := (pod.get("spec") or {}).get("nodeName"))
        }

    # --- retention -------------------------------------------------------------------------

    def schedule(self, verified: Verified, workload: dict[str, Any] | None) -> None:
        """Set a timer for the output's deadline (at once if it has passed)."""
        deadline = lifecycle.delete_after(verified.statement)
        if deadline is None or verified.deleted_on or verified.name in self._timers:
            return
        task = asyncio.get_running_loop().create_task(self._expire(verified, deadline, workload))
        self._timers[verified.name] = task
        task.add_done_callback(lambda t: self._timer_done(verified.name, t))
        volume = lifecycle.output_volume(verified.statement) or {}
        if workload is not None and deadline > self.clock.now():
            self.emit(
                workload,
                "Normal",
                "OutputRetention",
                f"PersistentVolumeClaim/{volume.get('name')} will be deleted at "
                f"{lifecycle.iso_z(deadline)}",
            )

    def _timer_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._timers.get(name) is task:
            del self._timers[name]
        if not task.cancelled() and task.exception() is not None:
            log.warning("output retention of %s failed: %s", name, task.exception())

    async def _expire(
        self, verified: Verified, deadline: datetime, workload: dict[str, Any] | None
    ) -> None:
        while True:
            wait = (deadline - self.clock.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)  # wake at the deadline
            try:
                await self._delete_output(verified, deadline, workload)
                return
            except (ApiError, NotLeader) as exc:  # a standby, or an API error: try again
                log.info("output retention of %s postponed: %s", verified.name, exc)
                deadline = self.clock.now()
                await asyncio.sleep(_RETRY_SECONDS)

    async def _delete_output(
        self, verified: Verified, deadline: datetime, workload: dict[str, Any] | None
    ) -> None:
        """Delete the output PVC recorded in ``verified`` (the same uid only), and the finished
        Job of the run if it is still there: Kubernetes keeps a PVC while any pod that mounts
        it exists, finished ones included. Waits for the PVC to be gone, then notes it."""
        volume = lifecycle.output_volume(verified.statement) or {}
        ns, claim = str(volume.get("namespace")), str(volume.get("name"))
        live = await self.kube.get("PersistentVolumeClaim", ns, claim)
        same = live is not None and live["metadata"].get("uid") == volume.get("uid")
        about = workload or await self._workload(verified) or live
        reason = "already gone when retention ended"
        if same and live is not None:
            # first: the reconciler must not take the deletion for drift
            self.expired.add(lifecycle.workload_uid(verified.statement))
            late = (self.clock.now() - deadline).total_seconds()
            job = await self._finished_job(verified)
            if about is not None:
                self.emit(
                    about,
                    "Normal",
                    "OutputDeleting",
                    f"PersistentVolumeClaim/{claim}: retention ended at "
                    f"{lifecycle.iso_z(deadline)}; deleting it ({late:.1f} s after)"
                    + (f" with the finished Job/{job}, whose pods hold it" if job else ""),
                )
            if job:
                await self.kube.delete("Job", ns, job, propagation="Background")
            await self.kube.delete("PersistentVolumeClaim", ns, claim)
            reason = "retention ended"
            if not await self._gone(ns, claim, str(volume.get("uid"))):
                reason = _IN_USE
        deleted_on = self.clock.now()
        await self._note_deletion(verified, deleted_on, reason)
        if about is not None:
            self.emit(
                about,
                "Normal" if reason != _IN_USE else "Warning",
                "OutputDeleted" if reason != _IN_USE else "OutputDeletionPending",
                f"PersistentVolumeClaim/{claim}: {reason}; noted in provenance record "
                f"{self.namespace}/{verified.name}",
            )

    async def _workload(self, verified: Verified) -> dict[str, Any] | None:
        """The run's SecureTrainingJob if it still exists (the same one, by uid): where the
        retention Events go (else on the PVC)."""
        external = verified.statement["predicate"]["buildDefinition"]["externalParameters"]
        ident = external["workload"]
        body = await self.kube.get(
            "SecureTrainingJob", str(ident.get("namespace")), str(ident.get("name"))
        )
        if body is None or body["metadata"].get("uid") != ident.get("uid"):
            return None
        return body

    async def _finished_job(self, verified: Verified) -> str | None:
        """The name of the run's Job (the recorded one, by uid) if it still exists."""
        ident = lifecycle.run_job(verified.statement)
        if ident is None:
            return None
        job = await self.kube.get("Job", str(ident.get("namespace")), str(ident.get("name")))
        if job is None or job["metadata"].get("uid") != ident.get("uid"):
            return None
        return str(ident.get("name"))

    async def _gone(self, namespace: str, claim: str, uid: str) -> bool:
        """Whether the PVC is gone within _GONE_SECONDS (a pod still mounting it keeps it)."""
        stop = asyncio.get_running_loop().time() + _GONE_SECONDS
        while True:
            live = await self.kube.get("PersistentVolumeClaim", namespace, claim)
            if live is None or live["metadata"].get("uid") != uid:
                return True
            if asyncio.get_running_loop().time() > stop:
                return False
            await asyncio.sleep(0.1)

    async def _note_deletion(self, verified: Verified, deleted_on: datetime, reason: str) -> None:
        private, public = await self.keys()
        statement = lifecycle.deletion_statement(
            verified.statement, verified.digest.removeprefix("sha256:"), deleted_on, reason
        )
        envelope = sign_statement(statement, private)
        patched = await self.kube.request(
            "PATCH",
            f"/api/v1/namespaces/{self.namespace}/configmaps/{verified.name}",
            body={"data": {DELETION_ITEM: json.dumps(envelope, sort_keys=True)}},
            content_type="application/merge-patch+json",
        )
        uid = lifecycle.workload_uid(verified.statement)
        self.expired.add(uid)
        self._recorded[uid] = verify_record(patched.get("data") or {}, public, verified.name)

    async def resume(self) -> int:
        """Set the timers of every record whose output is still due for deletion (start-up)."""
        _, public = await self.keys()
        records = await self.kube.list("ConfigMap", self.namespace, f"{LABEL_RECORD}=true")
        count = 0
        for body in records:
            name = body["metadata"]["name"]
            try:
                verified = verify_record(body.get("data") or {}, public, name)
            except SignatureError as exc:
                log.error("provenance record %s does not verify: %s", name, exc)
                continue
            uid = lifecycle.workload_uid(verified.statement)
            self._recorded[uid] = verified
            if verified.deleted_on:
                self.expired.add(uid)
            elif (deadline := lifecycle.delete_after(verified.statement)) is not None:
                if deadline <= self.clock.now():  # due: never re-created as drift meanwhile
                    self.expired.add(uid)
                self.schedule(verified, None)
                count += 1
        return count

    def output_expired(self, workload_uid: str) -> bool:
        return workload_uid in self.expired

    # --- inference lineage -----------------------------------------------------------------

    async def _link(self, model: SecureInferenceService) -> dict[str, Any] | None:
        """The record of the training run whose output volume is the model's PVC (matched
        by the PVC's uid, then verified), looked up at most every 30 s while none is found."""
        ns, claim = model.metadata.namespace, model.spec.model.claim_name
        key = (ns, claim)
        cached = self._links.get(key)
        now = asyncio.get_running_loop().time()
        if cached is not None and (cached[2] is not None or now - cached[1] < _LOOKUP_SECONDS):
            return cached[2]
        pvc = await self.kube.get("PersistentVolumeClaim", ns, claim)
        uid = str((pvc or {}).get("metadata", {}).get("uid") or "")
        ref = None
        if uid:
            _, public = await self.keys()
            selected = f"{LABEL_RECORD}=true,{LABEL_OUTPUT_UID}={uid}"
            for body in await self.kube.list("ConfigMap", self.namespace, selected):
                name = body["metadata"]["name"]
                try:
                    verified = verify_record(body.get("data") or {}, public, name)
                except SignatureError as exc:
                    log.error("provenance record %s does not verify: %s", name, exc)
                    continue
                if (lifecycle.output_volume(verified.statement) or {}).get("uid") == uid:
                    ref = verified.ref(self.namespace)
                    break
        self._links[key] = (uid or None, now, ref)
        return ref

    async def stop(self) -> None:
        for task in list(self._timers.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
