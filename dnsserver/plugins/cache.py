"""CoreDNS's ``cache`` plugin: its options, their parser, and the cache of forwarded replies.

::

    cache [TTL] [ZONES...] {
        success CAPACITY [TTL [MINTTL]]     # 10000 3600 5
        denial CAPACITY [TTL [MINTTL]]      # 10000 1800 5
        prefetch AMOUNT [DURATION [PERCENTAGE%]]   # off; 1m 10%
        serve_stale [DURATION [immediate|verify]]  # off; 1h immediate
        servfail DURATION                   # 5s; at most 5m, 0 caches none
        disable success|denial [ZONES...]   # ZONES: the root by default
        keepttl
    }

:func:`parse_cache` reads the directive into a :class:`CacheConfig` (errors name the file and
line; options CoreDNS 1.14 added are unknown here, as in 1.13). TTL caps both halves; ZONES (the
server block's by default) are the names the cache speaks for: other names pass it by, their
replies untouched. :class:`Cache` holds the replies the forwarder got, kept as bytes; the cluster
zone is never cached (its answers are precomputed and always current, SPEC §4.6).
:mod:`dnsserver.plugins.forward` asks it first and stores what the upstreams answer::

    key = key_for(name_lower, qtype, 1, do, cd)   # from the query the handler parsed
    hit = cache.lookup(key, query)        # Hit(reply, stale, prefetch, popularity) or None
    reply = cache.put(key, upstream_reply, ad=query_ad)  # what to send: TTLs set the cache's way
    cache.refreshed(key, hit.popularity)  # after a prefetch or stale refresh stored its answer

Rules, as CoreDNS 1.13 has them (``plugin/cache``, ``plugin/pkg/response/typify.go``,
``plugin/pkg/dnsutil/ttl.go``):

- **Key**: the lower-cased question name, qtype, qclass, the DO bit and the CD bit
  (:func:`key_for`). EDNS presence and buffer size are not part of it: the caller truncates
  for UDP clients like for any forwarded reply.
- **Kinds**: a reply is *success* (NOERROR with answers; a delegation; NOERROR with neither
  answers nor an SOA) or *denial* (NXDOMAIN or NOERROR with an SOA in the authority section:
  NXDOMAIN/NODATA; SERVFAIL and NOTIMP, for ``servfail`` seconds). Anything else (REFUSED,
  NXDOMAIN without an SOA …), a truncated reply, NOTIFY/UPDATE and zone transfers are never
  stored. Each kind has its own capacity; ``disable KIND ZONES`` stores none of that kind for
  names in ZONES.
- **TTL** of an entry: the smallest TTL of every record (answer, authority, additional; OPT
  aside), never above 3600, 5 for a reply without records; then at least ``min_ttl`` and at
  most ``max_ttl`` of its kind. Every reply that passes the cache, stored or not, leaves with
  all its TTLs set to that one value (CoreDNS does this so the next answer, from the cache,
  does not jump from 1799 to 8), and with AD cleared unless the client set DO or AD.
- **A hit** is the stored reply with the query's ID, question bytes (the client's case), RD
  and CD; AA set (CoreDNS sets it on every cached answer); AD only when the query had DO or AD
  (RFC 6840 §5.7); our OPT record (1232 bytes, DO mirrored) when the query had one (the
  upstream's OPT is hop-by-hop, never stored). Every TTL is the entry's remaining time, or with
  ``keepttl`` the TTL it was stored with. Stored bytes keep the offset of each TTL field, so a
  hit writes them without parsing.
- **prefetch AMOUNT DURATION PERCENTAGE%**: each hit on a fresh entry counts, the count
  starting again at 1 after a pause of more than DURATION; once it reaches AMOUNT while at most
  ceil(PERCENTAGE% of the entry's TTL) seconds are left, the hit says ``prefetch``: the caller
  answers from the cache and asks upstream again in the background, and the new entry keeps
  the count (:meth:`Cache.refreshed`).
- **serve_stale DURATION**: an expired entry stays servable for DURATION: with ``immediate``
  the hit is stale (TTL 0) and the caller refreshes it in the background; with ``verify``
  (:attr:`Cache.verify_stale`) the caller asks upstream first and serves the stale entry only
  when the answer is not NOERROR or NXDOMAIN. Unlike CoreDNS, a SERVFAIL is never served stale
  and never displaces an entry that can still be served (CoreDNS would serve that SERVFAIL
  instead of the good stale answer: the opposite of what serve-stale is for, RFC 8767).
- **Eviction**: least recently used, per kind (CoreDNS evicts at random among 256 shards of
  max(CAPACITY/256, 4) entries; :meth:`Cache.from_config` gives the same room). A dict in
  insertion order is the LRU list: a hit moves its key to the end, a full cache drops the first.

Counters for metrics (CoreDNS names): :attr:`Cache.hits` and :attr:`Cache.evictions` per kind,
:attr:`Cache.misses`, :attr:`Cache.served_stale`, :attr:`Cache.prefetches`, :attr:`Cache.drops`
(replies whose question did not match), :meth:`Cache.entries` per kind. Not thread-safe: one
event loop owns a cache.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

from dnsserver.config.directives import (
    BadValue,
    Directive,
    ParseContext,
    Token,
    arity,
    duration,
    integer,
    options,
    zone_list,
)
from dnsserver.config.settings import ROOT_ZONE, ConfigError, normalize_zone
from dnsserver.plugins.chain import in_zone
from dnsserver.serve import wire
from zones import names
from zones.records import AXFR, IXFR, NOERROR, NOTIMP, NS, NXDOMAIN, OPT, SERVFAIL, SOA

SUCCESS = "success"
DENIAL = "denial"
KINDS = (SUCCESS, DENIAL)
DEFAULT_CAPACITY = 9984  # CoreDNS: 10000 over 256 shards
MAX_SERVFAIL_TTL = 300.0  # RFC 2308 §7.1
MAX_MESSAGE_TTL = 3600  # CoreDNS's ceiling on any entry (dnsutil.MaximumDefaultTTL)
NO_RECORDS_TTL = 5  # CoreDNS's TTL for a reply without records (dnsutil.MinimalDefaultTTL)
TSIG = 250

_DO, _CD = 0x02, 0x01
_TC, _AA, _RD, _QR = 0x02, 0x04, 0x01, 0x80
_RA, _AD, _CD_FLAG = 0x80, 0x20, 0x10
_NOTIFY, _UPDATE = 4, 5
_U32 = struct.Struct(">I")
_KEY_TAIL = struct.Struct(">HHB")


# -- options -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CacheLimits:
    """One of the cache's two halves: capacity (entries) and TTL bounds (seconds)."""

    capacity: int
    max_ttl: int
    min_ttl: int = 5


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """CoreDNS ``cache``. Zones are in our spelling (lower case, no dot, ``"."`` the root)."""

    zones: tuple[str, ...] = (ROOT_ZONE,)
    success: CacheLimits = CacheLimits(10000, 3600)
    denial: CacheLimits = CacheLimits(10000, 1800)
    servfail_ttl: float = 5.0  # 0: SERVFAIL is not cached
    serve_stale: float | None = None  # serve expired entries this long after expiry
    serve_stale_verify: bool = False  # ask upstream before serving stale (``verify``)
    disable_success: tuple[str, ...] = ()  # zones whose positive answers are never cached
    disable_denial: tuple[str, ...] = ()  # zones whose negative answers are never cached
    keep_ttl: bool = False  # serve the stored TTL instead of counting down
    prefetch: int = 0  # AMOUNT of hits that make an entry popular; 0: no prefetch
    prefetch_window: float = 60.0  # DURATION: a longer pause between hits starts counting anew
    prefetch_percentage: int = 10  # refresh when this much of the entry's TTL is left


