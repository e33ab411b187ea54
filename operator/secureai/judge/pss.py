"""Pod Security Standards (PSS) checker: the admission plugin's rules, pure.

Checks the camelCase dict form of a PodSpec (as written in YAML manifests) against every
field rule of the Kubernetes Pod Security Standards, Baseline and Restricted profiles, as
the in-tree Pod Security admission plugin evaluates them.

Profile version
    ``LATEST_VERSION`` is policy version v1.37, what ``enforce-version: latest`` means
    on a v1.37 apiserver. Pass ``version=(1, N)`` to evaluate an older pinned
    version. Versions from v1.25, when Pod Security admission went GA, are supported.
    Newer versions are clamped to the latest, as the admission plugin does.

Semantics mirrored from the admission plugin (k8s.io/pod-security-admission/policy)
    * Every container rule covers ``containers``, ``initContainers`` and
      ``ephemeralContainers``. Native sidecars are init containers and get no
      exemption.
    * Restricted is every Baseline check plus the Restricted checks, minus the Baseline
      checks that a Restricted check overrides: ``restrictedVolumes`` replaces
      ``hostPathVolumes``, ``seccompProfile_restricted`` replaces
      ``seccompProfile_baseline``, ``capabilities_restricted`` replaces
      ``capabilities_baseline``, and from v1.35 ``procMount_restricted`` replaces
      ``procMount``.
    * Inheritance: ``runAsNonRoot`` and ``seccompProfile`` may be set on the pod and
      left unset on a container. A container that sets its own value is judged by it,
      so a container ``runAsNonRoot: false`` or ``seccompProfile: Unconfined`` fails
      even when the pod-level value is good. Anything else is checked wherever it is
      set, at pod level and on every container.
    * Windows pods (``spec.os.name: windows``) are exempt from the Restricted
      ``allowPrivilegeEscalation``, ``seccompProfile`` and ``capabilities`` checks.
      Because those checks override their Baseline counterparts, such a pod gets no
      seccomp or capabilities check at all under Restricted.
    * From v1.35, user-namespaced pods (``hostUsers: false``) skip the Restricted
      ``runAsNonRoot`` and ``runAsUser`` checks and the Baseline ``procMount`` check.
      Restricted still requires the default ``procMount``.

Sources: the "Pod Security Standards" page on kubernetes.io, the ``check_*.go`` files in
staging/src/k8s.io/pod-security-admission/policy, the PRs that changed them (#130394 image
volumes, #132157 user namespaces at v1.35, #125271 probe hosts at v1.34), and the v1.37
changelog (#138389 safe sysctls). Where the published page lags the code (it omits the
``image`` volume type and the newest safe sysctls), this module follows the code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, Literal

Version = tuple[int, int]
Level = Literal["baseline", "restricted"]

LATEST_VERSION: Version = (1, 37)
MIN_SUPPORTED_VERSION: Version = (1, 25)

CONTAINER_KINDS: tuple[str, ...] = ("containers", "initContainers", "ephemeralContainers")

BASELINE_ALLOWED_CAPABILITIES: frozenset[str] = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)

RESTRICTED_ALLOWED_VOLUME_TYPES: frozenset[str] = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)

ALLOWED_SECCOMP_TYPES: frozenset[str] = frozenset({"RuntimeDefault", "Localhost"})
ALLOWED_APPARMOR_TYPES: frozenset[str] = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"

# Safe sysctls, keyed by the policy version that first allows them.
_SYSCTLS_BY_VERSION: tuple[tuple[Version, frozenset[str]], ...] = (
    (
        (1, 0),
        frozenset(
            {
                "kernel.shm_rmid_forced",
                "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range",
                "net.ipv4.ip_unprivileged_port_start",
            }
        ),
    ),
    ((1, 27), frozenset({"net.ipv4.ip_local_reserved_ports"})),
    (
        (1, 29),
        frozenset(
            {
                "net.ipv4.tcp_keepalive_time",
                "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes",
            }
        ),
    ),
    ((1, 32), frozenset({"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"})),
    ((1, 37), frozenset({"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"})),
)

# Allowed seLinuxOptions.type values ("" means unset), keyed by first policy version.
_SELINUX_TYPES_BY_VERSION: tuple[tuple[Version, frozenset[str]], ...] = (
    ((1, 0), frozenset({"", "container_t", "container_init_t", "container_kvm_t"})),
    ((1, 31), frozenset({"container_engine_t"})),
)


def safe_sysctls(version: Version = LATEST_VERSION) -> frozenset[str]:
    """Return the sysctl names that Baseline allows at ``version``."""
    return _union_up_to(_SYSCTLS_BY_VERSION, _resolve_version(version))


def allowed_selinux_types(version: Version = LATEST_VERSION) -> frozenset[str]:
    """Return the seLinuxOptions.type values ("" = unset) that Baseline allows at ``version``."""
    return _union_up_to(_SELINUX_TYPES_BY_VERSION, _resolve_version(version))


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``check`` is the admission plugin's check ID."""

    check: str
    message: str


