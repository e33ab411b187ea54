"""Which Quarantines contain a workload. Pure: the caller gathers the facts once.

A workload is contained by an active Quarantine that matches it now, or that matched it once
(recorded in the Quarantine's status): containment is sticky until release, so changing the
spec (say, to a new model) does not let a workload out on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from secureai.api.quarantine import LabelSelector, Quarantine
from secureai.judge.drift import Expected, differences
from secureai.judge.isolation import selects
from secureai.render.containment import RULES, Containment
from secureai.render.validate import image_digest


@dataclass(frozen=True)
class WorkloadFacts:
    """What a Quarantine can match on, gathered from the CR, its status and its children."""

    kind: str
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    image_digests: frozenset[str] = frozenset()
    model_digests: frozenset[str] = frozenset()
    dataset_digests: frozenset[str] = frozenset()
    created: str = ""  # metadata.creationTimestamp (RFC 3339, sortable)

    @property
    def ref(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)


def _images(manifests: Iterable[Mapping[str, Any]]) -> set[str]:
    out: set[str] = set()
    for manifest in manifests:
        template = ((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}
        for key in ("initContainers", "containers"):
            for container in template.get(key) or []:
                digest = image_digest(str(container.get("image") or ""))
                if digest:
                    out.add(digest)
    return out


def facts_of(
    body: Mapping[str, Any],
    desired: Iterable[Mapping[str, Any]] = (),
    model_digest: str | None = None,
) -> WorkloadFacts:
    """Facts from a workload's body (spec, status lineage) and its rendered children."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    lineage = (body.get("status") or {}).get("lineage") or {}
    images = _images(desired)
    for image in (spec.get("image"),):
        digest = image_digest(str(image or ""))
        if digest:
            images.add(digest)
    if lineage.get("imageDigest"):
        images.add(str(lineage["imageDigest"]))
    models = {str(d) for d in (model_digest, lineage.get("modelDigest")) if d}
    datasets = {
        str(c[key])
        for c in lineage.get("datasetCensus") or []
        for key in ("envelopeDigest", "plaintextDigest")
        if isinstance(c, dict) and c.get(key)
    }
    return WorkloadFacts(
        kind=str(body.get("kind") or ""),
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        labels=dict(meta.get("labels") or {}),
        image_digests=frozenset(images),
        model_digests=frozenset(_normal(d) for d in models),
        dataset_digests=frozenset(_normal(d) for d in datasets),
        created=str(meta.get("creationTimestamp") or ""),
    )


def _normal(digest: str) -> str:
    return digest if digest.startswith("sha256:") else f"sha256:{digest}"


def _selector(selector: LabelSelector) -> dict[str, Any]:
    return selector.wire()


def matched_by(quarantine: Quarantine, facts: WorkloadFacts) -> str | None:
    """Which entry of spec.match selects the workload (None: not matched)."""
    match = quarantine.spec.match
    for ref in match.workloads or []:
        if (
            ref.namespace == facts.namespace
            and ref.name == facts.name
            and ref.kind in (None, facts.kind)
        ):
            return f"workload {facts.namespace}/{facts.name}"
    if facts.namespace in (match.namespaces or []):
        return f"namespace {facts.namespace}"
    if match.selector is not None and selects(_selector(match.selector), facts.labels):
        return "selector"
    for what, wanted, have in (
        ("image", match.image_digests, facts.image_digests),
        ("model", match.model_digests, facts.model_digests),
        ("dataset", match.dataset_digests, facts.dataset_digests),
    ):
        hit = sorted(set(wanted or ()) & have)
        if hit:
            return f"{what} {hit[0]}"
    return None


def blocked_by(quarantine: Quarantine, facts: WorkloadFacts) -> str | None:
    """A new workload (created after the Quarantine) whose images a blocking Quarantine lists
    is refused, not contained: the reason, or None. Model and dataset digests are known only
    once a pod has verified or decrypted them: such a workload is contained instead."""
    if not quarantine.active or not quarantine.spec.block_admission:
        return None
    created = quarantine.metadata.creation_timestamp or ""
    if not facts.created or not created or facts.created < created:
        return None
    hit = sorted(set(quarantine.spec.match.image_digests or ()) & facts.image_digests)
    if not hit:
        return None
    return f"Quarantine/{quarantine.metadata.name} blocks image {hit[0]}: {quarantine.spec.reason}"


def containment(
    quarantines: Iterable[Quarantine],
    facts: WorkloadFacts,
    recorded: Mapping[str, set[tuple[str, str, str]]],
    evidence_done: Mapping[str, bool],
) -> Containment | None:
    """The containment of a workload under every active Quarantine, or None.

    `recorded`: Quarantine name -> workloads it has contained (sticky); `evidence_done`:
    whether a Quarantine's evidence is sealed (a Stop waits for it, isolation never does)."""
    names: list[str] = []
    reasons: list[str] = []
    stop = False
    for quarantine in sorted(quarantines, key=lambda q: q.metadata.name):
        if not quarantine.active:
            continue
        name = quarantine.metadata.name
        sticky = facts.ref in recorded.get(name, set())
        if not sticky and matched_by(quarantine, facts) is None:
            continue
        names.append(name)
        reasons.append(f"Quarantine/{name} ({quarantine.spec.action}): {quarantine.spec.reason}")
        if quarantine.spec.action == "Stop" and (
            not quarantine.spec.collect_evidence or evidence_done.get(name, False)
        ):
            stop = True
    if not names:
        return None
    return Containment(tuple(names), stop, "; ".join(reasons)[:1000])


def contained_expected(
    plain: Expected, contained: dict[str, Any], stored: dict[str, Any]
) -> Expected | None:
    """The expected (stored) form of a contained policy, from the expected form of the
    rendered one and the policy as the containment's rules patch left it: when the stored
    policy is the rendered one in all but its rules, it is the contained form exactly (no
    dry-run needed). None when anything else differs: drift the full reconcile compares."""
    spec = dict(stored.get("spec") or {})
    if spec.get("ingress") or spec.get("egress"):
        return None
    if spec.get("policyTypes") != contained["spec"]["policyTypes"]:
        return None
    rendered = dict(json.loads(plain.text).get("spec") or {})
    for key in RULES:
        spec.pop(key, None)
        if key in rendered:
            spec[key] = rendered[key]
    if differences(plain, {**stored, "spec": spec}):
        return None
    return Expected.of(contained, stored)
