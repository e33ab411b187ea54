"""Values that end up in a child object, checked to the API server's own rules.

Each type validates in Python (pydantic: the operator and an offline `secureai render`) and
carries the same rule into the CRD (pattern, maxLength, CEL), so that the API server refuses the
custom resource at admission instead of its children with a 422 later. The rules follow
k8s.io/apimachinery/pkg/util/validation (IsQualifiedName, IsValidLabelValue,
IsDNS1123Subdomain, IsValidCIDR with strict IP/CIDR validation) and resource.Quantity;
tests/unit/test_k8s_validators.py compares them with those functions.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from secureai.api.base import QUANTITY_PATTERN

# --------------------------------------------------------------------------- label keys and values

_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"  # at most 63 characters
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_KEY_PATTERN = rf"^({_DNS_SUBDOMAIN}/)?{_LABEL_NAME}$"
LABEL_VALUE_PATTERN = rf"^({_LABEL_NAME})?$"
DNS_SUBDOMAIN_PATTERN = rf"^{_DNS_SUBDOMAIN}$"
MAX_LABEL_KEY = 253 + 1 + 63
# Labels of one selector; the API server has no limit, the bound keeps CEL's cost estimate low.
MAX_SELECTOR_LABELS = 32


def _matching(pattern: str, max_length: int, what: str) -> AfterValidator:
    """A check with a message that says what was expected (pydantic's quotes the regex)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if len(value) > max_length or not compiled.match(value):
            raise ValueError(f"{value[:80]!r} is not {what}")
        return value

    return AfterValidator(check)


def _label_prefix(value: str) -> str:
    if value.find("/") > 253:
        raise ValueError("the prefix of a label key must be at most 253 characters")
    return value


_LABEL_KEY_WHAT = (
    "a label key: an optional DNS subdomain prefix of at most 253 characters and '/', then a "
    "name of at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends"
)
_LABEL_VALUE_WHAT = (
    "a label value: empty, or at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends"
)
_DNS_SUBDOMAIN_WHAT = "a DNS subdomain (RFC 1123): lowercase alphanumerics, '-' and '.'"

LabelKey = Annotated[
    str,
    Field(
        description=_LABEL_KEY_WHAT,
        json_schema_extra={
            "pattern": LABEL_KEY_PATTERN,
            "maxLength": MAX_LABEL_KEY,
            "x-kubernetes-validations": [
                {
                    "rule": "self.indexOf('/') <= 253",
                    "message": "the prefix of a label key must be at most 253 characters",
                }
            ],
        },
    ),
    _matching(LABEL_KEY_PATTERN, MAX_LABEL_KEY, _LABEL_KEY_WHAT),
    AfterValidator(_label_prefix),
]
LabelValue = Annotated[
    str,
    Field(
        description=_LABEL_VALUE_WHAT,
        json_schema_extra={"pattern": LABEL_VALUE_PATTERN, "maxLength": 63},
    ),
    _matching(LABEL_VALUE_PATTERN, 63, _LABEL_VALUE_WHAT),
]
DnsSubdomain = Annotated[
    str,
    Field(
        description=_DNS_SUBDOMAIN_WHAT,
        json_schema_extra={"pattern": DNS_SUBDOMAIN_PATTERN, "maxLength": 253},
    ),
    _matching(DNS_SUBDOMAIN_PATTERN, 253, _DNS_SUBDOMAIN_WHAT),
]


def label_map(description: str) -> Any:
    """A `matchLabels` map: label keys to label values, at most MAX_SELECTOR_LABELS of them."""
    return Field(default=None, max_length=MAX_SELECTOR_LABELS, description=description)


Labels = dict[LabelKey, LabelValue]

# --------------------------------------------------------------------------- CIDRs


def _cidr(value: str) -> str:
    """A CIDR as NetworkPolicy's ipBlock takes it with strict IP/CIDR validation: an address
    (no leading zeros, no zone, not IPv4-mapped IPv6) and a decimal prefix length, no bits set
    beyond the prefix length."""
    address, slash, prefix = value.partition("/")
    if not slash or not re.fullmatch(r"0|[1-9][0-9]{0,2}", prefix) or "%" in address:
        raise ValueError(f"{value!r} is not a CIDR (address/prefix length, e.g. 10.0.0.0/8)")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid CIDR") from None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        raise ValueError(f"{value!r} must not have an IPv4-mapped IPv6 address")
    if ipaddress.ip_address(address) != network.network_address:
        raise ValueError(f"{value!r} has bits set beyond the prefix length (use {network})")
    return value


Cidr = Annotated[
    str,
    Field(
        max_length=64,
        description="a CIDR, e.g. 10.0.0.0/8",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "isCIDR(self) && cidr(self).ip() == cidr(self).masked().ip()",
                    "message": "must be a CIDR (address/prefix length, e.g. 10.0.0.0/8) with "
                    "no bits set beyond the prefix length",
                }
            ]
        },
    ),
    AfterValidator(_cidr),
]


def network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR already validated by `Cidr`."""
    return ipaddress.ip_network(value, strict=False)


def strict_subset(inner: str, outer: str) -> bool:
    """NetworkPolicy's rule for `except`: inside `cidr` and strictly smaller."""
    a, b = network(inner), network(outer)
    return a.version == b.version and a.subnet_of(b) and a.prefixlen > b.prefixlen  # type: ignore[arg-type]


# --------------------------------------------------------------------------- quantities


def _positive(value: str) -> str:
    number = re.match(r"[0-9.]+", value)
    if number is None or Decimal(number.group(0)) == 0:
        raise ValueError(f"{value!r} must be greater than zero")
    return value


PositiveQuantity = Annotated[
    str,
    Field(
        pattern=QUANTITY_PATTERN,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "quantity(self).isGreaterThan(quantity('0'))",
                    "message": "must be greater than zero",
                }
            ]
        },
    ),
    AfterValidator(_positive),
]

# --------------------------------------------------------------------------- paths and numbers


def _relative(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"{value!r} must be a relative path without '..'")
    return value


RelativePath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!self.startsWith('/') && !self.split('/').exists(p, p == '..')",
                    "message": "must be a relative path without '..'",
                }
            ]
        },
    ),
    AfterValidator(_relative),
]

INT32_MAX = 2**31 - 1
