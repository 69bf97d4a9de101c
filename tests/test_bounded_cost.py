"""Every query type on every name is answered from kept bytes (issue #12).

No timing here (the speed is measured by ``bench/costs.py``). What these tests count is the
work that made some queries hundreds of times dearer than a cached answer: building a big
Service's record sets for a type that has no records, and splitting a long answer into records
to truncate it. What they check is that the bytes are exactly those the server sent before:
replies from a zone that has answered many queries equal those of a fresh zone, and a cut
reply equals the one the record-splitting truncation makes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dnsserver.serve import wire
from dnsserver.serve.handler import Handler
from zones import build, model, names
from zones.model import PodsMode
from zones.records import CUTTABLE_BODY, RECORD_QTYPES, SOA, Answer
from zones.zone import CACHED_QTYPES, MAX_DYNAMIC_NODES, Zone

ENDPOINTS = 1000
BIG = "big.default.svc.cluster.local"
ALIAS = "http.tcp.big.default.svc.cluster.local"  # the port name without its underscores
WEB = "web.default.svc.cluster.local"
HTTP = model.Port("http", "TCP", 80)
NEGATIVE_TYPES = ("SOA", "HINFO", "CAA", "ANY", "MX", "HTTPS", "TXT", "PTR", "NS", "AAAA")


def big_slices(count: int = ENDPOINTS) -> list[model.EndpointSlice]:
    endpoints = [
        model.Endpoint((f"10.1.{i // 250}.{i % 250 + 1}",), f"big-{i}") for i in range(count)
    ]
    return [
        model.EndpointSlice("default", f"big-{start}", "big", tuple(endpoints[start:start + 100]),
                            (HTTP,), None)
        for start in range(0, count, 100)
    ]


def objects(count: int = ENDPOINTS) -> list[model.ClusterObject]:
    return [
        model.Namespace("default"),
        model.Service("default", "web", ("10.96.0.5",), False, "", (HTTP,)),
        model.Service("default", "big", (), True, "", (HTTP,)),
        *big_slices(count),
    ]


def make_zone(count: int = ENDPOINTS, *, loadbalance: bool = False) -> Zone:
    zone = Zone(("cluster.local",), loadbalance=loadbalance, clock=lambda: 1_700_000_000)
    with zone.batch():
        for obj in objects(count):
            zone.apply(obj)
    zone.synced = True
    return zone


def ask(handler: Handler, name: str, qtype: str, *, tcp: bool = False,
        payload: int | None = None) -> bytes:
    query = dns.message.make_query(name, qtype, use_edns=0 if payload else False,
                                   payload=payload or 1232)
    query.id = 4242
    reply = handler.handle(query.to_wire(), tcp, "10.0.0.1", 5353)
    assert isinstance(reply, bytes)
    return reply


@pytest.fixture
def rrsets_built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """The selectors a Service's record sets were built for, in order."""
    built: list[object] = []
    original: Callable[[build.ServiceView, build.Selector], object] = build.ServiceView.rrsets

    def counting(view: build.ServiceView, selector: build.Selector) -> object:
        built.append(selector)
        return original(view, selector)

    monkeypatch.setattr(build.ServiceView, "rrsets", counting)
    yield built


def test_types_without_records_never_build_the_record_sets(rrsets_built: list[object]) -> None:
    zone = make_zone()
    node = zone.index[names.to_wire(BIG)]
    origin = node.origin
    for qtype in range(65536):
        answer = node[qtype]
        if qtype in (251, 252):  # IXFR, AXFR
            assert answer is origin.refused
        elif qtype in (1, 33):  # A, SRV
            assert answer.ancount == ENDPOINTS
        else:
            assert answer is origin.nodata, qtype
    # One build per type that can hold records, and no entry per type beyond the usual few.
    assert len(rrsets_built) <= len(RECORD_QTYPES)
    assert set(node) <= CACHED_QTYPES
    assert len(zone._volatile) == len(zone._dynamic) == 0


