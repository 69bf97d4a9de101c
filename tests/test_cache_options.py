"""Every ``cache`` option: how a Corefile line is read (accepted forms, refused forms with their
``file:line: message``), and what it does to forwarded answers from a real upstream on
loopback.

The forwarding and its cache are built from the Corefile as the server builds them and asked
in-process (tests/test_forward_options.py has the helpers); the cache's clock is replaced by
one the test moves, so TTLs are exact. Expected answers are CoreDNS 1.13's (plugin/cache).
"""

from __future__ import annotations

from collections.abc import Iterator

import dns.message
import dns.rcode
import dnslib
import pytest
from test_forward_options import (
    SOA,
    Recording,
    ask,
    block,
    forwarding,
    parse,
    run,
    text_of,
    wait_for,
)

from dnsserver.config.corefile import BadValue, CorefileError
from dnsserver.config.directives import UnknownOption
from dnsserver.plugins.cache import CacheConfig, CacheLimits
from dnsserver.plugins.forward import Forwarding

RECORDS = [
    "www.example.com. 300 IN A 192.0.2.1",
    "short.example.com. 10 IN A 192.0.2.5",
    "www.example.org. 300 IN A 203.0.113.1",
]
ORG_SOA = "example.org. 600 IN SOA ns.example.org. hostmaster.example.org. 1 7200 1800 86400 60"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def upstream() -> Iterator[Recording]:
    with Recording(RECORDS, soa=SOA) as server:
        yield server


def cached(upstream: Recording, *cache_lines: str) -> tuple[Forwarding, Clock]:
    """``forward . upstream`` and the ``cache`` lines, the cache on a clock the test moves."""
    forward = forwarding(block(f"forward . {upstream.address}", *cache_lines))
    clock = Clock()
    for cache, _ in forward.caches():
        cache.clock = clock
    return forward, clock


def asked(upstream: Recording, name: str) -> int:
    return sum(1 for _, asked_name, _ in upstream.asked() if asked_name == name + ".")


# -- reading the line ----------------------------------------------------------------------

ACCEPTED: list[tuple[str, list[str], CacheConfig]] = [
    ("defaults", ["cache"], CacheConfig()),
    ("TTL caps both halves", ["cache 30"],
     CacheConfig(success=CacheLimits(10000, 30), denial=CacheLimits(10000, 30))),
    ("a signed TTL", ["cache +30"],
     CacheConfig(success=CacheLimits(10000, 30), denial=CacheLimits(10000, 30))),
    ("zones, no TTL", ["cache Example.ORG."], CacheConfig(zones=("example.org",))),
    ("TTL and zones, a CIDR among them", ["cache 30 example.org 10.0.0.0/8"],
     CacheConfig(zones=("example.org", "10.in-addr.arpa"), success=CacheLimits(10000, 30),
                 denial=CacheLimits(10000, 30))),
    ("success and denial", ["cache 30 {", "success 5000 60 10", "denial 0", "}"],
     CacheConfig(success=CacheLimits(5000, 60, 10), denial=CacheLimits(0, 30, 5))),
    ("prefetch amount only", ["cache {", "prefetch 10", "}"], CacheConfig(prefetch=10)),
    ("prefetch all three", ["cache {", "prefetch 2 30s 50%", "}"],
     CacheConfig(prefetch=2, prefetch_window=30.0, prefetch_percentage=50)),
    ("prefetch 0 is off", ["cache {", "prefetch 0 1m 90%", "}"],
     CacheConfig(prefetch=0, prefetch_window=60.0, prefetch_percentage=90)),
    ("serve_stale", ["cache {", "serve_stale", "}"], CacheConfig(serve_stale=3600.0)),
    ("serve_stale verify", ["cache {", "serve_stale 10m Verify", "}"],
     CacheConfig(serve_stale=600.0, serve_stale_verify=True)),
    ("serve_stale again drops verify", ["cache {", "serve_stale 10m verify", "serve_stale 2h",
                                        "}"], CacheConfig(serve_stale=7200.0)),
    ("serve_stale 0 immediate", ["cache {", "serve_stale 0 immediate", "}"],
     CacheConfig(serve_stale=0.0)),
    ("servfail", ["cache {", "servfail 0", "}"], CacheConfig(servfail_ttl=0.0)),
    ("disable without zones is the root", ["cache {", "disable success", "}"],
     CacheConfig(disable_success=(".",))),
    ("disable with zones", ["cache {", "disable denial Cluster.Local. example.org", "}"],
     CacheConfig(disable_denial=("cluster.local", "example.org"))),
    ("a second disable replaces the first",
     ["cache {", "disable denial example.org", "disable denial example.com", "}"],
     CacheConfig(disable_denial=("example.com",))),
    ("kubeadm's", ["cache 30 {", "disable success cluster.local",
                   "disable denial cluster.local", "}"],
     CacheConfig(success=CacheLimits(10000, 30), denial=CacheLimits(10000, 30),
                 disable_success=("cluster.local",), disable_denial=("cluster.local",))),
    ("keepttl", ["cache {", "keepttl", "}"], CacheConfig(keep_ttl=True)),
]


