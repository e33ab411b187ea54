"""Spec fields shared by SecureTrainingJob and SecureInferenceService."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from secureai.api.base import DNS_LABEL_PATTERN, QUANTITY_PATTERN, Model, cel
from secureai.api.validation import Cidr, DnsSubdomain, Labels, LabelValue, label_map

# The API server's limit of a projected token's lifetime (2^32 s).
MAX_TOKEN_SECONDS = 2**32

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class EnvVar(Model):
    """A plain environment variable. Secret values never go here: use `secrets`."""

    name: str = Field(
        pattern=ENV_NAME_PATTERN, max_length=128, description="Variable name (C identifier)."
    )
    value: str = Field(
        default="", max_length=4096, description="Literal value. Must not hold secret material."
    )


class Resources(Model):
    """CPU and memory of each pod. Requests always equal limits (Guaranteed QoS)."""

    cpu: str = Field(
        pattern=QUANTITY_PATTERN, description="CPU for each pod, request and limit, e.g. `2`."
    )
    memory: str = Field(
        pattern=QUANTITY_PATTERN, description="Memory for each pod, request and limit, e.g. `8Gi`."
    )


class Gpu(Model):
    """GPU placement for each pod."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.product) || (has(self.count) && self.count > 0)",
                    "product needs count > 0",
                )
            ]
        }
    )

    count: int = Field(
        default=0, ge=0, le=64, description="NVIDIA GPUs for each pod (`nvidia.com/gpu` limit)."
    )
    product: LabelValue | None = Field(
        default=None,
        description="Required `nvidia.com/gpu.product` node label, e.g. `NVIDIA-H100-80GB-HBM3`.",
    )
    pool: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="GPU pool from cluster policy; adds its nodeSelector and tolerations.",
    )


class Port(Model):
    """A port of a network rule."""

    port: int = Field(ge=1, le=65535, description="Port number.")
    protocol: Literal["TCP", "UDP", "SCTP"] = Field(default="TCP", description="Protocol.")


class NetworkPeer(Model):
    """One allow-rule: a CIDR, or namespace and/or pod selectors, with ports."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.cidr) != (has(self.namespaceSelector) || has(self.podSelector))",
                    "set either cidr, or namespaceSelector and/or podSelector",
                ),
                cel("!has(self.except) || has(self.cidr)", "except needs cidr"),
                cel(
                    "!has(self.except) || !has(self.cidr) || !isCIDR(self.cidr) || "
                    "self.except.all(e, !isCIDR(e) || (cidr(self.cidr).containsCIDR(e) && "
                    "cidr(e).prefixLength() > cidr(self.cidr).prefixLength()))",
                    "every except must be a strict subset of cidr",
                ),
            ]
        }
    )

    cidr: Cidr | None = Field(
        default=None, description="IP block in CIDR notation, e.g. `10.0.0.0/8`."
    )
    except_: list[Cidr] | None = Field(
        default=None,
        alias="except",
        max_length=32,
        description="CIDRs carved out of `cidr`: each strictly inside it.",
    )
    namespace_selector: Labels | None = label_map(
        "Labels of the peer namespaces (matchLabels). Omitted: this namespace."
    )
    pod_selector: Labels | None = label_map(
        "Labels of the peer pods (matchLabels). Omitted: all pods."
    )
    ports: list[Port] | None = Field(
        default=None,
        max_length=32,
        description="Ports allowed. Omitted: all ports (training) or the serving port (inference).",
    )


class Network(Model):
    """Network isolation. Both directions are default-deny; these rules open holes."""

    ingress: list[NetworkPeer] | None = Field(
        default=None, max_length=64, description="Sources allowed to reach the workload's pods."
    )
    egress: list[NetworkPeer] | None = Field(
        default=None, max_length=64, description="Destinations the workload's pods may reach."
    )
    allow_dns: bool = Field(
        default=True,
        alias="allowDNS",
        description="Allow egress to the cluster DNS named in policy (UDP and TCP 53).",
    )


class ProjectedToken(Model):
    """An extra short-lived, audience-bound service-account token mounted as a file."""

    name: str = Field(
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="File name under /var/run/secrets/secureai/tokens/.",
    )
    audience: str = Field(min_length=1, max_length=253, description="Intended token audience.")
    expiration_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKEN_SECONDS,
        description="Token lifetime; policy bounds apply. Omitted: the policy default.",
    )


class Identity(Model):
    """The workload's identity: a dedicated ServiceAccount with short-lived projected tokens."""

    audience: str | None = Field(
        default=None,
        max_length=253,
        description="Audience of the default token. Omitted: the policy default audience.",
    )
    expiration_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKEN_SECONDS,
        description="Lifetime of the default token. Omitted: the policy default (600 s).",
    )
    tokens: list[ProjectedToken] | None = Field(
        default=None, max_length=16, description="Extra projected tokens."
    )


class SecretMount(Model):
    """A Secret mounted read-only as files (never as environment variables)."""

    name: DnsSubdomain = Field(description="Name of the Secret.")
    mount_path: str | None = Field(
        default=None,
        pattern=r"^/[^:]*$",
        description="Absolute mount path. Omitted: /var/run/secrets/secureai/<name>.",
    )


class WorkloadSpec(Model):
    """Fields common to both kinds."""

    image: str = Field(
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description="Container image, pinned by digest (`registry/repo@sha256:<64 hex>`).",
    )
    command: list[str] | None = Field(default=None, description="Entrypoint override.")
    args: list[str] | None = Field(default=None, description="Arguments to the entrypoint.")
    env: list[EnvVar] | None = Field(
        default=None, max_length=128, description="Plain environment variables."
    )
    resources: Resources = Field(description="CPU and memory of each pod.")
    gpu: Gpu | None = Field(default=None, description="GPU count and placement of each pod.")
    network: Network | None = Field(
        default=None, description="Allow-rules on top of default-deny isolation."
    )
    identity: Identity | None = Field(default=None, description="Projected service-account tokens.")
    secrets: list[SecretMount] | None = Field(
        default=None, max_length=32, description="Secrets mounted read-only as files."
    )

    @property
    def gpu_count(self) -> int:
        return self.gpu.count if self.gpu else 0
