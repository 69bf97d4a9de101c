"""CoreDNS's ``forward`` plugin: its options, their parser, and the routes that use them.

::

    forward FROM TO... {
        except IGNORED_NAMES...
        force_tcp
        prefer_udp
        expire DURATION                    # 10s
        max_fails INTEGER                  # 2; 0: never down
        max_connect_attempts INTEGER       # 0: no cap
        policy random|round_robin|sequential
        health_check DURATION [no_rec] [domain FQDN]   # 0.5s, RD set, "."
        max_concurrent MAX                 # 0: no limit
        next RCODE...
        failfast_all_unhealthy_upstreams
        failover RCODE...
    }

:func:`parse_forward` reads one directive into a :class:`ForwardConfig` (errors name the file
and line; ``tls`` and ``tls_servername`` are refused, options CoreDNS 1.14 added are unknown, as
in 1.13). TO is ``IP[:PORT]``, ``[V6]:PORT``, ``dns://…`` or a resolv.conf-style file; at most
15. What each option does to one exchange is :class:`~dnsserver.plugins.upstream.Forwarder`'s.

**Several forward lines in one server block** form a chain, in the Corefile's order, as in
CoreDNS: a name goes to the first whose FROM covers it and whose ``except`` does not (a name
equal to FROM is always taken); when that one's upstream answers with a ``next`` RCODE and
another forward line follows, the name goes on down the chain as if that one had not taken
it. A name no forward line takes gets SERVFAIL (CoreDNS: no next plugin). So a sub-zone must
come before its parent (``forward . A`` first takes every name, the sub-zone's too). Each
:class:`ForwardConfig` carries the lines before and after it in its block (``before``,
``after``); :func:`build` makes one :class:`~dnsserver.plugins.upstream.Forwarder` per line.

:class:`Forwarding` is what the handler calls for names outside the served zones (and NXDOMAINs
under ``fallthrough`` zones). A route is a FROM zone of the main block or a zone of a stub
block, found by longest suffix, with its block's chain and cache. The cache (CoreDNS's
``cache`` sits before ``forward``) answers names under its zones: a hit is answered
synchronously, like a zone answer; a miss, and anything the cache sends upstream again
(``prefetch``, ``serve_stale``), returns a coroutine that the transport runs. The cache only
ever holds forwarded replies: the cluster zone is always answered live (SPEC §7 #3). Queries
go upstream over the client's transport; prefetches and stale refreshes over TCP, as CoreDNS
sends them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dnslib
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dnsserver.config import resolvconf
from dnsserver.config.directives import (
    BadValue,
    Directive,
    ParseContext,
    Token,
    Unsupported,
    arity,
    duration,
    integer,
    options,
    zone_list,
    zones,
)
from dnsserver.config.resolvconf import Upstream
from dnsserver.config.settings import (
    RESOLV_CONF,
    ROOT_ZONE,
    ConfigError,
    format_host_port,
    is_upstream_file,
    normalize_zone,
    split_host_port,
)
from dnsserver.plugins.cache import Cache, CacheConfig, Hit, key_for
from dnsserver.plugins.chain import in_zone
from dnsserver.plugins.errors import ErrorLog
from dnsserver.plugins.upstream import (
    MAX_UPSTREAMS,
    Exchange,
    Forwarder,
    fit_udp,
    longest_suffix,
    points_at_us,
    response_rcode,
)
from dnsserver.serve import wire
from zones import names
from zones.records import NOERROR, NXDOMAIN, SERVFAIL

if TYPE_CHECKING:
    from dnsserver.config.settings import Config

log = logging.getLogger("dnsserver.forward")

Pending = Coroutine[Any, Any, bytes]

DEFAULT_PORT = 53
# miekg/dns's StringToRcode (CoreDNS reads ``next`` and ``failover`` with it), NOTIMPL its alias
RCODES = {
    "NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "NOTIMPL": 4,
    "REFUSED": 5, "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10,
    "DSOTYPENI": 11, "BADSIG": 16, "BADKEY": 17, "BADTIME": 18, "BADMODE": 19, "BADNAME": 20,
    "BADALG": 21, "BADTRUNC": 22, "BADCOOKIE": 23,
}
_OTHER_SCHEMES = ("tls://", "https://", "grpc://", "quic://", "h3://")


# -- options -------------------------------------------------------------------------------

class ForwardPolicy(StrEnum):
    """How ``forward`` orders its upstreams for a query (CoreDNS ``policy``)."""

    RANDOM = "random"
    ROUND_ROBIN = "round_robin"
    SEQUENTIAL = "sequential"


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """One ``forward FROM TO... { … }`` line.

    ``to`` holds ``HOST:PORT`` (IPv6 in brackets, port filled in) or the path of a
    resolv.conf-style file whose ``nameserver`` lines are the upstreams (read at start-up;
    ``/etc/resolv.conf`` is the node's, with ``dnsPolicy: Default``). Zones are in our spelling
    (lower case, no trailing dot, ``"."`` the root); rcodes are miekg/dns's names.
    """

    to: tuple[str, ...] = (RESOLV_CONF,)
    from_zone: str = ROOT_ZONE  # FROM: the names this line takes
    except_zones: tuple[str, ...] = ()  # names below FROM it leaves to the next line
    policy: ForwardPolicy = ForwardPolicy.RANDOM
    max_concurrent: int | None = None  # None: no limit; over the limit → REFUSED
    force_tcp: bool = False
    prefer_udp: bool = False
    max_fails: int = 2  # 0: never mark an upstream down
    max_connect_attempts: int = 0  # failed tries per query; 0: no cap
    health_check: float = 0.5
    health_check_recursion: bool = True  # False with ``health_check D no_rec``
    health_check_domain: str = ROOT_ZONE
    expire: float = 10.0  # idle upstream connections are closed after this long
    next_rcodes: tuple[str, ...] = ()  # these answers go to the next forward line instead
    failover_rcodes: tuple[str, ...] = ()  # these answers make it ask the next upstream
    failfast_all_unhealthy: bool = False  # every upstream down → SERVFAIL, none tried
    # the other forward lines of this one's server block, in order (CoreDNS chains them)
    before: tuple[ForwardConfig, ...] = ()
    after: tuple[ForwardConfig, ...] = ()

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """The literal upstreams as (host, port), files left out."""
        return tuple(split_host_port(t) for t in self.to if not is_upstream_file(t))

    @property
    def files(self) -> tuple[str, ...]:
        """The resolv.conf-style files among the upstreams."""
        return tuple(t for t in self.to if is_upstream_file(t))

    @property
    def alone(self) -> ForwardConfig:
        """This line without the others of its block."""
        return replace(self, before=(), after=()) if self.before or self.after else self

    @property
    def chain(self) -> tuple[ForwardConfig, ...]:
        """Every forward line of this one's block, in order, this one included."""
        return (*self.before, self.alone, *self.after)

    def shadowed_by(self) -> ForwardConfig | None:
        """An earlier line that takes every name this one could (so this one is never asked),
        or None. A ``next`` before it can still hand names on."""
        if any(line.next_rcodes for line in self.before):
            return None
        for line in self.before:
            if name_in(self.from_zone, line.from_zone) and not any(
                    name_in(zone, self.from_zone) or name_in(self.from_zone, zone)
                    for zone in line.except_zones):
                return line
        return None


def parse_forward(directive: Directive, context: ParseContext) -> ForwardConfig:
    """The options of a ``forward`` directive (CoreDNS 1.13's ``plugin/forward/setup.go``)."""
    what = "forward"
    args = arity(directive, what, 2, None)
    froms = zones(args[0], what)
    if len(froms) > 1:
        context.warn(args[0], f"{what}: {args[0].text!r} spans {len(froms)} reverse zones; "
                     f"only the first, {froms[0]!r}, is forwarded (as in CoreDNS)")
    targets = args[1:]
    if len(targets) > MAX_UPSTREAMS:
        raise BadValue.at(targets[MAX_UPSTREAMS], f"{what}: at most {MAX_UPSTREAMS} upstreams")
    config = ForwardConfig(to=tuple(_upstream(token) for token in targets), from_zone=froms[0])

    def flag(name: str) -> Callable[[Directive], None]:
        def handler(option: Directive) -> None:
            nonlocal config
            arity(option, f"{what} {option.name.text}", 0, 0)
            if name == "force_tcp":
                config = replace(config, force_tcp=True)
            elif name == "prefer_udp":
                config = replace(config, prefer_udp=True)
            else:
                config = replace(config, failfast_all_unhealthy=True)
        return handler

    def except_(option: Directive) -> None:
        nonlocal config
        names = arity(option, f"{what} except", 1, None)
        excepted = zone_list(names, f"{what} except")
        config = replace(config, except_zones=tuple(dict.fromkeys(
            (*config.except_zones, *excepted))))

    def expire(option: Directive) -> None:
        nonlocal config
        (value,) = arity(option, f"{what} expire", 1, 1)
        config = replace(config, expire=duration(value, f"{what} expire"))

    def max_fails(option: Directive) -> None:
        nonlocal config
        (value,) = arity(option, f"{what} max_fails", 1, 1)
        config = replace(config, max_fails=integer(value, f"{what} max_fails", 0, 2**32 - 1))

    def max_connect_attempts(option: Directive) -> None:
        nonlocal config
        (value,) = arity(option, f"{what} max_connect_attempts", 1, 1)
        config = replace(config, max_connect_attempts=integer(
            value, f"{what} max_connect_attempts", 0, 2**32 - 1))

    def max_concurrent(option: Directive) -> None:
        nonlocal config
        (value,) = arity(option, f"{what} max_concurrent", 1, 1)
        limit = integer(value, f"{what} max_concurrent", 0, None)
        config = replace(config, max_concurrent=limit or None)

    def policy(option: Directive) -> None:
        nonlocal config
        (value,) = arity(option, f"{what} policy", 1, 1)
        try:
            config = replace(config, policy=ForwardPolicy(value.text))
        except ValueError:
            raise BadValue.at(value, f"{what} policy: {value.text!r} is not one of random, "
                              "round_robin, sequential") from None

    def health_check(option: Directive) -> None:
        nonlocal config
        values = list(arity(option, f"{what} health_check", 1, None))
        interval = duration(values.pop(0), f"{what} health_check")
        # as in CoreDNS, each health_check line starts from the root domain; no_rec stays
        config = replace(config, health_check=interval, health_check_domain=ROOT_ZONE)
        while values:
            word = values.pop(0)
            if word.text == "no_rec":
                config = replace(config, health_check_recursion=False)
            elif word.text == "domain":
                if not values:
                    raise BadValue.at(word, f"{what} health_check: domain needs a name")
                config = replace(config, health_check_domain=_domain(
                    values.pop(0), f"{what} health_check domain"))
            else:
                raise BadValue.at(word, f"{what} health_check: expected 'no_rec' or "
                                  f"'domain FQDN', not {word.text!r}")

    def rcodes(option: Directive) -> None:
        nonlocal config
        name = option.name.text
        values = arity(option, f"{what} {name}", 1, None)
        found = []
        for token in values:
            text = token.text.upper()
            if text not in RCODES:
                raise BadValue.at(token, f"{what} {name}: {token.text!r} is not an rcode")
            if name == "failover" and RCODES[text] == NOERROR:
                raise BadValue.at(token, f"{what} failover: {token.text!r}: NOERROR cannot "
                                  "be used in failover")
            found.append(text)
        if name == "next":
            config = replace(config, next_rcodes=(*config.next_rcodes, *found))
        else:
            config = replace(config, failover_rcodes=(*config.failover_rcodes, *found))

    options(directive, context, what, {
        "except": except_, "force_tcp": flag("force_tcp"), "prefer_udp": flag("prefer_udp"),
        "expire": expire, "max_fails": max_fails, "max_connect_attempts": max_connect_attempts,
        "max_concurrent": max_concurrent, "policy": policy, "health_check": health_check,
        "next": rcodes, "failover": rcodes,
        "failfast_all_unhealthy_upstreams": flag("failfast_all_unhealthy"),
    }, unsupported=("tls", "tls_servername"))  # TLS upstreams are not supported
    return config


def _upstream(token: Token) -> str:
    """``IP``, ``IP:PORT``, ``[V6]:PORT``, ``dns://…`` → ``HOST:PORT``; a path stays a path."""
    text = token.text
    if text.lower().startswith(_OTHER_SCHEMES):
        raise Unsupported.at(token, f"forward: {text!r}: only plain DNS upstreams are supported")
    text = text.removeprefix("dns://")
    if is_upstream_file(text):
        return text
    bad = BadValue.at(token, f"forward: {token.text!r} is not an IP address, IP:PORT or file")
    try:
        host, port = split_host_port(text, default_port=DEFAULT_PORT)
        host = str(ipaddress.ip_address(host))
    except (ConfigError, ValueError):
        raise bad from None
    if port == 0:
        raise bad
    return format_host_port(host, port)


def _domain(token: Token, what: str) -> str:
    try:
        return normalize_zone(token.text)
    except ConfigError as exc:
        raise BadValue.at(token, f"{what}: {exc}") from None


def name_in(name: str, zone: str) -> bool:
    """Whether zone-spelled ``name`` is ``zone`` or below it."""
    return zone in (ROOT_ZONE, name) or name.endswith("." + zone)


# -- the routes ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Line:
    """One forward line at run time."""

    zone: bytes  # FROM, lower-case wire
    exceptions: tuple[bytes, ...]
    forwarder: Forwarder
    next_rcodes: frozenset[int]

    def takes(self, key: bytes) -> bool:
        """CoreDNS's ``match``: under FROM, and FROM itself or not excepted."""
        if not in_zone(key, self.zone):
            return False
        return key == self.zone or not any(in_zone(key, zone) for zone in self.exceptions)


@dataclass(slots=True)
class Route:
    """A zone's forward lines (its server block's, in order) and the cache in front of them."""

    zone: str
    lines: tuple[_Line, ...]
    cache: Cache | None = None
    cache_zones: tuple[bytes, ...] = (b"\x00",)
    forwarders: tuple[Forwarder, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.forwarders = tuple(line.forwarder for line in self.lines)

    def cached(self, key: bytes) -> Cache | None:
        """The cache for ``key``: None outside the cache's zones (CoreDNS passes them by)."""
        cache = self.cache
        if cache is None or not any(in_zone(key, zone) for zone in self.cache_zones):
            return None
        return cache


class Forwarding:
    """Routes (stub domains and "."), each with its forward lines and optional cache."""

    def __init__(self, routes: Sequence[Route], fallthrough: Sequence[str] = ()) -> None:
        self.routes = list(routes)
        self._by_zone = {names.to_wire(route.zone): route for route in routes}
        self._fallthrough = [names.to_wire(zone) for zone in fallthrough]
        self._refreshing: set[tuple[int, bytes]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors: ErrorLog | None = None  # the errors plugin, when the Corefile has it

    def _report(self, data: bytes, key: bytes, exchange: Exchange) -> None:
        assert self.errors is not None
        at = 12 + len(key)
        qtype = int.from_bytes(data[at : at + 2], "big")
        self.errors.report(exchange.reply[3] & 0x0F, names.from_wire(key) + ".",
                           dnslib.QTYPE.get(qtype), exchange.error)

    def serves(self, key: bytes) -> bool:
        """Whether a forward line takes ``key`` (lower-case wire name)."""
        route = longest_suffix(self._by_zone, key)
        return route is not None and any(line.takes(key) for line in route.lines)

    def falls_through(self, key: bytes) -> bool:
        """Whether an NXDOMAIN for ``key`` (lower-case wire name) goes upstream instead."""
        return any(key.endswith(zone) for zone in self._fallthrough)

    def answer(self, data: bytes, key: bytes, qtype: int, edns: wire.Edns | None,
               tcp: bool) -> bytes | Pending | None:
        """A cached reply, a coroutine for the upstream's, or None when no route serves ``key``.

        ``tcp``: the client asked over TCP (the reply's size limit, and the transport to the
        upstream unless ``force_tcp``/``prefer_udp`` say otherwise)."""
        route = longest_suffix(self._by_zone, key)
        if route is None:
            return None
        limit = wire.MAX_MESSAGE_SIZE if tcp else wire.udp_limit(edns.udp_size if edns else None)
        cache = route.cached(key)
        if cache is None:
            return self._forward(route, data, key, tcp, None, limit)
        cache_key = key_for(key, qtype, 1, bool(edns and edns.do), bool(data[3] & 0x10))
        hit = cache.lookup(cache_key, data)
        if hit is None:
            return self._forward(route, data, key, tcp, (cache, cache_key), limit)
        if hit.stale and cache.verify_stale:
            return self._verify(route, data, key, tcp, cache, cache_key, hit, limit)
        if hit.stale or hit.prefetch:
            self._refresh(route, data, key, cache, cache_key, hit)
        return fit_udp(hit.reply, limit)

    async def _walk(self, route: Route, data: bytes, key: bytes, tcp: bool) -> Exchange:
        """The reply of the first line that takes ``key``, going on past ``next`` rcodes."""
        lines = route.lines
        for index, line in enumerate(lines):
            if not line.takes(key):
                continue
            exchange = await line.forwarder.exchange(data, tcp=tcp)
            if (line.next_rcodes and index + 1 < len(lines) and exchange.upstream is not None
                    and response_rcode(exchange.reply) in line.next_rcodes):
                continue
            return exchange
        return Exchange(_servfail(data), None, "no next plugin found")  # as CoreDNS

    async def _forward(self, route: Route, data: bytes, key: bytes, tcp: bool,
                       cached: tuple[Cache, bytes] | None, limit: int) -> bytes:
        exchange = await self._walk(route, data, key, tcp)
        reply = exchange.reply
        if exchange.error and self.errors is not None:
            self._report(data, key, exchange)
        if exchange.upstream is not None and cached is not None:
            cache, cache_key = cached
            reply = cache.put(cache_key, reply, ad=bool(data[3] & 0x20))
        return fit_udp(reply, limit)

    async def _verify(self, route: Route, data: bytes, key: bytes, tcp: bool, cache: Cache,
                      cache_key: bytes, hit: Hit, limit: int) -> bytes:
        """serve_stale verify: the upstream's NOERROR or NXDOMAIN, else the stale entry."""
        exchange = await self._walk(route, data, key, tcp)
        if exchange.error and self.errors is not None:
            self._report(data, key, exchange)
        if exchange.upstream is not None and response_rcode(exchange.reply) in (NOERROR,
                                                                                 NXDOMAIN):
            return fit_udp(cache.put(cache_key, exchange.reply), limit)
        cache.served_stale += 1
        return fit_udp(hit.reply, limit)

    def _refresh(self, route: Route, data: bytes, key: bytes, cache: Cache, cache_key: bytes,
                 hit: Hit) -> None:
        """Prefetch or serve-stale: one background refresh per entry at a time."""
        pending = (id(cache), cache_key)
        if pending in self._refreshing:
            return
        self._refreshing.add(pending)

        async def refresh() -> None:
            try:
                exchange = await self._walk(route, data, key, True)
                if exchange.upstream is not None:
                    cache.put(cache_key, exchange.reply)
                cache.refreshed(cache_key, hit.popularity)
            finally:
                self._refreshing.discard(pending)

        task = asyncio.get_running_loop().create_task(refresh())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for forwarder in self.forwarders():
            await forwarder.close()

    def forwarders(self) -> list[Forwarder]:
        """Every forward line's Forwarder, each once."""
        return list({id(f): f for route in self.routes for f in route.forwarders}.values())

    def caches(self) -> list[tuple[Cache, tuple[bytes, ...]]]:
        """Every cache with its zones, each once."""
        found = {id(route.cache): (route.cache, route.cache_zones)
                 for route in self.routes if route.cache is not None}
        return [(cache, zones) for cache, zones in found.values() if cache is not None]

    def metrics(self) -> Iterator[Metric]:
        """CoreDNS's forward and cache families (SPEC §4.3)."""
        rejects = CounterMetricFamily("coredns_forward_max_concurrent_rejects",
                                      "Counter of the number of queries rejected because the "
                                      "concurrent queries were at maximum.")
        broken = CounterMetricFamily("coredns_forward_healthcheck_broken",
                                     "Counter of the number of complete failures of the "
                                     "healthchecks.")
        failures = CounterMetricFamily("coredns_proxy_healthcheck_failures",
                                       "Count of failed health checks per upstream.",
                                       labels=["proxy_name", "to"])
        entries = GaugeMetricFamily("coredns_cache_entries", "The number of elements in the cache.",
                                    labels=["server", "type", "zones", "view"])
        hits = CounterMetricFamily("coredns_cache_hits", "The count of cache hits.",
                                   labels=["server", "type", "zones", "view"])
        requests = CounterMetricFamily("coredns_cache_requests", "The count of cache requests.",
                                       labels=["server", "zones", "view"])
        evictions = CounterMetricFamily("coredns_cache_evictions", "The count of cache evictions.",
                                        labels=["server", "type", "zones", "view"])
        stale = CounterMetricFamily("coredns_cache_served_stale",
                                    "The number of requests served from stale cache entries.",
                                    labels=["server", "zones", "view"])
        prefetches = CounterMetricFamily("coredns_cache_prefetch",
                                         "The number of times the cache has prefetched a cached "
                                         "item.", labels=["server", "zones", "view"])
        forwarders = self.forwarders()
        rejects.add_metric([], sum(forwarder.rejected for forwarder in forwarders))
        broken.add_metric([], sum(forwarder.healthcheck_broken for forwarder in forwarders))
        for forwarder in forwarders:
            for state in forwarder.states:
                failures.add_metric(["forward", str(state.upstream)], state.health_check_failures)
        for cache, cache_zones in self.caches():
            label = ",".join(_dotted(zone) for zone in cache_zones)
            for kind in ("success", "denial"):
                entries.add_metric(["", kind, label, ""], cache.entries(kind))
                hits.add_metric(["", kind, label, ""], cache.hits[kind])
                evictions.add_metric(["", kind, label, ""], cache.evictions[kind])
            requests.add_metric(["", label, ""], sum(cache.hits.values()) + cache.misses)
            stale.add_metric(["", label, ""], cache.served_stale)
            prefetches.add_metric(["", label, ""], cache.prefetches)
        yield from (rejects, broken, failures, entries, hits, requests, evictions, stale,
                    prefetches)


def _servfail(data: bytes) -> bytes:
    try:
        return wire.error_reply(data, wire.parse_query(data), SERVFAIL)
    except wire.FormError:
        return wire.header_only(data, SERVFAIL)


def _dotted(zone: bytes) -> str:
    """A wire zone as CoreDNS labels it: ``example.org.``, ``.`` the root."""
    labels = []
    offset = 0
    while zone[offset]:
        length = zone[offset]
        labels.append(zone[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += length + 1
    return ".".join(labels) + "." if labels else "."


# -- from the configuration ----------------------------------------------------------------

def build(config: Config, listen: Sequence[tuple[str, int]]) -> Forwarding | None:
    """The forwarding of ``config``, refusing upstreams that are this server itself."""
    specs: list[tuple[str, ForwardConfig, CacheConfig | None]] = [
        (stub.zone, stub.forward, stub.cache) for stub in config.stub_domains
    ]
    if config.forward is not None:
        specs.append((ROOT_ZONE, config.forward, config.cache))
    lines: dict[ForwardConfig, _Line | None] = {}  # one Forwarder per forward line
    caches: dict[int, Cache] = {}  # one Cache per cache directive
    routes = []
    for zone, forward, cache_config in specs:
        chain = []
        for member in forward.chain:
            if member not in lines:
                lines[member] = _line(member, listen)
            line = lines[member]
            if line is not None:
                chain.append(line)
        if not chain:
            log.error("forward %s: no usable upstream; names there are answered REFUSED", zone)
            continue
        cache = None
        cache_zones: tuple[bytes, ...] = (b"\x00",)
        if cache_config is not None:
            cache = caches.setdefault(id(cache_config), Cache.from_config(cache_config))
            cache_zones = tuple(names.to_wire(zone) for zone in cache_config.zones)
        routes.append(Route(zone, tuple(chain), cache, cache_zones))
    if not routes:
        return None
    fallthrough = (config.fallthrough_zones or (ROOT_ZONE,)) if config.fallthrough else ()
    return Forwarding(routes, fallthrough)


def _line(config: ForwardConfig, listen: Sequence[tuple[str, int]]) -> _Line | None:
    zone = config.from_zone
    upstreams = _upstreams(config)
    loops = points_at_us(upstreams, listen)
    if loops:
        log.error("forward %s: refusing %s: it is this server's own address, every query "
                  "would loop back to us (systemd-resolved's 127.0.0.53 in resolv.conf is "
                  "the usual cause)", zone, ", ".join(map(str, loops)))
        upstreams = [u for u in upstreams if u not in loops]
    if not upstreams:
        return None
    forwarder = Forwarder(
        upstreams, policy=str(config.policy), max_concurrent=config.max_concurrent,
        max_fails=config.max_fails, max_connect_attempts=config.max_connect_attempts,
        health_check_interval=config.health_check,
        health_check_domain=config.health_check_domain,
        health_check_recursion=config.health_check_recursion,
        force_tcp=config.force_tcp, prefer_udp=config.prefer_udp, expire=config.expire,
        failover_rcodes=[RCODES[name] for name in config.failover_rcodes],
        failfast_all_unhealthy=config.failfast_all_unhealthy,
    )
    return _Line(names.to_wire(zone), tuple(names.to_wire(z) for z in config.except_zones),
                 forwarder, frozenset(RCODES[name] for name in config.next_rcodes))


def _upstreams(forward: ForwardConfig) -> list[Upstream]:
    upstreams: list[Upstream] = []
    for target in forward.to:
        if is_upstream_file(target):
            try:
                choice = resolvconf.systemd_resolved_fallback(Path(target))
            except OSError as exc:
                log.error("forward: cannot read %s: %s", target, exc.strerror)
                continue
            if choice.note:
                log.warning("forward: %s", choice.note)
            upstreams.extend(choice.conf.nameservers)
        else:
            upstreams.append(resolvconf.parse_upstream(target))
    return list(dict.fromkeys(upstreams))