@pytest.mark.parametrize(("lines", "expected"), [case[1:] for case in ACCEPTED],
                         ids=[case[0] for case in ACCEPTED])
def test_accepted_forms(lines: list[str], expected: CacheConfig) -> None:
    parsed = parse(block(*lines))
    assert parsed.config.cache == expected
    assert parsed.warnings == ()


def test_zones_default_to_the_server_blocks() -> None:
    text = ".:53 {\n  kubernetes cluster.local\n}\nexample.org:53 {\n  forward . 10.0.0.1\n" \
           "  cache 30\n}\n"
    stub = parse(text).config.stub_domains[0]
    assert stub.cache is not None and stub.cache.zones == ("example.org",)


REFUSED: list[tuple[str, list[str], type[CorefileError], str]] = [
    ("TTL 0", ["cache 0"], BadValue, "cache TTL: 0 is out of range (at least 1)"),
    ("TTL -5", ["cache -5"], BadValue, "cache TTL: -5 is out of range (at least 1)"),
    ("a bad zone", ["cache 30 exa..mple"], BadValue, "cache: 'exa..mple' is not a domain name"),
    ("success alone", ["cache {", "success", "}"], BadValue,
     "cache success: expected 1 to 3 arguments, got 0"),
    ("success many", ["cache {", "success many", "}"], BadValue,
     "cache success capacity: 'many' is not a whole number"),
    ("success TTL 0", ["cache {", "success 10 0", "}"], BadValue,
     "cache success TTL: 0 is out of range (at least 1)"),
    ("denial MINTTL -1", ["cache {", "denial 10 60 -1", "}"], BadValue,
     "cache denial MINTTL: -1 is out of range (at least 0)"),
    ("prefetch without %", ["cache {", "prefetch 10 1m 10", "}"], BadValue,
     "cache prefetch: the percentage must end in '%', not '10'"),
    ("prefetch 95%", ["cache {", "prefetch 10 1m 95%", "}"], BadValue,
     "cache prefetch percentage: 95 is out of range (from 10 to 90)"),
    ("prefetch 4 arguments", ["cache {", "prefetch 1 2 3 4", "}"], BadValue,
     "cache prefetch: expected 1 to 3 arguments, got 4"),
    ("prefetch -1", ["cache {", "prefetch -1", "}"], BadValue,
     "cache prefetch amount: '-1' is not a whole number"),
    ("prefetch bad duration", ["cache {", "prefetch 1 soon", "}"], BadValue,
     "cache prefetch: 'soon' is not a duration (e.g. 500ms, 5s, 1m30s)"),
    ("serve_stale lazy", ["cache {", "serve_stale 1h lazy", "}"], BadValue,
     "cache serve_stale: 'lazy' is not immediate or verify"),
    ("serve_stale -1s", ["cache {", "serve_stale -1s", "}"], BadValue,
     "cache serve_stale: '-1s' is not a duration (e.g. 500ms, 5s, 1m30s)"),
    ("serve_stale with 1.14's third argument", ["cache {", "serve_stale 1h verify 30s", "}"],
     BadValue, "cache serve_stale: expected 0 to 2 arguments, got 3"),
    ("servfail 6m", ["cache {", "servfail 6m", "}"], BadValue,
     "cache servfail: at most 5m (RFC 2308)"),
    ("servfail alone", ["cache {", "servfail", "}"], BadValue,
     "cache servfail: expected 1 argument, got 0"),
    ("disable foo", ["cache {", "disable foo", "}"], BadValue,
     "cache disable: expected success or denial, not 'foo'"),
    ("disable alone", ["cache {", "disable", "}"], BadValue,
     "cache disable: expected at least 1 argument, got 0"),
    ("disable a bad zone", ["cache {", "disable success exa..mple", "}"], BadValue,
     "cache disable: 'exa..mple' is not a domain name"),
    ("keepttl x", ["cache {", "keepttl x", "}"], BadValue,
     "cache keepttl: expected no arguments, got 1"),
    ("bogus", ["cache {", "bogus", "}"], UnknownOption, "cache: unknown option 'bogus'"),
    ("1.14's serve_stale_policy", ["cache {", "serve_stale_policy stale", "}"], UnknownOption,
     "cache: unknown option 'serve_stale_policy'"),
]


