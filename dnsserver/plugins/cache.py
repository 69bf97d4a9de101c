"""A cache of forwarded replies, like CoreDNS's ``cache`` (SPEC §4.6), kept as bytes.

Only replies that came from an upstream are cached; the cluster zone never is (its answers are
already precomputed, and caching them makes new Services NXDOMAIN for the denial TTL, SPEC
§4.6). How the caller uses it::

    key = cache.cache_key(query)              # None: not cacheable, forward without caching
    hit = cache.lookup(key, query)            # (reply, stale) or None
    if hit is None:
        reply = cache.put(key, await forwarder.forward(query))   # put returns what to send
    elif hit[1]:
        ...send hit[0], then refresh in the background: put(key, await forward(query))

Rules (CoreDNS ``plugin/cache``, ``plugin/pkg/dnsutil/ttl.go``):

- **Key**: lower-cased question name (wire form), qtype, qclass, the DO bit and the CD bit
  (:func:`key_for`). EDNS presence and buffer size are not part of it: the caller truncates
  for UDP clients like for any forwarded reply.
- **Kinds**: ``success`` (NOERROR with answers) and ``denial`` (NXDOMAIN or NODATA with an SOA
  in the authority section, and SERVFAIL). Each has its own capacity and can be disabled.
- **TTL** of an entry: the smallest TTL of every record in the reply (answer, authority and
  additional, OPT excluded), as CoreDNS does, and for denials also the SOA MINIMUM field
  (RFC 2308 §5: min(SOA TTL, MINIMUM)); then floored at ``min_ttl`` and capped at ``max_ttl``
  (``max_denial_ttl`` for denials). SERVFAIL is cached for ``servfail_ttl`` (0 = never).
- **Never cached**: TC replies; rcodes other than NOERROR, NXDOMAIN, SERVFAIL; NXDOMAIN and
  NODATA without an SOA (this includes referrals); replies whose question does not match the
  key; replies with an extended rcode, a TSIG, or an OPT that is not the last record.
- **TTLs served** all equal the entry's remaining TTL (CoreDNS ``item.toMsg``): the stored
  bytes keep the offset of every TTL field, so a hit overwrites them without parsing.
  :meth:`Cache.put` returns the reply with its TTLs set to the entry's TTL already, so the first
  answer does not jump (1799 → 8) when the next one comes from the cache (CoreDNS does this).
- **A hit** is the stored reply with the query's ID, the query's question bytes (the client's
  case), RD and CD from the query, AD only when the query had DO or AD (RFC 6840 §5.7), and
  our own OPT record (1232 bytes, DO mirrored) when the query had one. The upstream's OPT is
  hop-by-hop and is not stored.
- **Serve stale** (RFC 8767): with ``serve_stale`` > 0, an expired success or denial entry
  (never a SERVFAIL) is still returned for that many seconds past its expiry, flagged stale.
  Stale answers carry TTL ``stale_ttl``, 30 s by default as RFC 8767 §4 recommends (CoreDNS
  uses 0; 30 s keeps NodeLocal DNSCache and other caches from re-asking us every query while
  the upstream is gone). The caller serves it and refreshes the entry (CoreDNS's
  ``serve_stale … immediate``); a SERVFAIL never displaces an entry that can still be served.
- **Eviction**: least recently used, per kind (CoreDNS evicts at random per shard). A dict in
  insertion order is the LRU list: a hit moves its key to the end, a full cache drops the first.
  Expired entries go when they are looked up or reach the front.

Counters for metrics (CoreDNS names): :attr:`Cache.hits` and :attr:`Cache.evictions` per kind,
:attr:`Cache.misses`, :attr:`Cache.served_stale`, :attr:`Cache.drops` (replies whose question
did not match), :meth:`Cache.entries` per kind. Not thread-safe: one event loop owns a cache.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from dnsserver.serve import wire
from zones.records import NOERROR, NXDOMAIN, OPT, SERVFAIL, SOA

SUCCESS = "success"
DENIAL = "denial"
KINDS = (SUCCESS, DENIAL)
DEFAULT_CAPACITY = 9984  # CoreDNS: 10000 over 256 shards
TSIG = 250
RFC8767_STALE_TTL = 30

_DO, _CD = 0x02, 0x01
_TC, _AA, _RD, _QR = 0x02, 0x04, 0x01, 0x80
_RA, _AD, _CD_FLAG = 0x80, 0x20, 0x10
_U32 = struct.Struct(">I")
_KEY_TAIL = struct.Struct(">HHB")


def key_for(name_lower: bytes, qtype: int, qclass: int, do: bool, cd: bool) -> bytes:
    """The key of a question: ``name_lower`` is the lower-cased wire name (ends in ``\\x00``)."""
    return name_lower + _KEY_TAIL.pack(qtype, qclass, (_DO if do else 0) | (_CD if cd else 0))


def cache_key(query: bytes) -> bytes | None:
    """The key of ``query``, or None when it is not a cacheable question (not a QUERY opcode,
    a response, not exactly one question, malformed)."""
    if len(query) < 17 or query[2] & 0xF8:  # QR set or an opcode other than QUERY
        return None
    question_end = _question_end(query)
    if question_end is None:
        return None
    name_end = question_end - 4
    qtype, qclass = struct.unpack_from(">HH", query, name_end)
    cd = bool(query[3] & _CD_FLAG)
    try:
        edns = _query_edns(query, question_end)
    except wire.FormError:
        return None
    do = edns is not None and edns.do
    return key_for(query[12:name_end].lower(), qtype, qclass, do, cd)


def _question_end(data: bytes) -> int | None:
    """Offset past QCLASS of a one-question message whose name has no pointer, else None."""
    if data[4:6] != b"\x00\x01":
        return None
    offset = 12
    try:
        length = data[offset]
        while length:
            if length > 63:
                return None
            offset += length + 1
            length = data[offset]
    except IndexError:
        return None
    end = offset + 5
    if end > len(data) or offset - 12 >= wire.MAX_NAME_LENGTH:
        return None
    return end


def _query_edns(query: bytes, question_end: int) -> wire.Edns | None:
    """The query's EDNS record; :class:`wire.FormError` when it is malformed past the question."""
    if query[6:12] == b"\x00\x00\x00\x00\x00\x00":
        return None
    if (
        query[6:11] == b"\x00\x00\x00\x00\x00" and query[11] == 1
        and query[question_end : question_end + 3] == b"\x00\x00\x29"
        and len(query) >= question_end + 11
    ):
        return wire.Edns(
            udp_size=query[question_end + 3] << 8 | query[question_end + 4],
            version=query[question_end + 6], do=bool(query[question_end + 7] & 0x80),
        )
    return wire.parse_query(query).edns