def parse_cache(directive: Directive, context: ParseContext) -> CacheConfig:
    """The options of a ``cache`` directive (CoreDNS 1.13's ``plugin/cache/setup.go``)."""
    what = "cache"
    args = directive.args
    config = CacheConfig()
    if args and args[0].text.lstrip("+-").isdigit():  # a number first is the TTL, not a zone
        cap = _signed(args[0], f"{what} TTL", 1)
        config = replace(config, success=replace(config.success, max_ttl=cap),
                         denial=replace(config.denial, max_ttl=cap))
        args = args[1:]
    config = replace(config, zones=zone_list(args, what) or context.zones)

    def limits(kind: str) -> Callable[[Directive], None]:
        def handler(option: Directive) -> None:
            nonlocal config
            values = arity(option, f"{what} {kind}", 1, 3)
            current = config.success if kind == SUCCESS else config.denial
            capacity = integer(values[0], f"{what} {kind} capacity", 0, None)
            max_ttl = (_signed(values[1], f"{what} {kind} TTL", 1) if len(values) > 1
                       else current.max_ttl)
            min_ttl = (_signed(values[2], f"{what} {kind} MINTTL", 0) if len(values) > 2
                       else current.min_ttl)
            if kind == SUCCESS:
                config = replace(config, success=CacheLimits(capacity, max_ttl, min_ttl))
            else:
                config = replace(config, denial=CacheLimits(capacity, max_ttl, min_ttl))
        return handler

    def prefetch(option: Directive) -> None:
        nonlocal config
        values = arity(option, f"{what} prefetch", 1, 3)
        amount = integer(values[0], f"{what} prefetch amount", 0, None)
        window = duration(values[1], f"{what} prefetch") if len(values) > 1 else 60.0
        percentage = config.prefetch_percentage
        if len(values) > 2:
            text = values[2].text
            if not text.endswith("%"):
                raise BadValue.at(values[2], f"{what} prefetch: the percentage must end in '%', "
                                  f"not {text!r}")
            percentage = integer(replace(values[2], text=text[:-1]), f"{what} prefetch "
                                 "percentage", 10, 90)
        config = replace(config, prefetch=amount, prefetch_window=window,
                         prefetch_percentage=percentage)

    def serve_stale(option: Directive) -> None:
        nonlocal config
        values = arity(option, f"{what} serve_stale", 0, 2)
        window = duration(values[0], f"{what} serve_stale") if values else 3600.0
        verify = False
        if len(values) > 1:
            mode = values[1].text.lower()
            if mode not in ("immediate", "verify"):
                raise BadValue.at(values[1], f"{what} serve_stale: {values[1].text!r} is not "
                                  "immediate or verify")
            verify = mode == "verify"
        config = replace(config, serve_stale=window, serve_stale_verify=verify)

    def servfail(option: Directive) -> None:
        nonlocal config
        (value,) = arity(option, f"{what} servfail", 1, 1)
        seconds = duration(value, f"{what} servfail")
        if seconds > MAX_SERVFAIL_TTL:
            raise BadValue.at(value, f"{what} servfail: at most 5m (RFC 2308)")
        config = replace(config, servfail_ttl=seconds)

    def disable(option: Directive) -> None:
        nonlocal config
        values = arity(option, f"{what} disable", 1, None)
        kind = values[0].text
        if kind not in KINDS:
            raise BadValue.at(values[0], f"{what} disable: expected success or denial, not "
                              f"{kind!r}")
        zones = tuple(dict.fromkeys(_zone(token, f"{what} disable") for token in values[1:]))
        zones = zones or (ROOT_ZONE,)
        # a second line for the same kind replaces the first, as in CoreDNS
        if kind == SUCCESS:
            config = replace(config, disable_success=zones)
        else:
            config = replace(config, disable_denial=zones)

    def keepttl(option: Directive) -> None:
        nonlocal config
        arity(option, f"{what} keepttl", 0, 0)
        config = replace(config, keep_ttl=True)

    options(directive, context, what, {
        "success": limits(SUCCESS), "denial": limits(DENIAL), "prefetch": prefetch,
        "serve_stale": serve_stale, "servfail": servfail, "disable": disable,
        "keepttl": keepttl,
    })
    return config


