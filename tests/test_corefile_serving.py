"""Kubernetes-plugin options of a Corefile, applied by the running server."""

from __future__ import annotations

from pathlib import Path

import dns.flags
from kubeapi import KubeAPIServer
from livecluster import ServerProcess, answer_of, eventually, query
from upstream import FakeUpstream, closed_port

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"
UPSTREAM_SOA = "example. 60 IN SOA ns.example. admin.example. 1 7200 1800 86400 30"


def _expect(actual: object, expected: object) -> None:
    assert actual == expected


def test_namespaces_option_exposes_only_those(tmp_path: Path) -> None:
    corefile = tmp_path / "Corefile"
    corefile.write_text(".:53 {\n  kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
                        "    namespaces default\n  }\n}\n")
    proc = ServerProcess(["--corefile", str(corefile), "--manifests", str(EXAMPLE)])
    try:
        assert answer_of(proc.port, "kubernetes.default.svc.cluster.local") == (
            "NOERROR", {"A 10.96.0.1"})
        assert answer_of(proc.port, "api.shop.svc.cluster.local")[0] == "NXDOMAIN"
        assert answer_of(proc.port, "shop.svc.cluster.local")[0] == "NXDOMAIN"
        assert answer_of(proc.port, "5.200.96.10.in-addr.arpa", "PTR")[0] == "NXDOMAIN"
    finally:
        proc.stop()


def test_endpoint_option_follows_that_api_server(tmp_path: Path) -> None:
    with KubeAPIServer() as api:
        api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        api.apply({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "direct", "namespace": "default"},
                   "spec": {"clusterIP": "10.96.42.42"}})
        corefile = tmp_path / "Corefile"
        corefile.write_text(".:53 {\n  kubernetes cluster.local {\n"
                            f"    endpoint {api.url}\n  }}\n}}\n")
        proc = ServerProcess(["--corefile", str(corefile)])
        try:
            eventually(lambda: _expect(answer_of(proc.port, "direct.default.svc.cluster.local"),
                                       ("NOERROR", {"A 10.96.42.42"})))
            assert any("/api/v1/services" in r.path for r in api.requests)
        finally:
            proc.stop()


def test_reverse_zones_given_as_cidrs_serve_those_ranges_only(tmp_path: Path) -> None:
    """``kubernetes cluster.local 10.96.0.0/16``: PTR records in 96.10.in-addr.arpa only;
    every other reverse name goes on to forward, as in CoreDNS (the zone is not ours)."""
    records = ["11.1.244.10.in-addr.arpa. 60 IN PTR outside.example.",
               "1.0.0.10.in-addr.arpa. 60 IN PTR gateway.example."]
    with FakeUpstream(records, soa=UPSTREAM_SOA) as upstream:
        corefile = tmp_path / "Corefile"
        corefile.write_text(".:53 {\n  kubernetes cluster.local 10.96.0.0/16\n"
                            f"  forward . {upstream.address}\n}}\n")
        proc = ServerProcess(["--corefile", str(corefile), "--manifests", str(EXAMPLE)])
        try:
            assert answer_of(proc.port, "1.0.96.10.in-addr.arpa", "PTR") == (
                "NOERROR", {"PTR kubernetes.default.svc.cluster.local."})
            # A headless endpoint's IP is outside 10.96.0.0/16: the upstream answers it.
            assert answer_of(proc.port, "11.1.244.10.in-addr.arpa", "PTR") == (
                "NOERROR", {"PTR outside.example."})
            assert answer_of(proc.port, "1.0.0.10.in-addr.arpa", "PTR") == (
                "NOERROR", {"PTR gateway.example."})
            reply = query(proc.port, "96.10.in-addr.arpa", "SOA")
            assert reply.flags & dns.flags.AA and reply.answer[0].name.to_text() == (
                "96.10.in-addr.arpa.")
            # Inside the served range, an address no Service has is ours to deny.
            assert answer_of(proc.port, "9.9.96.10.in-addr.arpa", "PTR")[0] == "NXDOMAIN"
            assert {entry[1] for entry in upstream.log} == {
                "11.1.244.10.in-addr.arpa.", "1.0.0.10.in-addr.arpa."}
        finally:
            proc.stop()