def check_baseline(
    pod_spec: Mapping[str, Any],
    pod_metadata: Mapping[str, Any] | None = None,
    *,
    version: Version = LATEST_VERSION,
) -> list[str]:
    """Return the Baseline violations of a pod spec. An empty list means compliant."""
    return [v.message for v in evaluate(pod_spec, pod_metadata, level="baseline", version=version)]


def check_restricted(
    pod_spec: Mapping[str, Any],
    pod_metadata: Mapping[str, Any] | None = None,
    *,
    version: Version = LATEST_VERSION,
) -> list[str]:
    """Return the Restricted violations of a pod spec, Baseline ones included.

    An empty list means compliant.
    """
    return [
        v.message for v in evaluate(pod_spec, pod_metadata, level="restricted", version=version)
    ]


def evaluate(
    pod_spec: Mapping[str, Any],
    pod_metadata: Mapping[str, Any] | None = None,
    *,
    level: Level = "restricted",
    version: Version = LATEST_VERSION,
) -> list[Violation]:
    """Run every check that applies to ``level`` at ``version``, in a fixed order."""
    if level not in ("baseline", "restricted"):
        raise ValueError(f"unknown level {level!r}")
    pod = _Pod(_as_map(pod_spec), _as_map(pod_metadata), _resolve_version(version))
    violations: list[Violation] = []
    for check in _checks_for(level, pod.version):
        violations.extend(Violation(check.id, message) for message in check.run(pod))
    return violations


