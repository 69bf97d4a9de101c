"""Every ``forward`` option: how a Corefile line is read (accepted forms, refused forms with
their ``file:line: message``), and what it does against real upstreams on loopback.

The forwarding is built from the Corefile as the server builds it
(:func:`dnsserver.plugins.forward.build`) and asked in-process, so a test sees exactly what
each upstream received; tests/test_forward_corefile.py runs the same lines through the server.
Expected answers are CoreDNS 1.13's (plugin/forward/README.md, forward.go).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import dns.flags
import dns.message
import dns.rcode
import dnslib
import pytest
import upstream as fake
from upstream import FakeUpstream

from dnsserver.config import corefile
from dnsserver.config.corefile import BadValue, CorefileError, Unsupported
from dnsserver.config.directives import UnknownOption
from dnsserver.plugins.forward import ForwardConfig, Forwarding, ForwardPolicy, build
from dnsserver.serve import wire

T = TypeVar("T")

EXAMPLE = [
    "www.example.com. 300 IN A 192.0.2.1",
    "example.com. 300 IN A 192.0.2.10",
    *(f"big.example.com. 60 IN A 10.0.0.{i}" for i in range(1, 61)),
]
SOA = "example.com. 900 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 120"
OTHER = ["www.example.com. 300 IN A 198.51.100.1", "missing.example.com. 300 IN A 198.51.100.2",
         "www.corp.example. 300 IN A 10.9.9.9"]
FAST_READ = 0.3  # seconds an upstream may take before a try fails (CoreDNS: 2s)


# -- helpers shared with tests/test_cache_options.py ---------------------------------------

class Recording(FakeUpstream):
    """A FakeUpstream that also keeps every query it got (transport, message), the TCP
    connections it accepted and the UDP source ports it saw."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[tuple[str, dnslib.DNSRecord]] = []
        self.accepted = 0
        self.source_ports: list[int] = []

    def replies(self, data: bytes, transport: str) -> list[tuple[float, bytes]]:
        with contextlib.suppress(Exception):  # garbage is FakeUpstream's to ignore
            self.messages.append((transport, dnslib.DNSRecord.parse(data)))
        return super().replies(data, transport)

    async def _open(self) -> None:  # FakeUpstream's, with protocols that count
        loop = asyncio.get_running_loop()
        self._tcp = await loop.create_server(lambda: _CountingTcp(self), self.host, self.port,
                                             reuse_address=True)
        self.port = self._tcp.sockets[0].getsockname()[1]
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _CountingUdp(self), local_addr=(self.host, self.port))

    def asked(self) -> list[tuple[str, str, str]]:
        """(transport, name, type) of every query but health checks (NS queries)."""
        return [(transport, str(m.q.qname), dnslib.QTYPE.get(m.q.qtype))
                for transport, m in self.messages if m.q.qtype != dnslib.QTYPE.NS]