class _Entry:
    __slots__ = ("body", "counts", "flags", "kind", "servfail", "stored", "ttl", "ttl_offsets")

    def __init__(
        self, flags: bytes, counts: bytes, body: bytes, ttl_offsets: tuple[int, ...],
        stored: float, ttl: int, kind: str, servfail: bool,
    ) -> None:
        self.flags = flags  # the stored reply's two flag bytes
        self.counts = counts  # QD, AN, NS, AR without the OPT record
        self.body = body  # everything after the question, OPT removed
        self.ttl_offsets = ttl_offsets  # into body
        self.stored = stored
        self.ttl = ttl
        self.kind = kind
        self.servfail = servfail


class _Parsed:
    """What :meth:`Cache.put` needs to know about a reply, from one walk over its records."""

    __slots__ = ("ancount", "body_end", "min_ttl", "opt_extended_rcode", "soa_minimum",
                 "ttl_offsets")

    def __init__(self) -> None:
        self.ancount = 0
        self.body_end = 0  # where the OPT record starts (or the end of the message)
        self.min_ttl: int | None = None
        self.soa_minimum: int | None = None  # min over SOAs in authority of min(TTL, MINIMUM)
        self.opt_extended_rcode = 0
        self.ttl_offsets: list[int] = []


class _Uncacheable(Exception):
    """The reply is not one we store."""


def _walk(reply: bytes, question_end: int) -> _Parsed:
    ancount, nscount, arcount = struct.unpack_from(">HHH", reply, 6)
    parsed = _Parsed()
    parsed.ancount = ancount
    cursor = wire.Cursor(reply, question_end)
    total = ancount + nscount + arcount
    for index in range(total):
        start = cursor.offset
        owner = cursor.name(allow_pointers=True)
        rtype, _rclass = cursor.u16(), cursor.u16()
        ttl_offset = cursor.offset
        ttl: int = _U32.unpack(cursor.take(4))[0]
        rdata = cursor.take(cursor.u16())
        if rtype == OPT:
            if index != total - 1 or owner != b"\x00":
                raise _Uncacheable("OPT is not the last record")
            parsed.body_end = start
            parsed.opt_extended_rcode = ttl >> 24
            continue
        if rtype == TSIG:
            raise _Uncacheable("signed reply")
        if ttl & 0x80000000:
            ttl = 0  # RFC 2181 §8: a TTL with the top bit set is read as zero
        parsed.ttl_offsets.append(ttl_offset)
        parsed.min_ttl = ttl if parsed.min_ttl is None else min(parsed.min_ttl, ttl)
        if rtype == SOA and ancount <= index < ancount + nscount:
            if len(rdata) < 22:
                raise wire.FormError("SOA rdata too short")
            negative = min(ttl, _U32.unpack_from(rdata, len(rdata) - 4)[0])
            parsed.soa_minimum = (
                negative if parsed.soa_minimum is None else min(parsed.soa_minimum, negative)
            )
    if cursor.offset != len(reply):
        raise _Uncacheable("trailing bytes after the last record")
    if not parsed.body_end:
        parsed.body_end = len(reply)
    return parsed