def test_a_server_block_serves_its_own_zones_only(tmp_path: Path) -> None:
    """``cluster.local:53 { … forward . X }``: CoreDNS hands this block only names under
    cluster.local, so other names are REFUSED (not forwarded), and the reverse zones listed
    in kubernetes are outside the block and not served either."""
    with FakeUpstream(["www.example.org. 60 IN A 192.0.2.1"], soa=UPSTREAM_SOA) as upstream:
        corefile = tmp_path / "Corefile"
        corefile.write_text("cluster.local:53 {\n  kubernetes cluster.local in-addr.arpa\n"
                            f"  forward . {upstream.address}\n}}\n")
        proc = ServerProcess(["--corefile", str(corefile), "--manifests", str(EXAMPLE)])
        try:
            assert answer_of(proc.port, "kubernetes.default.svc.cluster.local") == (
                "NOERROR", {"A 10.96.0.1"})
            assert answer_of(proc.port, "www.example.org")[0] == "REFUSED"
            assert answer_of(proc.port, "1.0.96.10.in-addr.arpa", "PTR")[0] == "REFUSED"
            assert upstream.log == []
        finally:
            proc.stop()


def test_startup_timeout_listens_once_synced(tmp_path: Path) -> None:
    """CoreDNS waits for the API before it listens: the first query ever answered already
    sees the cluster (no SERVFAIL window), as kubeadm's Corefile gets with the 5s default."""
    with KubeAPIServer() as api:
        api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        api.apply({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "early", "namespace": "default"},
                   "spec": {"clusterIP": "10.96.7.7"}})
        corefile = tmp_path / "Corefile"
        corefile.write_text(".:53 {\n  kubernetes cluster.local {\n"
                            f"    endpoint {api.url}\n    startup_timeout 30s\n  }}\n}}\n")
        proc = ServerProcess(["--corefile", str(corefile)])
        try:
            assert answer_of(proc.port, "early.default.svc.cluster.local") == (
                "NOERROR", {"A 10.96.7.7"})
            assert "not synced" not in proc.text()
        finally:
            proc.stop()


def test_startup_timeout_then_listens_unsynced(tmp_path: Path) -> None:
    """With the API away, the server listens after startup_timeout and answers SERVFAIL
    (never NXDOMAIN) for cluster names until it has synced."""
    with closed_port() as port:
        corefile = tmp_path / "Corefile"
        corefile.write_text(".:53 {\n  kubernetes cluster.local {\n"
                            f"    endpoint http://127.0.0.1:{port}\n    startup_timeout 1s\n"
                            "  }\n}\n")
        proc = ServerProcess(["--corefile", str(corefile)])
        try:
            assert "starting with the Kubernetes API not synced after 1s" in proc.text()
            assert answer_of(proc.port, "early.default.svc.cluster.local")[0] == "SERVFAIL"
        finally:
            proc.stop()


def test_a_stub_blocks_names_skip_the_main_blocks_plugins(tmp_path: Path) -> None:
    """CoreDNS hands a name to the server block with the longest zone that holds it: names
    under ``corp.example:53 { forward … }`` never meet the main block's hosts or template,
    and names of the main block still do."""
    with FakeUpstream(["db.corp.example. 60 IN A 192.0.2.7"], soa=UPSTREAM_SOA) as upstream:
        corefile = tmp_path / "Corefile"
        corefile.write_text(
            ".:53 {\n  kubernetes cluster.local\n"
            "  hosts {\n    10.1.1.1 db.corp.example\n    10.1.1.2 www.other.example\n"
            "    fallthrough\n  }\n"
            "  template IN AAAA . {\n    rcode NXDOMAIN\n  }\n}\n"
            f"corp.example:53 {{\n  forward . {upstream.address}\n}}\n")
        proc = ServerProcess(["--corefile", str(corefile), "--manifests", str(EXAMPLE)])
        try:
            assert answer_of(proc.port, "db.corp.example") == ("NOERROR", {"A 192.0.2.7"})
            assert answer_of(proc.port, "db.corp.example", "AAAA") == ("NOERROR", set())
            assert answer_of(proc.port, "www.other.example") == ("NOERROR", {"A 10.1.1.2"})
            # template comes before hosts in CoreDNS's order
            assert answer_of(proc.port, "www.other.example", "AAAA")[0] == "NXDOMAIN"
            assert answer_of(proc.port, "kubernetes.default.svc.cluster.local", "AAAA")[0] == (
                "NXDOMAIN")  # the main block's template
        finally:
            proc.stop()
