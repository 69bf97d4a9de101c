"""Whole exchanges against the bundled example cluster, as a table (CoreDNS ``handler_test.go``).

Each case is one question and the exact reply: rcode, AA, answer, authority and additional
records (owner, TTL, type, rdata). Every case runs over UDP and over TCP against the real
server (``dnsserver/example/cluster.yaml``, default flags: TTL 5, ``pods insecure``). Record
order is not defined by DNS, so sections compare as sorted lists (duplicates still count),
except CNAME chains, whose order is. SPEC sections are cited per group.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.rcode
import dns.reversename
import pytest
from conftest import SERIAL, RunningServer, rr_lines, soa_serials

TTL = 5
ZONE = "cluster.local."
SOA = f"{ZONE} 5 IN SOA ns.dns.{ZONE} hostmaster.{ZONE} {SERIAL} 7200 1800 86400 5"
SOA_V4 = (
    f"in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. {SERIAL} "
    "7200 1800 86400 5"
)
SOA_V6 = (
    f"ip6.arpa. 5 IN SOA ns.dns.ip6.arpa. hostmaster.ip6.arpa. {SERIAL} 7200 1800 86400 5"
)


@dataclass(frozen=True)
class Case:
    qname: str
    qtype: str
    rcode: str = "NOERROR"
    answer: tuple[str, ...] = ()
    authority: tuple[str, ...] = ()
    additional: tuple[str, ...] = ()
    aa: bool = True
    ordered: bool = False  # CNAME first, then the target's records

    @property
    def id(self) -> str:
        return f"{self.qname} {self.qtype}"


def svc(name: str) -> str:
    """``web.default`` -> ``web.default.svc.cluster.local.``"""
    return f"{name}.svc.{ZONE}"


def rr(owner: str, rtype: str, rdata: str, ttl: int = TTL) -> str:
    return f"{owner} {ttl} IN {rtype} {rdata}"


def ok(qname: str, qtype: str, *answer: str, additional: tuple[str, ...] = (),
       ordered: bool = False) -> Case:
    return Case(qname, qtype, answer=answer, additional=additional, ordered=ordered)


def addresses(qname: str, rtype: str, *ips: str) -> Case:
    return ok(qname, rtype, *(rr(qname, rtype, ip) for ip in ips))


def srv(qname: str, *records: str, additional: tuple[str, ...] = ()) -> Case:
    """``records`` are SRV rdata texts; ``additional`` are full RR lines."""
    return ok(qname, "SRV", *(rr(qname, "SRV", text) for text in records), additional=additional)


def ptr(ip: str, *targets: str) -> Case:
    owner = dns.reversename.from_address(ip).to_text()
    return addresses(owner, "PTR", *targets)


def nodata(qname: str, qtype: str, soa: str = SOA) -> Case:
    return Case(qname, qtype, authority=(soa,))


def nxdomain(qname: str, qtype: str, soa: str = SOA) -> Case:
    return Case(qname, qtype, "NXDOMAIN", authority=(soa,))


def refused(qname: str, qtype: str) -> Case:
    return Case(qname, qtype, "REFUSED", aa=False)


def reverse(ip: str) -> str:
    return dns.reversename.from_address(ip).to_text()


KUBERNETES = svc("kubernetes.default")
KUBE_DNS = svc("kube-dns.kube-system")
WEB = svc("web.default")
WEB0, WEB1 = svc("web-0.web.default"), svc("web-1.web.default")
FRONTEND = svc("frontend.default")
API = svc("api.shop")
DB = svc("db.shop")
DB0, DB1, DB6 = svc("10-244-1-30.db.shop"), svc("10-244-2-31.db.shop"), svc(
    "fd00-10-244-1--30.db.shop")
LEGACY = svc("legacy.shop")
SEARCH = svc("search.shop")
CART = svc("cart-alias.shop")
V6ONLY = svc("v6only.shop")

CASES: list[Case] = [
    # -- ClusterIP Service kubernetes.default (SPEC §2.1, §2.2, §2.5) -----------------------
    addresses(KUBERNETES, "A", "10.96.0.1"),
    nodata(KUBERNETES, "AAAA"),
    srv(f"_https._tcp.{KUBERNETES}", f"0 100 443 {KUBERNETES}",
        additional=(rr(KUBERNETES, "A", "10.96.0.1"),)),
    srv(KUBERNETES, f"0 100 443 {KUBERNETES}", additional=(rr(KUBERNETES, "A", "10.96.0.1"),)),
    # the leading underscores are optional (CoreDNS parse.go strips them)
    srv(f"https.tcp.{KUBERNETES}", f"0 100 443 {KUBERNETES}",
        additional=(rr(KUBERNETES, "A", "10.96.0.1"),)),
    addresses(f"_https._tcp.{KUBERNETES}", "A", "10.96.0.1"),  # quirk: A on a port name (§2.2)
    nxdomain(f"_http._tcp.{KUBERNETES}", "SRV"),
    nxdomain(f"_https._udp.{KUBERNETES}", "SRV"),
    addresses(svc("172-18-0-2.kubernetes.default"), "A", "172.18.0.2"),  # endpoint of a ClusterIP
    nxdomain(svc("172-18-0-3.kubernetes.default"), "A"),
    nodata(KUBERNETES, "TXT"),
    nodata(KUBERNETES, "MX"),
    nodata(KUBERNETES, "CNAME"),
    nodata(KUBERNETES, "ANY"),
    nodata(KUBERNETES, "HTTPS"),
    nodata(KUBERNETES, "SOA"),
    nodata(KUBERNETES, "NS"),
    nodata(KUBERNETES, "PTR"),
    ptr("10.96.0.1", KUBERNETES),
    ptr("172.18.0.2", svc("172-18-0-2.kubernetes.default")),
    # -- kube-dns.kube-system: UDP and TCP ports with the same number (SPEC §2.18) ----------
    addresses(KUBE_DNS, "A", "10.96.0.10"),
    srv(f"_dns._udp.{KUBE_DNS}", f"0 100 53 {KUBE_DNS}",
        additional=(rr(KUBE_DNS, "A", "10.96.0.10"),)),
    srv(f"_dns-tcp._tcp.{KUBE_DNS}", f"0 100 53 {KUBE_DNS}",
        additional=(rr(KUBE_DNS, "A", "10.96.0.10"),)),
    srv(f"_metrics._tcp.{KUBE_DNS}", f"0 100 9153 {KUBE_DNS}",
        additional=(rr(KUBE_DNS, "A", "10.96.0.10"),)),
    nxdomain(f"_dns._tcp.{KUBE_DNS}", "SRV"),
    # three (ClusterIP x port) entries -> weight 33; (target, 53) twice -> one record
    srv(KUBE_DNS, f"0 33 53 {KUBE_DNS}", f"0 33 9153 {KUBE_DNS}",
        additional=(rr(KUBE_DNS, "A", "10.96.0.10"),)),
    addresses(svc("10-244-0-3.kube-dns.kube-system"), "A", "10.244.0.3"),
    srv(svc("10-244-0-3.kube-dns.kube-system"),
        f"0 33 53 {svc('10-244-0-3.kube-dns.kube-system')}",
        f"0 33 9153 {svc('10-244-0-3.kube-dns.kube-system')}",
        additional=(rr(svc("10-244-0-3.kube-dns.kube-system"), "A", "10.244.0.3"),)),
    ptr("10.96.0.10", KUBE_DNS),
    ptr("10.244.0.3", svc("10-244-0-3.kube-dns.kube-system")),
    # -- headless web.default: ready endpoints only (SPEC §2.3-§2.6) ------------------------
    addresses(WEB, "A", "10.244.1.10", "10.244.2.11"),
    nodata(WEB, "AAAA"),
    srv(WEB, f"0 50 8080 {WEB0}", f"0 50 8080 {WEB1}",
        additional=(rr(WEB0, "A", "10.244.1.10"), rr(WEB1, "A", "10.244.2.11"))),
    srv(f"_http._tcp.{WEB}", f"0 50 8080 {WEB0}", f"0 50 8080 {WEB1}",
        additional=(rr(WEB0, "A", "10.244.1.10"), rr(WEB1, "A", "10.244.2.11"))),
    addresses(f"_http._tcp.{WEB}", "A", "10.244.1.10", "10.244.2.11"),
    nxdomain(f"_x._tcp.{WEB}", "SRV"),
    nxdomain(f"_http._udp.{WEB}", "SRV"),
    addresses(WEB0, "A", "10.244.1.10"),
    addresses(WEB1, "A", "10.244.2.11"),
    nodata(WEB0, "AAAA"),
    nodata(WEB0, "TXT"),
    srv(WEB0, f"0 100 8080 {WEB0}", additional=(rr(WEB0, "A", "10.244.1.10"),)),
    nxdomain(svc("web-2.web.default"), "A"),  # not ready
    nxdomain(svc("web-2.web.default"), "AAAA"),
    nxdomain(svc("bogus.web.default"), "A"),
    nxdomain(svc("10-244-1-10.web.default"), "A"),  # has a hostname: no dashed-IP name
    nxdomain(svc("a.b.c.web.default"), "A"),  # three labels left of the service
    nxdomain(f"x._http._tcp.{WEB}", "SRV"),
    ptr("10.244.1.10", WEB0),
    ptr("10.244.2.11", WEB1),
    nxdomain(reverse("10.244.1.12"), "PTR", SOA_V4),  # web-2, not ready
    # -- NodePort frontend.default, dual-stack (SPEC §2.15) ---------------------------------
    addresses(FRONTEND, "A", "10.96.100.1"),
    addresses(FRONTEND, "AAAA", "fd00:10:96::a1"),
    srv(FRONTEND, f"0 50 80 {FRONTEND}",
        additional=(rr(FRONTEND, "A", "10.96.100.1"), rr(FRONTEND, "AAAA", "fd00:10:96::a1"))),
    srv(f"_http._tcp.{FRONTEND}", f"0 50 80 {FRONTEND}",
        additional=(rr(FRONTEND, "A", "10.96.100.1"), rr(FRONTEND, "AAAA", "fd00:10:96::a1"))),
    addresses(f"_http._tcp.{FRONTEND}", "AAAA", "fd00:10:96::a1"),
    ptr("10.96.100.1", FRONTEND),
    ptr("fd00:10:96::a1", FRONTEND),
    # -- LoadBalancer api.shop, endpoints in two slices (SPEC §2.1, §2.15) ------------------
    addresses(API, "A", "10.96.200.5"),  # not the load balancer's 203.0.113.7
    nodata(API, "AAAA"),
    srv(API, f"0 50 80 {API}", f"0 50 9090 {API}", additional=(rr(API, "A", "10.96.200.5"),)),
    srv(f"_http._tcp.{API}", f"0 100 80 {API}", additional=(rr(API, "A", "10.96.200.5"),)),
    srv(f"_grpc._tcp.{API}", f"0 100 9090 {API}", additional=(rr(API, "A", "10.96.200.5"),)),
    addresses(svc("10-244-1-20.api.shop"), "A", "10.244.1.20"),
    addresses(svc("10-244-2-21.api.shop"), "A", "10.244.2.21"),  # in both slices: once
    addresses(svc("10-244-3-22.api.shop"), "A", "10.244.3.22"),
    # two slices x two ports = four entries -> weight 25, then de-duplicated on (target, port)
    srv(svc("10-244-2-21.api.shop"),
        f"0 25 8080 {svc('10-244-2-21.api.shop')}", f"0 25 9090 {svc('10-244-2-21.api.shop')}",
        additional=(rr(svc("10-244-2-21.api.shop"), "A", "10.244.2.21"),)),
    nxdomain(svc("10-244-9-99.api.shop"), "A"),
    ptr("10.96.200.5", API),
    ptr("10.244.2.21", svc("10-244-2-21.api.shop")),
    nxdomain(reverse("203.0.113.7"), "PTR", SOA_V4),
    # -- headless db.shop: no hostnames, v4 and v6 slices (SPEC §2.5, §2.15) ----------------
    addresses(DB, "A", "10.244.1.30", "10.244.2.31"),
    addresses(DB, "AAAA", "fd00:10:244:1::30"),
    srv(DB, f"0 33 5432 {DB0}", f"0 33 5432 {DB1}", f"0 33 5432 {DB6}",
        additional=(rr(DB0, "A", "10.244.1.30"), rr(DB1, "A", "10.244.2.31"),
                    rr(DB6, "AAAA", "fd00:10:244:1::30"))),
    srv(f"_postgres._tcp.{DB}", f"0 33 5432 {DB0}", f"0 33 5432 {DB1}", f"0 33 5432 {DB6}",
        additional=(rr(DB0, "A", "10.244.1.30"), rr(DB1, "A", "10.244.2.31"),
                    rr(DB6, "AAAA", "fd00:10:244:1::30"))),
    addresses(DB0, "A", "10.244.1.30"),
    addresses(DB6, "AAAA", "fd00:10:244:1::30"),
    nodata(DB6, "A"),
    srv(DB0, f"0 100 5432 {DB0}", additional=(rr(DB0, "A", "10.244.1.30"),)),
    ptr("10.244.1.30", DB0),
    ptr("fd00:10:244:1::30", DB6),
    # -- legacy.shop: selector-less, unnamed port (SPEC §2.2, §2.18) ------------------------
    addresses(LEGACY, "A", "10.96.200.9"),
    srv(LEGACY, f"0 33 389 {LEGACY}", f"0 33 8443 {LEGACY}",
        additional=(rr(LEGACY, "A", "10.96.200.9"),)),
    srv(f"_ldap._tcp.{LEGACY}", f"0 100 389 {LEGACY}",
        additional=(rr(LEGACY, "A", "10.96.200.9"),)),
    srv(f"_ldap-udp._udp.{LEGACY}", f"0 100 389 {LEGACY}",
        additional=(rr(LEGACY, "A", "10.96.200.9"),)),
    nxdomain(f"_ldap._udp.{LEGACY}", "SRV"),
    addresses(svc("ldap-main.legacy.shop"), "A", "192.168.50.5"),
    ptr("192.168.50.5", svc("ldap-main.legacy.shop")),
    # -- headless drain.shop, no ready endpoint: the name does not exist (SPEC §2.3) --------
    nxdomain(svc("drain.shop"), "A"),
    nxdomain(svc("drain.shop"), "AAAA"),
    nxdomain(svc("drain.shop"), "SRV"),
    nxdomain(svc("drain.shop"), "TXT"),
    nxdomain(f"_http._tcp.{svc('drain.shop')}", "SRV"),
    nxdomain(svc("10-244-3-40.drain.shop"), "A"),
    nxdomain(reverse("10.244.3.40"), "PTR", SOA_V4),
    # -- ExternalName search.shop -> search.example.com (SPEC §2.7; no forwarding yet) ------
    ok(SEARCH, "A", rr(SEARCH, "CNAME", "search.example.com.")),
    ok(SEARCH, "AAAA", rr(SEARCH, "CNAME", "search.example.com.")),
    ok(SEARCH, "CNAME", rr(SEARCH, "CNAME", "search.example.com.")),
    nodata(SEARCH, "SRV"),
    nodata(SEARCH, "TXT"),
    nodata(SEARCH, "MX"),
    nxdomain(svc("foo.search.shop"), "A"),
    nxdomain(svc("foo.search.shop"), "CNAME"),
    # -- ExternalName cart-alias.shop -> api.shop.svc.cluster.local, chased in-zone ---------
    ok(CART, "A", rr(CART, "CNAME", API), rr(API, "A", "10.96.200.5"), ordered=True),
    # the in-zone chase finds no AAAA: CoreDNS drops the CNAME too (backend_lookup.go AAAA())
    nodata(CART, "AAAA"),
    ok(CART, "CNAME", rr(CART, "CNAME", API)),
    nodata(CART, "SRV"),
    nodata(CART, "TXT"),
    # -- single-stack IPv6 v6only.shop (SPEC §2.15) -----------------------------------------
    nodata(V6ONLY, "A"),
    addresses(V6ONLY, "AAAA", "fd00:10:96::b2"),
    srv(V6ONLY, f"0 100 80 {V6ONLY}", additional=(rr(V6ONLY, "AAAA", "fd00:10:96::b2"),)),
    ptr("fd00:10:96::b2", V6ONLY),
    # -- pod names, pods insecure (SPEC §2.9) -----------------------------------------------
    addresses(f"10-244-1-5.shop.pod.{ZONE}", "A", "10.244.1.5"),
    nodata(f"10-244-1-5.shop.pod.{ZONE}", "AAAA"),
    nodata(f"10-244-1-5.shop.pod.{ZONE}", "TXT"),
    nodata(f"10-244-1-5.shop.pod.{ZONE}", "SOA"),
    addresses(f"fd00-10-244-2--50.shop.pod.{ZONE}", "AAAA", "fd00:10:244:2::50"),
    nodata(f"fd00-10-244-2--50.shop.pod.{ZONE}", "A"),
    nxdomain(f"10-244-1-5.nosuchns.pod.{ZONE}", "A"),
    nxdomain(f"foo.shop.pod.{ZONE}", "A"),
    nxdomain(f"10-244-1.shop.pod.{ZONE}", "A"),
    nxdomain(f"a.10-244-1-5.shop.pod.{ZONE}", "A"),
    nodata(f"shop.pod.{ZONE}", "A"),
    nxdomain(f"nosuchns.pod.{ZONE}", "A"),
    nxdomain(reverse("10.244.1.5"), "PTR", SOA_V4),  # a pod record is no reverse name
    # -- apex, dns-version, ns.dns, roots, namespaces (SPEC §2.0, §2.10-§2.12) --------------
    ok(ZONE, "SOA", SOA),
    ok(ZONE, "NS", rr(ZONE, "NS", KUBE_DNS), additional=(rr(KUBE_DNS, "A", "10.96.0.10"),)),
    nodata(ZONE, "A"),
    nodata(ZONE, "AAAA"),
    nodata(ZONE, "SRV"),
    nodata(ZONE, "TXT"),
    nodata(ZONE, "ANY"),
    addresses(f"ns.dns.{ZONE}", "A", "10.96.0.10"),
    nodata(f"ns.dns.{ZONE}", "AAAA"),
    ok(f"dns-version.{ZONE}", "TXT", rr(f"dns-version.{ZONE}", "TXT", '"1.1.0"', 28800)),
    nodata(f"dns-version.{ZONE}", "A"),
    nodata(f"svc.{ZONE}", "A"),
    nodata(f"pod.{ZONE}", "A"),
    nodata(f"default.svc.{ZONE}", "A"),
    nodata(f"shop.svc.{ZONE}", "SRV"),
    nodata(f"kube-system.svc.{ZONE}", "TXT"),
    nxdomain(f"nosuchns.svc.{ZONE}", "A"),
    nxdomain(svc("web.nosuchns"), "A"),
    nxdomain(f"foo.{ZONE}", "A"),
    nxdomain(f"foo.{ZONE}", "NS"),
    nxdomain(f"www.example.com.default.svc.{ZONE}", "A"),
    nxdomain(f"www.example.com.default.svc.{ZONE}", "AAAA"),
    nxdomain(f"www.example.com.svc.{ZONE}", "A"),
    nxdomain(f"www.example.com.{ZONE}", "A"),
    nxdomain(svc("nope.default"), "A"),
    nxdomain(svc("nope.default"), "TXT"),
    nxdomain(svc("nope.default"), "SOA"),  # SOA below the apex: NXDOMAIN when missing (§2.12)
    nodata(WEB, "SOA"),  # ... and NODATA on an existing name
    nodata(WEB, "MX"),
    nodata(WEB, "CNAME"),
    nodata(WEB, "ANY"),
    nodata(WEB, "HTTPS"),
    # -- reverse zones -----------------------------------------------------------------------
    ok("in-addr.arpa.", "SOA", SOA_V4),
    nxdomain("96.10.in-addr.arpa.", "PTR", SOA_V4),  # not a whole address
    nxdomain(reverse("203.0.113.9"), "PTR", SOA_V4),
    nxdomain(reverse("fd00:10:96::ff"), "PTR", SOA_V6),
    # -- outside every zone, and transfers (SPEC §2.0, §2.20; no forwarding yet) ------------
    refused("www.example.com.", "A"),
    refused("example.com.", "AAAA"),
    refused(".", "NS"),
    refused("local.", "SOA"),
    refused(KUBERNETES, "AXFR"),
    refused(ZONE, "AXFR"),
    # -- 0x20: matching ignores case, the answer echoes the query's spelling (SPEC §2.19) ---
    addresses("WeB.DeFaUlT.sVc.CLUSTER.local.", "A", "10.244.1.10", "10.244.2.11"),
    addresses("Web-0.Web.Default.Svc.Cluster.Local.", "A", "10.244.1.10"),
    srv(f"_HTTPS._TCP.Kubernetes.Default.SVC.{ZONE}", f"0 100 443 {KUBERNETES}",
        additional=(rr(KUBERNETES, "A", "10.96.0.1"),)),
    addresses("1.0.96.10.IN-ADDR.ARPA.", "PTR", KUBERNETES),
    ok("DNS-Version.Cluster.Local.", "TXT",
       rr("DNS-Version.Cluster.Local.", "TXT", '"1.1.0"', 28800)),
    ok("SEARCH.Shop.svc.cluster.local.", "CNAME",
       rr("SEARCH.Shop.svc.cluster.local.", "CNAME", "search.example.com.")),
    addresses("10-244-1-5.SHOP.pod.cluster.local.", "A", "10.244.1.5"),
    nodata("KUBERNETES.DEFAULT.SVC.CLUSTER.LOCAL.", "AAAA"),
    nxdomain("NoPe.DeFaUlT.sVc.cluster.local.", "A"),
]


def test_the_table_is_large_and_unique() -> None:
    assert len(CASES) >= 110
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_answer(example: RunningServer, case: Case, transport: str) -> None:
    query = dns.message.make_query(case.qname, case.qtype)
    reply = example.exchange(query, tcp=transport == "tcp")

    assert dns.rcode.to_text(reply.rcode()) == case.rcode
    assert reply.id == query.id
    assert reply.question == query.question
    assert reply.flags & dns.flags.QR
    assert bool(reply.flags & dns.flags.AA) == case.aa
    assert reply.flags & dns.flags.RD  # copied from the query
    assert not reply.flags & (dns.flags.RA | dns.flags.TC)
    assert reply.edns == -1  # no OPT in the query, none in the reply

    answer = rr_lines(reply.answer, keep_owner_case=True)
    if case.ordered:
        answer = [_line(rrset) for rrset in reply.answer]
        assert answer == list(case.answer)
    else:
        assert answer == sorted(case.answer)
    assert rr_lines(reply.authority) == sorted(case.authority)
    assert rr_lines(reply.additional) == sorted(case.additional)
    for serial in soa_serials(reply.answer + reply.authority):
        assert example.started_at - 5 <= serial <= time.time() + 5


def _line(rrset: object) -> str:
    (line,) = rr_lines([rrset], keep_owner_case=True)  # type: ignore[list-item]
    return line


# -- NXDOMAIN vs NODATA does not depend on the qtype (SPEC §2.12, RFC 8020) ---------------

CLASS_NAMES = [
    (KUBERNETES, "NOERROR"),
    (WEB, "NOERROR"),
    (WEB0, "NOERROR"),
    (DB6, "NOERROR"),
    (f"_http._tcp.{WEB}", "NOERROR"),
    (SEARCH, "NOERROR"),
    (CART, "NOERROR"),
    (V6ONLY, "NOERROR"),
    (f"10-244-1-5.shop.pod.{ZONE}", "NOERROR"),
    (ZONE, "NOERROR"),
    (f"svc.{ZONE}", "NOERROR"),
    (f"default.svc.{ZONE}", "NOERROR"),
    (f"ns.dns.{ZONE}", "NOERROR"),
    (f"dns-version.{ZONE}", "NOERROR"),
    (svc("drain.shop"), "NXDOMAIN"),
    (svc("web-2.web.default"), "NXDOMAIN"),
    (svc("nope.default"), "NXDOMAIN"),
    (f"nosuchns.svc.{ZONE}", "NXDOMAIN"),
    (f"foo.{ZONE}", "NXDOMAIN"),
    (svc("foo.search.shop"), "NXDOMAIN"),
    (f"_x._tcp.{WEB}", "NXDOMAIN"),
    (f"10-244-1-5.nosuchns.pod.{ZONE}", "NXDOMAIN"),
]


@pytest.mark.parametrize(("qname", "rcode"), CLASS_NAMES, ids=[n for n, _ in CLASS_NAMES])
def test_existence_does_not_depend_on_qtype(
    example: RunningServer, qname: str, rcode: str
) -> None:
    for qtype in ("A", "AAAA", "TXT", "SRV", "MX", "CNAME", "HTTPS"):
        reply = example.query(qname, qtype)
        assert dns.rcode.to_text(reply.rcode()) == rcode, qtype
        if not reply.answer:  # every negative answer: exactly one SOA, TTL 5, MINIMUM 5
            assert rr_lines(reply.authority) == [SOA], qtype


# -- the query's spelling of the zone is kept in generated names (SPEC §2.0, §2.19) --------

def test_negative_answer_soa_keeps_the_query_zone_case(example: RunningServer) -> None:
    """CoreDNS takes the zone from the qname (``handler.go:21``) and builds the SOA from it."""
    reply = example.query("nope.default.svc.CLUSTER.Local", "A")
    assert dns.rcode.to_text(reply.rcode()) == "NXDOMAIN"
    (soa,) = reply.authority
    assert soa.name.to_text() == "CLUSTER.Local."
    (rdata,) = soa
    assert rdata.mname.to_text() == "ns.dns.CLUSTER.Local."
    assert rdata.rname.to_text() == "hostmaster.CLUSTER.Local."


def test_srv_targets_are_lower_case_whatever_the_query_case(example: RunningServer) -> None:
    """A deliberate difference from CoreDNS, which writes the query's spelling of the zone into
    SRV targets: our answers are encoded once, before any query, so names inside RDATA are
    lower case. The question and every owner name still echo the query (0x20 clients check
    those); names compare case-insensitively everywhere else."""
    reply = example.query("_http._tcp.web.default.svc.CLUSTER.Local", "SRV")
    assert reply.question[0].name.to_text() == "_http._tcp.web.default.svc.CLUSTER.Local."
    assert {rrset.name.to_text() for rrset in reply.answer} == {
        "_http._tcp.web.default.svc.CLUSTER.Local."}
    targets = sorted(rdata.target.to_text() for rrset in reply.answer for rdata in rrset)
    assert targets == ["web-0.web.default.svc.cluster.local.",
                       "web-1.web.default.svc.cluster.local."]
    owners = sorted(rrset.name.to_text() for rrset in reply.additional)
    assert owners == targets
