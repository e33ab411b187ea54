"""Posture of a cluster's AI workloads, for `secureai audit`. Pure.

The caller gathers every object once (`Gathered`) and passes it in with the clock and the
policy; `judge()` returns each managed workload's controls (pass, fail, unknown, n/a), the
unmanaged workloads that look like AI ("shadow AI") and the findings, each with a stable ID
documented in docs/security-model.md. Controls are judged from the live objects (pods,
policies, claims, RBAC), never from the workload's own status, except the two things only
the operator records: reverted drift and quarantine.

A resource the caller could not read is named in `Gathered.forbidden`; every control that
needs it is then `unknown`, never `pass`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from secureai.api import GROUP, Policy
from secureai.judge import isolation, pss
from secureai.render.meta import LABEL_KIND, LABEL_WORKLOAD
from secureai.render.status import init_failure, verified_model
from secureai.render.validate import DIGEST_RE, image_repository

Severity = Literal["low", "medium", "high", "critical"]
Result = Literal["pass", "fail", "unknown", "n/a"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
Obj = Mapping[str, Any]

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
MODEL_VERIFY = "model-verify"
TEMPLATE = "secureai.dev/template"  # marks a controller's pod template among live pods
DRIFT_WINDOW = timedelta(hours=24)
CA_WARNING = timedelta(days=30)
CONTROLLER_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"})
KINDS = {"SecureTrainingJob": "training", "SecureInferenceService": "inference"}
SECRET_VERBS = frozenset({"get", "list", "watch", "*"})


@dataclass(frozen=True)
class Rule:
    id: str
    control: str
    severity: Severity
    title: str
    fix: str


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule(
            "SAI-ISO-001",
            "isolated",
            "high",
            "a workload pod is not isolated by its default-deny NetworkPolicy",
            "let the operator restore `<name>-default-deny`; do not relabel its pods",
        ),
        Rule(
            "SAI-ISO-002",
            "isolated",
            "high",
            "a foreign NetworkPolicy widens a managed workload",
            "delete the policy, or express the traffic in the workload's `network` spec",
        ),
        Rule(
            "SAI-PSS-001",
            "hardened",
            "high",
            "a workload pod breaks Pod Security restricted",
            "let the operator revert the pod template; remove what added the field",
        ),
        Rule(
            "SAI-TOK-001",
            "tokens",
            "high",
            "a workload pod has a long-lived or automounted API token",
            "set automountServiceAccountToken: false; keep projected tokens within policy",
        ),
        Rule(
            "SAI-ENC-001",
            "encryption",
            "high",
            "a workload volume is not on an encrypted StorageClass",
            "move the claim to a class listed in policy `encryptedStorageClasses`",
        ),
        Rule(
            "SAI-SIG-001",
            "signature",
            "critical",
            "a model is served without a passing signature check",
            "sign the model (`secureai model sign`) and let `model-verify` run before the server",
        ),
        Rule(
            "SAI-TLS-001",
            "tls",
            "high",
            "an inference workload does not serve with its TLS certificate",
            "let the operator restore the `tls` volume and its mount",
        ),
        Rule(
            "SAI-DRIFT-001",
            "drift",
            "medium",
            "a workload's children were tampered with in the last 24 h (reverted)",
            "find who changed them (audit log) and narrow their rights",
        ),
        Rule(
            "SAI-QUA-001",
            "quarantine",
            "critical",
            "a workload is quarantined",
            "investigate the quarantine's reason; release it when resolved",
        ),
        Rule(
            "SAI-SHADOW-001",
            "shadow",
            "high",
            "an unmanaged workload requests accelerators (GPU)",
            "run it as a SecureTrainingJob or SecureInferenceService",
        ),
        Rule(
            "SAI-SHADOW-002",
            "shadow",
            "medium",
            "an unmanaged workload runs a model-server or training image or port",
            "run it as a SecureTrainingJob or SecureInferenceService",
        ),
        Rule(
            "SAI-NS-001",
            "namespace",
            "high",
            "a namespace with AI workloads does not enforce Pod Security restricted",
            "label it pod-security.kubernetes.io/enforce=restricted",
        ),
        Rule(
            "SAI-RBAC-001",
            "secrets",
            "critical",
            "a Secret holding a KEK or the CA key is readable by more than the operator",
            "remove get/list/watch on secrets from the named subjects' roles",
        ),
        Rule(
            "SAI-IMG-001",
            "images",
            "medium",
            "an AI workload runs an image not pinned by digest",
            "reference the image as repository@sha256:<digest>",
        ),
        Rule(
            "SAI-CA-001",
            "ca",
            "high",
            "the operator's CA expires within 30 days",
            "check that the operator runs (it rotates the CA with an overlap)",
        ),
        Rule(
            "SAI-CA-002",
            "ca",
            "critical",
            "the operator's CA has expired",
            "delete the `secureai-ca` Secret; the operator creates a new CA and re-issues",
        ),
    )
}
CONTROLS = (
    "isolated",
    "hardened",
    "tokens",
    "encryption",
    "signature",
    "tls",
    "drift",
    "quarantine",
)
# The resources each control reads; a forbidden one makes the control `unknown`.
NEEDS: dict[str, tuple[str, ...]] = {
    "isolated": ("pods", "networkpolicies"),
    "hardened": ("pods",),
    "tokens": ("pods",),
    "encryption": ("pods", "persistentvolumeclaims", "persistentvolumes"),
    "signature": ("pods",),
    "tls": ("pods",),
    "drift": ("events",),
    "quarantine": (),
}

# Accelerators are extended resources: `<vendor>/gpu`, MIG slices, TPUs and the like.
ACCELERATOR_RE = re.compile(r"^[^/]+/(.*gpu.*|mig-.+|.*tpu.*|neuron.*|gaudi.*)$")
# Well-known model servers and training stacks: a secondary signal (the last path component
# or the whole repository), never the only thing that makes a GPU workload AI.
AI_IMAGE_RE = re.compile(
    r"(^|/)(vllm[-\w]*|text-generation-inference|tgi|tritonserver|triton[-\w]*|ollama|"
    r"llama[.-]?cpp|torchserve|tensorflow-serving|serving|tensorrt-llm|sglang|lmdeploy|"
    r"localai|kserve[-\w]*|seldon[-\w]*|pytorch|deepspeed|ray|ray-ml|huggingface[-\w]*|"
    r"transformers[-\w]*|mlflow|jupyter[-\w]*|axolotl|unsloth)(:|@|$)"
)
# Ports nothing but a model stack uses by default.
AI_PORTS = {11434: "Ollama API", 8265: "Ray dashboard", 8001: "Triton gRPC", 8033: "TGI gRPC"}


@dataclass(frozen=True)
class Rbac:
    cluster_roles: Sequence[Obj] = ()
    cluster_role_bindings: Sequence[Obj] = ()
    roles: Sequence[Obj] = ()
    role_bindings: Sequence[Obj] = ()


@dataclass(frozen=True)
class Gathered:
    """Everything `judge` looks at, read once. Lists are of live API objects."""

    workloads: Sequence[Obj] = ()
    pods: Sequence[Obj] = ()
    # Deployments, StatefulSets, DaemonSets, Jobs and CronJobs (each with its `kind`)
    controllers: Sequence[Obj] = ()
    replica_sets: Sequence[Obj] = ()  # to follow a pod to its Deployment
    network_policies: Sequence[Obj] = ()
    namespaces: Sequence[Obj] = ()
    claims: Sequence[Obj] = ()
    volumes: Sequence[Obj] = ()
    events: Sequence[Obj] = ()
    rbac: Rbac = field(default_factory=Rbac)
    # notAfter of each CA certificate in the operator's published bundle; None: not found
    ca_not_after: tuple[datetime, ...] | None = None
    operator_namespace: str = "secureai-system"
    ca_secret: str = "secureai-ca"  # noqa: S105 - a name
    # resource (plural) -> why it could not be read, e.g. "forbidden"
    forbidden: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    subject: str
    message: str
    fix: str
    control: str


@dataclass(frozen=True)
class Control:
    control: str
    result: Result
    detail: str
    finding: str | None = None  # the rule ID of a failure


@dataclass(frozen=True)
class WorkloadPosture:
    kind: str
    namespace: str
    name: str
    controls: tuple[Control, ...]


@dataclass(frozen=True)
class Shadow:
    kind: str
    namespace: str
    name: str
    signals: tuple[str, ...]
    lacks: tuple[str, ...]


@dataclass(frozen=True)
class Posture:
    workloads: tuple[WorkloadPosture, ...]
    shadow: tuple[Shadow, ...]
    findings: tuple[Finding, ...]
    skipped: tuple[str, ...]  # "could not check X: forbidden"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
        for f in self.findings:
            out[f.severity] += 1
        return out


def reaches(severity: Severity, threshold: str) -> bool:
    """Whether a finding of `severity` reaches `--fail-on threshold` ("none": never)."""
    if threshold == "none":
        return False
    return SEVERITIES.index(severity) >= SEVERITIES.index(threshold)


def finding(rule_id: str, subject: str, message: str) -> Finding:
    rule = RULES[rule_id]
    return Finding(rule.id, rule.severity, subject, message, rule.fix, rule.control)


# --------------------------------------------------------------------------- small helpers


def _meta(obj: Obj) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _labels(obj: Obj) -> Mapping[str, str]:
    return _meta(obj).get("labels") or {}


def _ref(obj: Obj) -> str:
    meta = _meta(obj)
    ns = meta.get("namespace")
    return (
        f"{obj.get('kind', '?')}/{ns}/{meta.get('name')}"
        if ns
        else f"{obj.get('kind')}/{meta.get('name')}"
    )


def _by_namespace(objs: Iterable[Obj]) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = defaultdict(list)
    for obj in objs:
        out[str(_meta(obj).get("namespace") or "")].append(obj)
    return out


def pod_template(obj: Obj) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(metadata, spec) of a pod or of a controller's pod template."""
    if obj.get("kind") == "Pod":
        return _meta(obj), obj.get("spec") or {}
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template") or {}
    return template.get("metadata") or {}, template.get("spec") or {}


def containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in pss.CONTAINER_KINDS:
        yield from spec.get(key) or []


def unpinned_images(spec: Mapping[str, Any]) -> list[str]:
    return sorted(
        {
            str(c.get("image"))
            for c in containers(spec)
            if not DIGEST_RE.search(str(c.get("image") or ""))
        }
    )


def is_quarantined(workload: Obj) -> tuple[bool, str]:
    """Quarantine as the workload's status records it (condition `Quarantined`).

    Kept apart so that matching against the cluster-scoped Quarantine kind can replace it.
    """
    for cond in (workload.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Quarantined" and cond.get("status") == "True":
            return True, str(cond.get("message") or cond.get("reason") or "quarantined")
    return False, "not quarantined"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# --------------------------------------------------------------------------- managed controls


def _owners(objs: Iterable[Obj]) -> dict[str, list[Obj]]:
    """owner uid -> the objects it owns."""
    out: dict[str, list[Obj]] = defaultdict(list)
    for obj in objs:
        for ref in _meta(obj).get("ownerReferences") or []:
            if ref.get("uid"):
                out[str(ref["uid"])].append(obj)
    return out


def _selector_key(policy: Obj) -> str | None:
    """The workload a policy can only select (its podSelector requires that label value)."""
    match = ((policy.get("spec") or {}).get("podSelector") or {}).get("matchLabels") or {}
    value = match.get(LABEL_WORKLOAD)
    return str(value) if value is not None else None


@dataclass
class _Ctx:
    """The gathered objects, indexed once so that each workload costs what it owns."""

    gathered: Gathered
    policy: Policy
    now: datetime
    pods: dict[str, list[Obj]]
    policies: dict[str, list[Obj]]
    owned: dict[str, list[Obj]]  # owner uid -> controllers, replica sets, pods, policies
    labelled: dict[tuple[str, str, str], list[Obj]]  # (ns, workload, kind) -> pods
    # ns -> workload label value a policy requires (None: any) -> policies
    by_selector: dict[str, dict[str | None, list[Obj]]]
    claims: dict[tuple[str, str], Obj]
    volumes: dict[str, Obj]
    reverts: dict[str, datetime]  # workload uid -> last DriftReverted Event


def _context(g: Gathered, policy: Policy, now: datetime) -> _Ctx:
    reverts: dict[str, datetime] = {}
    for event in g.events:
        if event.get("reason") != "DriftReverted":
            continue
        uid = str((event.get("involvedObject") or {}).get("uid") or "")
        when = _parse_time(event.get("lastTimestamp") or event.get("eventTime"))
        if uid and when and (uid not in reverts or when > reverts[uid]):
            reverts[uid] = when
    labelled: dict[tuple[str, str, str], list[Obj]] = defaultdict(list)
    for pod in g.pods:
        labels = _labels(pod)
        if LABEL_WORKLOAD in labels:
            key = (
                str(_meta(pod).get("namespace")),
                labels[LABEL_WORKLOAD],
                labels.get(LABEL_KIND, ""),
            )
            labelled[key].append(pod)
    by_selector: dict[str, dict[str | None, list[Obj]]] = defaultdict(lambda: defaultdict(list))
    for np in g.network_policies:
        by_selector[str(_meta(np).get("namespace"))][_selector_key(np)].append(np)
    return _Ctx(
        g,
        policy,
        now,
        _by_namespace(g.pods),
        _by_namespace(g.network_policies),
        _owners([*g.controllers, *g.replica_sets, *g.pods, *g.network_policies]),
        labelled,
        by_selector,
        {(str(_meta(c).get("namespace")), str(_meta(c).get("name"))): c for c in g.claims},
        {str(_meta(v).get("name")): v for v in g.volumes},
        reverts,
    )


def _workload_pods(ctx: _Ctx, cr: Obj) -> list[Obj]:
    """Live pods of a workload (by its labels, or owned through its controllers), plus the
    pod templates of its controllers (pods to come)."""
    meta = _meta(cr)
    ns, name, uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
    kind = KINDS.get(str(cr.get("kind")), "")
    controllers = [o for o in ctx.owned.get(uid, []) if o.get("kind") in CONTROLLER_KINDS]
    found: dict[int, Obj] = {id(p): p for p in ctx.labelled.get((ns, name, kind), [])}
    queue = list(controllers)
    while queue:
        owner = queue.pop()
        for child in ctx.owned.get(str(_meta(owner).get("uid")), []):
            if child.get("kind") == "Pod":
                found.setdefault(id(child), child)
            elif child.get("kind") == "ReplicaSet":
                queue.append(child)
    out = list(found.values())
    for ctl in controllers:
        tmeta, tspec = pod_template(ctl)
        out.append(
            {
                "kind": "Pod",
                "metadata": {**tmeta, "name": f"template of {_ref(ctl)}"},
                "spec": tspec,
                TEMPLATE: True,
            }
        )
    return out


def _unknown(ctx: _Ctx, control: str) -> Control | None:
    missing = [r for r in NEEDS[control] if r in ctx.gathered.forbidden]
    if not missing:
        return None
    why = "; ".join(f"could not check {r}: {ctx.gathered.forbidden[r]}" for r in missing)
    return Control(control, "unknown", why)


def _isolated(ctx: _Ctx, cr: Obj, pods: list[Obj], out: list[Finding]) -> Control:
    meta = _meta(cr)
    ns, uid = str(meta.get("namespace")), meta.get("uid")
    # Only policies that could select these pods: a policy requiring another workload's
    # label value cannot (exact, and it keeps the audit linear in the workloads).
    keys = {
        None,
        *(str(_labels(p).get(LABEL_WORKLOAD)) for p in pods if LABEL_WORKLOAD in _labels(p)),
    }
    index = ctx.by_selector.get(ns, {})
    own = {
        str(_meta(p).get("name")): p
        for p in ctx.owned.get(str(uid), [])
        if p.get("kind") == "NetworkPolicy"
    }
    live = {str(_meta(p).get("name")): p for k in keys for p in index.get(k, [])}
    live.update(own)
    subject = f"{cr.get('kind')}/{ns}/{meta.get('name')}"
    if not any(isolation.is_default_deny(p.get("spec") or {}) for p in own.values()):
        msg = "no default-deny NetworkPolicy of its own"
        out.append(finding("SAI-ISO-001", subject, msg))
        return Control("isolated", "fail", msg, "SAI-ISO-001")
    labels = {str(_meta(p).get("name")): dict(_labels(p)) for p in pods}
    verdict = isolation.judge(labels, live, own)
    if verdict.isolated:
        return Control("isolated", "pass", verdict.message)
    if verdict.widening:
        for name in verdict.widening:
            allowed = ", ".join(isolation.allows_some(live[name].get("spec") or {}))
            out.append(
                finding(
                    "SAI-ISO-002",
                    f"NetworkPolicy/{ns}/{name}",
                    f"selects pods of {subject} and allows {allowed}",
                )
            )
        return Control("isolated", "fail", verdict.message, "SAI-ISO-002")
    out.append(finding("SAI-ISO-001", subject, verdict.message))
    return Control("isolated", "fail", verdict.message, "SAI-ISO-001")


def _pod_checks(
    control: str, rule: str, subject: str, pods: list[Obj], check: Any, out: list[Finding], ok: str
) -> Control:
    problems = [f"{_meta(p).get('name')}: {msg}" for p in pods for msg in check(p)]
    if not problems:
        return Control(control, "pass", ok)
    msg = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
    out.append(finding(rule, subject, msg))
    return Control(control, "fail", msg, rule)


def pss_problems(pod: Obj) -> list[str]:
    """Pod Security restricted violations of a pod (or template)."""
    meta, spec = pod_template(pod)
    return [v.message for v in pss.evaluate(spec, meta)]


def token_problems(pod: Obj, max_seconds: int) -> list[str]:
    _, spec = pod_template(pod)
    out = []
    if spec.get("automountServiceAccountToken") is not False:
        out.append("automountServiceAccountToken is not false")
    for volume in spec.get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            token = source.get("serviceAccountToken")
            if token is None:
                continue
            seconds = int(token.get("expirationSeconds") or 3600)
            if seconds > max_seconds:
                out.append(
                    f"token {token.get('path')} lives {seconds}s (policy max {max_seconds}s)"
                )
            if not token.get("audience"):
                out.append(f"token {token.get('path')} has no audience (valid for the API server)")
    return out


def _claim_class(ctx: _Ctx, ns: str, claim: str) -> str | None:
    pvc = ctx.claims.get((ns, claim))
    if pvc is None:
        return None
    volume = ctx.volumes.get(str((pvc.get("spec") or {}).get("volumeName") or ""))
    if volume is not None and (volume.get("spec") or {}).get("storageClassName") is not None:
        return str(volume["spec"]["storageClassName"])
    return str((pvc.get("spec") or {}).get("storageClassName") or "")


def _encryption(ctx: _Ctx, cr: Obj, pods: list[Obj], out: list[Finding]) -> Control:
    meta = _meta(cr)
    ns = str(meta.get("namespace"))
    enveloped = {
        d.get("claimName")
        for d in (cr.get("spec") or {}).get("datasets") or []
        if d.get("encrypted")
    }
    claims = sorted(
        {
            str(v["persistentVolumeClaim"].get("claimName"))
            for p in pods
            for v in pod_template(p)[1].get("volumes") or []
            if v.get("persistentVolumeClaim")
        }
        - enveloped
    )
    allowed = set(ctx.policy.encrypted_storage_classes)
    bad = []
    for claim in claims:
        cls = _claim_class(ctx, ns, claim)
        if cls is None:
            bad.append(f"claim {claim} not found")
        elif cls not in allowed:
            bad.append(f"claim {claim} on StorageClass {cls or '(none)'!r}")
    if not claims:
        return Control(
            "encryption",
            "pass",
            "no persistent volume" + (" (datasets are envelopes)" if enveloped else ""),
        )
    if not bad:
        return Control("encryption", "pass", f"{len(claims)} claim(s) on encrypted StorageClasses")
    msg = "; ".join(bad)
    out.append(finding("SAI-ENC-001", f"{cr.get('kind')}/{ns}/{meta.get('name')}", msg))
    return Control("encryption", "fail", msg, "SAI-ENC-001")


def _signature(cr: Obj, pods: list[Obj], out: list[Finding]) -> Control:
    if cr.get("kind") != "SecureInferenceService":
        return Control("signature", "n/a", "no model is served")
    subject = f"{cr.get('kind')}/{_meta(cr).get('namespace')}/{_meta(cr).get('name')}"
    missing = [
        str(_meta(p).get("name"))
        for p in pods
        if not any(
            c.get("name") == MODEL_VERIFY for c in pod_template(p)[1].get("initContainers") or []
        )
    ]
    live = [dict(p) for p in pods if "status" in p]
    failed = init_failure(live, MODEL_VERIFY)
    if missing or failed:
        msg = failed or f"no {MODEL_VERIFY} init container in " + ", ".join(missing)
        out.append(finding("SAI-SIG-001", subject, msg))
        return Control("signature", "fail", msg, "SAI-SIG-001")
    verified = verified_model(live, MODEL_VERIFY)
    if verified:
        return Control("signature", "pass", f"verified {verified[0]}")
    return Control("signature", "pass", f"{MODEL_VERIFY} runs before the server in every pod")


def _tls_secret(cr: Obj) -> str:
    tls = (cr.get("spec") or {}).get("tls") or {}
    if tls.get("mode") == "Secret" and tls.get("secretName"):
        return str(tls["secretName"])
    return f"{_meta(cr).get('name')}-tls"


def _tls(cr: Obj, pods: list[Obj], out: list[Finding]) -> Control:
    if cr.get("kind") != "SecureInferenceService":
        return Control("tls", "n/a", "nothing is served")
    secret = _tls_secret(cr)
    bad = []
    for pod in pods:
        spec = pod_template(pod)[1]
        names = {
            v.get("name")
            for v in spec.get("volumes") or []
            if (v.get("secret") or {}).get("secretName") == secret
        }
        mounted = any(
            m.get("name") in names for c in containers(spec) for m in c.get("volumeMounts") or []
        )
        if not mounted:
            bad.append(str(_meta(pod).get("name")))
    if not bad:
        return Control("tls", "pass", f"serving certificate from Secret {secret} mounted")
    msg = f"Secret {secret} not mounted in " + ", ".join(bad)
    out.append(
        finding(
            "SAI-TLS-001",
            f"{cr.get('kind')}/{_meta(cr).get('namespace')}/{_meta(cr).get('name')}",
            msg,
        )
    )
    return Control("tls", "fail", msg, "SAI-TLS-001")


def _drift(ctx: _Ctx, cr: Obj, out: list[Finding]) -> Control:
    drift = (cr.get("status") or {}).get("drift") or {}
    times = [
        t
        for t in (
            _parse_time(drift.get("lastRevertTime")),
            ctx.reverts.get(str(_meta(cr).get("uid"))),
        )
        if t
    ]
    last = max(times) if times else None
    subject = f"{cr.get('kind')}/{_meta(cr).get('namespace')}/{_meta(cr).get('name')}"
    if last is not None and ctx.now - last <= DRIFT_WINDOW:
        what = drift.get("lastObject") or "a child"
        msg = f"reverted {what} at {last.isoformat()}"
        out.append(finding("SAI-DRIFT-001", subject, msg))
        return Control("drift", "fail", msg, "SAI-DRIFT-001")
    if "events" in ctx.gathered.forbidden:
        return Control(
            "drift", "unknown", f"could not check events: {ctx.gathered.forbidden['events']}"
        )
    return Control("drift", "pass", "no revert in the last 24 h")


def _quarantine(cr: Obj, out: list[Finding]) -> Control:
    quarantined, why = is_quarantined(cr)
    if not quarantined:
        return Control("quarantine", "pass", why)
    out.append(
        finding(
            "SAI-QUA-001",
            f"{cr.get('kind')}/{_meta(cr).get('namespace')}/{_meta(cr).get('name')}",
            why,
        )
    )
    return Control("quarantine", "fail", why, "SAI-QUA-001")


def _managed(ctx: _Ctx, cr: Obj, selected: list[Obj], out: list[Finding]) -> WorkloadPosture:
    """The controls of one workload. `selected`: its live pods and pod templates; isolation
    covers both (pods to come), the other controls the live pods, or the templates while no
    pod runs."""
    meta = _meta(cr)
    subject = f"{cr.get('kind')}/{meta.get('namespace')}/{meta.get('name')}"
    pods = [p for p in selected if not p.get(TEMPLATE)] or selected
    max_seconds = ctx.policy.tokens.max_seconds
    judges = {
        "isolated": lambda: _isolated(ctx, cr, selected, out),
        "hardened": lambda: _pod_checks(
            "hardened",
            "SAI-PSS-001",
            subject,
            pods,
            pss_problems,
            out,
            "pods meet Pod Security restricted",
        ),
        "tokens": lambda: _pod_checks(
            "tokens",
            "SAI-TOK-001",
            subject,
            pods,
            lambda p: token_problems(p, max_seconds),
            out,
            "no automounted token; projected tokens within policy",
        ),
        "encryption": lambda: _encryption(ctx, cr, pods, out),
        "signature": lambda: _signature(cr, pods, out),
        "tls": lambda: _tls(cr, pods, out),
        "drift": lambda: _drift(ctx, cr, out),
        "quarantine": lambda: _quarantine(cr, out),
    }
    controls = []
    for control in CONTROLS:
        unknown = None if control == "drift" else _unknown(ctx, control)
        controls.append(unknown or judges[control]())
    return WorkloadPosture(
        str(cr.get("kind")), str(meta.get("namespace")), str(meta.get("name")), tuple(controls)
    )


# --------------------------------------------------------------------------- shadow AI


def ai_signals(spec: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(accelerator signals, image/port signals) of a pod spec."""
    gpus, others = [], []
    for c in containers(spec):
        res = c.get("resources") or {}
        names = {str(k) for part in ("requests", "limits") for k in (res.get(part) or {})}
        gpus += [f"{c.get('name')} requests {n}" for n in sorted(names) if ACCELERATOR_RE.match(n)]
        image = str(c.get("image") or "")
        if image and AI_IMAGE_RE.search(image_repository(image)):
            others.append(f"{c.get('name')} runs {image}")
        for port in c.get("ports") or []:
            number = port.get("containerPort")
            if number in AI_PORTS:
                others.append(f"{c.get('name')} listens on {number} ({AI_PORTS[number]})")
    return gpus, others


def _is_managed(obj: Obj, workloads: set[str], trust_kind: bool) -> bool:
    """Made by secureai: owned by a live workload. Labels prove nothing (anyone can copy
    them); an owner reference to a missing uid is garbage-collected. When the workloads
    could not be read (`trust_kind`), an owner of a secureai kind has to do."""
    return any(
        ref.get("uid") in workloads
        or (
            trust_kind
            and ref.get("kind") in KINDS
            and str(ref.get("apiVersion", "")).startswith(GROUP)
        )
        for ref in _meta(obj).get("ownerReferences") or []
    )


def _has_controller(obj: Obj) -> bool:
    return any(o.get("controller") for o in _meta(obj).get("ownerReferences") or [])


def _lacks(
    spec: Mapping[str, Any], labels: Mapping[str, str], ns_policies: list[Obj], enforcing: bool
) -> list[str]:
    out = []
    directions: set[str] = set()
    for p in ns_policies:
        pspec = p.get("spec") or {}
        if isolation.selects(pspec.get("podSelector"), labels):
            directions |= isolation.policy_types(pspec)
    missing = [d for d in isolation.DIRECTIONS if d not in directions]
    if missing:
        out.append("no NetworkPolicy isolates its " + " and ".join(d.lower() for d in missing))
    violations = pss.evaluate(spec, {"labels": labels})
    if violations:
        out.append(
            f"{len(violations)} Pod Security restricted violation(s), e.g. {violations[0].message}"
        )
    if spec.get("automountServiceAccountToken") is not False:
        out.append("an API token may be automounted")
    if unpinned_images(spec):
        out.append("images not pinned by digest")
    if not enforcing:
        out.append("its namespace does not enforce Pod Security restricted")
    return out


# --------------------------------------------------------------------------- RBAC


def _rule_reads_secret(rule: Obj, name: str) -> bool:
    groups = rule.get("apiGroups") or []
    resources = rule.get("resources") or []
    verbs = set(rule.get("verbs") or [])
    names = rule.get("resourceNames") or []
    return (
        ("" in groups or "*" in groups)
        and ("secrets" in resources or "*" in resources)
        and bool(verbs & SECRET_VERBS)
        and (not names or name in names)
    )


def _subject(s: Obj, binding_ns: str | None) -> str:
    kind = s.get("kind")
    if kind == "ServiceAccount":
        return f"ServiceAccount:{s.get('namespace') or binding_ns}/{s.get('name')}"
    return f"{kind}:{s.get('name')}"


def _platform(binding: Obj) -> bool:
    """The control plane's own bindings (bootstrap defaults), e.g. its controllers."""
    return _labels(binding).get("kubernetes.io/bootstrapping") == "rbac-defaults"


def secret_readers(rbac: Rbac, namespace: str, name: str) -> dict[str, list[str]]:
    """Subjects that may get/list/watch Secret namespace/name -> the bindings granting it."""
    croles = {str(_meta(r).get("name")): r for r in rbac.cluster_roles}
    roles = {(str(_meta(r).get("namespace")), str(_meta(r).get("name"))): r for r in rbac.roles}
    out: dict[str, list[str]] = defaultdict(list)

    def grants(role: Obj | None) -> bool:
        return role is not None and any(
            _rule_reads_secret(r, name) for r in role.get("rules") or []
        )

    for b in rbac.cluster_role_bindings:
        if _platform(b) or (b.get("roleRef") or {}).get("kind") != "ClusterRole":
            continue
        if grants(croles.get(str(b["roleRef"].get("name")))):
            for s in b.get("subjects") or []:
                out[_subject(s, None)].append(f"ClusterRoleBinding/{_meta(b).get('name')}")
    for b in rbac.role_bindings:
        bns = str(_meta(b).get("namespace"))
        if bns != namespace or _platform(b):
            continue
        ref = b.get("roleRef") or {}
        role = (
            croles.get(str(ref.get("name")))
            if ref.get("kind") == "ClusterRole"
            else roles.get((bns, str(ref.get("name"))))
        )
        if grants(role):
            for s in b.get("subjects") or []:
                out[_subject(s, bns)].append(f"RoleBinding/{bns}/{_meta(b).get('name')}")
    return dict(out)


def operator_subject(subject: str, operator_namespace: str) -> bool:
    """The operator's own identities: ServiceAccounts of its namespace, and the cluster's
    superusers (system:masters), who can read anything anyway."""
    return (
        subject.startswith(f"ServiceAccount:{operator_namespace}/")
        or subject == "Group:system:masters"
    )


def sensitive_secrets(g: Gathered) -> list[tuple[str, str, str]]:
    """(namespace, name, what) of Secrets that hold a KEK (named by a training job's
    encrypted dataset) or the operator's CA key."""
    out = {(g.operator_namespace, g.ca_secret): "the operator's CA key"}
    for cr in g.workloads:
        for d in (cr.get("spec") or {}).get("datasets") or []:
            if d.get("encrypted") and d.get("keySecret"):
                out.setdefault(
                    (str(_meta(cr).get("namespace")), str(d["keySecret"])), "a dataset KEK"
                )
    return [(ns, name, what) for (ns, name), what in sorted(out.items())]


# --------------------------------------------------------------------------- the report


def judge(g: Gathered, policy: Policy, now: datetime, namespace: str | None = None) -> Posture:
    """The posture of the cluster (or of `namespace`): controls, shadow AI, findings."""
    ctx = _context(g, policy, now)
    findings: list[Finding] = []
    skipped = [f"could not check {r}: {why}" for r, why in sorted(g.forbidden.items())]

    def inside(obj: Obj) -> bool:
        return namespace is None or _meta(obj).get("namespace") == namespace

    ai_namespaces: set[str] = set()
    workloads = []
    for cr in sorted((w for w in g.workloads if inside(w)), key=_ref):
        pods = _workload_pods(ctx, cr)
        workloads.append(_managed(ctx, cr, pods, findings))
        ai_namespaces.add(str(_meta(cr).get("namespace")))
        images = sorted({i for p in pods for i in unpinned_images(pod_template(p)[1])})
        if images and "pods" not in g.forbidden:
            findings.append(finding("SAI-IMG-001", _ref(cr), "runs " + ", ".join(images)))

    enforce = {
        str(_meta(n).get("name")): _labels(n).get(ENFORCE_LABEL) == "restricted"
        for n in g.namespaces
    }
    shadow = []
    candidates = [c for c in g.controllers if not (c.get("kind") == "Job" and _has_controller(c))]
    candidates += [p for p in g.pods if not _has_controller(p)]
    uids = {str(_meta(w).get("uid")) for w in g.workloads}
    trust = bool({"securetrainingjobs", "secureinferenceservices"} & set(g.forbidden))
    candidates = [c for c in candidates if inside(c) and not _is_managed(c, uids, trust)]
    for obj in sorted(candidates, key=_ref):
        tmeta, spec = pod_template(obj)
        gpus, others = ai_signals(spec)
        if not gpus and not others:
            continue
        ns = str(_meta(obj).get("namespace"))
        ai_namespaces.add(ns)
        lacks = _lacks(
            spec, tmeta.get("labels") or {}, ctx.policies.get(ns, []), enforce.get(ns, True)
        )
        shadow.append(
            Shadow(
                str(obj.get("kind")),
                ns,
                str(_meta(obj).get("name")),
                tuple(gpus + others),
                tuple(lacks),
            )
        )
        rule = "SAI-SHADOW-001" if gpus else "SAI-SHADOW-002"
        lacking = "; lacks: " + "; ".join(lacks) if lacks else ""
        findings.append(finding(rule, _ref(obj), "; ".join(gpus + others) + lacking))
        images = unpinned_images(spec)
        if images:
            findings.append(finding("SAI-IMG-001", _ref(obj), "runs " + ", ".join(images)))

    if "namespaces" not in g.forbidden:
        for ns in sorted(ai_namespaces):
            if not enforce.get(ns, False):
                findings.append(
                    finding("SAI-NS-001", f"Namespace/{ns}", f"no {ENFORCE_LABEL}=restricted label")
                )

    if not any(
        r in g.forbidden for r in ("clusterroles", "clusterrolebindings", "roles", "rolebindings")
    ):
        for ns, name, what in sensitive_secrets(g):
            if namespace is not None and ns != namespace:
                continue
            readers = secret_readers(g.rbac, ns, name)
            extra = {
                s: b for s, b in readers.items() if not operator_subject(s, g.operator_namespace)
            }
            if extra:
                who = ", ".join(
                    f"{s} (via {', '.join(sorted(b))})" for s, b in sorted(extra.items())
                )
                findings.append(
                    finding(
                        "SAI-RBAC-001", f"Secret/{ns}/{name}", f"holds {what}; readable by {who}"
                    )
                )

    if g.ca_not_after and namespace is None:
        last = max(g.ca_not_after)
        if last <= now:
            findings.append(
                finding(
                    "SAI-CA-002",
                    f"Secret/{g.operator_namespace}/{g.ca_secret}",
                    f"expired at {last.isoformat()}",
                )
            )
        elif last - now <= CA_WARNING:
            findings.append(
                finding(
                    "SAI-CA-001",
                    f"Secret/{g.operator_namespace}/{g.ca_secret}",
                    f"expires at {last.isoformat()}",
                )
            )

    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    findings.sort(key=lambda f: (order[f.severity], f.id, f.subject))
    return Posture(tuple(workloads), tuple(shadow), tuple(findings), tuple(skipped))