def _signed(token: Token, what: str, low: int) -> int:
    """A whole number that may carry a sign (CoreDNS reads these with Atoi), at least ``low``."""
    text = token.text.removeprefix("+")
    digits = text.removeprefix("-")
    if not digits.isdigit():
        raise BadValue.at(token, f"{what}: {token.text!r} is not a whole number")
    value = int(text)
    if value < low:
        raise BadValue.at(token, f"{what}: {value} is out of range (at least {low})")
    return value


def _zone(token: Token, what: str) -> str:
    """A plain zone name (``disable`` takes names as they are: no port, no CIDR)."""
    try:
        return normalize_zone(token.text)
    except ConfigError as exc:
        raise BadValue.at(token, f"{what}: {exc}") from None


# -- keys ----------------------------------------------------------------------------------

def key_for(name_lower: bytes, qtype: int, qclass: int, do: bool, cd: bool) -> bytes:
    """The key of a question: ``name_lower`` is the lower-cased wire name (ends in ``\\x00``)."""
    return name_lower + _KEY_TAIL.pack(qtype, qclass, (_DO if do else 0) | (_CD if cd else 0))


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


# -- a reply, read once --------------------------------------------------------------------

class _Entry:
    __slots__ = ("body", "counts", "flags", "hits", "kind", "last_hit", "servfail", "stored",
                 "ttl", "ttl_offsets")

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
        self.hits = 0  # prefetch: hits in the current run (none yet)
        self.last_hit = -math.inf


