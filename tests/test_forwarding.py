"""The server forwarding names outside its zones to a real upstream on loopback.

The upstream (``tests/upstream.py``) serves ``example.com`` and ``corp.example``; the server
under test serves the bundled example cluster and forwards everything else to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from livecluster import ServerProcess, eventually
from upstream import FakeUpstream

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"
RECORDS = [
    "www.example.com. 300 IN A 192.0.2.1",
    "www.example.com. 300 IN AAAA 2001:db8::1",
    "search.example.com. 60 IN A 192.0.2.7",
    "short.example.com. 2 IN A 192.0.2.8",
    "big.example.com. 300 IN TXT " + " ".join(['"' + "x" * 200 + '"'] * 4),
    "5.2.0.192.in-addr.arpa. 300 IN PTR host.example.com.",
]
SOA = "example.com. 900 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 120"
CORP = ["intranet.corp.example. 300 IN A 10.1.1.1"]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(RECORDS, soa=SOA) as server:
        yield server


@pytest.fixture(scope="module")
def corp() -> Iterator[FakeUpstream]:
    with FakeUpstream(CORP) as server:
        yield server


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, corp: FakeUpstream) -> Iterator[ServerProcess]:
    proc = ServerProcess([
        "--manifests", str(EXAMPLE), "--upstream", upstream.address, "--cache", "30",
        "--stub-domain", f"corp.example={corp.address}",
    ])
    yield proc
    proc.stop()


def ask(port: int, name: str, qtype: str = "A", tcp: bool = False,
        payload: int | None = None) -> dns.message.Message:
    query = dns.message.make_query(name, qtype, use_edns=payload is not None,
                                   payload=payload or 512)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=port, timeout=5)


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


def test_outside_names_are_forwarded(server: ServerProcess) -> None:
    reply = ask(server.port, "WWW.Example.COM")
    assert dns.rcode.to_text(reply.rcode()) == "NOERROR"
    assert addresses(reply) == ["192.0.2.1"]
    assert reply.question[0].name.to_text() == "WWW.Example.COM."  # the client's case
    assert reply.flags & dns.flags.RA and not reply.flags & dns.flags.AA  # upstream's flags
    assert addresses(ask(server.port, "www.example.com", "AAAA", tcp=True)) == ["2001:db8::1"]


def test_upstream_nxdomain_comes_back_with_its_soa(server: ServerProcess) -> None:
    reply = ask(server.port, "missing.example.com")
    assert dns.rcode.to_text(reply.rcode()) == "NXDOMAIN"
    assert reply.authority[0].name.to_text() == "example.com."


def test_cluster_names_are_never_forwarded(server: ServerProcess, upstream: FakeUpstream) -> None:
    before = sum(upstream.queries.values())
    assert dns.rcode.to_text(ask(server.port, "nope.default.svc.cluster.local").rcode()) == "NXDOMAIN"
    assert dns.rcode.to_text(ask(server.port, "www.example.com.default.svc.cluster.local").rcode()) == "NXDOMAIN"
    assert addresses(ask(server.port, "kubernetes.default.svc.cluster.local")) == ["10.96.0.1"]
    assert sum(upstream.queries.values()) == before


def test_cache_answers_repeats_with_counting_down_ttl(server: ServerProcess,
                                                      upstream: FakeUpstream) -> None:
    first = ask(server.port, "search.example.com")
    before = sum(upstream.queries.values())
    time.sleep(1.1)
    again = ask(server.port, "search.example.com")
    assert sum(upstream.queries.values()) == before  # from the cache
    assert addresses(again) == ["192.0.2.7"]
    assert again.answer[0].ttl < first.answer[0].ttl <= 30  # capped at --cache 30, counting down


def test_cache_expires(server: ServerProcess, upstream: FakeUpstream) -> None:
    ask(server.port, "short.example.com")  # TTL 2, floored to the cache minimum 5 s
    before = sum(upstream.queries.values())
    ask(server.port, "short.example.com")
    assert sum(upstream.queries.values()) == before
    time.sleep(5.5)
    ask(server.port, "short.example.com")
    assert sum(upstream.queries.values()) == before + 1


def test_negative_answers_are_cached(server: ServerProcess, upstream: FakeUpstream) -> None:
    ask(server.port, "gone.example.com")
    before = sum(upstream.queries.values())
    reply = ask(server.port, "gone.example.com")
    assert dns.rcode.to_text(reply.rcode()) == "NXDOMAIN"
    assert sum(upstream.queries.values()) == before


def test_truncated_upstream_reply_is_retried_over_tcp(server: ServerProcess,
                                                      upstream: FakeUpstream) -> None:
    # 4 x 200-byte TXT strings do not fit 512 bytes: the upstream sets TC over UDP, we retry
    # over TCP and hand the client a reply that fits its own limit.
    over_tcp = ask(server.port, "big.example.com", "TXT", tcp=True)
    assert len(over_tcp.answer[0]) == 1 and upstream.queries["tcp"] >= 1
    small = ask(server.port, "big.example.com", "TXT")
    assert small.flags & dns.flags.TC  # too big for 512 bytes: the client must use TCP
    large = ask(server.port, "big.example.com", "TXT", payload=4096)
    assert not large.flags & dns.flags.TC and len(large.answer[0]) == 1


def test_stub_domain_goes_to_its_own_servers(server: ServerProcess, corp: FakeUpstream,
                                             upstream: FakeUpstream) -> None:
    before = sum(upstream.queries.values())
    assert addresses(ask(server.port, "intranet.corp.example")) == ["10.1.1.1"]
    assert corp.queries["udp"] >= 1
    assert sum(upstream.queries.values()) == before


def test_upstream_down_gives_servfail_then_recovers() -> None:
    with FakeUpstream(RECORDS, soa=SOA) as up:
        proc = ServerProcess(["--manifests", str(EXAMPLE), "--upstream", up.address])
        try:
            assert addresses(ask(proc.port, "www.example.com")) == ["192.0.2.1"]
            up.drop = True
            started = time.monotonic()
            reply = ask(proc.port, "www.example.com", "AAAA")
            assert dns.rcode.to_text(reply.rcode()) == "SERVFAIL"
            assert time.monotonic() - started < 6  # the 5 s deadline
            up.drop = False
            eventually(lambda: _expect(addresses(ask(proc.port, "www.example.com")),
                                       ["192.0.2.1"]), timeout=10)
        finally:
            proc.stop()


def test_without_upstream_outside_names_are_refused() -> None:
    proc = ServerProcess(["--manifests", str(EXAMPLE)])
    try:
        assert dns.rcode.to_text(ask(proc.port, "www.example.com").rcode()) == "REFUSED"
    finally:
        proc.stop()


def test_unknown_reverse_names_fall_through_with_the_kubeadm_corefile(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    corefile = tmp_path / "Corefile"
    corefile.write_text(
        ".:0 {\n  kubernetes cluster.local in-addr.arpa ip6.arpa {\n    pods insecure\n"
        "    fallthrough in-addr.arpa ip6.arpa\n    ttl 30\n  }\n"
        f"  forward . {upstream.address} {{\n    max_concurrent 1000\n  }}\n"
        "  cache 30 {\n    disable success cluster.local\n    disable denial cluster.local\n  }\n}\n"
    )
    proc = ServerProcess(["--corefile", str(corefile), "--manifests", str(EXAMPLE)])
    try:
        known = ask(proc.port, "1.0.96.10.in-addr.arpa", "PTR")
        assert addresses(known) == ["kubernetes.default.svc.cluster.local."]
        assert known.answer[0].ttl == 30
        outside = ask(proc.port, "5.2.0.192.in-addr.arpa", "PTR")
        assert addresses(outside) == ["host.example.com."]
        # a missing cluster name does not fall through (only the reverse zones do)
        assert dns.rcode.to_text(ask(proc.port, "x.default.svc.cluster.local").rcode()) == "NXDOMAIN"
    finally:
        proc.stop()


def test_an_upstream_that_is_this_server_is_refused_with_a_clear_error() -> None:
    port = _free_port()
    proc = ServerProcess(["--manifests", str(EXAMPLE), "--upstream", f"127.0.0.1:{port}"],
                         listen=f"127.0.0.1:{port}")
    try:
        eventually(lambda: _expect("it is this server's own address" in proc.text(), True))
        assert dns.rcode.to_text(ask(proc.port, "www.example.com").rcode()) == "REFUSED"
    finally:
        proc.stop()


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _expect(actual: object, expected: object) -> None:
    assert actual == expected


def test_external_name_target_is_chased_upstream(server: ServerProcess) -> None:
    """search.shop is an ExternalName for search.example.com: CNAME plus the upstream's A,
    as CoreDNS answers (stub resolvers do not chase CNAMEs themselves)."""
    reply = ask(server.port, "Search.Shop.svc.cluster.local")
    lines = sorted(rrset.to_text() for rrset in reply.answer)
    assert lines[0] == "Search.Shop.svc.cluster.local. 5 IN CNAME search.example.com."
    assert lines[1].startswith("search.example.com. ") and lines[1].endswith(" IN A 192.0.2.7")
    assert 0 < reply.answer[1].ttl <= 60  # the upstream's TTL (counted down by the cache)
    assert [rrset.rdtype for rrset in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert reply.flags & dns.flags.AA
    # the CNAME query type itself is answered from the zone alone
    cname = ask(server.port, "search.shop.svc.cluster.local", "CNAME")
    assert [rrset.to_text() for rrset in cname.answer] == [
        "search.shop.svc.cluster.local. 5 IN CNAME search.example.com."]
    # an empty upstream answer leaves the CNAME alone (NOERROR)
    aaaa = ask(server.port, "search.shop.svc.cluster.local", "AAAA")
    assert dns.rcode.to_text(aaaa.rcode()) == "NOERROR"
    assert [rrset.rdtype for rrset in aaaa.answer] == [dns.rdatatype.CNAME]
