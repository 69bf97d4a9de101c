"""The forwarder against real upstreams on loopback (tests/upstream.py), with exact answers.

Timeouts are scaled down (read timeout 0.2-0.3 s) so failure paths are quick; every timing
assertion leaves a wide margin for a loaded machine on the slow side only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from upstream import SPOOF_ADDRESS, FakeUpstream, closed_port

from dnsserver.plugins import upstream as forward
from dnsserver.plugins.upstream import Forwarder, ForwardRouter, Upstream

T = TypeVar("T")

RECORDS = [
    "www.example.com. 300 IN A 192.0.2.1",
    "www.example.com. 300 IN AAAA 2001:db8::1",
    "alias.example.com. 60 IN CNAME www.example.com.",
    *(f"big.example.com. 60 IN A 10.0.0.{i}" for i in range(1, 61)),
]
SOA = "example.com. 900 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 120"
FAST = {"read_timeout": 0.2, "deadline": 1.0}


def run(scenario: Callable[[], Awaitable[T]], loop: str = "asyncio") -> T:
    async def bounded() -> T:
        async with asyncio.timeout(20):
            return await scenario()
    if loop == "uvloop":  # what the server runs on
        uvloop = pytest.importorskip("uvloop")
        result: T = uvloop.run(bounded())
        return result
    return asyncio.run(bounded())


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(RECORDS, soa=SOA) as server:
        yield server


@pytest.fixture
def second() -> Iterator[FakeUpstream]:
    with FakeUpstream(RECORDS, soa=SOA) as server:
        yield server


def to(server: FakeUpstream) -> Upstream:
    return forward.parse_upstream(server.address)


def query(name: str, rdtype: str = "A", qid: int = 0x4242, **kwargs: object) -> bytes:
    message = dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
    message.id = qid
    return message.to_wire()


def answer_lines(reply: bytes) -> list[str]:
    message = dns.message.from_wire(reply)
    return sorted(rr.to_text() for rrset in message.answer for rr in _split(rrset))


def _split(rrset: dns.rrset.RRset) -> list[dns.rrset.RRset]:
    return [dns.rrset.from_rdata(rrset.name, rrset.ttl, rdata) for rdata in rrset]


async def forward_once(upstreams: list[Upstream], wire: bytes, **options: object) -> bytes:
    forwarder = Forwarder(upstreams, **{**FAST, **options})  # type: ignore[arg-type]
    try:
        return (await forwarder.exchange(wire)).reply
    finally:
        await forwarder.close()


# -- answers --------------------------------------------------------------------------------


def test_answer_carries_the_client_id_and_the_client_case(upstream: FakeUpstream) -> None:
    wire = query("WwW.ExAmPlE.cOm", qid=0xBEEF)
    reply = run(lambda: forward_once([to(upstream)], wire))
    message = dns.message.from_wire(reply)
    assert message.id == 0xBEEF
    assert reply[12 : len(wire)] == wire[12:]  # the question, byte for byte
    assert answer_lines(reply) == ["WwW.ExAmPlE.cOm. 300 IN A 192.0.2.1"]
    assert message.flags == dns.flags.QR | dns.flags.RD | dns.flags.RA  # the upstream's flags
    assert upstream.queries == {"udp": 1, "tcp": 0}


def test_upstream_that_lowercases_the_question_does_not_undo_0x20(upstream: FakeUpstream) -> None:
    upstream.lowercase = True
    wire = query("WWW.example.COM", "AAAA")
    reply = run(lambda: forward_once([to(upstream)], wire))
    assert reply[12 : len(wire)] == wire[12:]
    assert answer_lines(reply) == ["WWW.example.COM. 300 IN AAAA 2001:db8::1"]


def test_cname_chain_nxdomain_and_nodata_pass_through(upstream: FakeUpstream) -> None:
    async def scenario() -> list[bytes]:
        forwarder = Forwarder([to(upstream)], **FAST)  # type: ignore[arg-type]
        try:
            return [(await forwarder.exchange(query(name, rdtype))).reply for name, rdtype in [
                ("alias.example.com", "A"), ("missing.example.com", "A"),
                ("www.example.com", "MX"),
            ]]
        finally:
            await forwarder.close()

    cname, nxdomain, nodata = run(scenario)
    assert answer_lines(cname) == [
        "alias.example.com. 60 IN CNAME www.example.com.",
        "www.example.com. 300 IN A 192.0.2.1",
    ]
    for reply, rcode in ((nxdomain, dns.rcode.NXDOMAIN), (nodata, dns.rcode.NOERROR)):
        message = dns.message.from_wire(reply)
        assert message.rcode() == rcode
        assert message.answer == []
        assert [rrset.to_text() for rrset in message.authority] == [SOA]


def test_client_opt_goes_upstream_as_is_and_the_upstream_opt_comes_back(
    upstream: FakeUpstream,
) -> None:
    with_do = query("www.example.com", use_edns=0, payload=4000, want_dnssec=True)
    plain = query("www.example.com")

    async def scenario() -> tuple[bytes, bytes]:
        forwarder = Forwarder([to(upstream)], **FAST)  # type: ignore[arg-type]
        try:
            return (await forwarder.exchange(with_do)).reply, (await forwarder.exchange(plain)).reply
        finally:
            await forwarder.close()

    reply_do, reply_plain = run(scenario)
    assert upstream.edns == [(4000, True), None]
    assert dns.message.from_wire(reply_do).edns == 0
    assert dns.message.from_wire(reply_do).payload == 1232  # the upstream's OPT, untouched
    assert dns.message.from_wire(reply_plain).edns == -1


def test_upstream_servfail_is_its_answer_not_a_failure(upstream: FakeUpstream) -> None:
    upstream.servfail = True

    async def scenario() -> tuple[forward.Exchange, forward.UpstreamState]:
        forwarder = Forwarder([to(upstream)], **FAST)  # type: ignore[arg-type]
        try:
            return await forwarder.exchange(query("www.example.com")), forwarder.states[0]
        finally:
            await forwarder.close()

    exchange, state = run(scenario)
    message = dns.message.from_wire(exchange.reply)
    assert message.rcode() == dns.rcode.SERVFAIL
    assert message.flags & dns.flags.RA  # made upstream, not here
    assert exchange.upstream == to(upstream)
    assert (state.failed_tries, state.rcodes, state.down) == (0, {2: 1}, False)


# -- transport ------------------------------------------------------------------------------


def test_truncated_udp_reply_is_retried_over_tcp_with_prefer_udp(
    upstream: FakeUpstream,
) -> None:
    upstream.truncate_udp = True

    async def scenario() -> tuple[bytes, forward.UpstreamState]:
        forwarder = Forwarder([to(upstream)], prefer_udp=True, **FAST)  # type: ignore[arg-type]
        try:
            return (await forwarder.exchange(query("Big.Example.Com", qid=7))).reply, forwarder.states[0]
        finally:
            await forwarder.close()

    reply, state = run(scenario)
    message = dns.message.from_wire(reply)
    assert message.id == 7
    assert not message.flags & dns.flags.TC
    assert answer_lines(reply) == sorted(
        f"Big.Example.Com. 60 IN A 10.0.0.{i}" for i in range(1, 61)
    )
    assert upstream.queries == {"udp": 1, "tcp": 1}
    assert state.tcp_retries == 1


def test_a_truncated_reply_goes_back_to_a_udp_client_and_tcp_clients_ask_over_tcp(
    upstream: FakeUpstream,
) -> None:
    # CoreDNS's default: the client's transport; TC=1 is the answer, the client retries
    wire = query("big.example.com")
    truncated = run(lambda: forward_once([to(upstream)], wire))
    message = dns.message.from_wire(truncated)
    assert message.flags & dns.flags.TC and message.answer == []
    assert upstream.queries == {"udp": 1, "tcp": 0}

    async def over_tcp() -> bytes:
        forwarder = Forwarder([to(upstream)], **FAST)  # type: ignore[arg-type]
        try:
            return (await forwarder.exchange(wire, tcp=True)).reply
        finally:
            await forwarder.close()

    full = run(over_tcp)
    assert len(answer_lines(full)) == 60
    assert upstream.queries == {"udp": 1, "tcp": 1}


def test_spoofed_and_mismatched_datagrams_are_ignored(upstream: FakeUpstream) -> None:
    upstream.spoof = True

    async def scenario() -> tuple[bytes, forward.UpstreamState]:
        forwarder = Forwarder([to(upstream)], **FAST)  # type: ignore[arg-type]
        try:
            return (await forwarder.exchange(query("www.example.com"))).reply, forwarder.states[0]
        finally:
            await forwarder.close()

    reply, state = run(scenario)
    assert answer_lines(reply) == ["www.example.com. 300 IN A 192.0.2.1"]
    assert SPOOF_ADDRESS not in reply.decode("latin-1")
    # wrong ID, wrong name, wrong type, not a response, a runt
    assert state.mismatched == 5
    assert state.failed_tries == 0


def test_ipv6_loopback_upstream() -> None:
    with FakeUpstream(RECORDS, host="::1") as server:
        assert server.address.startswith("[::1]:")
        reply = run(lambda: forward_once([to(server)], query("www.example.com", "AAAA")))
    assert answer_lines(reply) == ["www.example.com. 300 IN AAAA 2001:db8::1"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_timeout_spoofs_and_tcp_retry_on_both_event_loops(
    upstream: FakeUpstream, second: FakeUpstream, loop: str
) -> None:
    upstream.drop = True
    second.spoof = second.truncate_udp = True

    async def scenario() -> tuple[bytes, forward.UpstreamState]:
        forwarder = Forwarder([to(upstream), to(second)], policy="sequential",  # type: ignore[arg-type]
                              prefer_udp=True, **FAST)
        try:
            return (await forwarder.exchange(query("www.example.com"))).reply, forwarder.states[1]
        finally:
            await forwarder.close()

    reply, state = run(scenario, loop)
    assert answer_lines(reply) == ["www.example.com. 300 IN A 192.0.2.1"]
    assert (upstream.queries, second.queries) == ({"udp": 1, "tcp": 0}, {"udp": 1, "tcp": 1})
    assert (state.mismatched, state.tcp_retries) == (5, 1)


# -- failure, deadline, health --------------------------------------------------------------


def assert_local_servfail(reply: bytes, wire: bytes) -> None:
    message = dns.message.from_wire(reply)
    assert message.rcode() == dns.rcode.SERVFAIL
    assert message.id == dns.message.from_wire(wire).id
    assert message.flags & ~0x0F == dns.flags.QR | dns.flags.RD  # CoreDNS's: no AA, no RA
    assert reply[12 : len(wire)] == wire[12:]
    assert message.answer == message.authority == []


def test_silent_upstream_gives_servfail_after_the_read_timeout(upstream: FakeUpstream) -> None:
    upstream.drop = True
    wire = query("www.example.com")
    started = time.monotonic()
    reply = run(lambda: forward_once([to(upstream)], wire, read_timeout=0.2, deadline=5.0))
    elapsed = time.monotonic() - started
    assert_local_servfail(reply, wire)
    assert 0.2 <= elapsed < 1.5
    assert upstream.queries == {"udp": 1, "tcp": 0}


def test_deadline_bounds_the_whole_exchange() -> None:
    servers = [FakeUpstream(RECORDS).start() for _ in range(3)]
    try:
        for server in servers:
            server.drop = True
        wire = query("www.example.com")
        started = time.monotonic()
        reply = run(lambda: forward_once(
            [to(s) for s in servers], wire, read_timeout=0.4, deadline=0.5, policy="sequential"))
        elapsed = time.monotonic() - started
        assert_local_servfail(reply, wire)
        assert 0.5 <= elapsed < 1.0  # not 3 x 0.4
        assert [s.queries["udp"] for s in servers] == [1, 1, 0]
    finally:
        for server in servers:
            server.stop()


def test_closed_port_gives_servfail_within_the_deadline() -> None:
    with closed_port() as port:
        wire = query("www.example.com")
        started = time.monotonic()
        reply = run(lambda: forward_once([Upstream("127.0.0.1", port)], wire, deadline=0.6))
        assert_local_servfail(reply, wire)
        assert time.monotonic() - started < 1.5


def is_down(state: forward.UpstreamState) -> bool:
    return state.down  # read through a call: it changes while the test awaits


def test_down_upstream_is_marked_down_and_recovers_by_health_check(
    upstream: FakeUpstream,
) -> None:
    async def scenario() -> None:
        forwarder = Forwarder(
            [to(upstream)], read_timeout=0.2, deadline=1.0, max_fails=2,
            health_check_interval=0.1,
        )
        state = forwarder.states[0]
        try:
            upstream.drop = True
            for expected_fails in (1, 2):
                reply = (await forwarder.exchange(query("www.example.com"))).reply
                assert dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL
                assert state.consecutive_failures >= expected_fails
            assert is_down(state)
            checks_while_down = state.health_checks
            await asyncio.sleep(0.45)
            assert is_down(state)  # still dropping: the checks fail
            assert state.health_checks > checks_while_down
            assert state.health_check_failures >= 1
            assert upstream.log[-1][1:] == (".", "NS")  # the probe is ". IN NS"

            upstream.drop = False
            for _ in range(40):  # no query is sent: only the health check can bring it back
                if not is_down(state):
                    break
                await asyncio.sleep(0.05)
            assert not is_down(state)
            assert state.consecutive_failures == 0
            reply = (await forwarder.exchange(query("www.example.com"))).reply
            assert answer_lines(reply) == ["www.example.com. 300 IN A 192.0.2.1"]
        finally:
            await forwarder.close()

    run(scenario)


def test_upstream_that_stops_and_starts_again_is_used_again(upstream: FakeUpstream) -> None:
    async def scenario() -> None:
        forwarder = Forwarder([to(upstream)], read_timeout=0.2, deadline=0.5,
                              health_check_interval=0.1)
        try:
            upstream.stop()
            reply = (await forwarder.exchange(query("www.example.com"))).reply
            assert dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL
            upstream.start()  # same port
            reply = (await forwarder.exchange(query("www.example.com"))).reply
            assert answer_lines(reply) == ["www.example.com. 300 IN A 192.0.2.1"]
        finally:
            await forwarder.close()

    run(scenario)


def test_when_every_upstream_is_down_one_is_tried_anyway(
    upstream: FakeUpstream, second: FakeUpstream
) -> None:
    async def scenario() -> None:
        forwarder = Forwarder([to(upstream), to(second)], read_timeout=0.15, deadline=1.0,
                              max_fails=1, health_check_interval=30)
        try:
            upstream.drop = second.drop = True
            reply = (await forwarder.exchange(query("www.example.com"))).reply
            assert dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL
            assert all(state.down for state in forwarder.states)
            # Each down upstream is probed once at once; let those probes fail while the
            # upstreams are still dropping, so the next probes are 30 s away.
            for _ in range(100):
                if all(state.health_check_failures >= 1 for state in forwarder.states):
                    break
                await asyncio.sleep(0.02)
            assert all(state.health_check_failures >= 1 for state in forwarder.states)
            upstream.drop = second.drop = False
            reply = (await forwarder.exchange(query("www.example.com"))).reply
            assert answer_lines(reply) == ["www.example.com. 300 IN A 192.0.2.1"]
            assert forwarder.healthcheck_broken == 1
            assert sum(not state.down for state in forwarder.states) == 1
        finally:
            await forwarder.close()

    run(scenario)


# -- policies -------------------------------------------------------------------------------


async def forward_many(forwarder: Forwarder, count: int) -> None:
    try:
        for i in range(count):
            reply = (await forwarder.exchange(query("www.example.com", qid=i))).reply
            assert answer_lines(reply) == ["www.example.com. 300 IN A 192.0.2.1"]
    finally:
        await forwarder.close()


def test_sequential_always_prefers_the_first(upstream: FakeUpstream, second: FakeUpstream) -> None:
    forwarder = Forwarder([to(upstream), to(second)], policy="sequential")
    run(lambda: forward_many(forwarder, 10))
    assert (upstream.queries["udp"], second.queries["udp"]) == (10, 0)


def test_sequential_skips_a_down_first_upstream_once_marked(
    upstream: FakeUpstream, second: FakeUpstream
) -> None:
    upstream.drop = True

    async def scenario() -> list[float]:
        forwarder = Forwarder([to(upstream), to(second)], policy="sequential",
                              read_timeout=0.5, max_fails=2, health_check_interval=30)
        durations = []
        try:
            for _ in range(4):
                started = time.monotonic()
                reply = (await forwarder.exchange(query("www.example.com"))).reply
                durations.append(time.monotonic() - started)
                assert answer_lines(reply) == ["www.example.com. 300 IN A 192.0.2.1"]
        finally:
            await forwarder.close()
        return durations

    durations = run(scenario)
    assert all(d >= 0.5 for d in durations[:2])  # waited for the silent first
    assert all(d < 0.25 for d in durations[2:])  # then it is skipped
    assert second.queries["udp"] == 4
    assert upstream.log.count(("udp", "www.example.com.", "A")) == 2


def test_random_spreads_over_all_upstreams(upstream: FakeUpstream, second: FakeUpstream) -> None:
    forwarder = Forwarder([to(upstream), to(second)], policy="random")
    run(lambda: forward_many(forwarder, 40))
    counts = (upstream.queries["udp"], second.queries["udp"])
    assert sum(counts) == 40
    assert min(counts) >= 5  # binomial(40, 1/2): fewer than 5 has probability ~1e-7


def test_round_robin_alternates(upstream: FakeUpstream, second: FakeUpstream) -> None:
    forwarder = Forwarder([to(upstream), to(second)], policy="round_robin")
    run(lambda: forward_many(forwarder, 6))
    assert (upstream.queries["udp"], second.queries["udp"]) == (3, 3)


def test_unknown_policy_and_empty_upstreams_are_config_errors() -> None:
    with pytest.raises(forward.ForwardConfigError, match="policy 'fastest'"):
        Forwarder([Upstream("127.0.0.1")], policy="fastest")
    with pytest.raises(forward.ForwardConfigError, match="at least one"):
        Forwarder([])


# -- limits and odd input -------------------------------------------------------------------


def test_over_max_concurrent_is_refused_at_once(upstream: FakeUpstream) -> None:
    upstream.delay = 0.5

    async def scenario() -> None:
        forwarder = Forwarder([to(upstream)], read_timeout=1.0, max_concurrent=2)
        try:
            slow = [asyncio.create_task(forwarder.exchange(query("www.example.com", qid=i)))
                    for i in range(2)]
            await asyncio.sleep(0.05)
            assert forwarder.in_flight == 2
            started = time.monotonic()
            exchange = await forwarder.exchange(query("www.example.com", qid=99))
            assert time.monotonic() - started < 0.2  # not the upstream's 0.5 s
            message = dns.message.from_wire(exchange.reply)
            assert (message.id, message.rcode(), exchange.upstream) == (99, dns.rcode.REFUSED, None)
            assert forwarder.rejected == 1
            for done in await asyncio.gather(*slow):
                assert answer_lines(done.reply) == ["www.example.com. 300 IN A 192.0.2.1"]
            assert forwarder.in_flight == 0
            reply = (await forwarder.exchange(query("www.example.com"))).reply
            assert dns.message.from_wire(reply).rcode() == dns.rcode.NOERROR
        finally:
            await forwarder.close()

    run(scenario)


@pytest.mark.parametrize("wire", [b"", b"\x12\x34\x01", b"\x12\x34\x01\x00\x00\x02" + b"\x00" * 6])
def test_malformed_query_gets_formerr_without_a_packet_sent(
    upstream: FakeUpstream, wire: bytes
) -> None:
    reply = run(lambda: forward_once([to(upstream)], wire))
    assert len(reply) == 12
    assert reply[3] & 0x0F == 1
    assert upstream.queries == {"udp": 0, "tcp": 0}


def test_fit_udp_truncates_to_header_question_and_opt(upstream: FakeUpstream) -> None:
    wire = query("big.example.com", use_edns=0, payload=4096)
    reply = run(lambda: forward_once([to(upstream)], wire))
    assert forward.fit_udp(reply, 4096) == reply
    small = forward.fit_udp(reply, 512)
    message = dns.message.from_wire(small)
    assert message.flags & dns.flags.TC
    assert message.answer == []
    assert message.edns == 0
    assert small[12 : len(wire) - 11] == wire[12:-11]  # the question


# -- configuration: upstreams, stub domains, router -----------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.2", Upstream("10.0.0.2", 53)),
    ("10.0.0.2:5353", Upstream("10.0.0.2", 5353)),
    ("dns://10.0.0.2:54", Upstream("10.0.0.2", 54)),
    ("[2001:db8::1]:5353", Upstream("2001:db8::1", 5353)),
    ("[2001:DB8:0::1]", Upstream("2001:db8::1", 53)),
    ("2001:db8::1", Upstream("2001:db8::1", 53)),
    ("fe80::1%eth0", Upstream("fe80::1%eth0", 53)),
])
def test_parse_upstream(text: str, expected: Upstream) -> None:
    assert forward.parse_upstream(text) == expected
    assert forward.parse_upstream(str(expected)) == expected


@pytest.mark.parametrize("text", [
    "", "dns.example.com", "10.0.0.2:", "10.0.0.2:0", "10.0.0.2:65536", "10.0.0.2:x",
    "[2001:db8::1", "[2001:db8::1]5353", "10.0.0.256", "10.0.0.1%eth0",
])
def test_parse_upstream_rejects(text: str) -> None:
    with pytest.raises(forward.UpstreamError):
        forward.parse_upstream(text)


def test_parse_stub_domain() -> None:
    assert forward.parse_stub_domain("Example.Corp.=10.0.0.2:53,10.0.0.3 [::1]:5353") == (
        "example.corp",
        (Upstream("10.0.0.2", 53), Upstream("10.0.0.3", 53), Upstream("::1", 5353)),
    )
    assert forward.parse_stub_domain(".=192.0.2.1") == (".", (Upstream("192.0.2.1"),))
    for bad in ("example.corp", "=10.0.0.2", "example.corp=", "example.corp=nameserver",
                "bad..zone=10.0.0.2"):
        with pytest.raises(forward.ForwardConfigError):
            forward.parse_stub_domain(bad)


def wire_name(name: str) -> bytes:
    return forward.zone_to_wire(name)


def test_router_picks_the_longest_suffix() -> None:
    default, corp, deep = (Forwarder([Upstream(f"10.0.0.{i}")]) for i in (1, 2, 3))
    router = ForwardRouter({".": default, "Example.Corp": corp, "a.example.corp.": deep})
    cases = {
        "www.example.com": default,
        "example.corp": corp,
        "www.example.corp": corp,
        "xa.example.corp": corp,  # a label boundary, not a string suffix
        "a.example.corp": deep,
        "b.a.example.corp": deep,
        "corp": default,
        ".": default,
    }
    for name, expected in cases.items():
        assert router.route(wire_name(name)) is expected, name
    without_default = ForwardRouter({"example.corp": corp})
    assert without_default.route(wire_name("www.example.com")) is None
    assert without_default.route(wire_name("x.example.corp")) is corp
    run(router.close)
