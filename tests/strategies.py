"""Hypothesis strategies for valid SecureTrainingJob and SecureInferenceService manifests.

Validity depends on the cluster policy (registries, pools, storage classes, token bounds), so
the main strategy, `cases()`, draws a policy first and then a manifest that is admissible
under it. Every generated manifest must parse and pass `secureai.render.violations` with no
violation: a test asserts that, so a strategy that drifts out of the valid space is noticed.

Manifests are plain dicts in wire form (camelCase), exactly what a user would `kubectl apply`.
Names start with a letter and custom mount paths never collide: specs that break either are
covered by dedicated regression tests, not by these strategies.
"""

from __future__ import annotations

import ipaddress
import itertools
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from secureai.api import Policy
from secureai.api.policy import DnsTarget, GpuPool, TokenPolicy, Toleration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EXAMPLE_POLICY_FILE = EXAMPLES / "policy.yaml"

EXAMPLE_POLICY = Policy.from_yaml(EXAMPLE_POLICY_FILE)

# A second policy exercising what the example does not: pool tolerations, several encrypted
# classes and registries, a longer token maximum, a custom DNS target, fewer GPUs per pod.
RICH_POLICY = Policy(
    allowed_registries=["registry.example.com", "ghcr.io/acme", "localhost:5000"],
    encrypted_storage_classes=["encrypted-ssd", "encrypted-nvme", "ceph-luks"],
    gpu_pools={
        "a100": GpuPool(
            node_selector={"secureai.dev/pool": "a100", "topology.kubernetes.io/zone": "z1"},
            tolerations=[
                Toleration(
                    key="secureai.dev/pool", operator="Equal", value="a100", effect="NoSchedule"
                )
            ],
        ),
        "h100": GpuPool(
            node_selector={"secureai.dev/pool": "h100"},
            tolerations=[
                Toleration(key="dedicated", operator="Exists", effect="NoSchedule"),
                Toleration(key="spot", operator="Exists", effect="NoExecute"),
            ],
        ),
        "cpu-only": GpuPool(),
    },
    max_gpus_per_pod=4,
    tokens=TokenPolicy(default_seconds=900, max_seconds=7200, default_audience="acme"),
    dns=DnsTarget(namespace="dns-system", pod_selector={"app": "coredns"}, port=5353),
    operator_image="ghcr.io/acme/secureai-operator@sha256:" + "ab" * 32,
    run_as_user=1001,
    run_as_group=2002,
)

POLICIES = (EXAMPLE_POLICY, RICH_POLICY)

GPU_PRODUCTS = ("NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "Tesla-T4")
SAFE_ENV_NAMES = ("LOG_LEVEL", "EPOCHS", "MODEL_NAME", "BATCH_SIZE", "HF_HOME", "OMP_NUM_THREADS")
SAFE_REGEXES = ("EMP-[0-9]{6}", "(?i)ignore (all )?previous instructions", r"\bproject-x\b")

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_LABEL_CHARS = _LOWER + "0123456789-"


# ---------------------------------------------------------------------------- scalars


@cache
def dns_labels(max_size: int = 20) -> st.SearchStrategy[str]:
    """A DNS-1035 label (starts with a letter): valid for every child name we derive."""
    return st.builds(
        lambda head, body, tail: head + body + tail,
        st.sampled_from(_LOWER),
        st.text(_LABEL_CHARS, max_size=max(0, max_size - 2)),
        st.sampled_from(_LOWER + "0123456789"),
    )


@cache
def cr_names() -> st.SearchStrategy[str]:
    """Workload names up to the 47-character maximum."""
    return st.one_of(dns_labels(12), dns_labels(47))


@cache
def digests() -> st.SearchStrategy[str]:
    return st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())


def images(policy: Policy) -> st.SearchStrategy[str]:
    return _images(tuple(policy.allowed_registries))


@cache
def _images(registries: tuple[str, ...]) -> st.SearchStrategy[str]:
    repo = st.lists(dns_labels(10), min_size=1, max_size=3).map("/".join)
    tag = st.one_of(st.just(""), st.sampled_from([":v1", ":latest", ":1.2.3"]))
    return st.builds(
        lambda registry, r, t, d: f"{registry}/{r}{t}@{d}",
        st.sampled_from(registries),
        repo,
        tag,
        digests(),
    )


