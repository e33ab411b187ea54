"""Cluster policy: the operator's configuration, rendered by Helm into a ConfigMap."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import AliasGenerator, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from secureai.api.base import DNS_LABEL_PATTERN, Model
from secureai.api.kinds import PersonalDataType
from secureai.api.validation import DnsSubdomain, LabelKey, Labels, LabelValue

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
K8S_MIN_TOKEN_SECONDS = 600


class Toleration(Model):
    """A pod toleration."""

    key: LabelKey | None = Field(default=None, description="Taint key.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Match operator.")
    value: LabelValue | None = Field(default=None, description="Taint value (with Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect."
    )


class GpuPool(Model):
    """Where a pool's pods go."""

    node_selector: Labels = Field(
        default_factory=dict, description="Node labels the pool's pods require."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations the pool's pods get."
    )


class TokenPolicy(Model):
    """Bounds of projected service-account tokens."""

    default_seconds: int = Field(default=600, description="Lifetime when the spec sets none.")
    max_seconds: int = Field(default=3600, description="Longest lifetime a spec may ask for.")
    default_audience: str = Field(default="secureai", description="Audience of the default token.")

    @model_validator(mode="after")
    def _bounds(self) -> TokenPolicy:
        if not K8S_MIN_TOKEN_SECONDS <= self.default_seconds <= self.max_seconds:
            raise ValueError(
                f"token bounds: need {K8S_MIN_TOKEN_SECONDS} <= defaultSeconds <= maxSeconds"
            )
        return self


class DnsTarget(Model):
    """Where DNS egress may go."""

    namespace: str = Field(
        default="kube-system",
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Namespace of the DNS pods.",
    )
    pod_selector: Labels = Field(
        default_factory=lambda: {"k8s-app": "kube-dns"}, description="Labels of the DNS pods."
    )
    port: int = Field(default=53, ge=1, le=65535, description="DNS port (UDP and TCP).")


class DriftStorm(Model):
    """The same workload tampered with again and again."""

    reverts: int = Field(default=5, ge=2, le=1000, description="Reverts that make a storm.")
    window_seconds: int = Field(
        default=300, ge=10, le=86400, description="Within this many seconds."
    )


class AutoQuarantine(Model):
    """Signals on which the operator creates a Quarantine by itself (opt-in)."""

    model_verification_failed: bool = Field(
        default=False, description="A model that fails signature verification."
    )
    drift_storm: DriftStorm | None = Field(
        default=None, description="A drift storm (omitted: no quarantine on drift)."
    )
    action: Literal["Isolate", "Stop"] = Field(
        default="Isolate", description="Action of the Quarantines created."
    )


def _every_personal_data_type() -> list[PersonalDataType]:
    return list(get_args(PersonalDataType))


class Policy(BaseSettings):
    """Cluster policy, loaded from the YAML file that Helm renders into a ConfigMap."""

    model_config = SettingsConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    allowed_registries: list[str] = Field(
        default_factory=list, description="Image registries (host[/path] prefixes) allowed."
    )
    require_digest: bool = Field(default=True, description="Images must be pinned by digest.")
    encrypted_storage_classes: list[DnsSubdomain] = Field(
        default_factory=lambda: ["encrypted-ssd"],
        description="The only StorageClasses PVCs may use.",
    )
    gpu_pools: dict[str, GpuPool] = Field(default_factory=dict, description="Named GPU pools.")
    max_gpus_per_pod: int = Field(default=8, ge=1, description="Largest GPU count per pod.")
    tokens: TokenPolicy = Field(
        default_factory=TokenPolicy, description="Projected token lifetimes and audience."
    )
    dns: DnsTarget = Field(default_factory=DnsTarget, description="Where DNS egress may go.")
    pod_security_labels: bool = Field(
        default=True, description="Label workload namespaces enforce=restricted."
    )
    foreign_network_policy: Literal["report", "remove"] = Field(
        default="report", description="What to do with foreign policies selecting our pods."
    )
    operator_image: str = Field(
        default="ghcr.io/secureai/operator@sha256:" + "0" * 64,
        description="Image of the operator; runs model verification, decryption and the guard.",
    )
    run_as_user: int = Field(default=65532, ge=1, description="UID of every workload container.")
    run_as_group: int = Field(default=65532, ge=1, description="GID of every workload container.")
    certificate_lifetime_seconds: int = Field(
        default=86400, ge=3600, description="Lifetime of serving certificates."
    )
    secret_env_name_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(?i)(^|_)(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIALS?)(_|$)"
        ],
        description="Env names that look like secrets and are therefore rejected.",
    )
    dataset_allowed_personal_data: list[PersonalDataType] = Field(
        default_factory=_every_personal_data_type,
        description="Personal-data types training datasets may contain (empty: none); a "
        "SecureTrainingJob can only narrow it. Fewer than all types: every dataset is scanned.",
    )
    max_output_ttl_seconds: int | None = Field(
        default=None,
        ge=0,
        description="Longest time a training output may be kept after its run ends "
        "(spec.retention.outputTtlSecondsAfterFinished, which defaults to it). Omitted: no limit.",
    )

    auto_quarantine: AutoQuarantine = Field(
        default_factory=AutoQuarantine,
        description="Quarantines the operator creates on signals (docs/incident-response.md).",
    )

    @field_validator("allowed_registries")
    @classmethod
    def _registries(cls, value: list[str]) -> list[str]:
        return [r.rstrip("/") for r in value]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Policy:
        """Load policy from a YAML file; raises OSError or ValueError."""
        path = Path(path)
        if not path.is_file():
            raise OSError(f"{path}: no such file")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError("top level must be a mapping")
        source = YamlConfigSettingsSource(cls, yaml_file=path)
        data: dict[str, Any] = source()
        return cls(**data)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")
