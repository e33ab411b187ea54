"""The two custom resources: SecureTrainingJob and SecureInferenceService."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from secureai.api.base import DNS_LABEL_PATTERN, QUANTITY_PATTERN, Model, cel
from secureai.api.status import WorkloadStatus
from secureai.api.validation import INT32_MAX, DnsSubdomain, PositiveQuantity, RelativePath
from secureai.api.workload import WorkloadSpec

PATH_PATTERN = r"^/[^:]*$"


class Dataset(Model):
    """An existing PersistentVolumeClaim, mounted read-only."""

    claim_name: DnsSubdomain = Field(description="Name of the existing PVC.")
    mount_path: str | None = Field(
        default=None,
        pattern=PATH_PATTERN,
        description="Where the data appears. Omitted: /datasets/<claimName>.",
    )
    encrypted: bool = Field(
        default=False,
        description="The files are secureai envelopes; an init container decrypts them into "
        "a memory-backed volume so plaintext never touches disk.",
    )
    key_secret: DnsSubdomain | None = Field(
        default=None,
        description="Secret holding the key-encryption key (key `kek`). Required when encrypted.",
    )
    decrypted_size_limit: str | None = Field(
        default=None,
        pattern=QUANTITY_PATTERN,
        description="Size limit of the memory volume that holds decrypted data (default 1Gi).",
    )


class Output(Model):
    """An output PVC that the operator creates on an encrypted StorageClass."""

    size: PositiveQuantity = Field(description="Requested capacity, e.g. `100Gi`.")
    storage_class_name: DnsSubdomain | None = Field(
        default=None,
        description="An encrypted StorageClass from policy. Omitted: the first one in policy.",
    )
    mount_path: str | None = Field(
        default=None, pattern=PATH_PATTERN, description="Mount path. Omitted: /output."
    )


class Scratch(Model):
    """A memory-backed emptyDir for temporary data."""

    size_limit: str = Field(pattern=QUANTITY_PATTERN, description="Size limit, e.g. `2Gi`.")
    mount_path: str | None = Field(
        default=None, pattern=PATH_PATTERN, description="Mount path. Omitted: /scratch."
    )


class Retention(Model):
    """What happens after the job finishes."""

    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=INT32_MAX,
        description="Delete the finished Job (and its pods) after this time.",
    )
    keep_output: bool = Field(
        default=True,
        description="Keep the output PVC when the SecureTrainingJob is deleted.",
    )
    output_ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=INT32_MAX,
        description="Delete the output PVC this long after the run ends (an Event before and "
        "after; the provenance record notes when). Omitted: the cluster policy's "
        "maxOutputTtlSeconds, if it sets one, else kept. More than that maximum is rejected.",
    )


PersonalDataType = Literal[
    "email", "phone", "payment_card", "us_ssn", "ip_address", "iban", "secret"
]


class SecureTrainingJobSpec(WorkloadSpec):
    """Desired state of a SecureTrainingJob."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.datasets) || "
                    "self.datasets.all(d, !(has(d.encrypted) && d.encrypted) || has(d.keySecret))",
                    "an encrypted dataset needs keySecret",
                ),
            ]
        }
    )

    workers: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Number of pods; more than one runs an Indexed Job with a headless Service.",
    )
    datasets: list[Dataset] | None = Field(
        default=None, max_length=32, description="Existing PVCs mounted read-only."
    )
    output: Output | None = Field(default=None, description="Output volume.")
    scratch: Scratch | None = Field(default=None, description="Memory-backed scratch space.")
    backoff_limit: int | None = Field(
        default=None, ge=0, le=100, description="Retries before the Job fails (default 0)."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Wall-clock limit of the whole Job."
    )
    retention: Retention | None = Field(default=None, description="Cleanup after completion.")
    allowed_personal_data: list[PersonalDataType] | None = Field(
        default=None,
        max_length=7,
        description="Personal-data types the datasets may contain (empty: none). When set "
        "(here or by cluster policy, which it can only narrow), every dataset is scanned "
        "before the trainer starts, while it is decrypted, and a dataset holding another "
        "type, or a file that cannot be scanned, fails the run.",
    )


class ModelSource(Model):
    """The model files and the key that must have signed them."""

    claim_name: DnsSubdomain = Field(description="PVC that holds the model.")
    sub_path: RelativePath | None = Field(
        default=None, description="Directory of the model inside the PVC (a relative path)."
    )
    signer_key_config_map: DnsSubdomain = Field(
        description="ConfigMap with the signer's public key (PEM, key `signer.pub`).",
    )
    bundle_file: str | None = Field(
        default=None,
        max_length=253,
        description="Signature bundle inside the model directory (default `model.sig.json`).",
    )


class Tls(Model):
    """Serving certificate: the operator's CA by default, or a user Secret."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(has(self.mode) && self.mode == 'Secret') == has(self.secretName)",
                    "secretName is required with mode Secret and only then",
                )
            ]
        }
    )

    mode: Literal["OperatorCA", "Secret"] = Field(
        default="OperatorCA", description="Who issues the serving certificate."
    )
    secret_name: DnsSubdomain | None = Field(
        default=None,
        description="A kubernetes.io/tls Secret, with mode Secret.",
    )


class RateLimit(Model):
    """A token bucket per client identity."""

    requests_per_second: float = Field(gt=0, le=100000, description="Sustained rate.")
    burst: int = Field(ge=1, le=100000, description="Bucket size.")


class CustomPattern(Model):
    """A user-defined redaction pattern."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$", max_length=63, description="Label in `[REDACTED:<name>]`."
    )
    regex: str = Field(min_length=1, max_length=1024, description="Python regular expression.")


RedactType = Literal["email", "phone", "payment_card", "us_ssn", "ip_address", "iban", "secret"]


