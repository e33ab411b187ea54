"""Policy checks of a spec. Each violation names the field and says why, on one line."""

from __future__ import annotations

import re
from dataclasses import dataclass

from secureai.api import Policy, SecureInferenceService, SecureTrainingJob, Workload
from secureai.api.policy import K8S_MIN_TOKEN_SECONDS
from secureai.api.validation import strict_subset
from secureai.api.workload import NetworkPeer
from secureai.render.inference import (
    GUARD_METRICS_PORT,
    GUARD_PORT,
    MODEL_DIR,
    TLS_DIR,
    guard_enabled,
)
from secureai.render.pod import SECRETS_DIR, TOKEN_DIR

DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
SECRET_VALUE_RES = (
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b(ghp|gho|ghs|ghu|github_pat|xox[abpr]|sk)[-_][A-Za-z0-9_-]{20,}"),
)


@dataclass(frozen=True)
class Violation:
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class PolicyViolation(ValueError):
    """A spec breaks cluster policy; `str()` is one line naming every field."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        super().__init__("; ".join(str(v) for v in violations))


def image_repository(image: str) -> str:
    """`host/path/name` of an image reference, with docker.io made explicit."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name if '/' in name else 'library/' + name}"
    return name


def image_digest(image: str) -> str | None:
    match = DIGEST_RE.search(image)
    return match.group(0)[1:] if match else None


def _check_image(field: str, image: str, policy: Policy) -> list[Violation]:
    out = []
    if policy.require_digest and not DIGEST_RE.search(image):
        out.append(Violation(field, f"image {image!r} is not pinned by digest (@sha256:<64 hex>)"))
    repo = image_repository(image)
    if not any(repo.startswith(r + "/") for r in policy.allowed_registries):
        allowed = ", ".join(policy.allowed_registries) or "none"
        out.append(Violation(field, f"registry of {repo!r} is not allowed (allowed: {allowed})"))
    return out


def _check_token(field: str, seconds: int | None, policy: Policy) -> list[Violation]:
    if seconds is None:
        return []
    low, high = K8S_MIN_TOKEN_SECONDS, policy.tokens.max_seconds
    if not low <= seconds <= high:
        return [Violation(field, f"token lifetime {seconds}s is outside policy [{low}s, {high}s]")]
    return []


def _check_peers(field: str, peers: list[NetworkPeer] | None) -> list[Violation]:
    out = []
    for i, peer in enumerate(peers or []):
        for j, carved in enumerate(peer.except_ or [] if peer.cidr else []):
            if not strict_subset(carved, peer.cidr or ""):
                out.append(
                    Violation(
                        f"{field}[{i}].except[{j}]",
                        f"{carved!r} is not a strict subset of cidr {peer.cidr!r}",
                    )
                )
        if peer.cidr is None and peer.namespace_selector is None and peer.pod_selector is None:
            out.append(Violation(f"{field}[{i}]", "set cidr or a namespace/pod selector"))
        if peer.cidr is None and peer.except_:
            out.append(Violation(f"{field}[{i}].except", "except needs cidr"))
        if peer.cidr is not None and (peer.namespace_selector or peer.pod_selector):
            out.append(Violation(f"{field}[{i}]", "cidr cannot be combined with selectors"))
    return out


def _check_regex(field: str, pattern: str) -> list[Violation]:
    try:
        re.compile(pattern)
    except re.error as exc:
        return [Violation(field, f"invalid regular expression: {exc}")]
    return []


def _check_common(cr: Workload, policy: Policy) -> list[Violation]:
    spec = cr.spec
    out = _check_image("spec.image", spec.image, policy)
    name_patterns = [re.compile(p) for p in policy.secret_env_name_patterns]
    for i, env in enumerate(spec.env or []):
        if any(p.search(env.name) for p in name_patterns):
            out.append(
                Violation(
                    f"spec.env[{i}].name",
                    f"{env.name!r} looks like a secret; mount it read-only with spec.secrets",
                )
            )
        elif any(p.search(env.value) for p in SECRET_VALUE_RES):
            out.append(
                Violation(
                    f"spec.env[{i}].value",
                    "value looks like secret material; mount it read-only with spec.secrets",
                )
            )
    gpu = spec.gpu
    if gpu is not None:
        if gpu.count > policy.max_gpus_per_pod:
            out.append(
                Violation(
                    "spec.gpu.count",
                    f"{gpu.count} GPUs exceeds the policy maximum of {policy.max_gpus_per_pod}",
                )
            )
        if gpu.pool is not None and gpu.pool not in policy.gpu_pools:
            known = ", ".join(sorted(policy.gpu_pools)) or "none"
            out.append(Violation("spec.gpu.pool", f"unknown pool {gpu.pool!r} (known: {known})"))
        if gpu.count == 0 and gpu.product is not None:
            out.append(Violation("spec.gpu.product", "a GPU product needs spec.gpu.count > 0"))
    identity = spec.identity
    if identity is not None:
        out += _check_token("spec.identity.expirationSeconds", identity.expiration_seconds, policy)
        names = [t.name for t in identity.tokens or []]
        for i, token in enumerate(identity.tokens or []):
            field = f"spec.identity.tokens[{i}]"
            out += _check_token(f"{field}.expirationSeconds", token.expiration_seconds, policy)
            if token.name == "token" or names.count(token.name) > 1:
                out.append(Violation(f"{field}.name", f"{token.name!r} is reserved or repeated"))
    if spec.network is not None:
        out += _check_peers("spec.network.ingress", spec.network.ingress)
        out += _check_peers("spec.network.egress", spec.network.egress)
    secret_names = [s.name for s in spec.secrets or []]
    for i, name in enumerate(secret_names):
        if secret_names.count(name) > 1:
            out.append(Violation(f"spec.secrets[{i}].name", f"secret {name!r} is repeated"))
    return out


