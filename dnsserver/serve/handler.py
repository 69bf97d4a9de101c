"""One query in, one reply out: the function UDP and TCP share.

:meth:`Handler.handle` is the hot path. For the common query (standard opcode, one question
of class IN, no compression, at most an OPT record) it reads the header and question with
slices, looks the lower-cased name up in the zone's index of pre-encoded answers, and joins the
query's ID and question (so the client's case comes back) with the stored bytes. No DNS
objects are made, nothing is awaited, nothing is logged. Anything else takes
:meth:`Handler._slow_path`, which parses carefully and climbs the error ladder: too short to
have a header → dropped; a reply → dropped; unknown opcode → NOTIMP; malformed → FORMERR;
class not IN → REFUSED; EDNS version not 0 → BADVERS; a bug → SERVFAIL, logged once.

The slow path walks the plugin chain (:mod:`dnsserver.plugins.chain`) in CoreDNS's order:
rewrite, template, hosts, then the cluster zone (:meth:`Handler._cluster`), whose names it
does not hold go to autopath's walk (for pods), then to the forwarder: a cache hit is answered
here and now; otherwise :meth:`handle` returns a coroutine that the transport awaits, and the
query path itself never waits. A plugin before the cluster zone that may answer a name the
index holds takes that query off the fast path (:class:`~dnsserver.plugins.chain.FastPathGuard`).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Coroutine, Sequence
from time import perf_counter
from typing import Any

import dnslib

from dnsserver.plugins import chain
from dnsserver.plugins.autopath import AutoPath
from dnsserver.plugins.forward import Forwarding, Pending
from dnsserver.plugins.log import QueryLog
from dnsserver.plugins.upstream import fit_udp
from dnsserver.serve import wire
from dnsserver.serve.metrics import DURATION_BUCKETS, QueryStats
from zones import names
from zones.records import NOERROR, NOTIMP, NXDOMAIN, REFUSED, SERVFAIL, Answer
from zones.zone import Zone

log = logging.getLogger("dnsserver")

Reply = chain.Reply

_PLAIN_QUERY_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00"  # QD=1, AN=0, NS=0, high byte of AR=0


class Handler:
    """Answers queries from a :class:`~zones.zone.Zone`."""

    def __init__(
        self, zone: Zone, autopath: AutoPath | None = None, stats: QueryStats | None = None,
        query_log: QueryLog | None = None, forwarding: Forwarding | None = None,
        plugins: Sequence[chain.Plugin] = (),
    ) -> None:
        self.zone = zone
        self.autopath = autopath
        self.query_log = query_log
        self.forwarding = forwarding
        self.stats = stats or QueryStats()
        self._replies = self.stats.replies
        self._duration_buckets = self.stats.duration_buckets
        self._index = zone.index  # the same dict for the zone's whole life
        self._log_bug = chain.BugLog(log, "bug while answering a query; answering SERVFAIL")
        self._turn = 0  # loadbalance: which rotation the next reply takes
        self.loadbalance = False  # rotate forwarded replies' addresses too
        self.plugins: list[chain.Plugin] = []
        self._chain: chain.Next = self._cluster
        self._guard: chain.FastPathGuard | None = None
        self.use_plugins(plugins)
        self._served: tuple[bytes, ...] = ()  # () : the root is served, every name is ours
        self._other_blocks: tuple[tuple[bytes, bool], ...] = ()  # (zone, a stub block's)

    def handle(
        self, data: bytes, tcp: bool = False, client: str = "", port: int = 0
    ) -> Reply:
        """The reply to ``data`` from ``client`` (IP and port), None to send nothing, or a
        coroutine for a reply that waits on an upstream (the transport awaits it). Never
        raises."""
        started = perf_counter()
        reply: Reply
        try:
            try:
                reply = self._fast_path(data, tcp, client)
            except IndexError:  # the message ended early: the careful parser says how
                reply = None
            if reply is not None and self.query_log is None:  # the common case, inlined
                elapsed = perf_counter() - started
                self._duration_buckets[bisect_left(DURATION_BUCKETS, elapsed)] += 1
                self.stats.duration_sum += elapsed
                return reply
            if reply is None:
                reply = self._slow_path(data, tcp, client)
        except Exception as exc:  # a bug: answer SERVFAIL, log the first of its kind
            self._log_bug(exc)
            reply = _servfail(data)
            self._count(tcp, client, 0, SERVFAIL, "")
        if reply is None or isinstance(reply, bytes):
            return self._done(reply, data, tcp, client, port, started)
        return self._timed(reply, data, tcp, client, port, started)

    def use(self, zone: Zone, autopath: AutoPath | None, query_log: QueryLog | None) -> None:
        """Answer from another zone from the next query on (a reload)."""
        self.zone, self._index = zone, zone.index
        self.autopath, self.query_log = autopath, query_log

    def serve_zones(self, zones: Sequence[str], other_blocks: Sequence[str] = ()) -> None:
        """Only names in ``zones`` (the server blocks' zones) are served; any other name is
        REFUSED, as CoreDNS refuses a query no server block holds. Names in ``other_blocks``
        (stub-domain server blocks) skip the main block's plugins: CoreDNS hands them to
        their own block, whose only plugins here are forward and cache."""
        self._served = () if "." in zones else tuple(names.to_wire(zone) for zone in zones)
        # Every block's zones, longest first: the first that holds a name is its block.
        blocks = [(names.to_wire(zone), zone in other_blocks) for zone in zones]
        blocks.sort(key=lambda block: len(block[0]), reverse=True)
        self._other_blocks = tuple(blocks) if other_blocks else ()

    def use_plugins(self, plugins: Sequence[chain.Plugin]) -> None:
        """Walk ``plugins`` (in CoreDNS's order) before the cluster zone from the next query
        on; the fast path leaves the queries they may answer."""
        self.plugins = chain.ordered(plugins)
        self._chain = chain.compose(self.plugins, self._cluster)
        self.refresh_guard()

    def refresh_guard(self) -> None:
        """Ask the plugins again what they take off the fast path."""
        guard = chain.FastPathGuard(plugin.interception() for plugin in self.plugins)
        self._guard = None if guard.empty else guard

    def _done(self, reply: bytes | None, data: bytes, tcp: bool, client: str, port: int,
              started: float) -> bytes | None:
        elapsed = perf_counter() - started
        if reply is None:
            self.stats.dropped += 1
        else:
            self.stats.observe(elapsed)
        if self.query_log is not None:
            self.query_log.record(data, reply, tcp, client, port, elapsed)
        return reply

    async def _timed(self, pending: Coroutine[Any, Any, bytes | None], data: bytes, tcp: bool,
                     client: str, port: int, started: float) -> bytes | None:
        try:
            reply: bytes | None = await pending
        except Exception as exc:  # a bug in the forwarding path
            self._log_bug(exc)
            reply = _servfail(data)
        return self._done(reply, data, tcp, client, port, started)

    async def _forwarded(self, pending: Pending, qtype: int, tcp: bool,
                         client: str) -> bytes | None:
        reply = await pending
        self._count(tcp, client, qtype, reply[3] & 0x0F if len(reply) > 3 else -1, "forward")
        return self._balanced(reply)

    def _balanced(self, reply: bytes) -> bytes:
        """A forwarded or cached reply, its addresses rotated under ``loadbalance`` (CoreDNS
        shuffles every NOERROR reply it writes, not only its own zone's)."""
        if not self.loadbalance:
            return reply
        self._turn += 1
        return wire.rotate_addresses(reply, self._turn)

    async def _chase(self, data: bytes, query: wire.Query, answer: Answer, tcp: bool,
                     client: str) -> bytes | None:
        """An answer finished upstream: autopath's steps outside the zones, or an ExternalName's
        CNAME with its target's records from upstream, as CoreDNS chases it (SPEC §2.7):
        upstream TTLs; an empty or NXDOMAIN target leaves the CNAME alone."""
        if answer.steps:
            return await self._walk_upstream(data, query, answer.steps, tcp, client)
        upstream = await self._ask_upstream(answer.chase, query.qtype)
        self._count(tcp, client, query.qtype, 0, "kubernetes")
        return _fitted(chased_reply(data, query, answer.chase, self.zone.ttl, upstream), query, tcp)

    async def _ask_upstream(self, name: str, qtype: int) -> bytes | None:
        """The forwarder's reply (cache first) for ``name``, asked over TCP-sized limits."""
        assert self.forwarding is not None
        question = dnslib.DNSRecord.question(name, dnslib.QTYPE.get(qtype)).pack()
        pending = self.forwarding.answer(question, names.to_wire(name), qtype, None, True)
        return pending if pending is None or isinstance(pending, bytes) else await pending

    async def _walk_upstream(self, data: bytes, query: wire.Query, steps: tuple[str, ...],
                             tcp: bool, client: str) -> bytes | None:
        """Autopath's steps outside the zones, in order while they are NXDOMAIN: records make
        ``CNAME <asked> -> step`` and them; NODATA is NODATA for the asked name; all NXDOMAIN
        (or no upstream answer) is NXDOMAIN for it, as without autopath."""
        key = query.name.lower()
        for step in steps:
            upstream = await self._ask_upstream(step, query.qtype)
            if upstream is None or len(upstream) < 12 or upstream[3] & 0x0F != NOERROR:
                continue
            if upstream[6:8] == b"\x00\x00":  # NODATA
                nodata = self.zone.nodata_for(key)
                if nodata is not None:
                    return self._reply_for(data, query, nodata, tcp, client)
                continue
            self._count(tcp, client, query.qtype, NOERROR, "autopath")
            return _fitted(chased_reply(data, query, step, self.zone.ttl, upstream), query, tcp)
        negative = self.zone.lookup_missing(key, query.qtype)
        return self._reply_for(data, query, negative, tcp, client) if negative else None

    def _count(self, tcp: bool, client: str, qtype: int, rcode: int, plugin: str) -> None:
        self._replies[(tcp, ":" in client, qtype, rcode, plugin)] += 1

    def _fast_path(self, data: bytes, tcp: bool, client: str) -> bytes | None:
        if len(data) < 17 or data[2] & 0xF8 or data[4:11] != _PLAIN_QUERY_COUNTS:
            return None
        end = 12
        length = data[12]
        while length:
            if length > 63:
                return None
            end += length + 1
            length = data[end]  # IndexError on a short name is caught by handle()
        question_end = end + 5
        if end > 266 or data[end + 3 : question_end] != b"\x00\x01":  # >255 octets, or not IN
            return None
        arcount = data[11]
        if arcount == 0:
            if question_end != len(data):
                return None
            size = None
            opt = b""
        elif (
            arcount == 1
            and data[question_end : question_end + 3] == b"\x00\x00\x29"
            and data[question_end + 6] == 0  # EDNS version 0
            and question_end + 11 + (data[question_end + 9] << 8 | data[question_end + 10])
            == len(data)
        ):
            size = data[question_end + 3] << 8 | data[question_end + 4]
            opt = wire.opt_record(size, data[question_end + 7] >> 7)
        else:
            return None
        qtype = data[end + 1] << 8 | data[end + 2]
        key = data[12 : end + 1].lower()
        if self._guard is not None and self._guard(key, qtype):
            return None  # a plugin before the cluster zone may answer it: the chain decides
        node = self._index.get(key)
        answer = node[qtype] if node is not None else self._missing(key, qtype, client)
        if answer is None or answer.finish_upstream:  # not ours, or to finish upstream
            return None
        return self._reply(data, question_end, answer, size, opt, tcp, client)

    def _missing(self, key: bytes, qtype: int, client: str) -> Answer | None:
        """A name not in the index: dynamic names, NXDOMAIN, or autopath's walk; None when
        the name is not ours to answer (outside the zones, or an NXDOMAIN that falls through
        to the upstream)."""
        answer = self.zone.lookup_missing(key, qtype)
        if answer is not None and answer.rcode == NXDOMAIN:
            if self.autopath is not None:
                walked = self.autopath.answer(key, qtype, client)
                if walked is not None:
                    return walked
            if self.forwarding is not None and self.forwarding.falls_through(key):
                return None
        return answer

    def _reply(
        self, data: bytes, question_end: int, answer: Answer, size: int | None, opt: bytes,
        tcp: bool, client: str,
    ) -> bytes:
        # Hot path: one unpacking by position is cheaper than ten attribute reads. These are
        # Answer's fields in their order; chase, steps and finish_upstream (decided before
        # this point) are skipped. A new Answer field must be added here in its place.
        (rcode, aa, counts, counts_edns, body, soa, ancount, answer_len, variants, _, _, _,
         ends) = answer
        qtype = data[question_end - 4] << 8 | data[question_end - 3]
        self._replies[(tcp, ":" in client, qtype, rcode, "kubernetes")] += 1
        head = data[:2] + bytes((0x80 | aa | (data[2] & 0x01), rcode | (data[3] & 0x10)))
        question = data[12:question_end]
        turn = 0
        if soa is not None:
            body = soa.authority_for(question_end - 16)
        elif variants:
            self._turn += 1
            turn = self._turn % len(variants)
            body = variants[turn]
        limit = wire.MAX_MESSAGE_SIZE if tcp else wire.udp_limit(size)
        if question_end + len(body) + len(opt) > limit:  # the reply's length, before joining it
            if ends:  # where the body's records end is kept with the answer: no splitting
                return wire.cut(head, question, body, ends[turn], ancount, opt, limit)
            return wire.truncate(head, question, body, answer_len, counts, opt, limit)
        if size is None:
            return b"".join((head, counts, question, body))
        return b"".join((head, counts_edns, question, body, opt))

    def _slow_path(self, data: bytes, tcp: bool, client: str) -> Reply:
        if len(data) < wire.HEADER_LENGTH or data[2] & 0x80:
            return None  # no header to answer, or a response: never reply to those
        if data[2] & 0x78:
            self._count(tcp, client, 0, NOTIMP, "")
            return wire.header_only(data, NOTIMP)
        try:
            query = wire.parse_query(data)
        except wire.FormError:
            self._count(tcp, client, 0, wire.FORMERR, "")
            return wire.header_only(data, wire.FORMERR)
        edns = query.edns
        if edns is not None and edns.version != 0:
            self._count(tcp, client, query.qtype, wire.BADVERS, "")
            return wire.error_reply(data, query, wire.BADVERS)
        key = query.name.lower()
        if query.qclass != 1 or (  # another class, or a name no server block holds
            self._served and not any(chain.in_zone(key, zone) for zone in self._served)
        ):
            self._count(tcp, client, query.qtype, REFUSED, "")
            return wire.error_reply(data, query, REFUSED)
        request = chain.Request(data, query, key, tcp, client, self._counter(tcp, client))
        if self._other_blocks and self._in_other_block(key):
            return self._cluster(request)  # a stub block's name: forward (and cache) only
        return self._chain(request)

    def _in_other_block(self, key: bytes) -> bool:
        for zone, other in self._other_blocks:
            if chain.in_zone(key, zone):
                return other
        return False

    def _counter(self, tcp: bool, client: str) -> chain.Counter:
        def count(qtype: int, rcode: int, plugin: str) -> None:
            self._count(tcp, client, qtype, rcode, plugin)
        return count

    def _cluster(self, request: chain.Request) -> Reply:
        """The chain's end: the cluster zone (with autopath), then the forwarder."""
        data, query, key = request.data, request.query, request.key
        tcp, client = request.tcp, request.client
        node = self._index.get(key)
        answer = node[query.qtype] if node is not None else self._missing(key, query.qtype, client)
        if answer is None and self.forwarding is not None:
            forwarded = self.forwarding.answer(data, key, query.qtype, query.edns, tcp)
            if isinstance(forwarded, bytes):  # from the cache
                self._count(tcp, client, query.qtype, forwarded[3] & 0x0F, "cache")
                return self._balanced(forwarded)
            if forwarded is not None:
                return self._forwarded(forwarded, query.qtype, tcp, client)
        if answer is None:  # outside every served zone
            self._count(tcp, client, query.qtype, REFUSED, "")
            return wire.error_reply(data, query, REFUSED)
        if answer.finish_upstream and self.forwarding is not None:
            return self._chase(data, query, answer, tcp, client)
        return self._reply_for(data, query, answer, tcp, client)

    def _reply_for(self, data: bytes, query: wire.Query, answer: Answer, tcp: bool,
                   client: str) -> bytes:
        """:meth:`_reply` for a query the careful parser read."""
        edns = query.edns
        if edns is None:
            return self._reply(data, query.question_end, answer, None, b"", tcp, client)
        opt = wire.opt_record(edns.udp_size, int(edns.do))
        return self._reply(data, query.question_end, answer, edns.udp_size, opt, tcp, client)


def _servfail(data: bytes) -> bytes | None:
    if len(data) < wire.HEADER_LENGTH or data[2] & 0x80:
        return None
    return wire.header_only(data, SERVFAIL)


def chased_reply(
    data: bytes, query: wire.Query, target: str, ttl: int, upstream: bytes | None
) -> bytes:
    """The reply to ``data``: ``CNAME target`` followed by the answer records of the
    ``upstream`` reply for the target. Slow path: dnslib assembles it."""
    records = []
    if upstream is not None:
        try:
            parsed = dnslib.DNSRecord.parse(upstream)
        except (dnslib.DNSError, IndexError, ValueError):
            parsed = None
        if parsed is not None and parsed.header.rcode in (NOERROR, NXDOMAIN):
            records = parsed.rr
    owner = dnslib.DNSLabel(names.wire_labels(query.name))  # as asked: the client's case
    reply = dnslib.DNSRecord(
        dnslib.DNSHeader(id=int.from_bytes(data[:2], "big"), qr=1, aa=1, rd=data[2] & 1,
                         cd=(data[3] >> 4) & 1),
        q=dnslib.DNSQuestion(owner, query.qtype, query.qclass),
    )
    reply.add_answer(dnslib.RR(owner, dnslib.QTYPE.CNAME, ttl=ttl, rdata=dnslib.CNAME(target)))
    for record in records:
        reply.add_answer(record)
    if query.edns is not None:
        reply.add_ar(dnslib.EDNS0(udp_len=max(query.edns.udp_size, 512),
                                  flags="do" if query.edns.do else ""))
    return bytes(reply.pack())


def _fitted(reply: bytes, query: wire.Query, tcp: bool) -> bytes:
    """``reply`` cut to what the client accepts over UDP (TCP takes it whole)."""
    if tcp:
        return reply
    return fit_udp(reply, wire.udp_limit(query.edns.udp_size if query.edns else None))
