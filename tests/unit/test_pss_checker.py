"""Tests of the Pod Security Standards checker, secureai/judge/pss.py (tests and audit share it)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secureai.judge import pss
from secureai.judge.pss import (
    LATEST_VERSION,
    check_baseline,
    check_ids,
    check_restricted,
    evaluate,
    pod_specs_of,
    safe_sysctls,
)

Pod = dict[str, Any]
Mutation = Callable[[Pod], None]

# Written out here rather than imported, so that a checker that skips a kind fails these tests.
CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")


def _container(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": "registry.example/app:1",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def compliant_pod() -> Pod:
    """A pod that meets Restricted, with one container of each kind and every allowed volume."""
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container("app")],
        "initContainers": [_container("init")],
        "ephemeralContainers": [_container("debug")],
        "volumes": [
            {"name": "cm", "configMap": {"name": "cm"}},
            {"name": "csi", "csi": {"driver": "secrets-store.csi.k8s.io"}},
            {"name": "dapi", "downwardAPI": {"items": []}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "eph", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            {"name": "img", "image": {"reference": "registry.example/model:1"}},
            {"name": "pvc", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "proj", "projected": {"sources": []}},
            {"name": "sec", "secret": {"secretName": "s"}},
        ],
    }


def _sc(pod: Pod, kind: str = "containers") -> dict[str, Any]:
    """The securityContext of the first container of ``kind``."""
    container: dict[str, Any] = pod[kind][0]
    security_context: dict[str, Any] = container.setdefault("securityContext", {})
    return security_context


def _ids(pod: Pod, level: str, metadata: dict[str, Any] | None = None) -> set[str]:
    return {v.check for v in evaluate(pod, metadata, level=level)}  # type: ignore[arg-type]


# --------------------------------------------------------------------------- compliant pods


def test_compliant_pod_passes_both_profiles() -> None:
    pod = compliant_pod()
    assert check_restricted(pod) == []
    assert check_baseline(pod) == []


def test_every_allowed_optional_setting_still_passes_restricted() -> None:
    pod = compliant_pod()
    pod["hostNetwork"] = False
    pod["hostPID"] = False
    pod["hostIPC"] = False
    pod["securityContext"].update(
        {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seLinuxOptions": {"type": "container_t", "level": "s0:c123,c456"},
            "appArmorProfile": {"type": "RuntimeDefault"},
            "windowsOptions": {"hostProcess": False},
            "sysctls": [{"name": n, "value": "1"} for n in sorted(safe_sysctls())],
        }
    )
    for kind in CONTAINER_KINDS:
        sc = _sc(pod, kind)
        sc.update(
            {
                "privileged": False,
                "runAsNonRoot": True,
                "runAsUser": 1001,
                "readOnlyRootFilesystem": True,
                "procMount": "Default",
                "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
                "appArmorProfile": {"type": "Localhost", "localhostProfile": "p"},
                "seLinuxOptions": {"type": "container_init_t"},
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            }
        )
    app = pod["containers"][0]
    app["ports"] = [{"containerPort": 8080, "hostPort": 0}]
    app["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080, "host": ""}}
    app["readinessProbe"] = {"tcpSocket": {"port": 8080}}
    app["lifecycle"] = {"preStop": {"exec": {"command": ["true"]}}}
    metadata = {
        "annotations": {
            "container.apparmor.security.beta.kubernetes.io/app": "runtime/default",
            "container.apparmor.security.beta.kubernetes.io/init": "localhost/profile",
            "unrelated.example/annotation": "unconfined",
        }
    }
    assert check_restricted(pod, metadata) == []


def test_minimal_pod_passes_baseline_but_not_restricted() -> None:
    pod: Pod = {"containers": [{"name": "app", "image": "x"}]}
    assert check_baseline(pod) == []
    assert _ids(pod, "restricted") == {
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "seccompProfile_restricted",
        "capabilities_restricted",
    }


def test_message_format_names_the_field_path() -> None:
    pod = compliant_pod()
    del _sc(pod)["allowPrivilegeEscalation"]
    assert check_restricted(pod) == [
        "containers[0].securityContext.allowPrivilegeEscalation must be false"
    ]


# --------------------------------------------------------------------------- one case per rule


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Mutation
    check: str  # check ID expected under restricted
    fragment: str  # substring of the restricted message
    baseline_check: str | None = None  # check ID expected under baseline; None = restricted only
    metadata: dict[str, Any] | None = None


def _set(kind: str, **fields: Any) -> Mutation:
    def mutate(pod: Pod) -> None:
        _sc(pod, kind).update(fields)

    return mutate


def _set_container(kind: str, **fields: Any) -> Mutation:
    def mutate(pod: Pod) -> None:
        pod[kind][0].update(copy.deepcopy(fields))

    return mutate


def _delete(kind: str, *keys: str) -> Mutation:
    def mutate(pod: Pod) -> None:
        target = _sc(pod, kind)
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return mutate


def _container_cases(kind: str) -> list[Case]:
    p = f"{kind}[0]"
    probe_host = {"httpGet": {"path": "/", "port": 80, "host": "10.0.0.1"}}
    return [
        # Baseline
        Case(
            f"{kind}-privileged",
            _set(kind, privileged=True),
            "privileged",
            f"{p}.securityContext.privileged",
            "privileged",
        ),
        Case(
            f"{kind}-capability-outside-default-set",
            _set(kind, capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
            "capabilities_restricted",
            f"{p}.securityContext.capabilities.add must not include SYS_ADMIN",
            "capabilities_baseline",
        ),
        Case(
            f"{kind}-capability-net-raw",
            _set(kind, capabilities={"drop": ["ALL"], "add": ["NET_RAW"]}),
            "capabilities_restricted",
            "NET_RAW",
            "capabilities_baseline",
        ),
        Case(
            f"{kind}-host-port",
            _set_container(kind, ports=[{"containerPort": 80, "hostPort": 8080}]),
            "hostPorts",
            f"{p}.ports[0].hostPort",
            "hostPorts",
        ),
        Case(
            f"{kind}-apparmor-unconfined",
            _set(kind, appArmorProfile={"type": "Unconfined"}),
            "appArmorProfile",
            f"{p}.securityContext.appArmorProfile.type",
            "appArmorProfile",
        ),
        Case(
            f"{kind}-selinux-type",
            _set(kind, seLinuxOptions={"type": "spc_t"}),
            "seLinuxOptions",
            f"{p}.securityContext.seLinuxOptions.type",
            "seLinuxOptions",
        ),
        Case(
            f"{kind}-selinux-user",
            _set(kind, seLinuxOptions={"user": "system_u"}),
            "seLinuxOptions",
            f"{p}.securityContext.seLinuxOptions.user",
            "seLinuxOptions",
        ),
        Case(
            f"{kind}-selinux-role",
            _set(kind, seLinuxOptions={"role": "system_r"}),
            "seLinuxOptions",
            f"{p}.securityContext.seLinuxOptions.role",
            "seLinuxOptions",
        ),
        Case(
            f"{kind}-proc-mount-unmasked",
            _set(kind, procMount="Unmasked"),
            "procMount_restricted",
            f"{p}.securityContext.procMount",
            "procMount",
        ),
        Case(
            f"{kind}-seccomp-unconfined",
            _set(kind, seccompProfile={"type": "Unconfined"}),
            "seccompProfile_restricted",
            f"{p}.securityContext.seccompProfile.type",
            "seccompProfile_baseline",
        ),
        Case(
            f"{kind}-windows-host-process",
            _set(kind, windowsOptions={"hostProcess": True}),
            "windowsHostProcess",
            f"{p}.securityContext.windowsOptions.hostProcess",
            "windowsHostProcess",
        ),
        Case(
            f"{kind}-liveness-probe-http-host",
            _set_container(kind, livenessProbe=probe_host),
            "hostProbesAndHostLifecycle",
            f"{p}.livenessProbe.httpGet.host",
            "hostProbesAndHostLifecycle",
        ),
        Case(
            f"{kind}-readiness-probe-tcp-host",
            _set_container(kind, readinessProbe={"tcpSocket": {"port": 80, "host": "node"}}),
            "hostProbesAndHostLifecycle",
            f"{p}.readinessProbe.tcpSocket.host",
            "hostProbesAndHostLifecycle",
        ),
        Case(
            f"{kind}-startup-probe-http-host",
            _set_container(kind, startupProbe=probe_host),
            "hostProbesAndHostLifecycle",
            f"{p}.startupProbe.httpGet.host",
            "hostProbesAndHostLifecycle",
        ),
        Case(
            f"{kind}-post-start-http-host",
            _set_container(kind, lifecycle={"postStart": probe_host}),
            "hostProbesAndHostLifecycle",
            f"{p}.lifecycle.postStart.httpGet.host",
            "hostProbesAndHostLifecycle",
        ),
        Case(
            f"{kind}-pre-stop-tcp-host",
            _set_container(kind, lifecycle={"preStop": {"tcpSocket": {"port": 1, "host": "h"}}}),
            "hostProbesAndHostLifecycle",
            f"{p}.lifecycle.preStop.tcpSocket.host",
            "hostProbesAndHostLifecycle",
        ),
        # Restricted only
        Case(
            f"{kind}-allow-privilege-escalation-unset",
            _delete(kind, "allowPrivilegeEscalation"),
            "allowPrivilegeEscalation",
            f"{p}.securityContext.allowPrivilegeEscalation must be false",
        ),
        Case(
            f"{kind}-allow-privilege-escalation-true",
            _set(kind, allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation",
            f"{p}.securityContext.allowPrivilegeEscalation must be false",
        ),
        Case(
            f"{kind}-run-as-non-root-false",
            _set(kind, runAsNonRoot=False),
            "runAsNonRoot",
            f"{p}.securityContext.runAsNonRoot must not be false",
        ),
        Case(
            f"{kind}-run-as-user-0",
            _set(kind, runAsUser=0),
            "runAsUser",
            f"{p}.securityContext.runAsUser must not be 0",
        ),
        Case(
            f"{kind}-capabilities-drop-missing",
            _delete(kind, "capabilities", "drop"),
            "capabilities_restricted",
            f"{p}.securityContext.capabilities.drop must include ALL",
        ),
        Case(
            f"{kind}-capabilities-drop-not-all",
            _set(kind, capabilities={"drop": ["NET_RAW"]}),
            "capabilities_restricted",
            f"{p}.securityContext.capabilities.drop must include ALL",
        ),
        Case(
            f"{kind}-capability-in-default-set-but-not-net-bind",
            _set(kind, capabilities={"drop": ["ALL"], "add": ["CHOWN"]}),
            "capabilities_restricted",
            f"{p}.securityContext.capabilities.add must not include CHOWN",
        ),
    ]


def _pod_set(**fields: Any) -> Mutation:
    def mutate(pod: Pod) -> None:
        pod.update(copy.deepcopy(fields))

    return mutate


def _pod_sc(**fields: Any) -> Mutation:
    def mutate(pod: Pod) -> None:
        pod["securityContext"].update(copy.deepcopy(fields))

    return mutate


def _pod_sc_delete(key: str) -> Mutation:
    def mutate(pod: Pod) -> None:
        del pod["securityContext"][key]

    return mutate


def _add_volume(volume: dict[str, Any]) -> Mutation:
    def mutate(pod: Pod) -> None:
        pod["volumes"].append(copy.deepcopy(volume))

    return mutate


def _noop(pod: Pod) -> None:
    del pod


_NON_CORE_VOLUMES = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "photonPersistentDisk",
]

POD_CASES: list[Case] = [
    # Baseline, pod level
    Case(
        "host-network",
        _pod_set(hostNetwork=True),
        "hostNamespaces",
        "hostNetwork",
        "hostNamespaces",
    ),
    Case("host-pid", _pod_set(hostPID=True), "hostNamespaces", "hostPID", "hostNamespaces"),
    Case("host-ipc", _pod_set(hostIPC=True), "hostNamespaces", "hostIPC", "hostNamespaces"),
    Case(
        "host-path-volume",
        _add_volume({"name": "host", "hostPath": {"path": "/etc"}}),
        "restrictedVolumes",
        "volumes[9] ('host') uses hostPath",
        "hostPathVolumes",
    ),
    Case(
        "pod-windows-host-process",
        _pod_sc(windowsOptions={"hostProcess": True}),
        "windowsHostProcess",
        "securityContext.windowsOptions.hostProcess must not be true",
        "windowsHostProcess",
    ),
    Case(
        "pod-apparmor-unconfined",
        _pod_sc(appArmorProfile={"type": "Unconfined"}),
        "appArmorProfile",
        "securityContext.appArmorProfile.type",
        "appArmorProfile",
    ),
    Case(
        "apparmor-annotation-unconfined",
        _noop,
        "appArmorProfile",
        "container.apparmor.security.beta.kubernetes.io/app",
        "appArmorProfile",
        metadata={
            "annotations": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
        },
    ),
    Case(
        "pod-selinux-type",
        _pod_sc(seLinuxOptions={"type": "unconfined_t"}),
        "seLinuxOptions",
        "securityContext.seLinuxOptions.type",
        "seLinuxOptions",
    ),
    Case(
        "pod-selinux-user",
        _pod_sc(seLinuxOptions={"user": "root"}),
        "seLinuxOptions",
        "securityContext.seLinuxOptions.user",
        "seLinuxOptions",
    ),
    Case(
        "pod-selinux-role",
        _pod_sc(seLinuxOptions={"role": "sysadm_r"}),
        "seLinuxOptions",
        "securityContext.seLinuxOptions.role",
        "seLinuxOptions",
    ),
    Case(
        "pod-seccomp-unconfined",
        _pod_sc(seccompProfile={"type": "Unconfined"}),
        "seccompProfile_restricted",
        "securityContext.seccompProfile.type must be RuntimeDefault or Localhost, not 'Unconfined'",
        "seccompProfile_baseline",
    ),
    Case(
        "unsafe-sysctl",
        _pod_sc(sysctls=[{"name": "kernel.msgmax", "value": "65536"}]),
        "sysctls",
        "securityContext.sysctls[0].name 'kernel.msgmax'",
        "sysctls",
    ),
    Case(
        "unsafe-net-sysctl",
        _pod_sc(
            sysctls=[
                {"name": "net.ipv4.tcp_syncookies", "value": "1"},
                {"name": "net.core.somaxconn", "value": "1024"},
            ]
        ),
        "sysctls",
        "securityContext.sysctls[1].name 'net.core.somaxconn'",
        "sysctls",
    ),
    # Restricted only, pod level
    Case(
        "pod-run-as-non-root-false",
        _pod_sc(runAsNonRoot=False),
        "runAsNonRoot",
        "securityContext.runAsNonRoot must not be false",
    ),
    Case(
        "pod-run-as-non-root-unset",
        _pod_sc_delete("runAsNonRoot"),
        "runAsNonRoot",
        "containers[0].securityContext.runAsNonRoot must be true",
    ),
    Case(
        "pod-run-as-user-0",
        _pod_sc(runAsUser=0),
        "runAsUser",
        "securityContext.runAsUser must not be 0",
    ),
    Case(
        "pod-seccomp-unset",
        _pod_sc_delete("seccompProfile"),
        "seccompProfile_restricted",
        "containers[0].securityContext.seccompProfile.type must be RuntimeDefault or Localhost",
    ),
] + [
    Case(
        f"volume-{source}",
        _add_volume({"name": "v", source: {}}),
        "restrictedVolumes",
        f"volumes[9] ('v') uses {source}",
        "hostPathVolumes" if source == "hostPath" else None,
    )
    for source in _NON_CORE_VOLUMES
]

ALL_CASES: list[Case] = POD_CASES + [c for kind in CONTAINER_KINDS for c in _container_cases(kind)]


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_each_rule_catches_a_minimal_violation(case: Case) -> None:
    pod = compliant_pod()
    case.mutate(pod)

    restricted = evaluate(pod, case.metadata, level="restricted")
    assert {v.check for v in restricted} == {case.check}, restricted
    messages = [v.message for v in restricted]
    assert any(case.fragment in m for m in messages), messages
    assert check_restricted(pod, case.metadata) == messages

    baseline = evaluate(pod, case.metadata, level="baseline")
    if case.baseline_check is None:
        assert baseline == [], "restricted-only rule fired under baseline"
    else:
        assert {v.check for v in baseline} == {case.baseline_check}, baseline
        assert check_baseline(pod, case.metadata) == [v.message for v in baseline]


def test_every_check_has_a_case() -> None:
    covered = {c.check for c in ALL_CASES} | {c.baseline_check for c in ALL_CASES}
    assert set(check_ids("restricted")) | set(check_ids("baseline")) <= covered


@pytest.mark.parametrize("kind", CONTAINER_KINDS)
def test_violation_only_in_one_container_kind_is_caught(kind: str) -> None:
    pod = compliant_pod()
    _sc(pod, kind)["privileged"] = True
    assert check_baseline(pod) == [f"{kind}[0].securityContext.privileged must not be true"]


def test_one_message_per_offending_container() -> None:
    pod = compliant_pod()
    pod["containers"].append(_container("second"))
    for kind in CONTAINER_KINDS:
        del _sc(pod, kind)["allowPrivilegeEscalation"]
    del pod["containers"][1]["securityContext"]["allowPrivilegeEscalation"]
    assert check_restricted(pod) == [
        f"{path}.securityContext.allowPrivilegeEscalation must be false"
        for path in (
            "containers[0]",
            "containers[1]",
            "initContainers[0]",
            "ephemeralContainers[0]",
        )
    ]


# --------------------------------------------------------------------------- inheritance


def test_pod_level_run_as_non_root_satisfies_containers() -> None:
    pod = compliant_pod()
    assert all("runAsNonRoot" not in _sc(pod, k) for k in CONTAINER_KINDS)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "runAsNonRoot" not in _ids(pod, "restricted")


def test_container_level_run_as_non_root_false_overrides_pod_true() -> None:
    pod = compliant_pod()
    _sc(pod, "initContainers")["runAsNonRoot"] = False
    assert check_restricted(pod) == [
        "initContainers[0].securityContext.runAsNonRoot must not be false"
    ]


def test_run_as_non_root_on_every_container_without_pod_level_passes() -> None:
    pod = compliant_pod()
    del pod["securityContext"]["runAsNonRoot"]
    for kind in CONTAINER_KINDS:
        _sc(pod, kind)["runAsNonRoot"] = True
    assert check_restricted(pod) == []
    del _sc(pod, "ephemeralContainers")["runAsNonRoot"]
    assert check_restricted(pod) == [
        "ephemeralContainers[0].securityContext.runAsNonRoot must be true "
        "(or securityContext.runAsNonRoot=true at pod level)"
    ]


def test_pod_level_run_as_non_root_false_is_not_rescued_by_containers() -> None:
    pod = compliant_pod()
    pod["securityContext"]["runAsNonRoot"] = False
    for kind in CONTAINER_KINDS:
        _sc(pod, kind)["runAsNonRoot"] = True
    assert check_restricted(pod) == ["securityContext.runAsNonRoot must not be false"]


def test_pod_seccomp_runtime_default_with_container_unconfined_violates() -> None:
    pod = compliant_pod()
    _sc(pod)["seccompProfile"] = {"type": "Unconfined"}
    assert check_restricted(pod) == [
        "containers[0].securityContext.seccompProfile.type must be RuntimeDefault or "
        "Localhost, not 'Unconfined'"
    ]
    assert _ids(pod, "baseline") == {"seccompProfile_baseline"}


def test_seccomp_on_every_container_without_pod_level_passes() -> None:
    pod = compliant_pod()
    del pod["securityContext"]["seccompProfile"]
    for kind in CONTAINER_KINDS:
        _sc(pod, kind)["seccompProfile"] = {"type": "RuntimeDefault"}
    _sc(pod, "initContainers")["seccompProfile"] = {"type": "Localhost", "localhostProfile": "x"}
    assert check_restricted(pod) == []
    del _sc(pod, "initContainers")["seccompProfile"]
    assert _ids(pod, "restricted") == {"seccompProfile_restricted"}
    assert check_baseline(pod) == []


def test_pod_level_unconfined_is_not_rescued_by_container_values() -> None:
    pod = compliant_pod()
    pod["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    for kind in CONTAINER_KINDS:
        _sc(pod, kind)["seccompProfile"] = {"type": "RuntimeDefault"}
    assert check_restricted(pod) == [
        "securityContext.seccompProfile.type must be RuntimeDefault or Localhost, not 'Unconfined'"
    ]


def test_seccomp_profile_without_type_is_invalid() -> None:
    pod = compliant_pod()
    _sc(pod)["seccompProfile"] = {}
    assert _ids(pod, "restricted") == {"seccompProfile_restricted"}
    assert _ids(pod, "baseline") == {"seccompProfile_baseline"}


def test_pod_level_run_as_user_zero_violates_even_if_containers_override() -> None:
    pod = compliant_pod()
    pod["securityContext"]["runAsUser"] = 0
    for kind in CONTAINER_KINDS:
        _sc(pod, kind)["runAsUser"] = 1000
    assert check_restricted(pod) == ["securityContext.runAsUser must not be 0"]


@pytest.mark.parametrize("kind", CONTAINER_KINDS)
def test_container_without_security_context_fails_every_container_rule(kind: str) -> None:
    pod = compliant_pod()
    del pod[kind][0]["securityContext"]
    assert check_restricted(pod) == [
        f"{kind}[0].securityContext.allowPrivilegeEscalation must be false",
        f"{kind}[0].securityContext.capabilities.drop must include ALL",
    ]
    assert check_baseline(pod) == []


def test_capabilities_are_never_inherited_from_the_pod() -> None:
    pod = compliant_pod()
    del _sc(pod, "ephemeralContainers")["capabilities"]
    assert check_restricted(pod) == [
        "ephemeralContainers[0].securityContext.capabilities.drop must include ALL"
    ]


# --------------------------------------------------------------------------- exemptions, versions


def test_windows_pods_are_exempt_from_linux_only_restricted_checks() -> None:
    pod: Pod = {
        "os": {"name": "windows"},
        "securityContext": {"runAsNonRoot": True},
        "containers": [{"name": "app", "image": "x"}],
    }
    assert check_restricted(pod) == []
    pod["os"]["name"] = "linux"
    assert _ids(pod, "restricted") == {
        "allowPrivilegeEscalation",
        "seccompProfile_restricted",
        "capabilities_restricted",
    }


def test_windows_pods_still_need_run_as_non_root_and_baseline() -> None:
    pod: Pod = {
        "os": {"name": "windows"},
        "containers": [{"name": "app", "image": "x", "securityContext": {"privileged": True}}],
    }
    assert _ids(pod, "restricted") == {"runAsNonRoot", "privileged"}


def test_user_namespace_relaxes_run_as_checks_and_baseline_proc_mount() -> None:
    pod = compliant_pod()
    pod["hostUsers"] = False
    pod["securityContext"].update(runAsNonRoot=False, runAsUser=0)
    _sc(pod)["procMount"] = "Unmasked"
    assert check_baseline(pod) == []
    assert _ids(pod, "restricted") == {"procMount_restricted"}

    pod["hostUsers"] = True
    assert _ids(pod, "restricted") == {"runAsNonRoot", "runAsUser", "procMount_restricted"}
    assert _ids(pod, "baseline") == {"procMount"}


def test_user_namespace_relaxation_starts_at_v1_35() -> None:
    pod = compliant_pod()
    pod["hostUsers"] = False
    pod["securityContext"]["runAsUser"] = 0
    _sc(pod)["procMount"] = "Unmasked"
    old = {v.check for v in evaluate(pod, level="restricted", version=(1, 34))}
    assert old == {"runAsUser", "procMount"}
    assert {v.check for v in evaluate(pod, level="baseline", version=(1, 34))} == {"procMount"}


def test_capabilities_are_not_relaxed_for_user_namespaces() -> None:
    pod = compliant_pod()
    pod["hostUsers"] = False
    _sc(pod)["capabilities"] = {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert _ids(pod, "baseline") == {"capabilities_baseline"}


@pytest.mark.parametrize(
    ("sysctl", "first_allowed"),
    [
        ("kernel.shm_rmid_forced", (1, 25)),
        ("net.ipv4.ip_local_reserved_ports", (1, 27)),
        ("net.ipv4.tcp_keepalive_probes", (1, 29)),
        ("net.ipv4.tcp_rmem", (1, 32)),
        ("net.ipv4.tcp_wmem", (1, 32)),
        ("net.ipv4.tcp_slow_start_after_idle", (1, 37)),
        ("net.ipv4.tcp_notsent_lowat", (1, 37)),
    ],
)
def test_safe_sysctls_follow_the_policy_version(
    sysctl: str, first_allowed: tuple[int, int]
) -> None:
    pod: Pod = {"securityContext": {"sysctls": [{"name": sysctl, "value": "1"}]}, "containers": []}
    assert check_baseline(pod, version=first_allowed) == []
    assert check_baseline(pod) == []
    if first_allowed > (1, 25):
        before = (first_allowed[0], first_allowed[1] - 1)
        assert [v.check for v in evaluate(pod, level="baseline", version=before)] == ["sysctls"]


def test_latest_safe_sysctl_set() -> None:
    assert len(safe_sysctls()) == 14
    assert safe_sysctls((1, 36)) == safe_sysctls() - {
        "net.ipv4.tcp_slow_start_after_idle",
        "net.ipv4.tcp_notsent_lowat",
    }


def test_selinux_container_engine_type_allowed_from_v1_31() -> None:
    pod: Pod = {
        "securityContext": {"seLinuxOptions": {"type": "container_engine_t"}},
        "containers": [{"name": "a", "image": "x"}],
    }
    assert check_baseline(pod) == []
    assert check_baseline(pod, version=(1, 31)) == []
    assert len(check_baseline(pod, version=(1, 30))) == 1


def test_probe_host_check_starts_at_v1_34() -> None:
    pod: Pod = {
        "containers": [
            {"name": "a", "image": "x", "livenessProbe": {"httpGet": {"port": 1, "host": "h"}}}
        ]
    }
    assert check_baseline(pod, version=(1, 33)) == []
    assert len(check_baseline(pod, version=(1, 34))) == 1


def test_image_volume_is_allowed_under_restricted() -> None:
    pod = compliant_pod()
    pod["volumes"] = [{"name": "model", "image": {"reference": "registry.example/m:1"}}]
    assert check_restricted(pod) == []


def test_versions_are_validated_and_clamped() -> None:
    pod = compliant_pod()
    with pytest.raises(ValueError, match="older than"):
        check_restricted(pod, version=(1, 24))
    assert check_restricted(pod, version=(1, 99)) == check_restricted(pod)
    assert check_ids("restricted", (1, 99)) == check_ids("restricted", LATEST_VERSION)
    with pytest.raises(ValueError, match="unknown level"):
        evaluate(pod, level="privileged")  # type: ignore[arg-type]


def test_check_registry_overrides() -> None:
    baseline = check_ids("baseline")
    restricted = check_ids("restricted")
    assert len(baseline) == 12
    assert "hostProbesAndHostLifecycle" in baseline
    for replaced in (
        "hostPathVolumes",
        "seccompProfile_baseline",
        "capabilities_baseline",
        "procMount",
    ):
        assert replaced in baseline
        assert replaced not in restricted
    assert set(baseline) - set(restricted) == {
        "hostPathVolumes",
        "seccompProfile_baseline",
        "capabilities_baseline",
        "procMount",
    }
    assert "procMount" in check_ids("restricted", (1, 34))
    assert "procMount_restricted" not in check_ids("restricted", (1, 34))


# --------------------------------------------------------------------------- robustness


def test_yaml_nulls_do_not_crash() -> None:
    pod: Pod = {
        "securityContext": None,
        "containers": [{"name": "a", "image": "x", "securityContext": None, "ports": None}],
        "initContainers": None,
        "volumes": None,
    }
    assert check_baseline(pod, None) == []
    assert _ids(pod, "restricted") == {
        "allowPrivilegeEscalation",
        "runAsNonRoot",
        "seccompProfile_restricted",
        "capabilities_restricted",
    }


def test_non_boolean_true_like_values_are_not_treated_as_compliant() -> None:
    pod = compliant_pod()
    pod["hostNetwork"] = "true"
    _sc(pod)["allowPrivilegeEscalation"] = "false"
    assert _ids(pod, "restricted") == {"hostNamespaces", "allowPrivilegeEscalation"}


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 70000) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "securityContext",
        "containers",
        "initContainers",
        "ephemeralContainers",
        "volumes",
        "hostNetwork",
        "os",
        "hostUsers",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    spec=st.dictionaries(_keys, _json, max_size=6),
    metadata=st.dictionaries(st.just("annotations"), _json),
)
def test_checker_never_raises_on_arbitrary_input(
    spec: dict[str, Any], metadata: dict[str, Any]
) -> None:
    for level in ("baseline", "restricted"):
        for violation in evaluate(spec, metadata, level=level):
            assert violation.message


# --------------------------------------------------------------------------- manifest extraction


def _template(spec: Pod) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}, "annotations": {"a": "b"}}, "spec": spec}


@pytest.mark.parametrize(
    "kind", ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"]
)
def test_pod_specs_of_templated_workloads(kind: str) -> None:
    spec = compliant_pod()
    manifest = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": "w"},
        "spec": {"template": _template(spec)},
    }
    assert pod_specs_of(manifest) == [
        (f"{kind}/w", spec, {"labels": {"app": "x"}, "annotations": {"a": "b"}})
    ]


def test_pod_specs_of_pod_cronjob_podtemplate_and_list() -> None:
    spec = compliant_pod()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "c"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": _template(spec)}}},
    }
    pod_template = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "t"},
        "template": _template(spec),
    }
    assert pod_specs_of(pod) == [("Pod/p", spec, {"name": "p"})]
    assert [label for label, _, _ in pod_specs_of(cron)] == ["CronJob/c"]
    assert pod_specs_of(cron)[0][1] is spec
    assert [label for label, _, _ in pod_specs_of(pod_template)] == ["PodTemplate/t"]
    listing = {"apiVersion": "v1", "kind": "List", "items": [pod, cron, {"kind": "Service"}]}
    assert [label for label, _, _ in pod_specs_of(listing)] == ["Pod/p", "CronJob/c"]


def test_pod_specs_of_ignores_non_workloads() -> None:
    assert pod_specs_of({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}) == []
    assert pod_specs_of(None) == []  # type: ignore[arg-type]


def test_extracted_template_metadata_feeds_apparmor_check() -> None:
    spec = compliant_pod()
    template = _template(spec)
    template["metadata"]["annotations"] = {
        "container.apparmor.security.beta.kubernetes.io/app": "unconfined"
    }
    manifest = {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": template}}
    ((label, pod_spec, metadata),) = pod_specs_of(manifest)
    assert label == "Deployment/d"
    assert [v.check for v in evaluate(pod_spec, metadata, level="baseline")] == ["appArmorProfile"]


def test_module_exports() -> None:
    assert pss.CONTAINER_KINDS == CONTAINER_KINDS
    assert pss.LATEST_VERSION == (1, 37)
    assert "image" in pss.RESTRICTED_ALLOWED_VOLUME_TYPES
    assert len(pss.RESTRICTED_ALLOWED_VOLUME_TYPES) == 9
    assert len(pss.BASELINE_ALLOWED_CAPABILITIES) == 13
