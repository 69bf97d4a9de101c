"""Prometheus metrics, with CoreDNS's names and labels (SPEC §4.3)."""

from __future__ import annotations

from prometheus_client import Histogram

DNS_PROGRAMMING = Histogram(
    "coredns_kubernetes_dns_programming_duration_seconds",
    "Time from an endpoint change (its last-change-trigger-time) to the answer being served.",
    ["service_kind"],
    buckets=[0.001 * 2**i for i in range(20)],
)