def test_big_headless_answers_are_the_same_twice_and_after_a_change() -> None:
    zone, fresh = make_zone(), make_zone()
    handler, reference = Handler(zone), Handler(fresh)
    cases: list[tuple[str, bool, int | None]] = [
        (t, False, None) for t in (*NEGATIVE_TYPES, "A", "SRV", "AXFR")
    ]
    cases += [("A", False, 1232), ("A", True, None), ("SRV", False, 4096), ("CAA", False, 1232)]
    for qtype, tcp, payload in cases:
        first = ask(handler, BIG, qtype, tcp=tcp, payload=payload)
        assert ask(handler, BIG, qtype, tcp=tcp, payload=payload) == first
        assert ask(reference, BIG, qtype, tcp=tcp, payload=payload) == first

    serial = zone.serial
    for qtype in ("SOA", "HINFO", "CAA", "ANY"):
        reply = dns.message.from_wire(ask(handler, BIG, qtype))
        assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
        assert not reply.answer and not reply.additional
        (soa,) = reply.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa[0].serial == serial
    axfr = dns.message.from_wire(ask(handler, BIG, "AXFR"))
    assert axfr.rcode() == dns.rcode.REFUSED and not axfr.authority

    # Fewer endpoints: every kept answer of the name goes with the Service's old names.
    zone.delete(model.EndpointSlice, "default", "big-0")
    smaller = make_zone()
    smaller.delete(model.EndpointSlice, "default", "big-0")
    assert zone.serial == smaller.serial == serial + 1
    after = Handler(smaller)
    for qtype, tcp, payload in cases:
        got = ask(handler, BIG, qtype, tcp=tcp, payload=payload)
        assert got == ask(after, BIG, qtype, tcp=tcp, payload=payload), qtype
    full = dns.message.from_wire(ask(handler, BIG, "A", tcp=True))
    assert sum(len(rrset) for rrset in full.answer) == ENDPOINTS - 100
    (soa,) = dns.message.from_wire(ask(handler, BIG, "CAA")).authority
    assert soa[0].serial == serial + 1


def test_truncated_udp_replies_are_whole_records_as_before() -> None:
    handler = Handler(make_zone())
    for qtype, payload in (("A", None), ("A", 1232), ("A", 4000), ("SRV", None), ("SRV", 1232)):
        data = ask(handler, BIG, qtype, payload=payload)
        reply = dns.message.from_wire(data, one_rr_per_rrset=True)
        assert reply.flags & dns.flags.TC
        assert len(data) <= (payload or 512)
        assert 0 < len(reply.answer) < ENDPOINTS
        assert not reply.additional
        if qtype == "A":  # one more A record (16 octets, its owner a pointer) would not fit
            assert len(data) + 16 > (payload or 512)


@pytest.mark.parametrize("loadbalance", [False, True])
def test_cut_is_the_record_splitting_truncation(loadbalance: bool) -> None:
    """``wire.cut`` (bisection over kept record ends) gives the bytes ``wire.truncate`` gives."""
    rng = random.Random(12)
    answers: list[Answer] = []
    for count in (3, 40, ENDPOINTS):  # SRV of 3 fits in 512 with its glue only sometimes
        zone = make_zone(count, loadbalance=loadbalance)
        for name in (BIG, f"_http._tcp.{BIG}", ALIAS):
            for qtype in (1, 33):
                found = zone.answer(name, qtype)
                assert found is not None
                answers.append(found)
    head = b"\x12\x34\x84\x00"
    for answer in answers:
        bodies = answer.variants or (answer.body,)
        assert bool(answer.ends) == (len(answer.body) > CUTTABLE_BODY)
        if not answer.ends:
            continue
        assert len(answer.ends) == len(bodies)
        limits = {512, 513, 1232, 4096, 65535, *(rng.randrange(512, 65536) for _ in range(15))}
        ends = answer.ends[0]
        limits |= {e + extra for e in ends[:30] for extra in (40, 41, 51, 52, 62, 63)}
        turns = list(zip(bodies, answer.ends, strict=True))
        for body, record_ends in turns[:2] + turns[-1:]:  # rotations: the first, a later one
            assert record_ends[-1] == len(body)
            for question in (b"\x03big" + b"\x00" * 5, b"\x3f" + b"x" * 63 + b"\x00\x00\x01\x00\x01"):
                for opt in (b"", wire.opt_record(1232, 0)):
                    for limit in limits:
                        if limit < 512:
                            continue
                        expected = wire.truncate(head, question, body, answer.answer_len,
                                                 answer.counts, opt, limit)
                        got = wire.cut(head, question, body, record_ends, answer.ancount, opt,
                                       limit)
                        assert got == expected, (limit, len(question), len(opt))