class _Parsed:
    """What :meth:`Cache.put` needs to know about a reply, from one walk over its records."""

    __slots__ = ("ancount", "body_end", "delegation", "min_ttl", "opt_extended_rcode", "soa",
                 "ttl_offsets")

    def __init__(self) -> None:
        self.ancount = 0
        self.body_end = 0  # where the OPT record starts (or the end of the message)
        self.min_ttl: int | None = None  # over every record but OPT; None: no records
        self.soa = False  # an SOA in the authority section
        self.delegation = False  # an NS in the authority section
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
        cursor.take(cursor.u16())
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
        if ancount <= index < ancount + nscount:
            parsed.soa |= rtype == SOA
            parsed.delegation |= rtype == NS
    if cursor.offset != len(reply):
        raise _Uncacheable("trailing bytes after the last record")
    if not parsed.body_end:
        parsed.body_end = len(reply)
    return parsed


class Hit(NamedTuple):
    """A cached reply for a query, and what the caller should do besides sending it."""

    reply: bytes
    stale: bool  # expired, served within serve_stale: refresh it (or, verify: ask first)
    prefetch: bool  # popular and near its end: refresh it in the background
    popularity: tuple[int, float]  # (hits, when): what the refreshed entry carries on


# -- the cache -----------------------------------------------------------------------------