@pytest.mark.parametrize(("lines", "kind", "message"), [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_refused_forms(lines: list[str], kind: type[CorefileError], message: str) -> None:
    line = 4 if len(lines) > 1 else 3
    with pytest.raises(kind) as caught:
        parse(block(*lines))
    assert str(caught.value) == f"Corefile:{line}: {message}"


# -- zones ---------------------------------------------------------------------------------

def test_names_outside_the_cache_zones_pass_it_by(upstream: Recording) -> None:
    async def scenario() -> list[tuple[str, list[str]]]:
        forward, clock = cached(upstream, "cache 30 example.com")
        try:
            answers = []
            for _ in range(2):
                answers.append(text_of(await ask(forward, "www.example.com")))
                answers.append(text_of(await ask(forward, "www.example.org")))
                clock.now += 3
            return answers
        finally:
            await forward.close()

    com_1, org_1, com_2, org_2 = run(scenario)
    assert com_1 == ("NOERROR", ["www.example.com. 30 192.0.2.1"])  # capped on the way
    assert com_2 == ("NOERROR", ["www.example.com. 27 192.0.2.1"])  # from the cache
    assert org_1 == org_2 == ("NOERROR", ["www.example.org. 300 203.0.113.1"])  # untouched
    assert (asked(upstream, "www.example.com"), asked(upstream, "www.example.org")) == (1, 2)


# -- disable success|denial ZONES ----------------------------------------------------------

@pytest.mark.parametrize(("lines", "stored"), [
    (["disable success example.com"],
     {"www.example.com": False, "missing.example.com": True, "www.example.org": True}),
    (["disable denial example.com"],
     {"www.example.com": True, "missing.example.com": False, "www.example.org": True}),
    (["disable success"],
     {"www.example.com": False, "missing.example.com": True, "www.example.org": False}),
    (["disable denial example.com", "disable success example.org"],
     {"www.example.com": True, "missing.example.com": False, "www.example.org": False}),
    (["disable denial example.com", "disable denial example.org"],  # the second replaces
     {"www.example.com": True, "missing.example.com": True, "www.example.org": True}),
])
def test_disable_keeps_those_answers_out_of_the_cache(upstream: Recording, lines: list[str],
                                                      stored: dict[str, bool]) -> None:
    async def scenario() -> dict[str, list[tuple[str, list[str]]]]:
        forward, _ = cached(upstream, "cache 30 {", *lines, "}")
        try:
            return {name: [text_of(await ask(forward, name)) for _ in range(2)]
                    for name in stored}
        finally:
            await forward.close()

    answers = run(scenario)
    assert answers["www.example.com"] == [("NOERROR", ["www.example.com. 30 192.0.2.1"])] * 2
    assert answers["missing.example.com"] == [("NXDOMAIN", [])] * 2
    assert answers["www.example.org"] == [("NOERROR", ["www.example.org. 30 203.0.113.1"])] * 2
    assert {name: asked(upstream, name) == 1 for name in stored} == stored


def test_the_kubeadm_cache_line_caches_everything_outside_the_cluster(
    upstream: Recording,
) -> None:
    async def scenario() -> list[dns.message.Message | None]:
        forward, _ = cached(upstream, "cache 30 {", "disable success cluster.local",
                            "disable denial cluster.local", "}")
        try:
            return [await ask(forward, name) for name in ("www.example.com", "www.example.com",
                                                          "missing.example.com",
                                                          "missing.example.com")]
        finally:
            await forward.close()

    first, second, missing, again = run(scenario)
    assert text_of(first) == text_of(second) == ("NOERROR", ["www.example.com. 30 192.0.2.1"])
    assert missing is not None and again is not None
    assert [rrset.ttl for rrset in again.authority] == [30]
    assert (asked(upstream, "www.example.com"), asked(upstream, "missing.example.com")) == (1, 1)


# -- keepttl -------------------------------------------------------------------------------

@pytest.mark.parametrize(("lines", "ttls"), [
    ([], [30, 20, 0]),  # counting down; stale at TTL 0
    (["keepttl"], [30, 30, 30]),  # the TTL it was stored with, stale or not
])
def test_keepttl_serves_the_stored_ttl(upstream: Recording, lines: list[str],
                                       ttls: list[int]) -> None:
    async def scenario() -> list[int]:
        forward, clock = cached(upstream, "cache 30 {", "serve_stale 1h verify", *lines, "}")
        upstream.servfail = False
        try:
            served = []
            for step in (0, 10, 25):  # the last one is stale: verify finds SERVFAIL, serves it
                clock.now += step
                if step == 25:
                    upstream.servfail = True
                reply = await ask(forward, "www.example.com")
                assert reply is not None
                served.append(reply.answer[0].ttl)
            return served
        finally:
            await forward.close()

    assert run(scenario) == ttls


# -- prefetch ------------------------------------------------------------------------------

def test_prefetch_refreshes_a_popular_entry_near_its_end(upstream: Recording) -> None:
    """``prefetch 2 1m 50%``: short.example.com has TTL 10; the second hit with 5 s or less
    left asks upstream again (over TCP, as CoreDNS's prefetch does) while the client is answered
    from the cache; the next hit has the new answer, with its full TTL."""
    async def scenario() -> list[tuple[str, list[str]]]:
        forward, clock = cached(upstream, "cache {", "prefetch 2 1m 50%", "}")
        try:
            answers = [text_of(await ask(forward, "short.example.com"))]  # stored at 1000
            clock.now += 4  # 6 s left: not yet
            answers.append(text_of(await ask(forward, "short.example.com")))
            assert not forward._tasks
            upstream.records["short.example.com."][0].rdata = dnslib.A("192.0.2.6")
            clock.now += 1.5  # 5 s left, second hit: prefetch
            answers.append(text_of(await ask(forward, "short.example.com")))
            await wait_for(lambda: not forward._tasks)
            clock.now += 0.5
            answers.append(text_of(await ask(forward, "short.example.com")))
            return answers
        finally:
            await forward.close()

    first, early, due, refreshed = run(scenario)
    assert first == ("NOERROR", ["short.example.com. 10 192.0.2.5"])
    assert early == ("NOERROR", ["short.example.com. 6 192.0.2.5"])
    assert due == ("NOERROR", ["short.example.com. 5 192.0.2.5"])  # still the cached one
    assert refreshed == ("NOERROR", ["short.example.com. 10 192.0.2.6"])
    assert [t for t, name, _ in upstream.asked() if name == "short.example.com."] == ["udp", "tcp"]


@pytest.mark.parametrize("line", [
    "prefetch 3 1m 50%",  # only two hits
    "prefetch 2 1s 50%",  # the hits are more than 1s apart: the count starts again
    "prefetch 2 1m 10%",  # 5 s left is more than ceil(10% of 10) = 1 s
    "prefetch 0 1m 90%",  # off
])
def test_no_prefetch_unless_popular_and_near_its_end(upstream: Recording, line: str) -> None:
    async def scenario() -> None:
        forward, clock = cached(upstream, "cache {", line, "}")
        try:
            await ask(forward, "short.example.com")
            for step in (4, 1.5):
                clock.now += step
                await ask(forward, "short.example.com")
            assert not forward._tasks
        finally:
            await forward.close()

    run(scenario)
    assert asked(upstream, "short.example.com") == 1


def test_a_prefetched_entry_keeps_its_popularity(upstream: Recording) -> None:
    """After a prefetch the new entry carries the hits on: one more hit near its end is
    enough to prefetch again (CoreDNS copies the frequency into the new item)."""
    async def scenario() -> None:
        forward, clock = cached(upstream, "cache {", "prefetch 2 1m 50%", "}")
        try:
            await ask(forward, "short.example.com")
            for step in (4, 1.5):  # the second hit prefetches
                clock.now += step
                await ask(forward, "short.example.com")
            await wait_for(lambda: not forward._tasks)
            clock.now += 5.5  # the new entry has 5 s left: its first hit prefetches
            await ask(forward, "short.example.com")
            await wait_for(lambda: not forward._tasks)
        finally:
            await forward.close()

    run(scenario)
    assert asked(upstream, "short.example.com") == 3


# -- serve_stale: immediate and verify -----------------------------------------------------

def test_serve_stale_immediate_answers_stale_and_refreshes_behind(upstream: Recording) -> None:
    async def scenario() -> list[tuple[str, list[str]]]:
        forward, clock = cached(upstream, "cache {", "serve_stale 1h", "}")
        try:
            answers = [text_of(await ask(forward, "short.example.com"))]
            upstream.records["short.example.com."][0].rdata = dnslib.A("192.0.2.6")
            clock.now += 15
            answers.append(text_of(await ask(forward, "short.example.com")))
            await wait_for(lambda: not forward._tasks)
            answers.append(text_of(await ask(forward, "short.example.com")))
            return answers
        finally:
            await forward.close()

    first, stale, refreshed = run(scenario)
    assert first == ("NOERROR", ["short.example.com. 10 192.0.2.5"])
    assert stale == ("NOERROR", ["short.example.com. 0 192.0.2.5"])
    assert refreshed == ("NOERROR", ["short.example.com. 10 192.0.2.6"])
    assert [t for t, name, _ in upstream.asked() if name == "short.example.com."] == ["udp", "tcp"]


def test_serve_stale_verify_asks_first_and_serves_stale_only_on_failure(
    upstream: Recording,
) -> None:
    """verify: a stale hit waits for the upstream; NOERROR or NXDOMAIN is the answer (and
    cached), anything else (SERVFAIL, no answer at all) gives the stale entry with TTL 0."""
    async def scenario() -> list[tuple[str, list[str]]]:
        forward, clock = cached(upstream, "cache {", "serve_stale 1h verify", "}")
        try:
            answers = [text_of(await ask(forward, "short.example.com"))]
            clock.now += 15
            upstream.servfail = True
            answers.append(text_of(await ask(forward, "short.example.com")))
            upstream.servfail, upstream.drop = False, True
            answers.append(text_of(await ask(forward, "short.example.com")))
            upstream.drop = False
            upstream.records["short.example.com."][0].rdata = dnslib.A("192.0.2.6")
            answers.append(text_of(await ask(forward, "short.example.com")))
            clock.now += 2
            answers.append(text_of(await ask(forward, "short.example.com")))  # the new entry
            clock.now += 15
            del upstream.records["short.example.com."]
            answers.append(text_of(await ask(forward, "short.example.com")))
            return answers
        finally:
            await forward.close()

    first, on_servfail, on_silence, verified, cached_again, gone = run(scenario)
    assert first == ("NOERROR", ["short.example.com. 10 192.0.2.5"])
    assert on_servfail == on_silence == ("NOERROR", ["short.example.com. 0 192.0.2.5"])
    assert verified == ("NOERROR", ["short.example.com. 10 192.0.2.6"])
    assert cached_again == ("NOERROR", ["short.example.com. 8 192.0.2.6"])
    assert gone == ("NXDOMAIN", [])
    assert [t for t, name, _ in upstream.asked() if name == "short.example.com."] == ["udp"] * 5