@cache
def quantities(units: tuple[str, ...], low: int = 1, high: int = 64) -> st.SearchStrategy[str]:
    return st.builds(
        lambda n, u: f"{n}{u}", st.integers(min_value=low, max_value=high), st.sampled_from(units)
    )


@cache
def cpus() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(1, 64).map(str), st.integers(100, 4000).map(lambda m: f"{m}m"), st.just("0.5")
    )


@cache
def memories() -> st.SearchStrategy[str]:
    return quantities(("Mi", "Gi"), 1, 512)


@cache
def cidrs() -> st.SearchStrategy[str]:
    # canonical networks: the API server refuses bits set beyond the prefix length
    v4 = st.builds(
        lambda a, b, prefix: str(ipaddress.ip_network(f"{a}.{b}.0.0/{prefix}", strict=False)),
        st.integers(1, 223),
        st.integers(0, 255),
        st.integers(8, 16),
    )
    v6 = st.builds(
        lambda w, prefix: f"fd{w:02x}::/{prefix}", st.integers(0, 255), st.integers(16, 64)
    )
    return st.one_of(v4, v6)


@st.composite
def carve_outs(draw: st.DrawFn, cidr: str) -> list[str]:
    """`except` blocks: each strictly inside `cidr`, as NetworkPolicy requires."""
    net = ipaddress.ip_network(cidr)
    longer = draw(st.integers(net.prefixlen + 1, min(net.prefixlen + 8, net.max_prefixlen)))
    subnets = list(itertools.islice(net.subnets(new_prefix=longer), 256))
    return draw(st.lists(st.sampled_from(subnets).map(str), min_size=1, max_size=2, unique=True))


@cache
def label_maps(max_size: int = 3) -> st.SearchStrategy[dict[str, str]]:
    keys = st.one_of(
        dns_labels(10),
        st.sampled_from(["app", "team", "kubernetes.io/metadata.name", "example.com/tier"]),
    )
    return st.dictionaries(keys, dns_labels(10), min_size=0, max_size=max_size)


# ---------------------------------------------------------------------------- spec parts


@st.composite
def ports(draw: st.DrawFn) -> list[dict[str, Any]]:
    numbers = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=3, unique=True))
    return [
        {"port": n, **draw(st.sampled_from([{}, {"protocol": "TCP"}, {"protocol": "UDP"}]))}
        for n in numbers
    ]


@st.composite
def network_peers(draw: st.DrawFn) -> dict[str, Any]:
    peer: dict[str, Any]
    if draw(st.booleans()):
        peer = {"cidr": draw(cidrs())}
        if draw(st.booleans()):
            peer["except"] = draw(carve_outs(peer["cidr"]))
    else:
        peer = {}
        choice = draw(st.sampled_from(["ns", "pod", "both"]))
        if choice in ("ns", "both"):
            peer["namespaceSelector"] = draw(label_maps())
        if choice in ("pod", "both"):
            peer["podSelector"] = draw(label_maps())
    if draw(st.booleans()):
        peer["ports"] = draw(ports())
    return peer


