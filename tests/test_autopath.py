"""Server-side search paths (``--autopath``) against the real server.

Clients are "pods" on loopback addresses (127.0.0.2, ...): a query sent from a socket bound
to a pod's address is, for the server, a query from that pod.
"""

from __future__ import annotations

from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from conftest import RunningServer, StartServer, rr_lines

MANIFESTS = Path(__file__).parent / "data" / "autopath.yaml"
SHOP, DEFAULT, HOST_NETWORK, CLAIMED_TWICE, REUSED = (
    "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6",
)
FLAGS = ("--autopath", "--search-domain", "corp.example")


@pytest.fixture(scope="module")
def server(dns_server: StartServer) -> RunningServer:
    return dns_server(MANIFESTS, *FLAGS)


def ask(server: RunningServer, source: str, name: str, qtype: str = "A",
        tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, qtype)
    if tcp:
        return dns.query.tcp(query, server.host, port=server.port, source=source, timeout=2)
    return dns.query.udp(query, server.host, port=server.port, source=source, timeout=2)


# (client, qname, qtype) -> rcode, answer lines (owner TTL class type rdata)
CASES = [
    # "api" from shop: the first expansion exists, an ordinary answer
    (SHOP, "api.shop.svc.cluster.local.", "A", "NOERROR",
     ["api.shop.svc.cluster.local. 5 IN A 10.96.7.7"]),
    # "kubernetes.default" from shop: its first expansion does not exist; one round trip
    (SHOP, "kubernetes.default.shop.svc.cluster.local.", "A", "NOERROR",
     ["kubernetes.default.shop.svc.cluster.local. 5 IN CNAME kubernetes.default.svc.cluster.local.",
      "kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"]),
    # the same name asked for AAAA: it exists without AAAA: NODATA (NOERROR, like the A),
    # no CNAME, as CoreDNS answers
    (SHOP, "kubernetes.default.shop.svc.cluster.local.", "AAAA", "NOERROR", []),
    # SRV through the walk
    (SHOP, "_http._tcp.api.default.shop.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.api.default.shop.svc.cluster.local. 5 IN CNAME _http._tcp.api.default.svc.cluster.local.",
      "_http._tcp.api.default.svc.cluster.local. 5 IN SRV 0 100 80 api.default.svc.cluster.local."]),
    # "default" (a namespace) from shop: default.svc.cluster.local exists without an address:
    # NODATA, so a glibc client goes on with its own search (host domains) as it would
    (SHOP, "default.shop.svc.cluster.local.", "A", "NOERROR", []),
    # "api" from default: its own namespace's api, not shop's
    (DEFAULT, "api.default.svc.cluster.local.", "A", "NOERROR",
     ["api.default.svc.cluster.local. 5 IN A 10.96.8.8"]),
    (DEFAULT, "api.shop.default.svc.cluster.local.", "A", "NOERROR",
     ["api.shop.default.svc.cluster.local. 5 IN CNAME api.shop.svc.cluster.local.",
      "api.shop.svc.cluster.local. 5 IN A 10.96.7.7"]),
    # every step NXDOMAIN: NXDOMAIN for the asked name (the outside step is not ours yet)
    (SHOP, "nothing.shop.svc.cluster.local.", "A", "NXDOMAIN", []),
    (SHOP, "www.example.com.shop.svc.cluster.local.", "A", "NXDOMAIN", []),
    # v6-only service: AAAA through the walk
    (DEFAULT, "v6.shop.default.svc.cluster.local.", "AAAA", "NOERROR",
     ["v6.shop.default.svc.cluster.local. 5 IN CNAME v6.shop.svc.cluster.local.",
      "v6.shop.svc.cluster.local. 5 IN AAAA fd00::6"]),
    # a name that is not a first expansion of the client's namespace: untouched
    (SHOP, "kubernetes.default.default.svc.cluster.local.", "A", "NXDOMAIN", []),
    # clients whose namespace is not certain get ordinary answers
    (HOST_NETWORK, "kubernetes.default.kube-system.svc.cluster.local.", "A", "NXDOMAIN", []),
    (CLAIMED_TWICE, "kubernetes.default.shop.svc.cluster.local.", "A", "NXDOMAIN", []),
    (CLAIMED_TWICE, "kubernetes.default.default.svc.cluster.local.", "A", "NXDOMAIN", []),
    (REUSED, "kubernetes.default.shop.svc.cluster.local.", "A", "NOERROR",
     ["kubernetes.default.shop.svc.cluster.local. 5 IN CNAME kubernetes.default.svc.cluster.local.",
      "kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"]),
    (REUSED, "kubernetes.default.default.svc.cluster.local.", "A", "NXDOMAIN", []),
]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(("client", "qname", "qtype", "rcode", "answer"), CASES,
                         ids=[f"{c[0]} {c[1]} {c[2]}" for c in CASES])
