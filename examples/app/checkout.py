"""A tiny checkout service: it finds its backends by the names in its configuration.

The names come from the ConfigMap in ``manifests/shop.yaml``; the resolver is passed in, so
tests can hand it one that asks the cluster DNS of ``cluster_dns`` like a pod in ``shop``.
"""

from __future__ import annotations

import dns.resolver

CONFIG = {
    "ORDERS_HOST": "orders",
    "PAYMENTS_HOST": "payments.billing",
    "LEDGER_SRV": "_postgres._tcp.ledger.billing",
    "FRAUD_API": "fraud-check.example.com.",  # outside the cluster: a trailing dot, no search
}


def backend_addresses(resolver: dns.resolver.Resolver, config: dict[str, str] = CONFIG,
                      ) -> dict[str, list[str]]:
    """The IPv4 addresses of the HTTP and gRPC backends."""
    return {
        key: [rdata.address for rdata in resolver.resolve(config[key], "A")]
        for key in ("ORDERS_HOST", "PAYMENTS_HOST")
    }


def ledger_endpoint(resolver: dns.resolver.Resolver, config: dict[str, str] = CONFIG,
                    ) -> tuple[str, int]:
    """The ledger database's host and port, from its SRV record."""
    record = min(resolver.resolve(config["LEDGER_SRV"], "SRV"), key=lambda r: r.priority)
    return record.target.to_text(), record.port