def pod_specs_of(manifest: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Extract ``(label, pod spec, pod metadata)`` from a workload manifest.

    Handles Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController,
    Job, CronJob, PodTemplate and ``kind: List``. For a template the metadata is the
    template's, because that is where pod annotations such as AppArmor live. Any other
    kind gives an empty list. The label is ``Kind/name``.
    """
    if not isinstance(manifest, Mapping):
        return []
    kind = manifest.get("kind")
    metadata = _as_map(manifest.get("metadata"))
    spec = _as_map(manifest.get("spec"))
    label = f"{kind}/{metadata.get('name', '<unnamed>')}"

    if kind == "List":
        found: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        for item in _as_list(manifest.get("items")):
            found.extend(pod_specs_of(item))
        return found
    if kind == "Pod":
        return [(label, _as_dict(manifest.get("spec")), _as_dict(manifest.get("metadata")))]
    if kind == "PodTemplate":
        template = _as_map(manifest.get("template"))
    elif kind in _TEMPLATED_KINDS:
        template = _as_map(spec.get("template"))
    elif kind == "CronJob":
        job_spec = _as_map(_as_map(spec.get("jobTemplate")).get("spec"))
        template = _as_map(job_spec.get("template"))
    else:
        return []
    return [(label, _as_dict(template.get("spec")), _as_dict(template.get("metadata")))]


_TEMPLATED_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"}
)


# --------------------------------------------------------------------------- internals


def _as_map(value: Any) -> Mapping[str, Any]:
    if type(value) is dict:  # the common case, without an ABC instance check
        return value
    return value if isinstance(value, Mapping) else {}


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _union_up_to(
    table: Iterable[tuple[Version, frozenset[str]]], version: Version
) -> frozenset[str]:
    allowed: set[str] = set()
    for since, names in table:
        if since <= version:
            allowed |= names
    return frozenset(allowed)


def _resolve_version(version: Version) -> Version:
    major, minor = version
    if (major, minor) < MIN_SUPPORTED_VERSION:
        raise ValueError(
            f"policy version v{major}.{minor} is older than the oldest supported "
            f"v{MIN_SUPPORTED_VERSION[0]}.{MIN_SUPPORTED_VERSION[1]}"
        )
    return min((major, minor), LATEST_VERSION)


@dataclass(frozen=True)
class _Container:
    path: str  # e.g. "initContainers[0]"
    spec: Mapping[str, Any]

    @cached_property
    def security_context(self) -> Mapping[str, Any]:
        return _as_map(self.spec.get("securityContext"))


@dataclass(frozen=True)
class _Pod:
    spec: Mapping[str, Any]
    metadata: Mapping[str, Any]
    version: Version

    @cached_property
    def security_context(self) -> Mapping[str, Any]:
        return _as_map(self.spec.get("securityContext"))

    @cached_property
    def containers(self) -> list[_Container]:
        return [
            _Container(f"{kind}[{i}]", _as_map(container))
            for kind in CONTAINER_KINDS
            for i, container in enumerate(_as_list(self.spec.get(kind)))
        ]

    @property
    def is_windows(self) -> bool:
        return _as_map(self.spec.get("os")).get("name") == "windows"

    @property
    def user_namespace_relaxed(self) -> bool:
        """True when v1.35+ relaxations for ``hostUsers: false`` pods apply."""
        return self.version >= (1, 35) and self.spec.get("hostUsers") is False


@dataclass(frozen=True)
class _Check:
    id: str
    level: Level
    run: Callable[[_Pod], list[str]]
    since: Version = (1, 0)
    overrides: tuple[str, ...] = ()


def _is_set_true(value: Any) -> bool:
    """True for anything but unset/false: a non-boolean is not accepted as compliant."""
    return value is not None and value is not False


# ---- Baseline checks


def _windows_host_process(pod: _Pod) -> list[str]:
    out: list[str] = []
    setters = [("", pod.security_context)] + [
        (f"{c.path}.", c.security_context) for c in pod.containers
    ]
    for prefix, sc in setters:
        if _is_set_true(_as_map(sc.get("windowsOptions")).get("hostProcess")):
            out.append(f"{prefix}securityContext.windowsOptions.hostProcess must not be true")
    return out


def _host_namespaces(pod: _Pod) -> list[str]:
    return [
        f"{field} must not be true"
        for field in ("hostNetwork", "hostPID", "hostIPC")
        if _is_set_true(pod.spec.get(field))
    ]


def _privileged(pod: _Pod) -> list[str]:
    return [
        f"{c.path}.securityContext.privileged must not be true"
        for c in pod.containers
        if _is_set_true(c.security_context.get("privileged"))
    ]


def _capabilities_baseline(pod: _Pod) -> list[str]:
    out: list[str] = []
    for c in pod.containers:
        added = _as_list(_as_map(c.security_context.get("capabilities")).get("add"))
        bad = [str(cap) for cap in added if cap not in BASELINE_ALLOWED_CAPABILITIES]
        if bad:
            out.append(
                f"{c.path}.securityContext.capabilities.add must not include "
                f"{', '.join(bad)} (not in the baseline default set)"
            )
    return out


def _host_path_volumes(pod: _Pod) -> list[str]:
    return [
        f"volumes[{i}].hostPath must not be set (volume {_as_map(volume).get('name')!r})"
        for i, volume in enumerate(_as_list(pod.spec.get("volumes")))
        if _as_map(volume).get("hostPath") is not None
    ]


def _host_ports(pod: _Pod) -> list[str]:
    out: list[str] = []
    for c in pod.containers:
        for j, port in enumerate(_as_list(c.spec.get("ports"))):
            host_port = _as_map(port).get("hostPort")
            if host_port not in (None, 0):
                out.append(f"{c.path}.ports[{j}].hostPort must be 0 or unset, not {host_port!r}")
    return out


def _app_armor(pod: _Pod) -> list[str]:
    out: list[str] = []
    setters = [("", pod.security_context)] + [
        (f"{c.path}.", c.security_context) for c in pod.containers
    ]
    for prefix, sc in setters:
        profile = sc.get("appArmorProfile")
        if profile is None:
            continue
        profile_type = _as_map(profile).get("type")
        if profile_type not in ALLOWED_APPARMOR_TYPES:
            out.append(
                f"{prefix}securityContext.appArmorProfile.type must be RuntimeDefault or "
                f"Localhost, not {profile_type!r}"
            )
    annotations = _as_map(pod.metadata.get("annotations"))
    for key in sorted(annotations):
        if not str(key).startswith(APPARMOR_ANNOTATION_PREFIX):
            continue
        value = annotations[key]
        ok = value in (None, "", "runtime/default") or (
            isinstance(value, str) and value.startswith("localhost/")
        )
        if not ok:
            out.append(
                f"metadata.annotations[{key!r}] must be 'runtime/default', 'localhost/<profile>' "
                f"or empty, not {value!r}"
            )
    return out


def _se_linux_options(pod: _Pod) -> list[str]:
    allowed_types = allowed_selinux_types(pod.version)
    out: list[str] = []
    setters = [("", pod.security_context)] + [
        (f"{c.path}.", c.security_context) for c in pod.containers
    ]
    for prefix, sc in setters:
        options = sc.get("seLinuxOptions")
        if options is None:
            continue
        options = _as_map(options)
        se_type = options.get("type") or ""
        if se_type not in allowed_types:
            allowed = ", ".join(sorted(t for t in allowed_types if t))
            out.append(
                f"{prefix}securityContext.seLinuxOptions.type must be unset or one of "
                f"{allowed}, not {se_type!r}"
            )
        for field in ("user", "role"):
            if options.get(field):
                out.append(f"{prefix}securityContext.seLinuxOptions.{field} must not be set")
    return out


def _proc_mount_unconditional(pod: _Pod) -> list[str]:
    out: list[str] = []
    for c in pod.containers:
        proc_mount = c.security_context.get("procMount")
        if proc_mount is not None and proc_mount != "Default":
            out.append(
                f"{c.path}.securityContext.procMount must be Default or unset, not {proc_mount!r}"
            )
    return out


def _proc_mount_baseline(pod: _Pod) -> list[str]:
    if pod.user_namespace_relaxed:
        return []
    return _proc_mount_unconditional(pod)


def _seccomp_baseline(pod: _Pod) -> list[str]:
    out: list[str] = []
    setters = [("", pod.security_context)] + [
        (f"{c.path}.", c.security_context) for c in pod.containers
    ]
    for prefix, sc in setters:
        profile = sc.get("seccompProfile")
        if profile is None:
            continue
        profile_type = _as_map(profile).get("type")
        if profile_type not in ALLOWED_SECCOMP_TYPES:
            out.append(
                f"{prefix}securityContext.seccompProfile.type must be RuntimeDefault or "
                f"Localhost when set, not {profile_type!r}"
            )
    return out


def _sysctls(pod: _Pod) -> list[str]:
    allowed = safe_sysctls(pod.version)
    out: list[str] = []
    for i, sysctl in enumerate(_as_list(pod.security_context.get("sysctls"))):
        name = _as_map(sysctl).get("name")
        if name not in allowed:
            out.append(
                f"securityContext.sysctls[{i}].name {name!r} is not a safe sysctl at policy "
                f"v{pod.version[0]}.{pod.version[1]}"
            )
    return out


_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_LIFECYCLE_HOOKS = ("postStart", "preStop")
_HOST_HANDLERS = ("httpGet", "tcpSocket")


def _host_probes_and_lifecycle(pod: _Pod) -> list[str]:
    out: list[str] = []
    for c in pod.containers:
        handlers: list[tuple[str, Mapping[str, Any]]] = [
            (probe, _as_map(c.spec.get(probe))) for probe in _PROBES
        ]
        lifecycle = _as_map(c.spec.get("lifecycle"))
        handlers += [
            (f"lifecycle.{hook}", _as_map(lifecycle.get(hook))) for hook in _LIFECYCLE_HOOKS
        ]
        for where, handler in handlers:
            for kind in _HOST_HANDLERS:
                host = _as_map(handler.get(kind)).get("host")
                if host:
                    out.append(f"{c.path}.{where}.{kind}.host must not be set (got {host!r})")
    return out


# ---- Restricted checks


def _restricted_volumes(pod: _Pod) -> list[str]:
    allowed = ", ".join(sorted(RESTRICTED_ALLOWED_VOLUME_TYPES))
    out: list[str] = []
    for i, raw in enumerate(_as_list(pod.spec.get("volumes"))):
        volume = _as_map(raw)
        sources = [k for k, v in volume.items() if k != "name" and v is not None]
        if any(source in RESTRICTED_ALLOWED_VOLUME_TYPES for source in sources):
            continue
        used = ", ".join(sorted(sources)) or "no volume source"
        out.append(
            f"volumes[{i}] ({volume.get('name')!r}) uses {used}; restricted allows only {allowed}"
        )
    return out


def _allow_privilege_escalation(pod: _Pod) -> list[str]:
    if pod.is_windows:
        return []
    return [
        f"{c.path}.securityContext.allowPrivilegeEscalation must be false"
        for c in pod.containers
        if c.security_context.get("allowPrivilegeEscalation") is not False
    ]


def _run_as_non_root(pod: _Pod) -> list[str]:
    if pod.user_namespace_relaxed:
        return []
    out: list[str] = []
    pod_value = pod.security_context.get("runAsNonRoot")
    if pod_value is not None and pod_value is not True:
        out.append("securityContext.runAsNonRoot must not be false")
    for c in pod.containers:
        value = c.security_context.get("runAsNonRoot")
        if value is None:
            if pod_value is not True:
                out.append(
                    f"{c.path}.securityContext.runAsNonRoot must be true "
                    "(or securityContext.runAsNonRoot=true at pod level)"
                )
        elif value is not True:
            out.append(f"{c.path}.securityContext.runAsNonRoot must not be false")
    return out


def _run_as_user(pod: _Pod) -> list[str]:
    if pod.user_namespace_relaxed:
        return []
    setters = [("", pod.security_context)] + [
        (f"{c.path}.", c.security_context) for c in pod.containers
    ]
    return [
        f"{prefix}securityContext.runAsUser must not be 0"
        for prefix, sc in setters
        if sc.get("runAsUser") is not None and sc.get("runAsUser") == 0
    ]


def _seccomp_restricted(pod: _Pod) -> list[str]:
    if pod.is_windows:
        return []
    out: list[str] = []
    pod_profile = pod.security_context.get("seccompProfile")
    pod_ok = False
    if pod_profile is not None:
        pod_type = _as_map(pod_profile).get("type")
        pod_ok = pod_type in ALLOWED_SECCOMP_TYPES
        if not pod_ok:
            out.append(
                "securityContext.seccompProfile.type must be RuntimeDefault or Localhost, "
                f"not {pod_type!r}"
            )
    for c in pod.containers:
        profile = c.security_context.get("seccompProfile")
        if profile is None:
            if not pod_ok:
                out.append(
                    f"{c.path}.securityContext.seccompProfile.type must be RuntimeDefault or "
                    "Localhost (or set securityContext.seccompProfile at pod level)"
                )
            continue
        profile_type = _as_map(profile).get("type")
        if profile_type not in ALLOWED_SECCOMP_TYPES:
            out.append(
                f"{c.path}.securityContext.seccompProfile.type must be RuntimeDefault or "
                f"Localhost, not {profile_type!r}"
            )
    return out


def _capabilities_restricted(pod: _Pod) -> list[str]:
    if pod.is_windows:
        return []
    out: list[str] = []
    for c in pod.containers:
        capabilities = _as_map(c.security_context.get("capabilities"))
        if "ALL" not in _as_list(capabilities.get("drop")):
            out.append(f"{c.path}.securityContext.capabilities.drop must include ALL")
        bad = [str(cap) for cap in _as_list(capabilities.get("add")) if cap != "NET_BIND_SERVICE"]
        if bad:
            out.append(
                f"{c.path}.securityContext.capabilities.add must not include {', '.join(bad)} "
                "(only NET_BIND_SERVICE may be added)"
            )
    return out


_CHECKS: tuple[_Check, ...] = (
    _Check("windowsHostProcess", "baseline", _windows_host_process),
    _Check("hostNamespaces", "baseline", _host_namespaces),
    _Check("privileged", "baseline", _privileged),
    _Check("capabilities_baseline", "baseline", _capabilities_baseline),
    _Check("hostPathVolumes", "baseline", _host_path_volumes),
    _Check("hostPorts", "baseline", _host_ports),
    _Check("appArmorProfile", "baseline", _app_armor),
    _Check("seLinuxOptions", "baseline", _se_linux_options),
    _Check("procMount", "baseline", _proc_mount_baseline),
    _Check("seccompProfile_baseline", "baseline", _seccomp_baseline),
    _Check("sysctls", "baseline", _sysctls),
    _Check("hostProbesAndHostLifecycle", "baseline", _host_probes_and_lifecycle, since=(1, 34)),
    _Check("restrictedVolumes", "restricted", _restricted_volumes, overrides=("hostPathVolumes",)),
    _Check("allowPrivilegeEscalation", "restricted", _allow_privilege_escalation),
    _Check("runAsNonRoot", "restricted", _run_as_non_root),
    _Check("runAsUser", "restricted", _run_as_user),
    _Check(
        "seccompProfile_restricted",
        "restricted",
        _seccomp_restricted,
        overrides=("seccompProfile_baseline",),
    ),
    _Check(
        "capabilities_restricted",
        "restricted",
        _capabilities_restricted,
        overrides=("capabilities_baseline",),
    ),
    _Check(
        "procMount_restricted",
        "restricted",
        _proc_mount_unconditional,
        since=(1, 35),
        overrides=("procMount",),
    ),
)


@cache
def _checks_for(level: Level, version: Version) -> list[_Check]:
    active = [c for c in _CHECKS if c.since <= version]
    if level == "baseline":
        return [c for c in active if c.level == "baseline"]
    overridden = {o for c in active if c.level == "restricted" for o in c.overrides}
    return [c for c in active if c.id not in overridden]


def check_ids(level: Level = "restricted", version: Version = LATEST_VERSION) -> list[str]:
    """Return the IDs of the checks that ``level`` runs at ``version``."""
    return [c.id for c in _checks_for(level, _resolve_version(version))]