def test_autopath(server: RunningServer, transport: str, client: str, qname: str, qtype: str,
                  rcode: str, answer: list[str]) -> None:
    reply = ask(server, client, qname, qtype, tcp=transport == "tcp")
    assert dns.rcode.to_text(reply.rcode()) == rcode
    assert rr_lines(reply.answer) == sorted(answer)
    assert reply.question[0].name.to_text() == qname
    assert len(reply.authority) == (0 if answer else 1)  # negative answers carry the SOA


def test_cname_comes_first(server: RunningServer) -> None:
    """Stub resolvers (glibc) expect the CNAME ahead of the records it leads to."""
    reply = ask(server, SHOP, "kubernetes.default.shop.svc.cluster.local.")
    assert [rrset.rdtype for rrset in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]


def test_without_autopath_the_walked_names_are_nxdomain(dns_server: StartServer) -> None:
    """The CNAME answers above are autopath's doing: the plain server says NXDOMAIN, and the
    client would walk its search list itself, one query per step."""
    plain = dns_server(MANIFESTS)
    walked = [case for case in CASES if case[4] and "CNAME" in case[4][0]]
    assert len(walked) >= 5
    for client, qname, qtype, _, _ in walked:
        assert dns.rcode.to_text(ask(plain, client, qname, qtype).rcode()) == "NXDOMAIN", qname


def test_host_search_domains_are_walked_after_the_cluster_ones(dns_server: StartServer) -> None:
    """``v6`` from default: not in default, not a namespace, not under the zone, but under the
    host search domain given (here a served name, so the answer is known)."""
    qname = "v6.default.svc.cluster.local."
    server = dns_server(MANIFESTS, "--autopath", "--search-domain", "shop.svc.cluster.local")
    reply = ask(server, DEFAULT, qname, "AAAA")
    assert rr_lines(reply.answer) == [
        "v6.default.svc.cluster.local. 5 IN CNAME v6.shop.svc.cluster.local.",
        "v6.shop.svc.cluster.local. 5 IN AAAA fd00::6",
    ]
    reply = ask(dns_server(MANIFESTS, *FLAGS), DEFAULT, qname, "AAAA")
    assert dns.rcode.to_text(reply.rcode()) == "NXDOMAIN"


def test_the_walk_goes_on_upstream_with_a_forwarder(dns_server: StartServer) -> None:
    """With a forwarder, names outside the zones are steps of the walk too (host search
    domains, then the name as written): one round trip for an external name from a pod."""
    from upstream import FakeUpstream  # noqa: PLC0415

    records = ["www.example.com. 300 IN A 192.0.2.1", "www.corp.example. 300 IN A 192.0.2.9"]
    soa = "example.com. 900 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 120"
    with FakeUpstream(records, soa=soa) as up:
        server = dns_server(MANIFESTS, "--autopath", "--search-domain", "corp.example",
                            "--upstream", up.address)
        reply = ask(server, SHOP, "www.example.com.shop.svc.cluster.local.")
        assert rr_lines(reply.answer) == [
            "www.example.com. 300 IN A 192.0.2.1",
            "www.example.com.shop.svc.cluster.local. 5 IN CNAME www.example.com.",
        ]
        assert [r.rdtype for r in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
        # "www" from shop: found under the host search domain, before the name as written
        reply = ask(server, SHOP, "www.shop.svc.cluster.local.", tcp=True)
        assert rr_lines(reply.answer) == [
            "www.corp.example. 300 IN A 192.0.2.9",
            "www.shop.svc.cluster.local. 5 IN CNAME www.corp.example.",
        ]
        # NXDOMAIN upstream: NXDOMAIN for the asked name, with our SOA
        reply = ask(server, SHOP, "nope.example.com.shop.svc.cluster.local.")
        assert dns.rcode.to_text(reply.rcode()) == "NXDOMAIN"
        assert rr_lines(reply.authority)[0].startswith("cluster.local. 5 IN SOA")
        # NODATA upstream (www.example.com has no TXT): NODATA for the asked name
        reply = ask(server, SHOP, "www.example.com.shop.svc.cluster.local.", "TXT")
        assert dns.rcode.to_text(reply.rcode()) == "NOERROR" and not reply.answer
        # a client that is not a pod is not walked for
        reply = ask(server, HOST_NETWORK, "www.example.com.kube-system.svc.cluster.local.")
        assert dns.rcode.to_text(reply.rcode()) == "NXDOMAIN"
