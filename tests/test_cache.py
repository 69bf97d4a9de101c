"""The forwarded-reply cache: keys, TTL rules, what is never cached, eviction, serve-stale.

Replies are built with dnspython (as an upstream would send them) and read back with dnspython;
the clock is injected, so TTL countdown and expiry are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from upstream import FakeUpstream

from dnsserver.plugins import cache as cache_module
from dnsserver.plugins.cache import DENIAL, SUCCESS, Cache, key_for
from dnsserver.plugins.upstream import Forwarder, parse_upstream

SOA = "example.com. {ttl} IN SOA ns.example.com. h.example.com. 1 7200 1800 86400 {minimum}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_query(name: str = "www.example.com", rdtype: str = "A", qid: int = 1,
               **kwargs: object) -> dns.message.Message:
    message = dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
    message.id = qid
    return message


def make_reply(
    query: dns.message.Message, answer: Sequence[str] = (), authority: Sequence[str] = (),
    additional: Sequence[str] = (), rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    flags: int = dns.flags.RA,
    qid: int = 0x7777,
) -> bytes:
    reply = dns.message.make_response(query)
    reply.id = qid  # what the upstream saw: the forwarder's own ID
    reply.flags |= flags
    reply.set_rcode(rcode)
    for section, texts in ((reply.answer, answer), (reply.authority, authority),
                           (reply.additional, additional)):
        for text in texts:
            name, ttl, rdclass, rdtype, rdata = text.split(None, 4)
            section.append(dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata))
    return reply.to_wire()


def lines(wire: bytes, section: str = "answer") -> list[str]:
    message = dns.message.from_wire(wire)
    return [rrset.to_text() for rrset in getattr(message, section)]


def key_of(query: dns.message.Message) -> bytes:
    """The key the forwarding plugin makes for ``query`` (its question, DO and CD)."""
    question = query.question[0]
    return key_for(question.name.to_wire().lower(), question.rdtype, question.rdclass,
                   bool(query.ednsflags & dns.flags.DO), bool(query.flags & dns.flags.CD))


# -- hits, misses, the reply's shape --------------------------------------------------------


def test_miss_then_hit_with_the_query_id_and_case() -> None:
    cache = Cache(clock=Clock())
    first = make_query("www.example.com", qid=1)
    key = key_of(first)
    assert cache.lookup(key, first.to_wire()) is None
    assert cache.misses == 1
    sent = cache.put(key, make_reply(first, ["www.example.com. 300 IN A 192.0.2.1"]))
    assert lines(sent) == ["www.example.com. 300 IN A 192.0.2.1"]

    second = make_query("WWW.Example.COM", qid=2)
    assert key_of(second) == key
    hit = cache.lookup(key, second.to_wire())
    assert hit is not None
    reply = hit.reply
    assert not hit.stale and not hit.prefetch
    message = dns.message.from_wire(reply)
    assert message.id == 2
    assert reply[12 : len(second.to_wire())] == second.to_wire()[12:]
    assert lines(reply) == ["WWW.Example.COM. 300 IN A 192.0.2.1"]  # owner points at the question
    # AA on every cached answer, as CoreDNS sets it (some stub resolvers drop non-AA replies)
    assert message.flags == dns.flags.QR | dns.flags.AA | dns.flags.RD | dns.flags.RA
    assert cache.hits == {SUCCESS: 1, DENIAL: 0}
    assert cache.entries(SUCCESS) == 1 and len(cache) == 1


def test_hit_echoes_rd_and_adds_opt_only_for_edns_queries() -> None:
    cache = Cache(clock=Clock())
    upstream_query = make_query(use_edns=0, payload=1232)
    key = key_of(upstream_query)
    cache.put(key, make_reply(upstream_query, ["www.example.com. 300 IN A 192.0.2.1"]))

    no_edns = make_query(qid=3)
    no_edns.flags &= ~dns.flags.RD
    hit = cache.get(key, no_edns.to_wire())
    assert hit is not None
    message = dns.message.from_wire(hit)
    assert message.edns == -1  # the upstream's OPT is not replayed to a client without EDNS
    assert message.flags == dns.flags.QR | dns.flags.AA | dns.flags.RA

    with_edns = make_query(qid=4, use_edns=0, payload=4096)
    hit = cache.get(key, with_edns.to_wire())
    assert hit is not None
    message = dns.message.from_wire(hit)
    assert (message.edns, message.payload, message.ednsflags & dns.flags.DO) == (0, 1232, 0)


def test_ad_bit_is_kept_only_for_clients_that_asked_for_it() -> None:
    cache = Cache(clock=Clock())
    asked = make_query()
    asked.flags |= dns.flags.AD
    key = key_of(asked)
    sent = cache.put(key, make_reply(asked, ["www.example.com. 300 IN A 192.0.2.1"],
                                     flags=dns.flags.RA | dns.flags.AD), ad=True)
    assert dns.message.from_wire(sent).flags & dns.flags.AD
    for query, expect_ad in ((make_query(), False), (asked, True)):
        hit = cache.get(key, query.to_wire())
        assert hit is not None
        assert bool(dns.message.from_wire(hit).flags & dns.flags.AD) is expect_ad
    # a client that asked for neither DO nor AD gets AD cleared, and so does the entry
    plain = Cache(clock=Clock())
    sent = plain.put(key, make_reply(asked, ["www.example.com. 300 IN A 192.0.2.1"],
                                     flags=dns.flags.RA | dns.flags.AD))
    assert not dns.message.from_wire(sent).flags & dns.flags.AD
    hit = plain.get(key, asked.to_wire())
    assert hit is not None and not dns.message.from_wire(hit).flags & dns.flags.AD
    do_query = make_query(want_dnssec=True)
    key = key_of(do_query)
    cache.put(key, make_reply(do_query, ["www.example.com. 300 IN A 192.0.2.1"],
                              flags=dns.flags.RA | dns.flags.AD))
    hit = cache.get(key, do_query.to_wire())
    assert hit is not None and dns.message.from_wire(hit).flags & dns.flags.AD


# -- TTLs -----------------------------------------------------------------------------------


def test_ttls_count_down_together_and_expire() -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    query = make_query()
    key = key_of(query)
    sent = cache.put(key, make_reply(
        query, ["www.example.com. 300 IN A 192.0.2.1", "www.example.com. 600 IN A 192.0.2.2"],
        additional=["ns.example.com. 900 IN A 192.0.2.53"]))
    # every TTL is the entry's: the smallest in the reply (CoreDNS)
    assert lines(sent) == [
        "www.example.com. 300 IN A 192.0.2.1\nwww.example.com. 300 IN A 192.0.2.2"
    ]
    assert lines(sent, "additional") == ["ns.example.com. 300 IN A 192.0.2.53"]
    for age, ttl in ((0.0, 300), (10.4, 290), (10.9, 290), (11.0, 289), (299.99, 1)):
        clock.now = 1000.0 + age
        hit = cache.get(key, query.to_wire())
        assert hit is not None, age
        assert dns.message.from_wire(hit).answer[0].ttl == ttl, age
        assert lines(hit, "additional") == [f"ns.example.com. {ttl} IN A 192.0.2.53"]
    clock.now = 1300.0
    assert cache.get(key, query.to_wire()) is None
    assert len(cache) == 0  # an expired entry goes when it is looked up


@pytest.mark.parametrize(("upstream_ttl", "options", "entry_ttl"), [
    (7200, {}, 3600),  # capped at max_ttl
    (7200, {"max_ttl": 7200}, 3600),  # "cache 7200": CoreDNS 1.13 never goes above 3600
    (1, {}, 5),  # floored at min_ttl
    (0, {}, 5),
    (300, {"max_ttl": 30}, 30),  # "cache 30"
    (10, {"max_ttl": 30}, 10),
    (10, {"min_ttl": 20}, 20),
])
def test_positive_ttl_is_clamped(
    upstream_ttl: int, options: dict[str, int], entry_ttl: int
) -> None:
    clock = Clock()
    cache = Cache(clock=clock, **options)  # type: ignore[arg-type]
    query = make_query()
    key = key_of(query)
    sent = cache.put(key, make_reply(query, [f"www.example.com. {upstream_ttl} IN A 192.0.2.1"]))
    assert dns.message.from_wire(sent).answer[0].ttl == entry_ttl
    clock.now += entry_ttl - 0.01
    assert cache.get(key, query.to_wire()) is not None
    clock.now += 0.01
    assert cache.get(key, query.to_wire()) is None


@pytest.mark.parametrize(("soa_ttl", "minimum", "rcode", "entry_ttl"), [
    (900, 120, dns.rcode.NXDOMAIN, 900),  # the SOA record's TTL; CoreDNS ignores MINIMUM
    (60, 120, dns.rcode.NXDOMAIN, 60),
    (900, 120, dns.rcode.NOERROR, 900),  # NODATA
    (86400, 86400, dns.rcode.NXDOMAIN, 1800),  # capped at max_denial_ttl
    (900, 0, dns.rcode.NXDOMAIN, 900),
    (2, 0, dns.rcode.NXDOMAIN, 5),  # floored at min_ttl
])
def test_negative_ttl_comes_from_the_soa(
    soa_ttl: int, minimum: int, rcode: dns.rcode.Rcode, entry_ttl: int
) -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    query = make_query("missing.example.com")
    key = key_of(query)
    soa = SOA.format(ttl=soa_ttl, minimum=minimum)
    sent = cache.put(key, make_reply(query, authority=[soa], rcode=rcode))
    assert lines(sent, "authority") == [SOA.format(ttl=entry_ttl, minimum=minimum)]
    assert cache.entries(DENIAL) == 1 and cache.entries(SUCCESS) == 0
    clock.now += 3
    hit = cache.get(key, query.to_wire())
    assert hit is not None
    assert dns.message.from_wire(hit).rcode() == rcode
    assert lines(hit, "authority") == [SOA.format(ttl=entry_ttl - 3, minimum=minimum)]
    assert cache.hits[DENIAL] == 1
    clock.now += entry_ttl - 3
    assert cache.get(key, query.to_wire()) is None


# -- what is never cached -------------------------------------------------------------------


@pytest.mark.parametrize(("case", "ttl"), [
    ("truncated", 300), ("refused", 5), ("formerr", 5), ("nxdomain-without-soa", 5),
    ("other-question", 300), ("other-qtype", 300), ("not-a-response", None),
])
def test_never_cached(case: str, ttl: int | None) -> None:
    """Not stored, but a reply that passes the cache still leaves with its TTLs set the
    cache's way (CoreDNS's WriteMsg does that before it decides whether to store)."""
    cache = Cache(clock=Clock())
    query = make_query()
    key = key_of(query)
    answer = ["www.example.com. 300 IN A 192.0.2.1"]
    reply = {
        "truncated": lambda: make_reply(query, answer, flags=dns.flags.RA | dns.flags.TC),
        "refused": lambda: make_reply(query, answer, rcode=dns.rcode.REFUSED),
        "formerr": lambda: make_reply(query, answer, rcode=dns.rcode.FORMERR),
        "nxdomain-without-soa": lambda: make_reply(query, answer, rcode=dns.rcode.NXDOMAIN),
        "other-question": lambda: make_reply(make_query("evil.example.com"), answer),
        "other-qtype": lambda: make_reply(make_query(rdtype="AAAA"), answer),
        "not-a-response": lambda: make_query().to_wire(),
    }[case]()
    sent = cache.put(key, reply)
    if ttl is None:
        assert sent == reply
    else:
        assert [rrset.ttl for rrset in dns.message.from_wire(sent).answer] == [ttl]
    assert len(cache) == 0
    assert cache.get(key, query.to_wire()) is None
    assert cache.drops == (1 if case.startswith("other-") else 0)


@pytest.mark.parametrize(("case", "kind", "ttl"), [
    ("nodata-without-soa", SUCCESS, 5),  # CoreDNS takes it as a success without records
    ("nodata-with-extra", SUCCESS, 60),
    ("referral", SUCCESS, 5),  # a delegation: stored for the minimal TTL
    ("notimp", DENIAL, 5),  # with SERVFAIL, for the servfail TTL
])
def test_cached_the_way_coredns_types_replies(case: str, kind: str, ttl: int) -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    query = make_query()
    key = key_of(query)
    soa = SOA.format(ttl=60, minimum=60)
    reply = {
        "nodata-without-soa": lambda: make_reply(query),
        "nodata-with-extra": lambda: make_reply(query, additional=["x.example.com. 60 IN A 1.2.3.4"]),
        "referral": lambda: make_reply(query, authority=["example.com. 300 IN NS ns.example.com."]),
        "notimp": lambda: make_reply(query, authority=[soa], rcode=dns.rcode.NOTIMP),
    }[case]()
    cache.put(key, reply)
    assert cache.entries(kind) == 1 and len(cache) == 1
    clock.now += ttl - 0.5
    assert cache.get(key, query.to_wire()) is not None
    clock.now += 0.5
    assert cache.get(key, query.to_wire()) is None


def test_servfail_is_cached_for_five_seconds() -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    query = make_query()
    key = key_of(query)
    cache.put(key, make_reply(query, rcode=dns.rcode.SERVFAIL))
    assert cache.entries(DENIAL) == 1
    clock.now += 4.99
    hit = cache.get(key, query.to_wire())
    assert hit is not None and dns.message.from_wire(hit).rcode() == dns.rcode.SERVFAIL
    clock.now += 0.01
    assert cache.get(key, query.to_wire()) is None

    off = Cache(clock=clock, servfail_ttl=0)
    off.put(key, make_reply(query, rcode=dns.rcode.SERVFAIL))
    assert len(off) == 0


def test_disabled_kinds_are_not_stored() -> None:
    cache = Cache(clock=Clock(), success=False)
    query = make_query()
    key = key_of(query)
    cache.put(key, make_reply(query, ["www.example.com. 300 IN A 192.0.2.1"]))
    missing = make_query("missing.example.com")
    cache.put(key_of(missing), make_reply(missing, authority=[SOA.format(ttl=60, minimum=60)],
                                          rcode=dns.rcode.NXDOMAIN))
    assert (cache.entries(SUCCESS), cache.entries(DENIAL)) == (0, 1)
    no_denial = Cache(clock=Clock(), denial=False)
    no_denial.put(key_of(missing), make_reply(
        missing, authority=[SOA.format(ttl=60, minimum=60)], rcode=dns.rcode.NXDOMAIN))
    assert len(no_denial) == 0


# -- capacity -------------------------------------------------------------------------------


def put_name(cache: Cache, name: str) -> bytes:
    query = make_query(name)
    key = key_of(query)
    cache.put(key, make_reply(query, [f"{name}. 300 IN A 192.0.2.1"]))
    return key


def test_capacity_evicts_the_least_recently_used() -> None:
    cache = Cache(clock=Clock(), capacity=3)
    keys = [put_name(cache, f"n{i}.example.com") for i in range(3)]
    assert cache.get(keys[0], make_query("n0.example.com").to_wire()) is not None  # touch n0
    put_name(cache, "n3.example.com")
    assert cache.entries(SUCCESS) == 3
    assert cache.evictions == {SUCCESS: 1, DENIAL: 0}
    present = [cache.get(key, make_query(f"n{i}.example.com").to_wire()) is not None
               for i, key in enumerate(keys)]
    assert present == [True, False, True]  # n1 was the least recently used


def test_each_kind_has_its_own_capacity() -> None:
    cache = Cache(clock=Clock(), success_capacity=1, denial_capacity=2)
    for i in range(3):
        put_name(cache, f"n{i}.example.com")
        missing = make_query(f"missing{i}.example.com")
        cache.put(key_of(missing), make_reply(
            missing, authority=[SOA.format(ttl=60, minimum=60)], rcode=dns.rcode.NXDOMAIN))
    assert (cache.entries(SUCCESS), cache.entries(DENIAL)) == (1, 2)
    assert cache.evictions == {SUCCESS: 2, DENIAL: 1}


def test_a_new_answer_replaces_the_other_kind() -> None:
    cache = Cache(clock=Clock())
    query = make_query()
    key = key_of(query)
    cache.put(key, make_reply(query, authority=[SOA.format(ttl=60, minimum=60)],
                              rcode=dns.rcode.NXDOMAIN))
    cache.put(key, make_reply(query, ["www.example.com. 300 IN A 192.0.2.1"]))
    assert (cache.entries(SUCCESS), cache.entries(DENIAL)) == (1, 0)
    hit = cache.get(key, query.to_wire())
    assert hit is not None and dns.message.from_wire(hit).rcode() == dns.rcode.NOERROR


# -- serve stale ----------------------------------------------------------------------------


def test_serve_stale_window() -> None:
    clock = Clock()
    cache = Cache(clock=clock, serve_stale=60)
    query = make_query()
    key = key_of(query)
    cache.put(key, make_reply(query, ["www.example.com. 300 IN A 192.0.2.1"]))
    clock.now += 300 + 10
    hit = cache.lookup(key, query.to_wire())
    assert hit is not None
    assert hit.stale
    assert lines(hit.reply) == ["www.example.com. 0 IN A 192.0.2.1"]  # CoreDNS's stale TTL
    assert cache.served_stale == 1

    # a failed refresh (SERVFAIL) does not displace what can still be served
    cache.put(key, make_reply(query, rcode=dns.rcode.SERVFAIL))
    hit = cache.lookup(key, query.to_wire())
    assert hit is not None and hit.stale
    assert lines(hit.reply) == ["www.example.com. 0 IN A 192.0.2.1"]

    # a successful refresh makes it fresh again
    cache.put(key, make_reply(query, ["www.example.com. 300 IN A 192.0.2.9"]))
    hit = cache.lookup(key, query.to_wire())
    assert hit is not None and not hit.stale
    assert lines(hit.reply) == ["www.example.com. 300 IN A 192.0.2.9"]

    clock.now += 300 + 60
    assert cache.lookup(key, query.to_wire()) is None  # past the window
    assert len(cache) == 0


def test_stale_servfail_and_disabled_serve_stale_are_misses() -> None:
    clock = Clock()
    stale_cache = Cache(clock=clock, serve_stale=60)
    plain_cache = Cache(clock=clock)
    query = make_query()
    key = key_of(query)
    stale_cache.put(key, make_reply(query, rcode=dns.rcode.SERVFAIL))
    plain_cache.put(key, make_reply(query, ["www.example.com. 30 IN A 192.0.2.1"]))
    clock.now += 31
    assert stale_cache.lookup(key, query.to_wire()) is None
    assert plain_cache.lookup(key, query.to_wire()) is None


def test_stale_ttl_can_be_chosen() -> None:
    clock = Clock()
    cache = Cache(clock=clock, serve_stale=3600, stale_ttl=30)  # RFC 8767's suggestion
    query = make_query()
    key = key_of(query)
    cache.put(key, make_reply(query, ["www.example.com. 30 IN A 192.0.2.1"]))
    clock.now += 100
    hit = cache.lookup(key, query.to_wire())
    assert hit is not None and lines(hit.reply) == ["www.example.com. 30 IN A 192.0.2.1"]


# -- keys -----------------------------------------------------------------------------------


def test_key_separates_qtype_class_do_cd_but_not_case_or_edns_size() -> None:
    base = key_of(make_query("www.example.com"))
    assert key_of(make_query("WWW.EXAMPLE.COM.")) == base
    assert key_of(make_query("www.example.com", use_edns=0, payload=4096)) == base
    assert key_of(make_query("www.example.com", use_edns=0, payload=512)) == base
    different = [
        make_query("www.example.com", "AAAA"),
        make_query("www.example.com", want_dnssec=True),
        make_query("www.example.org"),
        make_query("www.example.com", rdclass="CH"),
    ]
    cd = make_query("www.example.com")
    cd.flags |= dns.flags.CD
    different.append(cd)
    keys = {key_of(query) for query in different}
    assert len(keys) == len(different) and base not in keys


def test_key_does_not_confuse_qtype_bytes_with_letters() -> None:
    # qtype 65 (HTTPS) is the byte "A": lower-casing it would make it 97
    assert key_of(make_query(rdtype="HTTPS")) != key_of(make_query(rdtype="TYPE97"))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_garbage_never_raises(data: bytes) -> None:
    cache = Cache(clock=Clock())
    key = cache_module.key_for(b"\x03www\x07example\x03com\x00", 1, 1, False, False)
    assert cache.put(key, data) == data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**31 - 1), min_size=1, max_size=6),
       st.floats(min_value=0, max_value=4000))
def test_served_ttl_is_the_clamped_minimum_minus_whole_seconds(
    ttls: list[int], age: float
) -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    query = make_query()
    key = key_of(query)
    answer = [f"www.example.com. {ttl} IN A 192.0.2.{i + 1}" for i, ttl in enumerate(ttls)]
    cache.put(key, make_reply(query, answer))
    entry_ttl = min(max(min(ttls), 5), 3600)
    clock.now += age
    hit = cache.get(key, query.to_wire())
    if age >= entry_ttl:
        assert hit is None
    else:
        assert hit is not None
        served = {rrset.ttl for rrset in dns.message.from_wire(hit).answer}
        assert served == {entry_ttl - int(age)}


# -- with the forwarder ---------------------------------------------------------------------


def test_forwarded_reply_is_served_from_the_cache_without_asking_again() -> None:
    clock = Clock()
    cache = Cache(clock=clock)
    with FakeUpstream(["www.example.com. 300 IN A 192.0.2.1"]) as upstream:

        async def scenario() -> list[bytes]:
            forwarder = Forwarder([parse_upstream(upstream.address)], read_timeout=0.5)
            replies = []
            try:
                for qid, name in ((1, "www.example.com"), (2, "WWW.EXAMPLE.COM")):
                    message = make_query(name, qid=qid, use_edns=0)
                    wire = message.to_wire()
                    key = key_of(message)
                    hit = cache.get(key, wire)
                    if hit is None:
                        hit = cache.put(key, (await forwarder.exchange(wire)).reply)
                    replies.append(hit)
                    clock.now += 2
            finally:
                await forwarder.close()
            return replies

        first, second = asyncio.run(scenario())
        assert upstream.queries["udp"] == 1
    assert lines(first) == ["www.example.com. 300 IN A 192.0.2.1"]
    assert lines(second) == ["WWW.EXAMPLE.COM. 298 IN A 192.0.2.1"]
    assert dns.message.from_wire(second).id == 2
