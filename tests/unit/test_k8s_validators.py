"""Issue 14 item 8: the operator's validators of values that end up in children accept exactly
what the API server accepts.

The oracle is k8s.io/apimachinery's own validation (IsQualifiedName, IsValidLabelValue,
IsDNS1123Subdomain, and NetworkPolicy's CIDR rule with strict IP/CIDR validation, on by
default since Kubernetes 1.36), run in tests/gitops/harness; hypothesis draws near-misses.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from gitopskit import judge
from secureai.api.validation import Cidr, DnsSubdomain, LabelKey, LabelValue

ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "labelKey": TypeAdapter(LabelKey),
    "labelValue": TypeAdapter(LabelValue),
    "dnsSubdomain": TypeAdapter(DnsSubdomain),
    "cidr": TypeAdapter(Cidr),
}


def accepts(what: str, value: str) -> bool:
    try:
        ADAPTERS[what].validate_python(value)
    except ValidationError:
        return False
    return True


def disagreements(what: str, values: list[str]) -> list[tuple[str, bool, list[str]]]:
    verdicts = judge([{"op": "validate", "what": what, "value": v} for v in values])
    out = []
    for value, verdict in zip(values, verdicts, strict=True):
        assert "error" not in verdict, verdict
        if accepts(what, value) != (not verdict.get("errors")):
            out.append((value, accepts(what, value), verdict.get("errors", [])))
    return out


NAME_CHARS = "abcXYZ019-_./ "
name_parts = st.one_of(
    st.text(NAME_CHARS, max_size=70),
    st.integers(60, 66).map(lambda n: "a" * n),
    st.sampled_from(["a", "-a", "a-", "a.b", "A", "a_b", "é", "", "."]),
)


@st.composite
def names(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(name_parts)
    prefix = draw(st.one_of(name_parts, st.integers(250, 256).map(lambda n: "a" * n)))
    return f"{prefix}/{draw(name_parts)}"


@st.composite
def cidrs(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        octets = draw(st.lists(st.integers(0, 300), min_size=4, max_size=4))
        address = ".".join(
            draw(st.sampled_from([str(o), f"0{o}"])) if draw(st.booleans()) else str(o)
            for o in octets
        )
        if draw(st.booleans()):
            address = f"::ffff:{address}"
    else:
        groups = draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8))
        address = ":".join(f"{g:x}" for g in groups)
        if len(groups) < 8:
            address += "::"
    prefix = draw(
        st.one_of(
            st.integers(0, 130).map(str),
            st.sampled_from(["08", "", "255.0.0.0", " 8", "-1"]),
        )
    )
    return draw(st.sampled_from([f"{address}/{prefix}", address, f"{address}%eth0/{prefix}"]))


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(names(), min_size=20, max_size=40))
def test_label_keys_values_and_names_match_the_api_server(values: list[str]) -> None:
    for what in ("labelKey", "labelValue", "dnsSubdomain"):
        assert disagreements(what, values) == [], what


@SETTINGS
@given(st.lists(cidrs(), min_size=20, max_size=40))
def test_cidrs_match_the_api_server(values: list[str]) -> None:
    assert disagreements("cidr", values) == []


def test_known_edges() -> None:
    keys = [
        "a/b",
        "example.com/x",
        "a" * 63,
        "a" * 64,
        "/a",
        "a/",
        "a/b/c",
        "A.b/c",
        "x" * 253 + "/y",
    ]
    assert disagreements("labelKey", [*keys, "x" * 254 + "/y"]) == []
    assert disagreements("labelValue", ["", "a" * 63, "a" * 64, "-a", "a.b_c-D"]) == []
    cidrs_ = ["10.0.0.0/8", "10.0.0.1/8", "10.0.0.0", "0.0.0.0/0", "::/0", "fd00::/8", "fd00::1/8"]
    assert (
        disagreements("cidr", [*cidrs_, "::ffff:10.0.0.0/104", "010.0.0.0/8", "10.0.0.0/08"]) == []
    )
