"""Guard configuration: the JSON the operator renders into the guard ConfigMap."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from secureai.pii import pattern_max_width

RedactType = Literal["email", "phone", "payment_card", "us_ssn", "ip_address", "iban", "secret"]
BUILTIN_TYPES: tuple[RedactType, ...] = (
    "email",
    "phone",
    "payment_card",
    "us_ssn",
    "ip_address",
    "iban",
    "secret",
)
_DEFAULT_TYPES: tuple[RedactType, ...] = BUILTIN_TYPES

# Longest text a custom pattern may match: the streaming redactor holds back at most this much.
MAX_CUSTOM_MATCH_CHARS = 4096

Port = Annotated[int, Field(ge=1, le=65535)]


class UpstreamCheck(BaseModel):
    """A health check of the model server that the guard relays for the kubelet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: Port
    path: Annotated[str, Field(pattern=r"^/[!-~]*$", max_length=256)] | None = None


class ConfigError(Exception):
    """The guard configuration is unusable; the message is one line."""


class CustomPattern(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    regex: Annotated[str, Field(min_length=1, max_length=2000)]

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, v: str) -> str:
        if v in BUILTIN_TYPES:
            raise ValueError(f"name {v!r} collides with a built-in type")
        return v

    @field_validator("regex")
    @classmethod
    def _bounded(cls, v: str) -> str:
        try:
            compiled = re.compile(v)
        except re.error as exc:
            raise ValueError(f"invalid regex: {exc}") from None
        if compiled.search("") is not None:
            raise ValueError("regex matches the empty string")
        width = pattern_max_width(v)
        if width > MAX_CUSTOM_MATCH_CHARS:
            raise ValueError(
                "regex can match unboundedly long text; bound its repeats "
                f"(e.g. {{1,64}}) so a match is at most {MAX_CUSTOM_MATCH_CHARS} characters"
            )
        return v


class GuardConfig(BaseModel):
    """Contract with the renderer. Fields after client_identity_header are optional extras."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen_port: Port = 8443
    upstream: str = "http://127.0.0.1:8080"
    tls_cert_file: str = "/etc/secureai/tls/tls.crt"
    tls_key_file: str = "/etc/secureai/tls/tls.key"
    metrics_port: Port = 9090
    max_body_bytes: Annotated[int, Field(ge=1, le=1 << 30)] = 1048576
    rate_limit_rps: Annotated[float, Field(gt=0)] = 10.0
    rate_limit_burst: Annotated[int, Field(ge=1)] = 20
    max_concurrency: Annotated[int, Field(ge=1, le=100000)] = 64
    upstream_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    redact_types: list[RedactType] = Field(default_factory=lambda: list(_DEFAULT_TYPES))
    custom_patterns: list[CustomPattern] = Field(default_factory=list)
    deny_patterns: list[str] = Field(default_factory=list)
    client_identity_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] | None = None
    # Redact request bodies (JSON, form, text) before they reach the model.
    redact_request_bodies: bool = False
    # Paths (shell-style globs) whose responses may pass uninspected (binary tensors, images).
    # Any other response the guard cannot inspect is refused with 502.
    allow_uninspectable_paths: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=64
    )

    # The model server's readiness and liveness, relayed on the metrics port as
    # /upstream/ready and /upstream/live (it listens on loopback, out of the kubelet's reach).
    upstream_checks: dict[Literal["ready", "live"], UpstreamCheck] = Field(default_factory=dict)

    # Optional extras (the renderer may omit them).
    listen_host: str | None = None  # None: all interfaces; tests use 127.0.0.1
    tls_reload_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    max_response_buffer_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 8 << 20
    shutdown_grace_s: Annotated[float, Field(ge=0, le=600)] = 20.0

    @field_validator("upstream")
    @classmethod
    def _loopback_upstream(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https"):
            raise ValueError("upstream must be an http:// or https:// URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError("upstream must be scheme://host:port only")
        host = parts.hostname or ""
        if host != "localhost":
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ValueError("upstream must be a loopback address (the model server)")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("upstream port is invalid") from None
        return v.rstrip("/")

    @field_validator("redact_types")
    @classmethod
    def _unique_types(cls, v: list[RedactType]) -> list[RedactType]:
        if len(set(v)) != len(v):
            raise ValueError("redact_types has duplicates")
        return v

    @field_validator("deny_patterns")
    @classmethod
    def _compile_deny(cls, v: list[str]) -> list[str]:
        for i, pat in enumerate(v):
            try:
                re.compile(pat)
            except re.error as exc:
                raise ValueError(f"deny_patterns[{i}] is not a valid regex: {exc}") from None
        return v

    @model_validator(mode="after")
    def _distinct(self) -> GuardConfig:
        if self.listen_port == self.metrics_port:
            raise ValueError("listen_port and metrics_port must differ")
        names = [p.name for p in self.custom_patterns]
        if len(set(names)) != len(names):
            raise ValueError("custom_patterns names must be unique")
        return self


def _one_line(exc: ValidationError) -> str:
    errs = exc.errors()
    first = errs[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = str(first["msg"]).replace("\n", " ")
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{loc}: {msg}{more}"


def parse_config(data: bytes | str) -> GuardConfig:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError("config must be a JSON object")
    try:
        return GuardConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def load_config(path: str | Path) -> GuardConfig:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    return parse_config(data)