def _check_storage_class(field: str, name: str | None, policy: Policy) -> list[Violation]:
    if not policy.encrypted_storage_classes:
        return [Violation(field, "policy names no encrypted StorageClass")]
    if name is not None and name not in policy.encrypted_storage_classes:
        allowed = ", ".join(policy.encrypted_storage_classes)
        return [Violation(field, f"StorageClass {name!r} is not encrypted (allowed: {allowed})")]
    return []


def _check_training(cr: SecureTrainingJob, policy: Policy) -> list[Violation]:
    spec = cr.spec
    out: list[Violation] = []
    if spec.output is not None:
        out += _check_storage_class(
            "spec.output.storageClassName", spec.output.storage_class_name, policy
        )
    claims = [d.claim_name for d in spec.datasets or []]
    for i, dataset in enumerate(spec.datasets or []):
        field = f"spec.datasets[{i}]"
        if dataset.encrypted and dataset.key_secret is None:
            out.append(Violation(f"{field}.keySecret", "an encrypted dataset needs keySecret"))
        if claims.count(dataset.claim_name) > 1:
            out.append(Violation(f"{field}.claimName", f"{dataset.claim_name!r} is repeated"))
    if any(d.encrypted for d in spec.datasets or []):
        out += _check_image("policy.operatorImage", policy.operator_image, policy)
    out += _check_retention(cr, policy)
    return out


def _check_retention(cr: SecureTrainingJob, policy: Policy) -> list[Violation]:
    most = policy.max_output_ttl_seconds
    ttl = cr.spec.retention.output_ttl_seconds_after_finished if cr.spec.retention else None
    if most is None or ttl is None or ttl <= most:
        return []
    field = "spec.retention.outputTtlSecondsAfterFinished"
    return [Violation(field, f"{ttl} s is longer than policy allows ({most} s)")]


def _check_inference(cr: SecureInferenceService, policy: Policy) -> list[Violation]:
    spec = cr.spec
    out = _check_image("policy.operatorImage", policy.operator_image, policy)
    if spec.tls is not None and (spec.tls.mode == "Secret") != (spec.tls.secret_name is not None):
        out.append(Violation("spec.tls.secretName", "required with mode Secret and only then"))
    guard = spec.guard
    if guard_enabled(cr) and spec.port in (GUARD_PORT, GUARD_METRICS_PORT):
        out.append(Violation("spec.port", f"port {spec.port} is reserved for the guard"))
    if guard is not None:
        for i, pattern in enumerate(guard.deny_patterns or []):
            out += _check_regex(f"spec.guard.denyPatterns[{i}]", pattern)
        redaction = guard.redaction
        for i, custom in enumerate(redaction.custom_patterns or [] if redaction else []):
            out += _check_regex(f"spec.guard.redaction.customPatterns[{i}].regex", custom.regex)
    return out


def _mount_paths(cr: Workload) -> list[tuple[str, str]]:
    """(path, field) of every mount of the main container, reserved ones first."""
    spec = cr.spec
    out = [(TOKEN_DIR, "the projected token"), ("/tmp", "the private /tmp")]  # noqa: S108
    if isinstance(cr, SecureInferenceService):
        out.append((MODEL_DIR, "the model"))
        if not guard_enabled(cr):
            out.append((TLS_DIR, "the serving certificate"))
    for i, secret in enumerate(spec.secrets or []):
        path = secret.mount_path or f"{SECRETS_DIR}/{secret.name}"
        out.append((path, f"spec.secrets[{i}].mountPath"))
    if isinstance(cr, SecureTrainingJob):
        for i, dataset in enumerate(cr.spec.datasets or []):
            path = dataset.mount_path or f"/datasets/{dataset.claim_name}"
            out.append((path, f"spec.datasets[{i}].mountPath"))
        if cr.spec.output is not None:
            out.append((cr.spec.output.mount_path or "/output", "spec.output.mountPath"))
        if cr.spec.scratch is not None:
            out.append((cr.spec.scratch.mount_path or "/scratch", "spec.scratch.mountPath"))
    return out


def _check_mounts(cr: Workload) -> list[Violation]:
    seen: dict[str, str] = {}
    out = []
    for path, field in _mount_paths(cr):
        key = path.rstrip("/") or "/"
        if key in seen:
            out.append(Violation(field, f"mount path {path!r} is already used by {seen[key]}"))
        else:
            seen[key] = field
    return out


def violations(cr: Workload, policy: Policy) -> list[Violation]:
    """Every policy violation of a spec, in field order. Empty means admissible."""
    out = _check_common(cr, policy) + _check_mounts(cr)
    if isinstance(cr, SecureTrainingJob):
        out += _check_training(cr, policy)
    else:
        out += _check_inference(cr, policy)
    return out


def check(cr: Workload, policy: Policy) -> None:
    """Raise PolicyViolation when the spec breaks policy."""
    found = violations(cr, policy)
    if found:
        raise PolicyViolation(found)
