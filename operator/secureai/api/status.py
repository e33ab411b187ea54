"""Status written by the operator (never spec)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from secureai.api.base import Model

# Ready, plus kstatus's Stalled (terminal failure) and Reconciling (work in flight).
CONDITION_TYPES = (
    "Ready",
    "Stalled",
    "Reconciling",
    "Isolated",
    "Hardened",
    "Encrypted",
    "Placed",
    "Quarantined",
    "Drift",
)
Phase = Literal[
    "Pending", "Running", "Ready", "Succeeded", "Failed", "Rejected", "Degraded", "Quarantined"
]


class Condition(Model):
    """A standard Kubernetes condition."""

    type: str = Field(description=", ".join(CONDITION_TYPES[:-1]) + " or Drift.")
    status: Literal["True", "False", "Unknown"] = Field(description="Condition status.")
    reason: str = Field(description="CamelCase machine-readable reason.")
    message: str = Field(default="", description="Human-readable detail.")
    observed_generation: int = Field(default=0, description="Generation this was computed for.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")


class ChildRef(Model):
    """A child object that the operator owns."""

    kind: str = Field(description="Kind of the child.")
    name: str = Field(description="Name of the child.")


class DatasetCensus(Model):
    """What a dataset's init container reported: its digests (encrypted datasets) and the
    personal data it found (scanned datasets): counts, never values."""

    claim_name: str = Field(description="The dataset's PVC.")
    files: int | None = Field(default=None, ge=0, description="Files scanned in the dataset.")
    unreadable: int | None = Field(
        default=None, ge=0, description="Files that could not be scanned."
    )
    bytes: int | None = Field(default=None, ge=0, description="Plaintext bytes scanned.")
    envelope_digest: str | None = Field(
        default=None,
        description="sha256 of the canonical manifest of the encrypted files (as a model "
        "digest is made).",
    )
    plaintext_digest: str | None = Field(
        default=None, description="sha256 of the canonical manifest of the decrypted files."
    )
    counts: dict[str, int] | None = Field(default=None, description="Values found, per type.")
    violation: str | None = Field(
        default=None, description="Why the personal-data rule refused the dataset."
    )


class ProvenanceRef(Model):
    """A signed provenance record of a training run (docs/provenance.md)."""

    record: str = Field(description="ConfigMap holding the record (namespace/name).")
    statement_digest: str = Field(description="sha256 of the signed in-toto Statement.")
    training_job: str = Field(description="The SecureTrainingJob (namespace/name) of the run.")
    output: str | None = Field(default=None, description="The output PVC (namespace/name).")
    finished_on: str | None = Field(default=None, description="When the run ended.")
    output_deleted_on: str | None = Field(
        default=None, description="When retention deleted the output."
    )
    verified: bool = Field(
        default=False, description="The signature verified with the operator's key."
    )


class Lineage(Model):
    """What the workload was built from."""

    image_digest: str | None = Field(default=None, description="sha256 digest of the image.")
    model_digest: str | None = Field(default=None, description="Digest of the model manifest.")
    model_signer: str | None = Field(
        default=None, description="Fingerprint of the key that signed the model."
    )
    datasets: list[str] | None = Field(default=None, description="Dataset PVCs mounted.")
    dataset_census: list[DatasetCensus] | None = Field(
        default=None,
        description="Personal-data census of each scanned dataset (docs/data-minimisation.md).",
    )
    provenance: ProvenanceRef | None = Field(
        default=None,
        description="Training: this run's signed provenance. Inference: that of the run whose "
        "output volume holds the model.",
    )


class DriftStatus(Model):
    """Drift reverted by the operator."""

    reverts_total: int = Field(default=0, description="Reverts since creation.")
    last_revert_time: str | None = Field(default=None, description="Time of the last revert.")
    last_object: str | None = Field(
        default=None, description="Kind/name of the last reverted child."
    )


class TlsStatus(Model):
    """The serving certificate."""

    not_after: str | None = Field(default=None, description="Expiry of the serving certificate.")
    secret_name: str | None = Field(default=None, description="Secret holding it.")


class WorkloadStatus(Model):
    """Observed state of a secureai workload."""

    phase: Phase | None = Field(default=None, description="Lifecycle phase.")
    observed_generation: int | None = Field(
        default=None,
        description="Generation last reconciled; 0 (a schema default) until the first one, so "
        "that kstatus never reads a new workload as Current.",
    )
    gpus: int | None = Field(default=None, description="GPUs requested across all pods.")
    ready_replicas: int | None = Field(default=None, description="Ready pods (inference).")
    conditions: list[Condition] | None = Field(default=None, description="Conditions.")
    children: list[ChildRef] | None = Field(default=None, description="Owned children.")
    lineage: Lineage | None = Field(default=None, description="Provenance.")
    drift: DriftStatus | None = Field(default=None, description="Drift reverts.")
    tls: TlsStatus | None = Field(default=None, description="Serving certificate (inference).")
