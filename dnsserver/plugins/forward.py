"""Names outside the served zones: the cache, then the upstream (CoreDNS ``cache`` + ``forward``).

Built from the configuration by :func:`build`; used by :class:`~dnsserver.serve.handler.Handler`
for queries the zone does not answer (and NXDOMAINs under ``fallthrough`` zones). A cache hit is
answered synchronously, like a zone answer; a miss returns a coroutine that the transport runs
and answers when the upstream replies. The cache only ever holds forwarded replies: the cluster
zone is always answered live (SPEC §7 #3).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dnsserver.config import resolvconf
from dnsserver.config.resolvconf import Upstream
from dnsserver.config.settings import CacheConfig, Config, ForwardConfig
from dnsserver.plugins.cache import Cache, key_for
from dnsserver.plugins.upstream import Forwarder, ForwardRouter, fit_udp, points_at_us, zone_to_wire
from dnsserver.serve import wire

log = logging.getLogger("dnsserver.forward")

Pending = Coroutine[Any, Any, bytes]


@dataclass(slots=True)
class Route:
    zone: str
    forwarder: Forwarder
    cache: Cache | None


class Forwarding:
    """Routes (stub domains and "."), each with its forwarder and optional cache."""

    def __init__(self, routes: Sequence[Route], fallthrough: Sequence[str] = ()) -> None:
        self.routes = list(routes)
        self._by_zone = {route.zone: route for route in routes}
        self._router = ForwardRouter({route.zone: route.forwarder for route in routes})
        self._route_of = {id(route.forwarder): route for route in routes}
        self._fallthrough = [zone_to_wire(zone) for zone in fallthrough]
        self._refreshing: set[bytes] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def serves(self, key: bytes) -> bool:
        """Whether a route forwards ``key`` (lower-case wire name)."""
        return self._router.route(key) is not None

    def falls_through(self, key: bytes) -> bool:
        """Whether an NXDOMAIN for ``key`` (lower-case wire name) goes upstream instead."""
        return any(key.endswith(zone) for zone in self._fallthrough)

    def answer(self, data: bytes, key: bytes, qtype: int, edns: wire.Edns | None,
               tcp: bool) -> bytes | Pending | None:
        """A cached reply, a coroutine for the upstream's, or None when no route serves ``key``."""
        forwarder = self._router.route(key)
        if forwarder is None:
            return None
        route = self._route_of[id(forwarder)]
        limit = wire.MAX_MESSAGE_SIZE if tcp else wire.udp_limit(edns.udp_size if edns else None)
        cache_key = None
        if route.cache is not None:
            cache_key = key_for(key, qtype, 1, bool(edns and edns.do), bool(data[3] & 0x10))
            hit = route.cache.lookup(cache_key, data)
            if hit is not None:
                reply, stale = hit
                if stale:
                    self._refresh(route, data, cache_key)
                return fit_udp(reply, limit)
        return self._forward(route, data, cache_key, limit)

    async def _forward(self, route: Route, data: bytes, cache_key: bytes | None,
                       limit: int) -> bytes:
        exchange = await route.forwarder.exchange(data)
        reply = exchange.reply
        if exchange.upstream is not None and route.cache is not None and cache_key is not None:
            reply = route.cache.put(cache_key, reply)
        return fit_udp(reply, limit)

    def _refresh(self, route: Route, data: bytes, cache_key: bytes) -> None:
        """Serve-stale: one background refresh per stale entry."""
        if cache_key in self._refreshing:
            return
        self._refreshing.add(cache_key)

        async def refresh() -> None:
            try:
                await self._forward(route, data, cache_key, wire.MAX_MESSAGE_SIZE)
            finally:
                self._refreshing.discard(cache_key)

        task = asyncio.get_running_loop().create_task(refresh())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._router.close()

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
        rejected = sum(route.forwarder.rejected for route in self.routes)
        rejects.add_metric([], rejected)
        broken.add_metric([], sum(route.forwarder.healthcheck_broken for route in self.routes))
        for route in self.routes:
            for state in route.forwarder.states:
                failures.add_metric(["forward", str(state.upstream)], state.health_check_failures)
            cache = route.cache
            if cache is None:
                continue
            zone = _dotted(route.zone)
            for kind in ("success", "denial"):
                entries.add_metric(["", kind, zone, ""], cache.entries(kind))
                hits.add_metric(["", kind, zone, ""], cache.hits[kind])
                evictions.add_metric(["", kind, zone, ""], cache.evictions[kind])
            requests.add_metric(["", zone, ""], sum(cache.hits.values()) + cache.misses)
            stale.add_metric(["", zone, ""], cache.served_stale)
        yield from (rejects, broken, failures, entries, hits, requests, evictions, stale)


def build(config: Config, listen: Sequence[tuple[str, int]]) -> Forwarding | None:
    """The forwarding of ``config``, refusing upstreams that are this server itself."""
    routes = []
    specs: list[tuple[str, ForwardConfig, CacheConfig | None]] = [
        (stub.zone, stub.forward, stub.cache) for stub in config.stub_domains
    ]
    if config.forward is not None:
        specs.append((".", config.forward, config.cache))
    for zone, forward, cache in specs:
        upstreams = _upstreams(forward)
        loops = points_at_us(upstreams, listen)
        if loops:
            log.error("forward %s: refusing %s: it is this server's own address, every query "
                      "would loop back to us (systemd-resolved's 127.0.0.53 in resolv.conf is "
                      "the usual cause)", zone, ", ".join(map(str, loops)))
            upstreams = [u for u in upstreams if u not in loops]
        if not upstreams:
            log.error("forward %s: no usable upstream; names there are answered REFUSED", zone)
            continue
        forwarder = Forwarder(
            upstreams, policy=str(forward.policy), max_concurrent=forward.max_concurrent,
            max_fails=forward.max_fails, health_check_interval=forward.health_check,
        )
        routes.append(Route(zone, forwarder, _cache(cache)))
    if not routes:
        return None
    fallthrough = (config.fallthrough_zones or (".",)) if config.fallthrough else ()
    return Forwarding(routes, fallthrough)


def _upstreams(forward: ForwardConfig) -> list[Upstream]:
    upstreams: list[Upstream] = []
    for target in forward.to:
        if target.startswith("/"):
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


def _cache(config: CacheConfig | None) -> Cache | None:
    if config is None:
        return None
    return Cache(
        capacity=config.success.capacity, max_ttl=config.success.max_ttl,
        max_denial_ttl=config.denial.max_ttl, min_ttl=config.success.min_ttl,
        min_denial_ttl=config.denial.min_ttl, serve_stale=config.serve_stale or 0.0,
        servfail_ttl=int(config.servfail_ttl), success_capacity=config.success.capacity,
        denial_capacity=config.denial.capacity,
    )


def _dotted(zone: str) -> str:
    return "." if zone in (".", "") else zone.strip(".") + "."