class _CountingTcp(fake._TcpProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(self.server, Recording)
        self.server.accepted += 1


class _CountingUdp(fake._UdpProtocol):
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert isinstance(self.server, Recording)
        self.server.source_ports.append(addr[1])
        super().datagram_received(data, addr)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(30):
            return await scenario()
    return asyncio.run(bounded())


def parse(text: str, *, lenient: bool = False) -> corefile.Parsed:
    return corefile.parse_with_warnings(text, lenient=lenient, env={})


def block(*lines: str) -> str:
    """A main block: ``kubernetes cluster.local`` on line 2, ``lines`` from line 3."""
    return ".:53 {\n    kubernetes cluster.local\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


def forwarding(text: str, read_timeout: float = FAST_READ) -> Forwarding:
    """The forwarding the server would build from Corefile ``text`` (upstream read timeouts
    cut to ``read_timeout`` so failures are quick)."""
    built = build(parse(text).config, [("127.0.0.1", 0)])
    assert built is not None
    for forwarder in built.forwarders():
        forwarder.read_timeout = read_timeout
    return built


def make(name: str, qtype: str = "A", **kwargs: Any) -> bytes:
    message = dns.message.make_query(name, qtype, **kwargs)
    message.id = 0x1234
    return message.to_wire()


async def ask(forward: Forwarding, name: str, qtype: str = "A", *, tcp: bool = False,
              **kwargs: Any) -> dns.message.Message | None:
    """What the server answers for ``name`` (None: no route, the server says REFUSED)."""
    data = make(name, qtype, **kwargs)
    query = wire.parse_query(data)
    reply = forward.answer(data, query.name.lower(), query.qtype, query.edns, tcp)
    if reply is None:
        return None
    if not isinstance(reply, bytes):
        reply = await reply
    return dns.message.from_wire(reply)


def text_of(reply: dns.message.Message | None) -> tuple[str, list[str]]:
    """(rcode, answer lines) of a reply."""
    assert reply is not None
    return (dns.rcode.to_text(reply.rcode()),
            sorted(f"{rrset.name} {rrset.ttl} {rdata}" for rrset in reply.answer for rdata in rrset))


async def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Until ``check()`` holds (checked every 10 ms), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


@pytest.fixture
def upstream() -> Iterator[Recording]:
    with Recording(EXAMPLE, soa=SOA) as server:
        yield server


@pytest.fixture
def other() -> Iterator[Recording]:
    with Recording(OTHER) as server:
        yield server


# -- reading the line ----------------------------------------------------------------------

ACCEPTED: list[tuple[str, list[str], ForwardConfig]] = [
    ("defaults", ["forward . 10.0.0.1"], ForwardConfig(to=("10.0.0.1:53",))),
    ("FROM a zone", ["forward Example.ORG. 10.0.0.1"],
     ForwardConfig(to=("10.0.0.1:53",), from_zone="example.org")),
    ("FROM with a scheme and a port", ["forward dns://example.org:53 10.0.0.1"],
     ForwardConfig(to=("10.0.0.1:53",), from_zone="example.org")),
    ("FROM a CIDR on an octet", ["forward 10.0.0.0/8 10.0.0.1"],
     ForwardConfig(to=("10.0.0.1:53",), from_zone="10.in-addr.arpa")),
    ("except, twice, with a CIDR", ["forward . 10.0.0.1 {", "except Corp.Example. lab.example",
                                    "except 192.168.0.0/16 corp.example", "}"],
     ForwardConfig(to=("10.0.0.1:53",),
                   except_zones=("corp.example", "lab.example", "168.192.in-addr.arpa"))),
    ("force_tcp and prefer_udp", ["forward . 10.0.0.1 {", "force_tcp", "prefer_udp", "}"],
     ForwardConfig(to=("10.0.0.1:53",), force_tcp=True, prefer_udp=True)),
    ("expire", ["forward . 10.0.0.1 {", "expire 1m30s", "}"],
     ForwardConfig(to=("10.0.0.1:53",), expire=90.0)),
    ("expire 0", ["forward . 10.0.0.1 {", "expire 0", "}"],
     ForwardConfig(to=("10.0.0.1:53",), expire=0.0)),
    ("max_fails 0 and max_connect_attempts",
     ["forward . 10.0.0.1 {", "max_fails 0", "max_connect_attempts 3", "}"],
     ForwardConfig(to=("10.0.0.1:53",), max_fails=0, max_connect_attempts=3)),
    ("health_check with no_rec and a domain",
     ["forward . 10.0.0.1 {", "health_check 250ms no_rec domain Example.ORG.", "}"],
     ForwardConfig(to=("10.0.0.1:53",), health_check=0.25, health_check_recursion=False,
                   health_check_domain="example.org")),
    ("a second health_check line starts from '.', no_rec stays",
     ["forward . 10.0.0.1 {", "health_check 1s no_rec domain example.org", "health_check 2s",
      "}"],
     ForwardConfig(to=("10.0.0.1:53",), health_check=2.0, health_check_recursion=False)),
    ("health_check 0", ["forward . 10.0.0.1 {", "health_check 0", "}"],
     ForwardConfig(to=("10.0.0.1:53",), health_check=0.0)),
    ("policy", ["forward . 10.0.0.1 {", "policy round_robin", "}"],
     ForwardConfig(to=("10.0.0.1:53",), policy=ForwardPolicy.ROUND_ROBIN)),
    ("max_concurrent", ["forward . 10.0.0.1 {", "max_concurrent 1000", "}"],
     ForwardConfig(to=("10.0.0.1:53",), max_concurrent=1000)),
    ("next and failover add up, any case, NOTIMPL",
     ["forward . 10.0.0.1 {", "next nxdomain", "next REFUSED", "failover ServFail notimpl",
      "}"],
     ForwardConfig(to=("10.0.0.1:53",), next_rcodes=("NXDOMAIN", "REFUSED"),
                   failover_rcodes=("SERVFAIL", "NOTIMPL"))),
    ("failfast_all_unhealthy_upstreams",
     ["forward . 10.0.0.1 {", "failfast_all_unhealthy_upstreams", "}"],
     ForwardConfig(to=("10.0.0.1:53",), failfast_all_unhealthy=True)),
]


@pytest.mark.parametrize(("lines", "expected"), [case[1:] for case in ACCEPTED],
                         ids=[case[0] for case in ACCEPTED])
def test_accepted_forms(lines: list[str], expected: ForwardConfig) -> None:
    parsed = parse(block(*lines))
    config = parsed.config
    forward = config.forward if expected.from_zone == "." else config.stub_domains[0].forward
    assert forward == expected
    if "CIDR" not in lines[0]:
        assert parsed.warnings == ()


def test_a_cidr_spanning_several_zones_forwards_the_first_with_a_warning() -> None:
    parsed = parse(block("forward 10.0.0.0/23 10.0.0.1"))
    assert [stub.forward.from_zone for stub in parsed.config.stub_domains] == [
        "0.0.10.in-addr.arpa"]
    assert [str(w) for w in parsed.warnings] == [
        "Corefile:3: forward: '10.0.0.0/23' spans 2 reverse zones; only the first, "
        "'0.0.10.in-addr.arpa', is forwarded (as in CoreDNS)"]


def test_a_blocks_forward_lines_form_one_chain_in_order() -> None:
    parsed = parse(block("forward corp.example 10.0.0.2 {", "next NXDOMAIN", "}",
                         "forward . 10.0.0.1 {", "except lab.example", "}",
                         "forward . 10.0.0.3"))
    first = ForwardConfig(to=("10.0.0.2:53",), from_zone="corp.example", next_rcodes=("NXDOMAIN",))
    second = ForwardConfig(to=("10.0.0.1:53",), except_zones=("lab.example",))
    third = ForwardConfig(to=("10.0.0.3:53",))
    config = parsed.config
    assert config.forward == ForwardConfig(to=("10.0.0.1:53",), except_zones=("lab.example",),
                                           before=(first,), after=(third,))
    assert [stub.forward for stub in config.stub_domains] == [
        ForwardConfig(to=("10.0.0.2:53",), from_zone="corp.example", next_rcodes=("NXDOMAIN",),
                      after=(second, third))]
    assert config.forward.chain == (first, second, third)
    assert parsed.warnings == ()  # the third is reached through except/next


REFUSED: list[tuple[str, list[str], type[CorefileError], str]] = [
    ("no TO", ["forward ."], BadValue, "forward: expected at least 2 arguments, got 1"),
    ("a host name", ["forward . foo.example"], BadValue,
     "forward: 'foo.example' is not an IP address, IP:PORT or file"),
    ("grpc", ["forward . grpc://1.1.1.1"], Unsupported,
     "forward: 'grpc://1.1.1.1': only plain DNS upstreams are supported"),
    ("tls upstream", ["forward . tls://1.1.1.1"], Unsupported,
     "forward: 'tls://1.1.1.1': only plain DNS upstreams are supported"),
    ("16 upstreams", ["forward . " + " ".join(f"10.0.0.{i}" for i in range(16))], BadValue,
     "forward: at most 15 upstreams"),
    ("bad FROM", ["forward exa..mple 10.0.0.1"], BadValue,
     "forward: 'exa..mple' is not a domain name"),
    ("except without names", ["forward . 1.1.1.1 {", "except", "}"], BadValue,
     "forward except: expected at least 1 argument, got 0"),
    ("failover NOERROR", ["forward . 1.1.1.1 {", "failover NOERROR", "}"], BadValue,
     "forward failover: 'NOERROR': NOERROR cannot be used in failover"),
    ("failover BOGUS", ["forward . 1.1.1.1 {", "failover BOGUS", "}"], BadValue,
     "forward failover: 'BOGUS' is not an rcode"),
    ("next without rcodes", ["forward . 1.1.1.1 {", "next", "}"], BadValue,
     "forward next: expected at least 1 argument, got 0"),
    ("next BOGUS", ["forward . 1.1.1.1 {", "next NXDOMAIN BOGUS", "}"], BadValue,
     "forward next: 'BOGUS' is not an rcode"),
    ("policy foo", ["forward . 1.1.1.1 {", "policy foo", "}"], BadValue,
     "forward policy: 'foo' is not one of random, round_robin, sequential"),
    ("health_check -1s", ["forward . 1.1.1.1 {", "health_check -1s", "}"], BadValue,
     "forward health_check: '-1s' is not a duration (e.g. 500ms, 5s, 1m30s)"),
    ("health_check 1s rec", ["forward . 1.1.1.1 {", "health_check 1s rec", "}"], BadValue,
     "forward health_check: expected 'no_rec' or 'domain FQDN', not 'rec'"),
    ("health_check 1s domain", ["forward . 1.1.1.1 {", "health_check 1s domain", "}"], BadValue,
     "forward health_check: domain needs a name"),
    ("max_concurrent -1", ["forward . 1.1.1.1 {", "max_concurrent -1", "}"], BadValue,
     "forward max_concurrent: '-1' is not a whole number"),
    ("max_fails too big", ["forward . 1.1.1.1 {", "max_fails 4294967296", "}"], BadValue,
     "forward max_fails: 4294967296 is out of range (from 0 to 4294967295)"),
    ("expire -1s", ["forward . 1.1.1.1 {", "expire -1s", "}"], BadValue,
     "forward expire: '-1s' is not a duration (e.g. 500ms, 5s, 1m30s)"),
    ("force_tcp x", ["forward . 1.1.1.1 {", "force_tcp x", "}"], BadValue,
     "forward force_tcp: expected no arguments, got 1"),
    ("prefer_udp x", ["forward . 1.1.1.1 {", "prefer_udp x", "}"], BadValue,
     "forward prefer_udp: expected no arguments, got 1"),
    ("failfast_all_unhealthy_upstreams x",
     ["forward . 1.1.1.1 {", "failfast_all_unhealthy_upstreams x", "}"], BadValue,
     "forward failfast_all_unhealthy_upstreams: expected no arguments, got 1"),
    ("tls", ["forward . 1.1.1.1 {", "tls a b c d", "}"], Unsupported,
     "forward: option 'tls' is not supported"),
    ("tls_servername", ["forward . 1.1.1.1 {", "tls_servername dns.example", "}"], Unsupported,
     "forward: option 'tls_servername' is not supported"),
    # CoreDNS 1.14 options: unknown to 1.13
    *[(f"1.14's {option}", ["forward . 1.1.1.1 {", f"{option} {value}".strip(), "}"],
       UnknownOption, f"forward: unknown option {option!r}")
      for option, value in (("max_idle_conns", "10"), ("read_timeout", "1s"),
                            ("next_on_nodata", ""), ("source_address", "10.0.0.1"),
                            ("doh_method", "GET"), ("resolver", "10.0.0.1"),
                            ("max_age", "1m"))],
]


@pytest.mark.parametrize(("lines", "kind", "message"), [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_refused_forms(lines: list[str], kind: type[CorefileError], message: str) -> None:
    line = 3 + len(lines) - (2 if len(lines) > 1 else 1)  # the option's line, or the directive's
    with pytest.raises(kind) as caught:
        parse(block(*lines))
    assert str(caught.value) == f"Corefile:{line}: {message}"


def test_lenient_leaves_an_unknown_or_unsupported_option_out_with_a_warning() -> None:
    parsed = parse(block("forward . 1.1.1.1 {", "read_timeout 1s", "tls_servername x",
                         "force_tcp", "}"), lenient=True)
    assert parsed.config.forward == ForwardConfig(to=("1.1.1.1:53",), force_tcp=True)
    assert [str(w) for w in parsed.warnings] == [
        "Corefile:4: forward: unknown option 'read_timeout'; ignored",
        "Corefile:5: forward: option 'tls_servername' is not supported; ignored",
    ]


def test_a_line_an_earlier_one_shadows_is_accepted_with_a_warning() -> None:
    parsed = parse(block("forward . 10.0.0.1", "forward corp.example 10.0.0.2"))
    assert [str(w) for w in parsed.warnings] == [
        "Corefile:4: forward corp.example: never used: an earlier forward line (.) takes all "
        "its names first; CoreDNS tries forward lines in order, so put sub-zones first"]


# -- except --------------------------------------------------------------------------------

def test_except_passes_a_name_on_and_with_no_forward_after_it_is_servfail(
    upstream: Recording,
) -> None:
    """``forward . A { except example.com }``: example.com and below go to the next plugin;
    there is none, so SERVFAIL (CoreDNS: "no next plugin found"); other names go to A."""
    async def scenario() -> list[tuple[str, list[str]]]:
        forward = forwarding(block(f"forward . {upstream.address} {{", "except example.com",
                                   "}"))
        try:
            return [text_of(await ask(forward, name)) for name in (
                "www.example.com", "example.com", "Www.Example.Com", "example.org")]
        finally:
            await forward.close()

    www, apex, mixed, org = run(scenario)
    assert www == apex == mixed == ("SERVFAIL", [])
    assert org == ("NXDOMAIN", [])
    assert upstream.asked() == [("udp", "example.org.", "A")]


def test_a_name_equal_to_from_is_forwarded_even_when_excepted(upstream: Recording) -> None:
    async def scenario() -> list[tuple[str, list[str]]]:
        forward = forwarding(block(f"forward example.com {upstream.address} {{",
                                   "except example.com", "}"))
        try:
            return [text_of(await ask(forward, name)) for name in ("example.com",
                                                                  "www.example.com")]
        finally:
            await forward.close()

    apex, www = run(scenario)
    assert apex == ("NOERROR", ["example.com. 300 192.0.2.10"])
    assert www == ("SERVFAIL", [])
    assert upstream.asked() == [("udp", "example.com.", "A")]


def test_except_hands_a_name_to_the_next_forward_line(upstream: Recording,
                                                       other: Recording) -> None:
    async def scenario() -> list[tuple[str, list[str]]]:
        forward = forwarding(block(f"forward . {upstream.address} {{", "except corp.example", "}",
                                   f"forward corp.example {other.address}"))
        try:
            return [text_of(await ask(forward, name)) for name in ("www.corp.example",
                                                                  "www.example.com")]
        finally:
            await forward.close()

    corp, www = run(scenario)
    assert corp == ("NOERROR", ["www.corp.example. 300 10.9.9.9"])
    assert www == ("NOERROR", ["www.example.com. 300 192.0.2.1"])
    assert upstream.asked() == [("udp", "www.example.com.", "A")]
    assert other.asked() == [("udp", "www.corp.example.", "A")]


def test_forward_lines_are_tried_in_order_not_by_the_longest_zone(upstream: Recording,
                                                                   other: Recording) -> None:
    """CoreDNS's README: put sub-zones first, else the parent's line takes their names."""
    async def scenario() -> list[tuple[str, list[str]]]:
        parent_first = forwarding(block(f"forward . {upstream.address}",
                                        f"forward corp.example {other.address}"))
        sub_first = forwarding(block(f"forward corp.example {other.address}",
                                     f"forward . {upstream.address}"))
        try:
            return [text_of(await ask(parent_first, "www.corp.example")),
                    text_of(await ask(sub_first, "www.corp.example"))]
        finally:
            await parent_first.close()
            await sub_first.close()

    shadowed, taken = run(scenario)
    assert shadowed == ("NXDOMAIN", [])  # from the first line's upstream
    assert taken == ("NOERROR", ["www.corp.example. 300 10.9.9.9"])
    assert upstream.asked() == [("udp", "www.corp.example.", "A")]
    assert other.asked() == [("udp", "www.corp.example.", "A")]


# -- next ----------------------------------------------------------------------------------

def test_next_hands_an_rcode_to_the_following_forward_line(upstream: Recording,
                                                            other: Recording) -> None:
    """``forward . A { next NXDOMAIN }`` + ``forward . B``: A's NXDOMAIN makes B answer; A's
    other answers stand."""
    async def scenario() -> list[tuple[str, list[str]]]:
        forward = forwarding(block(f"forward . {upstream.address} {{", "next NXDOMAIN", "}",
                                   f"forward . {other.address}"))
        try:
            return [text_of(await ask(forward, name)) for name in (
                "missing.example.com", "www.example.com", "nowhere.example.com")]
        finally:
            await forward.close()

    missing, www, nowhere = run(scenario)
    assert missing == ("NOERROR", ["missing.example.com. 300 198.51.100.2"])
    assert www == ("NOERROR", ["www.example.com. 300 192.0.2.1"])
    assert nowhere == ("NXDOMAIN", [])  # B's NXDOMAIN is the answer: no line after B
    assert upstream.asked() == [("udp", "missing.example.com.", "A"),
                                ("udp", "www.example.com.", "A"),
                                ("udp", "nowhere.example.com.", "A")]
    assert other.asked() == [("udp", "missing.example.com.", "A"),
                             ("udp", "nowhere.example.com.", "A")]


def test_next_without_a_following_forward_line_is_ignored(upstream: Recording) -> None:
    async def scenario() -> tuple[str, list[str]]:
        forward = forwarding(block(f"forward . {upstream.address} {{", "next NXDOMAIN", "}"))
        try:
            return text_of(await ask(forward, "missing.example.com"))
        finally:
            await forward.close()

    assert run(scenario) == ("NXDOMAIN", [])


def test_next_to_a_line_that_does_not_take_the_name_is_servfail(upstream: Recording,
                                                                 other: Recording) -> None:
    async def scenario() -> list[tuple[str, list[str]]]:
        forward = forwarding(block(f"forward . {upstream.address} {{", "next NXDOMAIN", "}",
                                   f"forward corp.example {other.address}"))
        try:
            return [text_of(await ask(forward, "missing.example.com")),
                    text_of(await ask(forward, "nothing.corp.example"))]
        finally:
            await forward.close()

    outside, corp = run(scenario)
    assert outside == ("SERVFAIL", [])  # handed on, and nothing after takes it
    assert corp == ("NXDOMAIN", [])  # the corp line takes it; its NXDOMAIN stands
    assert other.asked() == [("udp", "nothing.corp.example.", "A")]


# -- transport: the client's, force_tcp, prefer_udp ----------------------------------------

def test_the_clients_transport_goes_upstream_and_a_truncated_reply_goes_back(
    upstream: Recording,
) -> None:
    async def scenario() -> list[dns.message.Message | None]:
        forward = forwarding(block(f"forward . {upstream.address}"))
        try:
            return [await ask(forward, "big.example.com"),
                    await ask(forward, "big.example.com", tcp=True)]
        finally:
            await forward.close()

    over_udp, over_tcp = run(scenario)
    assert over_udp is not None and over_udp.flags & dns.flags.TC and over_udp.answer == []
    assert over_tcp is not None and len(over_tcp.answer[0]) == 60
    assert [t for t, _, _ in upstream.asked()] == ["udp", "tcp"]


def test_force_tcp_asks_over_tcp_whatever_the_client_used(upstream: Recording) -> None:
    async def scenario() -> list[dns.message.Message | None]:
        forward = forwarding(block(f"forward . {upstream.address} {{", "force_tcp",
                                   "prefer_udp", "}"))
        try:
            return [await ask(forward, "www.example.com"), await ask(forward, "big.example.com")]
        finally:
            await forward.close()

    www, big = run(scenario)
    assert text_of(www) == ("NOERROR", ["www.example.com. 300 192.0.2.1"])
    # the whole answer came over TCP; it does not fit the UDP client's 512 bytes
    assert big is not None and big.flags & dns.flags.TC
    assert [t for t, _, _ in upstream.asked()] == ["tcp", "tcp"]


def test_prefer_udp_asks_over_udp_and_retries_a_truncated_reply_over_tcp(
    upstream: Recording,
) -> None:
    async def scenario() -> list[tuple[str, list[str]]]:
        forward = forwarding(block(f"forward . {upstream.address} {{", "prefer_udp", "}"))
        try:
            return [text_of(await ask(forward, "www.example.com", tcp=True)),
                    text_of(await ask(forward, "big.example.com", tcp=True))]
        finally:
            await forward.close()

    www, big = run(scenario)
    assert www == ("NOERROR", ["www.example.com. 300 192.0.2.1"])
    assert len(big[1]) == 60
    assert upstream.asked() == [("udp", "www.example.com.", "A"), ("udp", "big.example.com.", "A"),
                                ("tcp", "big.example.com.", "A")]


# -- expire: connections kept between queries ----------------------------------------------

@pytest.mark.parametrize(("expire", "tcp_connections", "udp_ports"), [
    ("", 1, 1),  # CoreDNS's 10s: one connection and one socket serve every query
    ("expire 0", 3, 3),  # none kept: a new one each time
])
def test_expire_keeps_connections_for_the_next_query(upstream: Recording, expire: str,
                                                     tcp_connections: int,
                                                     udp_ports: int) -> None:
    async def scenario() -> None:
        forward = forwarding(block(f"forward . {upstream.address} {{", expire, "}"))
        try:
            for _ in range(3):
                assert text_of(await ask(forward, "www.example.com", tcp=True))[0] == "NOERROR"
                assert text_of(await ask(forward, "www.example.com"))[0] == "NOERROR"
        finally:
            await forward.close()

    run(scenario)
    assert upstream.accepted == tcp_connections
    assert len(set(upstream.source_ports)) == udp_ports


def test_an_idle_connection_is_closed_after_expire(upstream: Recording) -> None:
    async def scenario() -> None:
        forward = forwarding(block(f"forward . {upstream.address} {{", "expire 200ms",
                                   "force_tcp", "}"))
        try:
            await ask(forward, "www.example.com")
            assert len(upstream._connections) == 1  # kept open after the reply
            await wait_for(lambda: not upstream._connections)  # closed by us after 200ms
            await ask(forward, "www.example.com")
        finally:
            await forward.close()

    run(scenario)
    assert upstream.accepted == 2


def test_a_kept_connection_the_upstream_closed_is_replaced_at_once(upstream: Recording) -> None:
    async def scenario() -> tuple[str, list[str]]:
        forward = forwarding(block(f"forward . {upstream.address} {{", "force_tcp", "}"))
        try:
            await ask(forward, "www.example.com")
            loop = upstream._loop  # the upstream drops its idle connections (on its loop)
            assert loop is not None
            loop.call_soon_threadsafe(lambda: [c.close() for c in list(upstream._connections)])
            await wait_for(lambda: not upstream._connections)
            return text_of(await ask(forward, "www.example.com"))
        finally:
            await forward.close()

    assert run(scenario) == ("NOERROR", ["www.example.com. 300 192.0.2.1"])
    assert upstream.accepted == 2


# -- failover, failfast, max_connect_attempts ----------------------------------------------

def test_failover_asks_the_next_upstream_on_those_rcodes(upstream: Recording,
                                                          other: Recording) -> None:
    upstream.servfail = True

    async def scenario() -> list[dns.message.Message | None]:
        with_failover = forwarding(block(f"forward . {upstream.address} {other.address} {{",
                                         "policy sequential", "failover SERVFAIL REFUSED", "}"))
        without = forwarding(block(f"forward . {upstream.address} {other.address} {{",
                                   "policy sequential", "}"))
        try:
            answers = [await ask(with_failover, "www.example.com"),
                       await ask(without, "www.example.com")]
            other.servfail = True  # every upstream fails over: the last reply is the answer
            answers.append(await ask(with_failover, "www.example.com"))
            return answers
        finally:
            await with_failover.close()
            await without.close()

    failed_over, plain, last = run(scenario)
    assert text_of(failed_over) == ("NOERROR", ["www.example.com. 300 198.51.100.1"])
    assert text_of(plain) == ("SERVFAIL", [])
    assert text_of(last) == ("SERVFAIL", [])
    assert last is not None and last.flags & dns.flags.RA  # the upstream's SERVFAIL, not ours
    assert len(upstream.asked()) == 3 and len(other.asked()) == 2


def test_failfast_answers_servfail_without_asking_when_every_upstream_is_down(
    upstream: Recording,
) -> None:
    upstream.drop = True

    async def scenario(failfast: bool) -> tuple[int, float]:
        forward = forwarding(block(f"forward . {upstream.address} {{", "max_fails 1",
                                   "health_check 1h", *(["failfast_all_unhealthy_upstreams"]
                                                        if failfast else []), "}"))
        try:
            assert text_of(await ask(forward, "www.example.com")) == ("SERVFAIL", [])  # down now
            before = len(upstream.asked())
            started = time.monotonic()
            assert text_of(await ask(forward, "www.example.com")) == ("SERVFAIL", [])
            return len(upstream.asked()) - before, time.monotonic() - started
        finally:
            await forward.close()

    asked, elapsed = run(lambda: scenario(True))
    assert asked == 0 and elapsed < FAST_READ / 2
    asked, elapsed = run(lambda: scenario(False))  # CoreDNS's default: one is tried anyway
    assert asked == 1 and elapsed >= FAST_READ


def test_max_connect_attempts_caps_the_failed_tries(upstream: Recording,
                                                    other: Recording) -> None:
    upstream.drop = other.drop = True

    async def scenario() -> float:
        forward = forwarding(block(f"forward . {upstream.address} {other.address} {{",
                                   "policy sequential", "max_connect_attempts 1", "}"))
        try:
            started = time.monotonic()
            assert text_of(await ask(forward, "www.example.com")) == ("SERVFAIL", [])
            return time.monotonic() - started
        finally:
            await forward.close()

    elapsed = run(scenario)
    assert (len(upstream.asked()), len(other.asked())) == (1, 0)
    assert elapsed < 2 * FAST_READ


# -- health_check no_rec / domain ----------------------------------------------------------

@pytest.mark.parametrize(("options", "transport", "name", "rd"), [
    ([], "udp", ".", 1),
    (["health_check 50ms no_rec domain Example.Com"], "udp", "example.com.", 0),
    (["health_check 50ms domain example.com", "force_tcp"], "tcp", "example.com.", 1),
])
def test_health_checks_ask_the_domain_with_or_without_recursion(
    upstream: Recording, options: list[str], transport: str, name: str, rd: int,
) -> None:
    """A failed query makes the upstream down (max_fails 1); while down it is checked with
    ``<domain> IN NS`` until it answers, then used again."""
    upstream.drop = True

    async def scenario() -> None:
        forward = forwarding(block(f"forward . {upstream.address} {{", "max_fails 1", *options,
                                   "}"))
        try:
            assert text_of(await ask(forward, "www.example.com"))[0] == "SERVFAIL"
            await wait_for(lambda: any(m.q.qtype == dnslib.QTYPE.NS
                                       for _, m in upstream.messages))
            upstream.drop = False
            state = forward.forwarders()[0].states[0]
            await wait_for(lambda: not state.down)
        finally:
            await forward.close()

    run(scenario)
    checks = [(t, m) for t, m in upstream.messages if m.q.qtype == dnslib.QTYPE.NS]
    assert checks
    assert {(t, str(m.q.qname), m.header.rd) for t, m in checks} == {(transport, name, rd)}