@st.composite
def networks(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["ingress"] = draw(st.lists(network_peers(), max_size=4))
    if draw(st.booleans()):
        out["egress"] = draw(st.lists(network_peers(), max_size=4))
    if draw(st.booleans()):
        out["allowDNS"] = draw(st.booleans())
    return out


def token_lifetimes(policy: Policy) -> st.SearchStrategy[int | None]:
    return _token_lifetimes(policy.tokens.max_seconds)


@cache
def _token_lifetimes(high: int) -> st.SearchStrategy[int | None]:
    low = 600
    return st.one_of(st.none(), st.sampled_from([low, high]), st.integers(low, high))


@st.composite
def identities(draw: st.DrawFn, policy: Policy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["audience"] = draw(st.sampled_from(["vault", "sts.amazonaws.com", "api.example.com"]))
    seconds = draw(token_lifetimes(policy))
    if seconds is not None:
        out["expirationSeconds"] = seconds
    names = draw(st.lists(dns_labels(12).filter(lambda n: n != "token"), max_size=4, unique=True))
    tokens = []
    for name in names:
        token: dict[str, Any] = {
            "name": name,
            "audience": draw(st.sampled_from(["storage.example.com", "vault", "wandb"])),
        }
        lifetime = draw(token_lifetimes(policy))
        if lifetime is not None:
            token["expirationSeconds"] = lifetime
        tokens.append(token)
    if tokens:
        out["tokens"] = tokens
    return out


@st.composite
def secret_mounts(draw: st.DrawFn) -> list[dict[str, Any]]:
    # "tokens" would collide with the token directory: see the regression test.
    names = draw(st.lists(dns_labels(16).filter(lambda n: n != "tokens"), max_size=4, unique=True))
    out = []
    for name in names:
        mount: dict[str, Any] = {"name": name}
        if draw(st.booleans()):
            mount["mountPath"] = f"/etc/secrets/{name}"
        out.append(mount)
    return out


@st.composite
def envs(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(st.sampled_from(SAFE_ENV_NAMES), max_size=4, unique=True))
    values = st.text("abcdefghij0123456789 ./:=", max_size=20)
    return [{"name": n, "value": draw(values)} for n in names]


@st.composite
def gpus(draw: st.DrawFn, policy: Policy) -> dict[str, Any] | None:
    if draw(st.integers(0, 4)) == 0:
        return None
    out: dict[str, Any] = {"count": draw(st.integers(0, min(8, policy.max_gpus_per_pod)))}
    if out["count"] > 0 and draw(st.booleans()):
        out["product"] = draw(st.sampled_from(GPU_PRODUCTS))
    if policy.gpu_pools and draw(st.booleans()):
        out["pool"] = draw(st.sampled_from(sorted(policy.gpu_pools)))
    return out


@st.composite
def common_spec(draw: st.DrawFn, policy: Policy) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": draw(images(policy)),
        "resources": {"cpu": draw(cpus()), "memory": draw(memories())},
    }
    if draw(st.booleans()):
        spec["command"] = draw(st.lists(st.sampled_from(["python", "-m", "train"]), max_size=3))
    if draw(st.booleans()):
        spec["args"] = draw(st.lists(st.text("abc-=0123", max_size=8), max_size=3))
    env = draw(envs())
    if env:
        spec["env"] = env
    gpu = draw(gpus(policy))
    if gpu is not None:
        spec["gpu"] = gpu
    if draw(st.booleans()):
        spec["network"] = draw(networks())
    if draw(st.booleans()):
        spec["identity"] = draw(identities(policy))
    secrets = draw(secret_mounts())
    if secrets:
        spec["secrets"] = secrets
    return spec


# ---------------------------------------------------------------------------- kinds


@st.composite
def training_manifests(draw: st.DrawFn, policy: Policy) -> dict[str, Any]:
    spec = draw(common_spec(policy))
    spec["workers"] = draw(st.integers(1, 16))
    claims = draw(st.lists(dns_labels(16), max_size=3, unique=True))
    datasets = []
    for i, claim in enumerate(claims):
        dataset: dict[str, Any] = {"claimName": claim}
        if draw(st.booleans()):
            dataset["mountPath"] = f"/data/{i}"
        if draw(st.booleans()):
            dataset["encrypted"] = True
            dataset["keySecret"] = draw(dns_labels(12))
            if draw(st.booleans()):
                dataset["decryptedSizeLimit"] = draw(quantities(("Mi", "Gi"), 1, 64))
        datasets.append(dataset)
    if datasets:
        spec["datasets"] = datasets
    if draw(st.booleans()):
        output: dict[str, Any] = {"size": draw(quantities(("Gi", "Ti"), 1, 100))}
        if draw(st.booleans()):
            output["storageClassName"] = draw(st.sampled_from(policy.encrypted_storage_classes))
        if draw(st.booleans()):
            output["mountPath"] = "/results"
        spec["output"] = output
    if draw(st.booleans()):
        scratch: dict[str, Any] = {"sizeLimit": draw(quantities(("Mi", "Gi"), 1, 64))}
        if draw(st.booleans()):
            scratch["mountPath"] = "/fast-scratch"
        spec["scratch"] = scratch
    if draw(st.booleans()):
        spec["backoffLimit"] = draw(st.integers(0, 100))
    if draw(st.booleans()):
        spec["activeDeadlineSeconds"] = draw(st.integers(1, 7 * 86400))
    if draw(st.booleans()):
        retention: dict[str, Any] = {}
        if draw(st.booleans()):
            retention["ttlSecondsAfterFinished"] = draw(st.integers(0, 86400))
        if draw(st.booleans()):
            retention["keepOutput"] = draw(st.booleans())
        spec["retention"] = retention
    return {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": "SecureTrainingJob",
        "metadata": {"name": draw(cr_names()), "namespace": draw(dns_labels(20)), "uid": "u-1"},
        "spec": spec,
    }


@st.composite
def guards(draw: st.DrawFn) -> dict[str, Any]:
    guard: dict[str, Any] = {}
    if draw(st.booleans()):
        guard["enabled"] = draw(st.booleans())
    if draw(st.booleans()):
        guard["maxBodyBytes"] = draw(st.integers(1, 1 << 24))
    if draw(st.booleans()):
        guard["rateLimit"] = {
            "requestsPerSecond": draw(st.sampled_from([0.5, 1, 20, 1000])),
            "burst": draw(st.integers(1, 1000)),
        }
    if draw(st.booleans()):
        guard["maxConcurrency"] = draw(st.integers(1, 1000))
    if draw(st.booleans()):
        guard["upstreamTimeoutSeconds"] = draw(st.sampled_from([0.5, 30, 3600]))
    if draw(st.booleans()):
        redaction: dict[str, Any] = {}
        if draw(st.booleans()):
            redaction["types"] = draw(
                st.lists(st.sampled_from(["email", "phone", "iban", "secret"]), unique=True)
            )
        if draw(st.booleans()):
            redaction["customPatterns"] = [
                {"name": f"p{i}", "regex": r}
                for i, r in enumerate(draw(st.lists(st.sampled_from(SAFE_REGEXES), max_size=2)))
            ]
        guard["redaction"] = redaction
    if draw(st.booleans()):
        guard["denyPatterns"] = draw(st.lists(st.sampled_from(SAFE_REGEXES), max_size=3))
    return guard


@st.composite
def inference_manifests(draw: st.DrawFn, policy: Policy) -> dict[str, Any]:
    spec = draw(common_spec(policy))
    spec["replicas"] = draw(st.integers(0, 5))
    if draw(st.booleans()):
        spec["port"] = draw(st.integers(1024, 65535).filter(lambda p: p not in (8443, 9090)))
    model: dict[str, Any] = {
        "claimName": draw(dns_labels(16)),
        "signerKeyConfigMap": draw(dns_labels(16)),
    }
    if draw(st.booleans()):
        model["subPath"] = draw(st.sampled_from(["llama", "v2/weights"]))
    if draw(st.booleans()):
        model["bundleFile"] = "bundle.sig.json"
    spec["model"] = model
    tls = draw(st.sampled_from(["none", "OperatorCA", "default", "Secret"]))
    if tls == "OperatorCA":
        spec["tls"] = {"mode": "OperatorCA"}
    elif tls == "default":
        spec["tls"] = {}
    elif tls == "Secret":
        spec["tls"] = {"mode": "Secret", "secretName": draw(dns_labels(16))}
    if draw(st.booleans()):
        spec["guard"] = draw(guards())
    return {
        "apiVersion": "secureai.dev/v1alpha1",
        "kind": "SecureInferenceService",
        "metadata": {"name": draw(cr_names()), "namespace": draw(dns_labels(20)), "uid": "u-2"},
        "spec": spec,
    }


@st.composite
def cases(draw: st.DrawFn, kind: str | None = None) -> tuple[Policy, dict[str, Any]]:
    """(policy, manifest) with the manifest admissible under the policy."""
    policy = draw(st.sampled_from(POLICIES))
    if kind is None:
        kind = draw(st.sampled_from(["SecureTrainingJob", "SecureInferenceService"]))
    if kind == "SecureTrainingJob":
        return policy, draw(training_manifests(policy))
    return policy, draw(inference_manifests(policy))


# ---------------------------------------------------------------------------- inadmissible


def _unpinned(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    m["spec"]["image"] = m["spec"]["image"].split("@", 1)[0]
    assert policy.require_digest
    return "spec.image"


def _foreign_registry(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    path = m["spec"]["image"].split("/", 1)[1]
    host = draw(st.sampled_from(["evil.example.net", "docker.io", "registry.example.com.evil.io"]))
    m["spec"]["image"] = f"{host}/{path}"
    return "spec.image"


def _too_many_gpus(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    m["spec"]["gpu"] = {"count": draw(st.integers(policy.max_gpus_per_pod + 1, 64))}
    return "spec.gpu.count"


def _unknown_pool(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    m["spec"]["gpu"] = {
        "count": 1,
        "pool": draw(dns_labels(12).filter(lambda p: p not in policy.gpu_pools)),
    }
    return "spec.gpu.pool"


def _secret_env(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    name = draw(st.sampled_from(["DB_PASSWORD", "API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY"]))
    m["spec"]["env"] = [*(m["spec"].get("env") or []), {"name": name, "value": "x"}]
    return f"spec.env[{len(m['spec']['env']) - 1}].name"


def _long_token(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    seconds = draw(st.integers(policy.tokens.max_seconds + 1, policy.tokens.max_seconds * 10))
    m["spec"]["identity"] = {**(m["spec"].get("identity") or {}), "expirationSeconds": seconds}
    return "spec.identity.expirationSeconds"


def _loose_carve_out(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    direction = draw(st.sampled_from(["ingress", "egress"]))
    network = m["spec"].setdefault("network", {})
    peers = network.setdefault(direction, [])
    peers.append(
        {
            "cidr": "10.0.0.0/16",
            "except": [draw(st.sampled_from(["10.1.0.0/24", "10.0.0.0/16", "10.0.0.0/8"]))],
        }
    )
    return f"spec.network.{direction}[{len(peers) - 1}].except[0]"


def _repeated_secret(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    name = draw(dns_labels(12).filter(lambda n: n != "tokens"))
    others = [s for s in m["spec"].get("secrets") or [] if s["name"] != name]
    m["spec"]["secrets"] = [*others, {"name": name}, {"name": name}]
    return f"spec.secrets[{len(others) + 1}].name"


def _reserved_mount(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    path = draw(st.sampled_from(["/tmp", "/tmp/", "/var/run/secrets/secureai/tokens"]))
    others = [s for s in m["spec"].get("secrets") or [] if s["name"] != "clash"]
    m["spec"]["secrets"] = [*others, {"name": "clash", "mountPath": path}]
    return f"spec.secrets[{len(others)}].mountPath"


def _plain_output(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    m["spec"]["output"] = {"size": "1Gi", "storageClassName": "standard"}
    return "spec.output.storageClassName"


def _guard_port(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    m["spec"]["port"] = draw(st.sampled_from([8443, 9090]))
    m["spec"]["guard"] = {**(m["spec"].get("guard") or {}), "enabled": True}
    return "spec.port"


def _bad_regex(draw: st.DrawFn, policy: Policy, m: dict[str, Any]) -> str:
    guard = m["spec"].setdefault("guard", {})
    guard["denyPatterns"] = [draw(st.sampled_from(["(unclosed", "[z-a]", "*lead"]))]
    return "spec.guard.denyPatterns[0]"


# One way each to break a policy rule; a new rule in render/validate.py wants one here.
BREAKAGES = {
    f.__name__.lstrip("_"): f
    for f in (
        _unpinned,
        _foreign_registry,
        _too_many_gpus,
        _unknown_pool,
        _secret_env,
        _long_token,
        _loose_carve_out,
        _repeated_secret,
        _reserved_mount,
        _plain_output,
        _guard_port,
        _bad_regex,
    )
}


BREAKAGE_KIND = {
    "plain_output": "SecureTrainingJob",
    "guard_port": "SecureInferenceService",
    "bad_regex": "SecureInferenceService",
}


@st.composite
def inadmissible_cases(
    draw: st.DrawFn, breakage: str | None = None
) -> tuple[Policy, dict[str, Any], str, str]:
    """(policy, manifest, breakage, field): an admissible case with one rule broken; `field`
    is the field the refusal must name."""
    names = [breakage] if breakage else sorted(BREAKAGES)
    name = draw(st.sampled_from(names))
    policy, manifest = draw(cases(BREAKAGE_KIND.get(name)))
    return policy, manifest, name, BREAKAGES[name](draw, policy, manifest)
