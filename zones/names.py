"""The cluster zone's name grammar, both ways: parse a query name, build owner names.

Relative to a zone (``cluster.local``), read from the right (as CoreDNS ``parse.go``)::

    (apex)                                     the zone itself: SOA, NS
    dns-version                                schema version TXT
    ns.dns                                     the DNS server's own address
    svc | pod                                  NODATA roots
    <ns>.svc | <ns>.pod                        a namespace
    <service>.<ns>.svc                         a Service
    <endpoint>.<service>.<ns>.svc              one endpoint (hostname or dashed IP)
    _<port>._<proto>.<service>.<ns>.svc        a named port (SRV); leading "_" optional
    <a-b-c-d>.<ns>.pod                         a pod by IP (``pods insecure|verified``)

Anything else under the zone is :attr:`Kind.INVALID` and answered NXDOMAIN.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")
MAX_NAME_WIRE_LENGTH = 255
MAX_LABEL_LENGTH = 63


class Kind(Enum):
    APEX = "apex"
    DNS_VERSION = "dns-version"
    NS_DNS = "ns.dns"
    SVC_ROOT = "svc"
    POD_ROOT = "pod"
    NAMESPACE = "namespace"
    POD_NAMESPACE = "pod-namespace"
    SERVICE = "service"
    ENDPOINT = "endpoint"
    PORT = "port"
    POD = "pod-ip"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class ParsedName:
    kind: Kind
    namespace: str = ""
    service: str = ""
    endpoint: str = ""  # endpoint label, or the dashed IP of a pod name
    port: str = ""
    protocol: str = ""


INVALID = ParsedName(Kind.INVALID)
_FIXED = {
    (): ParsedName(Kind.APEX),
    ("dns-version",): ParsedName(Kind.DNS_VERSION),
    ("ns", "dns"): ParsedName(Kind.NS_DNS),
    ("svc",): ParsedName(Kind.SVC_ROOT),
    ("pod",): ParsedName(Kind.POD_ROOT),
}


def parse(labels: Sequence[str]) -> ParsedName:
    """Classify the lower-case labels left of the zone, in the order they are written."""
    fixed = _FIXED.get(tuple(labels))
    if fixed is not None:
        return fixed
    if not labels or labels[-1] not in ("svc", "pod"):
        return INVALID
    *rest, namespace, root = labels
    if root == "pod":
        if not rest:
            return ParsedName(Kind.POD_NAMESPACE, namespace=namespace)
        if len(rest) == 1:
            return ParsedName(Kind.POD, namespace=namespace, endpoint=rest[0])
        return INVALID
    if not rest:
        return ParsedName(Kind.NAMESPACE, namespace=namespace)
    *rest, service = rest
    if not rest:
        return ParsedName(Kind.SERVICE, namespace=namespace, service=service)
    if len(rest) == 1:
        return ParsedName(Kind.ENDPOINT, namespace=namespace, service=service, endpoint=rest[0])
    if len(rest) == 2:
        return ParsedName(
            Kind.PORT, namespace=namespace, service=service,
            port=rest[0].removeprefix("_"), protocol=rest[1].removeprefix("_"),
        )
    return INVALID


def service_name(service: str, namespace: str, zone: str) -> str:
    return f"{service}.{namespace}.svc.{zone}"


def endpoint_name(label: str, service: str, namespace: str, zone: str) -> str:
    return f"{label}.{service}.{namespace}.svc.{zone}"


def port_name(port: str, protocol: str, service: str, namespace: str, zone: str) -> str:
    return f"_{port}._{protocol.lower()}.{service}.{namespace}.svc.{zone}"


def namespace_name(namespace: str, root: str, zone: str) -> str:
    return f"{namespace}.{root}.{zone}"


def endpoint_label(hostname: str, ip: str) -> str:
    """The label of an endpoint's name: its hostname, else its dashed IP."""
    return hostname or dashed_ip(ip)


def dashed_ip(ip: str) -> str:
    """``10.244.1.5`` -> ``10-244-1-5``; ``2001:db8::`` -> ``2001-db8--0`` (no trailing dash)."""
    dashed = ip.replace(".", "-").replace(":", "-")
    return dashed + "0" if dashed.endswith("-") else dashed


def ip_from_pod_label(label: str) -> str | None:
    """The IP a pod-name label spells (``10-244-1-5`` or ``fd00--5``), or None."""
    if label.count("-") == 3 and "--" not in label:
        text = label.replace("-", ".")
    else:
        text = label.replace("-", ":")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def reverse_name(ip: str) -> str:
    """``10.96.0.1`` -> ``1.0.96.10.in-addr.arpa`` (32 nibbles under ``ip6.arpa`` for IPv6)."""
    if "." in ip:  # the common case, without parsing
        a, b, c, d = ip.split(".")
        return f"{d}.{c}.{b}.{a}.in-addr.arpa"
    return ipaddress.ip_address(ip).reverse_pointer


def to_wire(name: str) -> bytes:
    """A dotted name in lower-case DNS wire form; the lookup key of the name index."""
    wire = b"".join(
        len(label).to_bytes(1, "big") + label
        for label in name.strip(".").lower().encode("ascii").split(b".")
        if label
    ) + b"\x00"
    if len(wire) > MAX_NAME_WIRE_LENGTH or any(
        len(label) > MAX_LABEL_LENGTH for label in name.split(".")
    ):
        raise ValueError(f"name too long for DNS: {name!r}")
    return wire


def from_wire(wire: bytes) -> str:
    """Uncompressed wire name -> dotted text without the trailing dot (no validation)."""
    return ".".join(label.decode("ascii", "replace") for label in wire_labels(wire))


def wire_labels(wire: bytes) -> list[bytes]:
    labels = []
    i = 0
    while i < len(wire) and wire[i]:
        labels.append(wire[i + 1 : i + 1 + wire[i]])
        i += 1 + wire[i]
    return labels


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
