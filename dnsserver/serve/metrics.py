"""Prometheus metrics with CoreDNS's names and labels (SPEC §4.3).

The hot path only bumps plain ints (:class:`QueryStats`); they become CoreDNS's metric families
when /metrics is scraped (:class:`Collector`), so counting costs a dict update per query and
nothing else. Each server has its own registry, so several can live in one process (tests,
the pytest plugin).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector as _CollectorBase

from dnsserver import __version__

# CoreDNS: ExponentialBuckets(0.00025, 2, 16) for request durations.
DURATION_BUCKETS = tuple(0.00025 * 2**i for i in range(16))
NAMED_TYPES = {
    1: "A", 28: "AAAA", 15: "MX", 6: "SOA", 5: "CNAME", 12: "PTR", 16: "TXT", 2: "NS",
    33: "SRV", 43: "DS", 48: "DNSKEY", 46: "RRSIG", 47: "NSEC", 50: "NSEC3", 65: "HTTPS",
    251: "IXFR", 252: "AXFR", 255: "ANY",
}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          16: "BADVERS"}

# (tcp, ipv6 client, qtype, rcode, plugin) -> replies
Key = tuple[bool, bool, int, int, str]


@dataclass(slots=True)
class QueryStats:
    """Counts kept by the query path: a dict update and a bucket increment per query."""

    replies: defaultdict[Key, int] = field(default_factory=lambda: defaultdict(int))
    duration_buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    dropped: int = 0

    def observe(self, seconds: float) -> None:
        self.duration_buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds


Source = Callable[[], Iterator[Metric]]


class Collector(_CollectorBase):
    """CoreDNS's ``coredns_dns_*`` families from a :class:`QueryStats`, plus extra sources
    (cache, forward, autopath) that yield their own families when scraped."""

    def __init__(self, stats: QueryStats, server: str, zone: str = ".") -> None:
        self.stats = stats
        self.server = server
        self.zone = zone
        self.sources: list[Source] = []

    def collect(self) -> Iterator[Metric]:
        labels = [self.server, self.zone, ""]
        info = GaugeMetricFamily("coredns_build_info", "A metric with a constant '1' value "
                                 "labeled by version, revision, and goversion from which "
                                 "CoreDNS was built.", labels=["version", "revision", "goversion"])
        info.add_metric([__version__, "", "python"], 1)
        yield info
        requests = CounterMetricFamily(
            "coredns_dns_requests", "Counter of DNS requests made per zone, protocol and family.",
            labels=["server", "zone", "view", "proto", "family", "type"])
        responses = CounterMetricFamily(
            "coredns_dns_responses", "Counter of response status codes.",
            labels=["server", "zone", "view", "rcode", "plugin"])
        by_request: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        by_response: defaultdict[tuple[str, str], int] = defaultdict(int)
        for (tcp, v6, qtype, rcode, plugin), count in list(self.stats.replies.items()):
            proto = "tcp" if tcp else "udp"
            by_request[(proto, "2" if v6 else "1", NAMED_TYPES.get(qtype, "other"))] += count
            by_response[(RCODES.get(rcode, str(rcode)), plugin)] += count
        for request, count in sorted(by_request.items()):
            requests.add_metric([*labels, *request], count)
        for response, count in sorted(by_response.items()):
            responses.add_metric([*labels, *response], count)
        yield requests
        yield responses
        cumulative = 0
        buckets = []
        for bound, count in zip(
            (*DURATION_BUCKETS, float("inf")), self.stats.duration_buckets, strict=True
        ):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        duration = HistogramMetricFamily(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone.",
            labels=["server", "zone", "view"])
        duration.add_metric(labels, buckets, self.stats.duration_sum)
        yield duration
        for source in self.sources:
            yield from source()


class Metrics:
    """The metrics of one server: its registry, query counts, and the programming latency."""

    def __init__(self, server: str) -> None:
        self.registry = CollectorRegistry()
        self.queries = QueryStats()
        self.collector = Collector(self.queries, server)
        self.registry.register(self.collector)
        self.programming = Histogram(
            "coredns_kubernetes_dns_programming_duration_seconds",
            "Histogram of the time (in seconds) it took to program a dns instance.",
            ["service_kind"], buckets=[0.001 * 2**i for i in range(20)],
            registry=self.registry,
        )

    def add_source(self, source: Source) -> None:
        self.collector.sources.append(source)