class Cache:
    """Forwarded replies by :func:`key_for`; see the module docstring for every rule."""

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
        stale_ttl: int = 0,
        verify_stale: bool = False,
        keep_ttl: bool = False,
        disable_success: tuple[bytes, ...] = (),
        disable_denial: tuple[bytes, ...] = (),
        prefetch: int = 0,
        prefetch_window: float = 60.0,
        prefetch_percentage: int = 10,
    ) -> None:
        self.max_ttl = max_ttl
        self.max_denial_ttl = max_denial_ttl
        self.min_ttl = min_ttl
        self.min_denial_ttl = min_ttl if min_denial_ttl is None else min_denial_ttl
        self.serve_stale = serve_stale
        self.verify_stale = verify_stale
        self.servfail_ttl = servfail_ttl
        self.stale_ttl = stale_ttl  # CoreDNS serves stale answers with TTL 0
        self.keep_ttl = keep_ttl
        self.prefetch = prefetch
        self.prefetch_window = prefetch_window
        self.prefetch_percentage = prefetch_percentage
        self.clock = clock
        self.enabled = {SUCCESS: success, DENIAL: denial}
        self.disabled_zones = {SUCCESS: disable_success, DENIAL: disable_denial}  # wire zones
        self.capacity = {
            SUCCESS: capacity if success_capacity is None else success_capacity,
            DENIAL: capacity if denial_capacity is None else denial_capacity,
        }
        self._entries: dict[str, dict[bytes, _Entry]] = {SUCCESS: {}, DENIAL: {}}
        self.hits = {SUCCESS: 0, DENIAL: 0}
        self.evictions = {SUCCESS: 0, DENIAL: 0}
        self.misses = 0
        self.served_stale = 0
        self.prefetches = 0
        self.drops = 0

    @classmethod
    def from_config(cls, config: CacheConfig, clock: Callable[[], float] = time.monotonic,
                    ) -> Cache:
        return cls(
            max_ttl=config.success.max_ttl, max_denial_ttl=config.denial.max_ttl,
            min_ttl=config.success.min_ttl, min_denial_ttl=config.denial.min_ttl,
            serve_stale=config.serve_stale or 0.0, verify_stale=config.serve_stale_verify,
            servfail_ttl=int(config.servfail_ttl), clock=clock,
            success_capacity=_room(config.success.capacity),
            denial_capacity=_room(config.denial.capacity),
            keep_ttl=config.keep_ttl,
            disable_success=tuple(names.to_wire(zone) for zone in config.disable_success),
            disable_denial=tuple(names.to_wire(zone) for zone in config.disable_denial),
            prefetch=config.prefetch, prefetch_window=config.prefetch_window,
            prefetch_percentage=config.prefetch_percentage,
        )

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
        return None if hit is None else hit.reply

    def lookup(self, key: bytes, query: bytes) -> Hit | None:
        """The :class:`Hit` for ``query`` whose key is ``key``, or None on a miss."""
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
        now = self.clock()
        age = now - entry.stored
        remaining = entry.ttl - int(age)
        stale = remaining <= 0
        prefetch = False
        if stale:
            if entry.servfail or age >= entry.ttl + self.serve_stale:
                del entries[key]
                self.misses += 1
                return None
            popularity = (entry.hits, entry.stored + entry.ttl)  # CoreDNS: the moment TTL hit 0
            remaining = self.stale_ttl
            if not self.verify_stale:  # verify: counted when it is served after all
                self.served_stale += 1
        else:
            if self.prefetch > 0:
                prefetch = self._popular(entry, now, remaining)
            popularity = (entry.hits, now)
        self.hits[kind] += 1
        del entries[key]  # least recently used goes first: move this one to the end
        entries[key] = entry
        ttl = entry.ttl if self.keep_ttl else remaining
        return Hit(self._reply(entry, key, query, ttl), stale, prefetch, popularity)

    def _popular(self, entry: _Entry, now: float, remaining: int) -> bool:
        """Count a hit (CoreDNS ``freq``); True when it is time to prefetch the entry."""
        if entry.last_hit < now - self.prefetch_window:
            entry.hits = 1
        else:
            entry.hits += 1
        entry.last_hit = now
        threshold = math.ceil(self.prefetch_percentage / 100 * entry.ttl)  # float as in Go
        return entry.hits >= self.prefetch and remaining <= threshold

    def refreshed(self, key: bytes, popularity: tuple[int, float]) -> None:
        """After a prefetch or stale refresh: the entry now under ``key`` (new, or the old one
        if nothing new was stored) carries on the hits counted before."""
        self.prefetches += 1
        for entries in self._entries.values():
            entry = entries.get(key)
            if entry is not None:
                entry.hits, entry.last_hit = popularity
                return

    def _reply(self, entry: _Entry, key: bytes, query: bytes, ttl: int) -> bytes:
        question_end = 11 + len(key)  # the key is the name + 5 bytes; the question name + 4
        stored1 = entry.flags[1]
        ad = stored1 & _AD if (key[-1] & _DO or query[3] & _AD) else 0
        flags = bytes((
            _QR | _AA | (query[2] & _RD),
            (stored1 & (_RA | 0x0F)) | ad | (query[3] & _CD_FLAG),
        ))
        body = entry.body
        if entry.ttl_offsets:
            buffer = bytearray(body)
            packed = _U32.pack(max(ttl, 0))
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

    def put(self, key: bytes, reply: bytes, *, ad: bool = False) -> bytes:
        """Cache ``reply`` (an upstream's reply to a query with ``key``) if the rules allow.

        Returns the reply to send: every TTL set to the entry's TTL, AD cleared unless the
        query had DO or (``ad``) AD; a reply it cannot read goes back unchanged. Never raises.
        """
        try:
            return self._put(key, reply, ad)
        except (_Uncacheable, wire.FormError, IndexError, struct.error):
            return reply

    def _put(self, key: bytes, reply: bytes, ad: bool) -> bytes:
        if len(reply) < wire.HEADER_LENGTH or not reply[2] & _QR:
            return reply
        question_end = _question_end(reply)
        if question_end is None:
            return reply
        parsed = _walk(reply, question_end)
        rcode = (reply[3] & 0x0F) | parsed.opt_extended_rcode << 4
        kind, ttl = self._classify(reply, question_end, rcode, parsed)
        buffer = bytearray(reply)
        packed = _U32.pack(max(ttl, 0))
        for offset in parsed.ttl_offsets:
            buffer[offset : offset + 4] = packed
        if not (key[-1] & _DO or ad):
            buffer[3] &= ~_AD & 0xFF  # who did not ask for DNSSEC cannot have it validated
        sent = bytes(buffer)
        if kind is None or ttl <= 0 or reply[2] & _TC:
            return sent
        name_end = len(key) + 7  # 12 + the name's length (the key's length minus 5)
        if (
            question_end != name_end + 4
            or reply[12:name_end].lower() != key[:-5]
            or reply[name_end:question_end] != key[-5:-1]
        ):
            self.drops += 1
            return sent
        servfail = rcode in (SERVFAIL, NOTIMP)
        if servfail and self._servable(key):
            return sent  # a failed refresh keeps the answer we still have
        if not self.enabled[kind] or any(in_zone(key[:-5], zone)
                                         for zone in self.disabled_zones[kind]):
            return sent
        ancount, nscount, arcount = struct.unpack_from(">HHH", sent, 6)
        if parsed.body_end != len(sent):
            arcount -= 1  # the OPT record, not stored
        entry = _Entry(
            flags=sent[2:4],
            counts=struct.pack(">HHHH", 1, ancount, nscount, arcount),
            body=sent[question_end : parsed.body_end],
            ttl_offsets=tuple(offset - question_end for offset in parsed.ttl_offsets),
            stored=self.clock(), ttl=ttl, kind=kind, servfail=servfail,
        )
        self._store(key, entry)
        return sent

    def _classify(self, reply: bytes, question_end: int, rcode: int,
                  parsed: _Parsed) -> tuple[str | None, int]:
        """The kind a reply is stored as (None: never stored) and its TTL (CoreDNS's
        ``response.Typify``, ``dnsutil.MinimalTTL`` and ``computeTTL``)."""
        opcode = (reply[2] >> 3) & 0x0F
        qtype = reply[question_end - 4] << 8 | reply[question_end - 3]
        fixed = _clamp(NO_RECORDS_TTL, self.min_ttl, self.max_ttl)  # types not read for TTLs
        if opcode in (_NOTIFY, _UPDATE) or qtype in (AXFR, IXFR):
            return None, fixed
        if rcode == NOERROR and parsed.ancount:
            return SUCCESS, self._ttl(parsed, self.min_ttl, self.max_ttl)
        if parsed.soa and rcode in (NOERROR, NXDOMAIN):
            return DENIAL, self._ttl(parsed, self.min_denial_ttl, self.max_denial_ttl)
        if rcode in (SERVFAIL, NOTIMP):
            return DENIAL, self.servfail_ttl
        if rcode == NOERROR and parsed.delegation:
            return SUCCESS, fixed
        if rcode == NOERROR:  # neither answers nor an SOA: CoreDNS takes it as a success
            return SUCCESS, self._ttl(parsed, self.min_ttl, self.max_ttl)
        return None, fixed

    @staticmethod
    def _ttl(parsed: _Parsed, low: int, high: int) -> int:
        if parsed.min_ttl is None:
            message_ttl = NO_RECORDS_TTL
        else:
            message_ttl = min(parsed.min_ttl, MAX_MESSAGE_TTL)
        return _clamp(message_ttl, low, high)

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


def _clamp(ttl: int, low: int, high: int) -> int:
    return min(max(ttl, low), high)


def _room(capacity: int) -> int:
    """How many entries CoreDNS keeps for a CAPACITY: 256 shards of max(CAPACITY/256, 4)."""
    return max(capacity // 256, 4) * 256


__all__ = ["DENIAL", "KINDS", "SUCCESS", "Cache", "CacheConfig", "CacheLimits", "Hit",
           "key_for", "parse_cache"]