def test_port_name_spellings_are_kept_until_a_change(rrsets_built: list[object]) -> None:
    zone = make_zone()
    handler = Handler(zone)
    canonical = ask(handler, f"_http._tcp.{BIG}", "SRV", tcp=True)
    alias = ask(handler, ALIAS, "SRV", tcp=True)
    built = len(rrsets_built)
    for qtype in ("SRV", "A", "CAA", "SOA", "HINFO", "ANY"):
        assert ask(handler, ALIAS, qtype, tcp=True) == ask(handler, ALIAS, qtype, tcp=True)
    assert len(rrsets_built) == built + 1  # A: built once, the other types need no records
    (node,) = zone._dynamic.values()  # the spelling's own node, keyed by its wire name
    assert set(node) == {1, 33, 255}  # A, SRV, ANY; NODATA for the rest is not kept per type
    ours = dns.message.from_wire(alias, one_rr_per_rrset=True)
    theirs = dns.message.from_wire(canonical, one_rr_per_rrset=True)
    assert sorted(r[0].to_text() for r in ours.answer) == sorted(
        r[0].to_text() for r in theirs.answer)
    assert len(ours.answer) == ENDPOINTS
    assert ours.additional and len(ours.additional) == len(theirs.additional)  # 64 KiB: not all

    zone.delete(model.EndpointSlice, "default", "big-0")
    assert not zone._dynamic
    smaller = dns.message.from_wire(ask(handler, ALIAS, "SRV", tcp=True), one_rr_per_rrset=True)
    assert len(smaller.answer) == ENDPOINTS - 100


def test_apex_soa_is_kept_until_the_serial_changes() -> None:
    zone = make_zone()
    first = zone.answer("cluster.local", SOA)
    assert first is not None and first is zone.answer("cluster.local", SOA)
    handler = Handler(zone)
    before = dns.message.from_wire(ask(handler, "cluster.local", "SOA"))
    zone.apply(model.Service("default", "new", ("10.96.0.9",), False, "", ()))
    after = dns.message.from_wire(ask(handler, "cluster.local", "SOA"))
    assert after.answer[0][0].serial == before.answer[0][0].serial + 1
    assert zone.answer("cluster.local", SOA) is not first


@pytest.mark.parametrize("mode", [PodsMode.INSECURE, PodsMode.VERIFIED])
def test_pod_names_are_kept_until_a_change(mode: PodsMode) -> None:
    zone = Zone(("cluster.local",), pods=mode, clock=lambda: 1_700_000_000)
    pod = model.Pod("default", "p", ("10.1.0.9",), True, False)
    with zone.batch():
        zone.apply(model.Namespace("default"))
        zone.apply(pod)
    zone.synced = True
    handler = Handler(zone)
    name = "10-1-0-9.default.pod.cluster.local"

    def answer(qtype: str) -> tuple[str, list[str]]:
        reply = dns.message.from_wire(ask(handler, name, qtype))
        return dns.rcode.to_text(reply.rcode()), [r.to_text() for s in reply.answer for r in s]

    for _ in range(2):
        assert answer("A") == ("NOERROR", ["10.1.0.9"])
        assert answer("AAAA") == answer("CAA") == answer("SOA") == ("NOERROR", [])
    assert list(zone._dynamic) == [names.to_wire(name)]
    assert set(zone._dynamic[names.to_wire(name)]) == {1, 28}  # A, AAAA

    zone.apply(model.Pod("default", "p", ("10.1.0.9",), False, False))  # it stops running
    assert answer("A") == (("NXDOMAIN", []) if mode is PodsMode.VERIFIED else ("NOERROR", ["10.1.0.9"]))
    zone.delete(model.Namespace, "", "default")
    assert not zone._dynamic
    assert answer("A") == ("NXDOMAIN", [])


def test_pod_names_kept_are_bounded() -> None:
    zone = make_zone(1)
    for i in range(MAX_DYNAMIC_NODES + 100):
        ip = f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
        found = zone.answer(f"{ip.replace('.', '-')}.default.pod.cluster.local", 1)
        assert found is not None and found.ancount == 1
    assert len(zone._dynamic) == MAX_DYNAMIC_NODES