class Cache:
    """Forwarded replies by :func:`cache_key`; see the module docstring for every rule."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        max_ttl: int = 3600,
        max_denial_ttl: int = 1800,
        min_ttl: int = 5,
        serve_stale: float = 0.0,
        servfail_ttl: int = 5,
        clock: Callable[[], float] = time.monotonic,
        *,
        min_denial_ttl: int | None = None,
        success: bool = True,
        denial: bool = True,
        success_capacity: int | None = None,
        denial_capacity: int | None = None,
        stale_ttl: int = RFC8767_STALE_TTL,
    ) -> None:
        self.max_ttl = max_ttl
        self.max_denial_ttl = max_denial_ttl
        self.min_ttl = min_ttl
        self.min_denial_ttl = min_ttl if min_denial_ttl is None else min_denial_ttl
        self.serve_stale = serve_stale
        self.servfail_ttl = servfail_ttl
        self.stale_ttl = stale_ttl
        self.clock = clock
        self.enabled = {SUCCESS: success, DENIAL: denial}
        self.capacity = {
            SUCCESS: capacity if success_capacity is None else success_capacity,
            DENIAL: capacity if denial_capacity is None else denial_capacity,
        }
        self._entries: dict[str, dict[bytes, _Entry]] = {SUCCESS: {}, DENIAL: {}}
        self.hits = {SUCCESS: 0, DENIAL: 0}
        self.evictions = {SUCCESS: 0, DENIAL: 0}
        self.misses = 0
        self.served_stale = 0
        self.drops = 0

    def entries(self, kind: str) -> int:
        return len(self._entries[kind])

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

    def clear(self) -> None:
        for entries in self._entries.values():
            entries.clear()

    # -- reading ----------------------------------------------------------------------------

    def get(self, key: bytes, query: bytes) -> bytes | None:
        """The cached reply for ``query`` (fresh or stale), or None."""
        hit = self.lookup(key, query)
        return None if hit is None else hit[0]

    def lookup(self, key: bytes, query: bytes) -> tuple[bytes, bool] | None:
        """``(reply, stale)`` for ``query`` whose key is ``key``, or None on a miss.

        ``stale`` True means the entry expired and is served within the serve-stale window:
        the caller should refresh it (forward the query and :meth:`put` the reply).
        """
        kind = SUCCESS
        entries = self._entries[SUCCESS]
        entry = entries.get(key)
        if entry is None:
            kind = DENIAL
            entries = self._entries[DENIAL]
            entry = entries.get(key)
            if entry is None:
                self.misses += 1
                return None
        age = self.clock() - entry.stored
        remaining = entry.ttl - int(age)
        stale = remaining <= 0
        if stale:
            if entry.servfail or age >= entry.ttl + self.serve_stale:
                del entries[key]
                self.misses += 1
                return None
            remaining = self.stale_ttl
            self.served_stale += 1
        else:
            self.hits[kind] += 1
        del entries[key]  # least recently used goes first: move this one to the end
        entries[key] = entry
        return self._reply(entry, key, query, remaining), stale

    def _reply(self, entry: _Entry, key: bytes, query: bytes, ttl: int) -> bytes:
        question_end = 11 + len(key)  # the key is the name + 5 bytes; the question name + 4
        stored0, stored1 = entry.flags
        ad = stored1 & _AD if (key[-1] & _DO or query[3] & _AD) else 0
        flags = bytes((
            _QR | (stored0 & _AA) | (query[2] & _RD),
            (stored1 & (_RA | 0x0F)) | ad | (query[3] & _CD_FLAG),
        ))
        body = entry.body
        if entry.ttl_offsets:
            buffer = bytearray(body)
            packed = _U32.pack(ttl)
            for offset in entry.ttl_offsets:
                buffer[offset : offset + 4] = packed
            body = bytes(buffer)
        edns = _query_edns(query, question_end)
        counts = entry.counts
        if edns is not None:
            arcount = (counts[6] << 8 | counts[7]) + 1
            counts = counts[:6] + arcount.to_bytes(2, "big")
            body += wire.OPT_RECORDS[edns.do]
        return b"".join((query[:2], flags, counts, query[12:question_end], body))

    # -- writing ----------------------------------------------------------------------------

    def put(self, key: bytes, reply: bytes) -> bytes:
        """Cache ``reply`` (an upstream's reply to a query with ``key``) if the rules allow.

        Returns the reply to send now: with every TTL set to the entry's TTL when it was cached,
        otherwise ``reply`` unchanged. Never raises on a malformed reply (it is not cached).
        """
        try:
            return self._put(key, reply)
        except (_Uncacheable, wire.FormError, IndexError, struct.error):
            return reply

    def _put(self, key: bytes, reply: bytes) -> bytes:
        if len(reply) < wire.HEADER_LENGTH or not reply[2] & _QR or reply[2] & (0x78 | _TC):
            return reply  # not a reply, not a QUERY, or truncated
        rcode = reply[3] & 0x0F
        if rcode not in (NOERROR, NXDOMAIN, SERVFAIL):
            return reply
        question_end = _question_end(reply)
        name_end = len(key) + 7  # 12 + the name's length (the key's length minus 5)
        if (
            question_end is None
            or question_end != name_end + 4
            or reply[12:name_end].lower() != key[:-5]
            or reply[name_end:question_end] != key[-5:-1]
        ):
            self.drops += 1
            return reply
        parsed = _walk(reply, question_end)
        if parsed.opt_extended_rcode:
            return reply
        servfail = rcode == SERVFAIL
        if servfail:
            kind, ttl = DENIAL, self.servfail_ttl
            if self._servable(key):
                return reply  # a failed refresh keeps the answer we still have
        elif rcode == NOERROR and parsed.ancount:
            kind = SUCCESS
            ttl = _clamp(parsed.min_ttl, self.min_ttl, self.max_ttl)
        elif parsed.soa_minimum is not None:
            kind = DENIAL
            negative = parsed.soa_minimum
            if parsed.min_ttl is not None:
                negative = min(negative, parsed.min_ttl)
            ttl = _clamp(negative, self.min_denial_ttl, self.max_denial_ttl)
        else:
            return reply  # NXDOMAIN or NODATA without an SOA
        if ttl <= 0 or not self.enabled[kind]:
            return reply
        ancount, nscount, arcount = struct.unpack_from(">HHH", reply, 6)
        if parsed.body_end != len(reply):
            arcount -= 1  # the OPT record, not stored
        entry = _Entry(
            flags=reply[2:4],
            counts=struct.pack(">HHHH", 1, ancount, nscount, arcount),
            body=reply[question_end : parsed.body_end],
            ttl_offsets=tuple(offset - question_end for offset in parsed.ttl_offsets),
            stored=self.clock(), ttl=ttl, kind=kind, servfail=servfail,
        )
        self._store(key, entry)
        if not parsed.ttl_offsets:
            return reply
        buffer = bytearray(reply)
        packed = _U32.pack(ttl)
        for offset in parsed.ttl_offsets:
            buffer[offset : offset + 4] = packed
        return bytes(buffer)

    def _servable(self, key: bytes) -> bool:
        """True when ``key`` holds a non-SERVFAIL entry that is fresh or still servable stale."""
        for entries in self._entries.values():
            entry = entries.get(key)
            if entry is not None and not entry.servfail:
                return self.clock() - entry.stored < entry.ttl + self.serve_stale
        return False

    def _store(self, key: bytes, entry: _Entry) -> None:
        for kind, entries in self._entries.items():
            if kind != entry.kind:
                entries.pop(key, None)
        entries = self._entries[entry.kind]
        if entries.pop(key, None) is None:
            capacity = self.capacity[entry.kind]
            if capacity <= 0:
                return
            while len(entries) >= capacity:
                del entries[next(iter(entries))]
                self.evictions[entry.kind] += 1
        entries[key] = entry


def _clamp(ttl: int | None, low: int, high: int) -> int:
    value = max(ttl or 0, low)
    return min(value, high)


__all__ = ["DENIAL", "KINDS", "SUCCESS", "Cache", "cache_key", "key_for"]
