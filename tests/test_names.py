"""The name grammar as a table (CoreDNS ``parse_test.go``), and the name builders.

:func:`zones.names.parse` gets the lower-case labels left of the zone, in the order they are
written; every form of the grammar and the invalid ones are listed here.
"""

from __future__ import annotations

import dns.reversename
import pytest

from zones import names
from zones.names import Kind, ParsedName

PARSE_TABLE: list[tuple[str, ParsedName]] = [
    # fixed names
    ("", ParsedName(Kind.APEX)),
    ("dns-version", ParsedName(Kind.DNS_VERSION)),
    ("ns.dns", ParsedName(Kind.NS_DNS)),
    ("svc", ParsedName(Kind.SVC_ROOT)),
    ("pod", ParsedName(Kind.POD_ROOT)),
    # namespaces
    ("default.svc", ParsedName(Kind.NAMESPACE, namespace="default")),
    ("svc.svc", ParsedName(Kind.NAMESPACE, namespace="svc")),
    ("pod.svc", ParsedName(Kind.NAMESPACE, namespace="pod")),
    ("shop.pod", ParsedName(Kind.POD_NAMESPACE, namespace="shop")),
    # services, endpoints, ports
    ("web.default.svc", ParsedName(Kind.SERVICE, namespace="default", service="web")),
    ("web-0.web.default.svc",
     ParsedName(Kind.ENDPOINT, namespace="default", service="web", endpoint="web-0")),
    ("10-244-1-5.web.default.svc",
     ParsedName(Kind.ENDPOINT, namespace="default", service="web", endpoint="10-244-1-5")),
    ("_http._tcp.web.default.svc",
     ParsedName(Kind.PORT, namespace="default", service="web", port="http", protocol="tcp")),
    ("http.tcp.web.default.svc",  # leading underscores are optional
     ParsedName(Kind.PORT, namespace="default", service="web", port="http", protocol="tcp")),
    ("_dns._udp.kube-dns.kube-system.svc",
     ParsedName(Kind.PORT, namespace="kube-system", service="kube-dns", port="dns",
                protocol="udp")),
    ("__x._y.web.default.svc",  # one underscore is stripped
     ParsedName(Kind.PORT, namespace="default", service="web", port="_x", protocol="y")),
    # the search-path expansion of www.example.com: port www, protocol example, service com
    ("www.example.com.default.svc",
     ParsedName(Kind.PORT, namespace="default", service="com", port="www",
                protocol="example")),
    ("www.example.com.svc",
     ParsedName(Kind.ENDPOINT, namespace="com", service="example", endpoint="www")),
    # pods
    ("10-244-1-5.shop.pod", ParsedName(Kind.POD, namespace="shop", endpoint="10-244-1-5")),
    ("fd00--5.shop.pod", ParsedName(Kind.POD, namespace="shop", endpoint="fd00--5")),
    ("web.shop.pod", ParsedName(Kind.POD, namespace="shop", endpoint="web")),  # not an IP: later
    # invalid: unknown second-level label, too many labels, fixed names with extra labels
    ("foo", ParsedName(Kind.INVALID)),
    ("www.example.com", ParsedName(Kind.INVALID)),
    ("dns", ParsedName(Kind.INVALID)),
    ("ns", ParsedName(Kind.INVALID)),
    ("x.dns-version", ParsedName(Kind.INVALID)),
    ("x.ns.dns", ParsedName(Kind.INVALID)),
    ("svc.foo", ParsedName(Kind.INVALID)),
    ("a.b.c.web.default.svc", ParsedName(Kind.INVALID)),
    ("x._http._tcp.web.default.svc", ParsedName(Kind.INVALID)),
    ("a.10-244-1-5.shop.pod", ParsedName(Kind.INVALID)),
    ("_http._tcp.shop.pod", ParsedName(Kind.INVALID)),
]


@pytest.mark.parametrize(("relative", "expected"), PARSE_TABLE,
                         ids=[relative or "(apex)" for relative, _ in PARSE_TABLE])
def test_parse(relative: str, expected: ParsedName) -> None:
    labels = relative.split(".") if relative else []
    assert names.parse(labels) == expected


def test_parse_accepts_any_sequence() -> None:
    assert names.parse(("web", "default", "svc")) == names.parse(["web", "default", "svc"])


# -- builders ----------------------------------------------------------------------------------

def test_builders() -> None:
    assert names.service_name("web", "default", "cluster.local") == "web.default.svc.cluster.local"
    assert (names.endpoint_name("web-0", "web", "default", "cluster.local")
            == "web-0.web.default.svc.cluster.local")
    assert (names.port_name("http", "TCP", "web", "default", "cluster.local")
            == "_http._tcp.web.default.svc.cluster.local")
    assert (names.port_name("dns", "UDP", "kube-dns", "kube-system", "example.org")
            == "_dns._udp.kube-dns.kube-system.svc.example.org")
    assert names.port_name("x", "SCTP", "a", "b", "z") == "_x._sctp.a.b.svc.z"
    assert names.namespace_name("shop", "pod", "cluster.local") == "shop.pod.cluster.local"
    assert names.namespace_name("shop", "svc", "cluster.local") == "shop.svc.cluster.local"