class Redaction(Model):
    """Output redaction."""

    types: list[RedactType] | None = Field(
        default=None, description="Detectors to run. Omitted: all of them."
    )
    custom_patterns: list[CustomPattern] | None = Field(
        default=None, max_length=64, description="Extra patterns."
    )
    requests: bool | None = Field(
        default=None,
        description="Also redact request bodies (prompts: JSON, form, text) before they reach "
        "the model server, so PII never enters its logs or context. Default false.",
    )


class Guard(Model):
    """The guard sidecar: TLS termination, limits and PII redaction in front of the model."""

    enabled: bool = Field(default=True, description="Run the guard sidecar.")
    max_body_bytes: int | None = Field(
        default=None, ge=1, description="Largest request body (413 above; default 1 MiB)."
    )
    rate_limit: RateLimit | None = Field(default=None, description="Per-client rate limit.")
    max_concurrency: int | None = Field(
        default=None, ge=1, le=100000, description="Concurrent requests (default 64)."
    )
    upstream_timeout_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="Model server timeout (504; default 30)."
    )
    redaction: Redaction | None = Field(default=None, description="Output redaction.")
    deny_patterns: list[Annotated[str, Field(min_length=1, max_length=1024)]] | None = Field(
        default=None,
        max_length=64,
        description="Request regexes answered with 400: a heuristic, not a defence.",
    )
    allow_uninspectable_paths: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = (
        Field(
            default=None,
            max_length=64,
            description="Request paths (shell-style globs such as /v2/models/*/infer) whose "
            "responses may pass uninspected (binary tensors, images). Any other response the guard "
            "cannot inspect is refused with 502.",
        )
    )


class HealthCheck(Model):
    """One health check of the model server, run by the kubelet.

    With a path, an HTTP GET that must answer 2xx or 3xx; without one, a TCP connect. With the
    guard, the model server listens on loopback only: the guard relays the check
    (`/upstream/ready`, `/upstream/live` on its metrics port), so the model server's port is
    never opened to the pod network for the kubelet's sake.
    """

    path: str | None = Field(
        default=None,
        pattern=r"^/[!-~]*$",
        max_length=256,
        description="HTTP path (e.g. `/ready`). Omitted: a TCP connect to the port.",
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Port. Omitted: the model server's `port`."
    )
    initial_delay_seconds: int | None = Field(
        default=None, ge=0, le=3600, description="Wait before the first check (default 0)."
    )
    period_seconds: int | None = Field(
        default=None, ge=1, le=3600, description="Interval between checks."
    )
    timeout_seconds: int | None = Field(
        default=None, ge=1, le=3600, description="Timeout of one check (default 1)."
    )
    failure_threshold: int | None = Field(
        default=None, ge=1, le=1000, description="Failures in a row that count as failed."
    )


class ModelServerProbes(Model):
    """When the model server receives traffic (readiness) and when it is restarted (liveness)."""

    readiness: HealthCheck | None = Field(
        default=None,
        description="Traffic only once this passes. Default: a TCP connect every 5 s.",
    )
    liveness: HealthCheck | None = Field(
        default=None,
        description="Restart after this fails. Default: a TCP connect every 10 s, failing after "
        "6 failures in a row (one minute), so a slow model load is not killed.",
    )


class SecureInferenceServiceSpec(WorkloadSpec):
    """Desired state of a SecureInferenceService."""

    replicas: int = Field(default=1, ge=0, le=1000, description="Model server pods.")
    port: int = Field(
        default=8080, ge=1024, le=65535, description="Port the model server listens on."
    )
    model: ModelSource = Field(description="Signed model, verified before the server starts.")
    tls: Tls | None = Field(default=None, description="Serving certificate.")
    guard: Guard | None = Field(default=None, description="Guard sidecar.")
    probes: ModelServerProbes | None = Field(
        default=None, description="Readiness and liveness of the model server."
    )


class ObjectMeta(Model):
    """The part of ObjectMeta the operator reads."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
        max_length=47,
        description="Name: a DNS-1035 label (it names Services) of at most 47 characters.",
    )
    namespace: str = Field(default="default", pattern=DNS_LABEL_PATTERN, max_length=63)
    uid: str = Field(default="")
    generation: int = Field(default=0)
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class _CustomResource(Model):
    """Envelope shared by both kinds: API version, metadata and status."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["secureai.dev/v1alpha1"] = Field(default="secureai.dev/v1alpha1")
    metadata: ObjectMeta
    status: WorkloadStatus | None = None


class SecureTrainingJob(_CustomResource):
    """A training job hardened by construction."""

    KIND: ClassVar[str] = "SecureTrainingJob"
    PLURAL: ClassVar[str] = "securetrainingjobs"
    SHORT: ClassVar[str] = "stj"

    kind: Literal["SecureTrainingJob"] = Field(default="SecureTrainingJob")
    spec: SecureTrainingJobSpec


class SecureInferenceService(_CustomResource):
    """An inference service hardened by construction."""

    KIND: ClassVar[str] = "SecureInferenceService"
    PLURAL: ClassVar[str] = "secureinferenceservices"
    SHORT: ClassVar[str] = "sis"

    kind: Literal["SecureInferenceService"] = Field(default="SecureInferenceService")
    spec: SecureInferenceServiceSpec


Workload = SecureTrainingJob | SecureInferenceService
KINDS: dict[str, type[SecureTrainingJob] | type[SecureInferenceService]] = {
    SecureTrainingJob.KIND: SecureTrainingJob,
    SecureInferenceService.KIND: SecureInferenceService,
}


def parse_workload(obj: dict[str, Any]) -> Workload:
    """Validate a manifest of either kind; raises ValueError or pydantic.ValidationError."""
    kind = obj.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ValueError(f"kind: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return model.model_validate(obj)
