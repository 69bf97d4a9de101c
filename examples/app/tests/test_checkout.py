"""The checkout service against a real cluster DNS serving its own manifests."""

from __future__ import annotations

import checkout
import dns.exception
import pytest

from dnsserver.client.testing import ClusterDNS

pytestmark = pytest.mark.cluster_dns(namespace="shop")  # checkout runs in namespace shop


def test_backends_resolve_from_the_app_namespace(cluster_dns: ClusterDNS) -> None:
    addresses = checkout.backend_addresses(cluster_dns.resolver())
    assert set(addresses) == {"ORDERS_HOST", "PAYMENTS_HOST"}
    assert all(len(found) == 1 for found in addresses.values())


def test_a_short_name_for_another_namespace_does_not_resolve(cluster_dns: ClusterDNS) -> None:
    wrong = {**checkout.CONFIG, "PAYMENTS_HOST": "payments"}  # billing's Service, from shop
    with pytest.raises(dns.exception.DNSException):  # NXDOMAIN in-cluster, then "payments."
        checkout.backend_addresses(cluster_dns.resolver(), wrong)
    walk = cluster_dns.resolve("payments")
    assert walk.tried()[:3] == ["payments.shop.svc.cluster.local.",
                                "payments.svc.cluster.local.", "payments.cluster.local."]


def test_ledger_port_comes_from_srv(cluster_dns: ClusterDNS) -> None:
    host, port = checkout.ledger_endpoint(cluster_dns.resolver())
    assert (host, port) == ("ledger-0.ledger.billing.svc.cluster.local.", 5432)


def test_lookups_stay_cheap_on_alpine(cluster_dns: ClusterDNS) -> None:
    """What an Alpine (musl) image sends: 2 steps for name.namespace, 1 for the rooted
    external name, and a new Service is served as soon as it is applied."""
    payments = cluster_dns.resolve(checkout.CONFIG["PAYMENTS_HOST"], "ADDR", mode="musl")
    assert payments.ok and len(payments.steps) == 2
    fraud = cluster_dns.resolve(checkout.CONFIG["FRAUD_API"], "ADDR", mode="musl")
    assert fraud.tried() == ["fraud-check.example.com."]
    cluster_dns.apply({"kind": "Service", "metadata": {"name": "coupons", "namespace": "shop"}})
    assert cluster_dns.resolve("coupons", "ADDR", mode="musl").ok
