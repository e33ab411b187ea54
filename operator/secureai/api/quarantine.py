"""Quarantine: a cluster-scoped incident-response object that contains every workload it
matches (by name, namespace, labels, or the digests of their image, model or datasets)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from secureai.api.base import DNS_LABEL_PATTERN, Model, cel
from secureai.api.status import Condition
from secureai.api.validation import MAX_SELECTOR_LABELS, DnsSubdomain, Labels, label_map

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
MAX_MATCHES = 256

Action = Literal["Isolate", "Stop"]
WorkloadKind = Literal["SecureTrainingJob", "SecureInferenceService"]


class WorkloadRef(Model):
    """One workload by namespace and name (kind optional: both kinds when omitted)."""

    namespace: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Namespace.")
    name: DnsSubdomain = Field(description="Name of the workload.")
    kind: WorkloadKind | None = Field(default=None, description="Kind; omitted: either kind.")


class LabelSelectorRequirement(Model):
    """A metav1.LabelSelectorRequirement."""

    key: str = Field(max_length=317, description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="Operator.")
    values: list[str] | None = Field(
        default=None, max_length=MAX_SELECTOR_LABELS, description="Values (In, NotIn)."
    )


class LabelSelector(Model):
    """A metav1.LabelSelector over the workloads' own labels."""

    match_labels: Labels | None = label_map("Labels that must all match.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=MAX_SELECTOR_LABELS, description="Requirements."
    )


Digest = Annotated[str, Field(pattern=DIGEST_PATTERN)]
NamespaceName = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=63)]


def _digests(what: str) -> Any:
    return Field(
        default=None,
        max_length=MAX_MATCHES,
        description=f"{what} digests (`sha256:<64 hex>`).",
    )


class QuarantineMatch(Model):
    """What the quarantine contains: a workload matching any entry is contained."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.workloads) || has(self.namespaces) || has(self.selector) || "
                    "has(self.imageDigests) || has(self.modelDigests) || has(self.datasetDigests)",
                    "match must name at least one of workloads, namespaces, selector, "
                    "imageDigests, modelDigests, datasetDigests",
                )
            ]
        }
    )

    workloads: list[WorkloadRef] | None = Field(
        default=None, max_length=MAX_MATCHES, description="Workloads by namespace and name."
    )
    namespaces: list[NamespaceName] | None = Field(
        default=None, max_length=MAX_MATCHES, description="Every workload of these namespaces."
    )
    selector: LabelSelector | None = Field(
        default=None, description="Workloads whose labels the selector selects."
    )
    image_digests: list[Digest] | None = _digests(
        "Image (workloads whose trainer or model-server image is pinned to one of these)"
    )
    model_digests: list[Digest] | None = _digests(
        "Model manifest (OpenSSF model-signing; as in status.lineage.modelDigest)"
    )
    dataset_digests: list[Digest] | None = _digests(
        "Dataset (envelope or plaintext, as the decrypting init container reported them in "
        "status.lineage.datasetCensus)"
    )


class QuarantineSpec(Model):
    """Desired state of a Quarantine. The operator never writes it."""

    match: QuarantineMatch = Field(description="The workloads to contain.")
    action: Action = Field(
        default="Isolate",
        description="Isolate: deny all ingress and egress, revoke credentials, keep the pods "
        "for forensics. Stop: isolate, then scale inference to zero and suspend training Jobs.",
    )
    collect_evidence: bool = Field(
        default=True,
        description="Collect an encrypted, signed evidence bundle (docs/evidence.md).",
    )
    block_admission: bool = Field(
        default=True,
        description="Refuse new workloads that match by digest (admission and operator).",
    )
    reason: str = Field(min_length=1, max_length=1024, description="Why (free text).")
    released: bool = Field(
        default=False,
        description="Lift the containment but keep the object (and its evidence reference).",
    )


class ContainedWorkload(Model):
    """One workload the quarantine contains."""

    kind: WorkloadKind = Field(description="Kind.")
    namespace: str = Field(description="Namespace.")
    name: str = Field(description="Name.")
    matched_by: str = Field(description="Which entry of spec.match selected it.")
    contained_at: str | None = Field(
        default=None, description="When its containment was in place (RFC 3339)."
    )
    containment_seconds: float | None = Field(
        default=None, description="From the quarantine's creation (or the match) to in place."
    )


class EvidenceRef(Model):
    """Where the evidence bundle is and what it hashes to."""

    reference: str = Field(description="Where the bundle is stored (docs/evidence.md).")
    digest: str = Field(description="sha256 of the sealed bundle.")
    collected_at: str = Field(description="When it was sealed (RFC 3339).")
    workloads: int = Field(default=0, description="Workloads it covers.")


class QuarantineStatus(Model):
    """Observed state of a Quarantine."""

    phase: Literal["Containing", "Contained", "Released"] | None = Field(
        default=None, description="Lifecycle phase."
    )
    observed_generation: int | None = Field(default=None, description="Generation acted on.")
    contained: list[ContainedWorkload] | None = Field(
        default=None, description="Workloads contained (sticky until release)."
    )
    contained_count: int | None = Field(default=None, description="len(contained).")
    evidence: EvidenceRef | None = Field(default=None, description="The evidence bundle.")
    conditions: list[Condition] | None = Field(default=None, description="Conditions.")


class ClusterObjectMeta(Model):
    """The part of a cluster-scoped object's metadata the operator reads."""

    model_config = ConfigDict(extra="allow")

    name: DnsSubdomain = Field(description="Name.")
    uid: str = Field(default="")
    generation: int = Field(default=0)
    creation_timestamp: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Quarantine(Model):
    """Contains every workload it matches: isolation, revoked credentials, evidence."""

    model_config = ConfigDict(extra="ignore")

    KIND: ClassVar[str] = "Quarantine"
    PLURAL: ClassVar[str] = "quarantines"
    SHORT: ClassVar[str] = "qt"

    api_version: Literal["secureai.dev/v1alpha1"] = Field(default="secureai.dev/v1alpha1")
    kind: Literal["Quarantine"] = Field(default="Quarantine")
    metadata: ClusterObjectMeta
    spec: QuarantineSpec
    status: QuarantineStatus | None = None

    @property
    def active(self) -> bool:
        return not self.spec.released