def test_built_names_parse_back() -> None:
    zone = "cluster.local"

    def relative(name: str) -> list[str]:
        return name.removesuffix("." + zone).split(".")

    port = names.port_name("http", "TCP", "web", "default", zone)
    assert names.parse(relative(port)) == ParsedName(
        Kind.PORT, namespace="default", service="web", port="http", protocol="tcp")
    endpoint = names.endpoint_name("web-0", "web", "default", zone)
    assert names.parse(relative(endpoint)).kind is Kind.ENDPOINT
    assert names.parse(relative(names.service_name("web", "default", zone))).kind is Kind.SERVICE


@pytest.mark.parametrize(("hostname", "ip", "label"), [
    ("web-0", "10.244.1.10", "web-0"),
    ("", "10.244.1.10", "10-244-1-10"),
    ("", "fd00:10:244:1::30", "fd00-10-244-1--30"),
])
def test_endpoint_label(hostname: str, ip: str, label: str) -> None:
    assert names.endpoint_label(hostname, ip) == label


@pytest.mark.parametrize(("ip", "dashed"), [
    ("10.244.1.5", "10-244-1-5"),
    ("172.18.0.2", "172-18-0-2"),
    ("2001:db8::1", "2001-db8--1"),
    ("fd00:10:244:1::30", "fd00-10-244-1--30"),
    ("2001:db8::", "2001-db8--0"),  # a trailing dash gets a 0 (CoreDNS PR #7431)
    ("::", "--0"),
    ("::1", "--1"),
    ("2001:db8:0:0:1:0:0:1", "2001-db8-0-0-1-0-0-1"),
])
def test_dashed_ip(ip: str, dashed: str) -> None:
    assert names.dashed_ip(ip) == dashed


@pytest.mark.parametrize(("label", "ip"), [
    ("10-244-1-5", "10.244.1.5"),
    ("0-0-0-0", "0.0.0.0"),
    ("255-255-255-255", "255.255.255.255"),
    ("fd00-10-244-2--50", "fd00:10:244:2::50"),
    ("fd00--5", "fd00::5"),
    ("FD00--5", "fd00::5"),
    ("--1", "::1"),
    ("2001-db8--0", "2001:db8::"),
    ("10--244-1-5", "10::244:1:5"),  # "--" means IPv6, whatever the dash count
    ("10-244-1", None),
    ("10-244-1-5-6", None),
    ("10-244-1-500", None),
    ("10-244-1-", None),
    ("web", None),
    ("", None),
    ("1-2-3-4-5-6-7-8-9", None),
    ("gggg--1", None),
])
def test_ip_from_pod_label(label: str, ip: str | None) -> None:
    assert names.ip_from_pod_label(label) == ip


@pytest.mark.parametrize("ip", ["10.244.1.5", "fd00:10:244:2::50", "2001:db8::", "::1"])
def test_pod_label_round_trip(ip: str) -> None:
    assert names.ip_from_pod_label(names.dashed_ip(ip)) == ip


@pytest.mark.parametrize(("ip", "reverse"), [
    ("10.96.0.1", "1.0.96.10.in-addr.arpa"),
    ("192.168.50.5", "5.50.168.192.in-addr.arpa"),
    ("fd00:10:96::a1",
     "1.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa"),
])
def test_reverse_name(ip: str, reverse: str) -> None:
    assert names.reverse_name(ip) == reverse
    assert reverse == dns.reversename.from_address(ip).to_text(omit_final_dot=True)


def test_reverse_name_v6_has_32_nibbles() -> None:
    labels = names.reverse_name("2001:db8::1").split(".")
    assert labels[-2:] == ["ip6", "arpa"]
    assert len(labels) == 34
    assert all(len(label) == 1 for label in labels[:32])


# -- wire form -------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "wire"), [
    ("cluster.local", b"\x07cluster\x05local\x00"),
    ("cluster.local.", b"\x07cluster\x05local\x00"),
    ("Web.Default.SVC.cluster.local", b"\x03web\x07default\x03svc\x07cluster\x05local\x00"),
    ("", b"\x00"),
    (".", b"\x00"),
])
def test_to_wire(name: str, wire: bytes) -> None:
    assert names.to_wire(name) == wire
    assert names.from_wire(wire) == name.strip(".").lower()


def test_to_wire_label_limit() -> None:
    assert names.to_wire("a" * 63 + ".local") == b"\x3f" + b"a" * 63 + b"\x05local\x00"
    with pytest.raises(ValueError, match="too long"):
        names.to_wire("a" * 64 + ".local")


def test_to_wire_name_limit() -> None:
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])  # 3 * 64 + 62 + 1 = 255 octets
    assert len(names.to_wire(longest)) == 255
    with pytest.raises(ValueError, match="too long"):
        names.to_wire(longest + "b")  # 256 octets


def test_wire_labels_and_from_wire() -> None:
    wire = b"\x03web\x07default\x00"
    assert names.wire_labels(wire) == [b"web", b"default"]
    assert names.from_wire(wire) == "web.default"
    assert names.wire_labels(b"\x00") == []


@pytest.mark.parametrize(("text", "is_ip"), [
    ("10.0.0.1", True), ("fd00::1", True), ("search.example.com", False), ("10.0.0", False),
    ("", False),
])
def test_is_ip(text: str, is_ip: bool) -> None:
    assert names.is_ip(text) is is_ip
