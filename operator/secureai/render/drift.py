"""Drift: how a live child differs from what the operator rendered. Pure.

Every field the operator rendered must hold its value. Lists must not grow (an extra
container, volume, rule or capability is drift). Keys the API server or controllers add
(defaults, status, bookkeeping) are ignored, except security-relevant ones.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

# Keys whose mere presence changes the security posture when the operator did not set them.
SECURITY_KEYS = frozenset(
    {
        "add",
        "appArmorProfile",
        "capabilities",
        "egress",
        "envFrom",
        "ephemeralContainers",
        "hostAliases",
        "hostIPC",
        "hostNetwork",
        "hostPID",
        "hostPath",
        "hostPort",
        "hostUsers",
        "imagePullSecrets",
        "ingress",
        "initContainers",
        "nodeName",
        "procMount",
        "runtimeClassName",
        "secrets",
        "seLinuxOptions",
        "shareProcessNamespace",
        "sysctls",
        "windowsOptions",
    }
)
# Kept in a stored live copy although never rendered: a Service revert must keep its address.
PRESERVED_KEYS = frozenset({"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"})
# The API server refuses unconditional updates of these; a conflict is retried instead.
CONDITIONAL_UPDATE_KINDS = frozenset({"PodDisruptionBudget"})
IGNORED_TOP_LEVEL = frozenset({"status", "apiVersion", "kind"})
IGNORED_METADATA = frozenset({"namespace", "name"})
_SUFFIXES = {
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
}


def _quantity(value: str) -> Decimal | None:
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if value.endswith(suffix):
            number, factor = value[: -len(suffix)], _SUFFIXES[suffix]
            break
    else:
        number, factor = value, Decimal(1)
    try:
        return Decimal(number) * factor
    except InvalidOperation:
        return None


def _same_scalar(want: Any, got: Any) -> bool:
    if want == got:
        return True
    if isinstance(want, str) and isinstance(got, str):
        a, b = _quantity(want), _quantity(got)
        return a is not None and a == b
    if isinstance(want, int) and isinstance(got, str):
        return str(want) == got
    return False


def _name_of(item: Any) -> str | None:
    if isinstance(item, dict):
        name = item.get("name")
        return name if isinstance(name, str) else None
    return None


def _compare(want: Any, got: Any, path: str, out: list[str]) -> None:
    if isinstance(want, dict):
        if not isinstance(got, dict):
            out.append(f"{path}: changed")
            return
        for key, value in want.items():
            sub = f"{path}.{key}" if path else key
            if key not in got:
                if value not in ({}, [], None):
                    out.append(f"{sub}: removed")
                continue
            _compare(value, got[key], sub, out)
        for key in got.keys() - want.keys():
            if key in SECURITY_KEYS and got[key] not in ({}, [], None, False):
                out.append(f"{path}.{key}: added" if path else f"{key}: added")
        return
    if isinstance(want, list):
        if not isinstance(got, list):
            out.append(f"{path}: changed")
            return
        want_names = [_name_of(i) for i in want]
        if want and all(want_names) and all(_name_of(i) for i in got):
            live = {_name_of(i): i for i in got}
            for item, name in zip(want, want_names, strict=True):
                if name not in live:
                    out.append(f"{path}[{name}]: removed")
                else:
                    _compare(item, live[name], f"{path}[{name}]", out)
            for name in live.keys() - set(want_names):
                out.append(f"{path}[{name}]: added")
            return
        if len(got) != len(want):
            out.append(f"{path}: {len(got)} items instead of {len(want)}")
            return
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            _compare(a, b, f"{path}[{i}]", out)
        return
    if not _same_scalar(want, got):
        out.append(f"{path}: changed")


def differences(desired: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """Paths where `live` departs from `desired`; empty when in sync."""
    out: list[str] = []
    want_meta = desired.get("metadata", {})
    got_meta = live.get("metadata", {})
    for key in ("labels", "annotations"):
        for label, value in (want_meta.get(key) or {}).items():
            if (got_meta.get(key) or {}).get(label) != value:
                out.append(f"metadata.{key}.{label}: changed")
    for key, value in desired.items():
        if key in IGNORED_TOP_LEVEL or key == "metadata":
            continue
        if key not in live:
            if value not in ({}, [], None):
                out.append(f"{key}: removed")
            continue
        _compare(value, live[key], key, out)
    for key in live.keys() - desired.keys() - IGNORED_TOP_LEVEL - {"metadata"}:
        if key in SECURITY_KEYS and live[key] not in ({}, [], None):
            out.append(f"{key}: added")
    return out


def repaired(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """A full replacement body: the desired content on top of live metadata."""
    meta = dict(live.get("metadata", {}))
    meta.pop("managedFields", None)
    # Unconditional update: a concurrent status write must not make the revert conflict.
    if desired["kind"] not in CONDITIONAL_UPDATE_KINDS:
        meta.pop("resourceVersion", None)
    want_meta = desired["metadata"]
    for key in ("labels", "annotations"):
        if want_meta.get(key):
            meta[key] = {**(meta.get(key) or {}), **want_meta[key]}
    if "ownerReferences" in want_meta:
        meta["ownerReferences"] = want_meta["ownerReferences"]
    body = {k: v for k, v in desired.items() if k != "metadata"}
    body["metadata"] = meta
    if desired["kind"] == "Service":
        spec = dict(body["spec"])
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if key in live.get("spec", {}):
                spec[key] = live["spec"][key]
        body["spec"] = spec
    return body


def _project(want: Any, got: Any) -> Any:
    if isinstance(want, dict) and isinstance(got, dict):
        return {
            key: _project(want[key], value) if key in want else value
            for key, value in got.items()
            if key in want or key in SECURITY_KEYS or key in PRESERVED_KEYS
        }
    if isinstance(want, list) and isinstance(got, list):
        names = [_name_of(i) for i in want]
        if want and all(names) and all(_name_of(i) for i in got):
            by_name = dict(zip(names, want, strict=True))
            return [
                _project(by_name[name], item) if (name := _name_of(item)) in by_name else item
                for item in got
            ]
        if len(want) == len(got):
            return [_project(a, b) for a, b in zip(want, got, strict=True)]
    return got


def projected(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The part of `live` that `differences` and `repaired` read, plus metadata and status.

    Defaults the API server fills in are dropped, so a stored copy stays small while
    `differences(desired, projected(desired, live)) == differences(desired, live)`.
    """
    out: dict[str, Any] = {}
    for key, value in live.items():
        if key == "metadata" and isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if k != "managedFields"}
        elif key in IGNORED_TOP_LEVEL:
            out[key] = value
        elif key in desired:
            out[key] = _project(desired[key], value)
        elif key in SECURITY_KEYS:
            out[key] = value
    return out
