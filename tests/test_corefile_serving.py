"""Kubernetes-plugin options of a Corefile, applied by the running server."""

from __future__ import annotations

from pathlib import Path

from kubeapi import KubeAPIServer
from livecluster import ServerProcess, answer_of, eventually

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"


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
