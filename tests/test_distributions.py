"""The Corefiles that clusters ship (tests/data/corefiles/), each served as it is.

kubeadm/kind, k3s (with a NodeHosts file and its empty custom imports), minikube (with its
inline hosts entry), EKS, AKS (with its templates and empty custom imports), RKE2, and the
stub-domain example of the kubernetes plugin's README: each starts, and answers a cluster
name, a name outside the cluster (from an upstream on loopback) and, where the file has one,
a hosts entry or a template's answer, as CoreDNS does with the same file.

Only what cannot be the same here is changed in the text, by :func:`localised`: the HTTP
endpoints listen on loopback port 0, the node's /etc/resolv.conf becomes the loopback
upstream (a resolv.conf has no port), /etc/coredns paths point into a temporary folder
laid out as the ConfigMap mounts would lay it out, and the lame-duck wait is 1 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from livecluster import ServerProcess, answer_of
from upstream import FakeUpstream

DATA = Path(__file__).resolve().parent / "data" / "corefiles"
EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"
SOA = "example.org. 60 IN SOA ns.example.org. admin.example.org. 1 7200 1800 86400 30"
UPSTREAM = ["www.example.org. 60 IN A 192.0.2.80",
            "agent.acme.local. 60 IN A 192.0.2.81"]
CLUSTER = ("kubernetes.default.svc.cluster.local", "A", ("NOERROR", {"A 10.96.0.1"}))
OUTSIDE = ("www.example.org", "A", ("NOERROR", {"A 192.0.2.80"}))


@dataclass(frozen=True)
class Case:
    corefile: str
    answers: tuple[tuple[str, str, tuple[str, set[str]]], ...]


CASES = {
    "kubeadm": Case("kubeadm.Corefile", (CLUSTER, OUTSIDE)),
    "k3s": Case("k3s.Corefile", (
        CLUSTER, OUTSIDE,
        ("server-1", "A", ("NOERROR", {"A 172.18.0.5"})),  # from NodeHosts, ttl 60
        ("5.0.18.172.in-addr.arpa", "PTR", ("NOERROR", {"PTR server-1."})),
    )),
    "minikube": Case("minikube.Corefile", (
        CLUSTER, OUTSIDE,
        ("host.minikube.internal", "A", ("NOERROR", {"A 192.168.49.1"})),
    )),
    "eks": Case("eks.Corefile", (CLUSTER, OUTSIDE)),
    "aks": Case("aks.Corefile", (
        CLUSTER, OUTSIDE,
        ("foo.reddog.microsoft.com", "A", ("NXDOMAIN", set())),  # the template, not upstream
        ("a.b.c.d.internal.cloudapp.net", "AAAA", ("NXDOMAIN", set())),
    )),
    "rke2": Case("rke2.Corefile", (CLUSTER, OUTSIDE)),
    "stub domains": Case("stubdomains.Corefile", (
        CLUSTER,
        ("agent.acme.local", "A", ("NOERROR", {"A 192.0.2.81"})),
    )),
}


def localised(text: str, folder: Path, upstream: str) -> str:
    """``text`` with what only a node has pointed at loopback and ``folder``."""
    text = re.sub(r"(?m)^(\s*)(health|ready)(\s*\{|\s*$)", r"\1\2 127.0.0.1:0\3", text)
    text = re.sub(r"(?m)^(\s*prometheus)\s+\S+", r"\1 127.0.0.1:0", text)
    text = re.sub(r"forward(\s+)\.(\s+)/etc/resolv\.conf", rf"forward\g<1>.\g<2>{upstream}", text)
    text = re.sub(r"forward \. (8\.8\.8\.8|10\.100\.0\.10):53", f"forward . {upstream}", text)
    text = re.sub(r"lameduck \d+s", "lameduck 1s", text)  # stopping here needn't take 10 s
    return text.replace("/etc/coredns/", f"{folder}/")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(UPSTREAM, soa=SOA) as server:
        yield server


@pytest.mark.parametrize("name", list(CASES))
def test_a_distribution_corefile_serves_as_coredns(name: str, upstream: FakeUpstream,
                                                   tmp_path: Path) -> None:
    case = CASES[name]
    (tmp_path / "custom").mkdir()  # the coredns-custom ConfigMap, empty: imports match nothing
    (tmp_path / "NodeHosts").write_text("172.18.0.5 server-1\n")
    corefile = tmp_path / "Corefile"
    corefile.write_text(localised((DATA / case.corefile).read_text(), tmp_path,
                                  upstream.address))
    proc = ServerProcess(["--corefile", str(corefile), "--manifests", str(EXAMPLE)])
    try:
        for qname, qtype, expected in case.answers:
            assert answer_of(proc.port, qname, qtype) == expected, (qname, proc.text())
        assert proc.process.poll() is None
    finally:
        proc.stop()
