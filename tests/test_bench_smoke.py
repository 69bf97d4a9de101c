"""The benchmark's parts on a tiny cluster: generator, loader, zone file, knotd. No timing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `bench` is not installed; plain `pytest` does not add the root
    sys.path.insert(0, str(REPO))

from bench import costs, gencluster, qps, zonefile  # noqa: E402
from dnsserver.cluster import manifests  # noqa: E402
from dnsserver.config import corefile  # noqa: E402
from dnsserver.serve.handler import Handler  # noqa: E402
from zones import model  # noqa: E402

SHAPE = gencluster.Shape(services=40, namespaces=3, endpoints=150, pods=160, seed=7)


@pytest.fixture(scope="module")
def cluster() -> gencluster.Cluster:
    return gencluster.generate(SHAPE)


@pytest.fixture(scope="module")
def loaded(cluster: gencluster.Cluster, tmp_path_factory: pytest.TempPathFactory
           ) -> list[model.ClusterObject]:
    folder = tmp_path_factory.mktemp("manifests")
    gencluster.write(cluster, folder)
    return manifests.load(folder)


def test_same_seed_same_cluster(cluster: gencluster.Cluster) -> None:
    again = gencluster.generate(SHAPE)
    assert list(again.documents()) == list(cluster.documents())
    other = gencluster.generate(gencluster.Shape(services=40, namespaces=3, endpoints=150, seed=8))
    assert other.services != cluster.services


def test_shape_is_honoured(cluster: gencluster.Cluster) -> None:
    assert len(cluster.services) == 40
    assert len(cluster.namespaces) == 3 + 2  # default and kube-system besides
    assert cluster.endpoint_count == 150
    assert len(cluster.pods) == 160
    assert all(len(s["endpoints"]) <= gencluster.SLICE_CAPACITY for s in cluster.slices)
    kinds = Counter(s.kind for s in cluster.catalog)
    assert kinds[gencluster.ServiceKind.CLUSTER_IP] > kinds[gencluster.ServiceKind.HEADLESS]
    big = gencluster.generate(gencluster.Shape(services=400, seed=7))
    big_kinds = Counter(s.kind for s in big.catalog)
    assert set(big_kinds) == set(gencluster.ServiceKind)  # every kind shows up in the mix
    assert any(s.hostnames for s in big.catalog)  # StatefulSet-style headless Services


def test_loader_accepts_both_styles(cluster: gencluster.Cluster, tmp_path: Path,
                                    loaded: list[model.ClusterObject]) -> None:
    flow = tmp_path / "flow"
    gencluster.write(cluster, flow, style="flow")
    assert sorted(map(repr, manifests.load(flow))) == sorted(map(repr, loaded))
    counts = Counter(type(obj).__name__ for obj in loaded)
    assert counts == {"Namespace": 5, "Service": 40, "EndpointSlice": len(cluster.slices),
                      "Pod": 160}
    slices = [obj for obj in loaded if isinstance(obj, model.EndpointSlice)]
    assert all(s.service_name for s in slices)


def test_zone_file_renders_and_checks(loaded: list[model.ClusterObject], tmp_path: Path,
                                      cluster: gencluster.Cluster) -> None:
    zone = zonefile.build_zone(loaded)
    files = {z.origin: z for z in zonefile.write(zone, tmp_path)}
    assert set(files) == {"cluster.local", "in-addr.arpa", "ip6.arpa"}
    text = files["cluster.local"].path.read_text()
    assert "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local." in text
    assert "kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1\n" in text
    for svc in cluster.catalog:
        if svc.kind is gencluster.ServiceKind.CLUSTER_IP:
            assert f"\n{svc.name}.{svc.namespace}.svc.cluster.local. 5 IN A " in text
    assert "1.0.96.10.in-addr.arpa. 5 IN PTR kubernetes.default.svc.cluster.local." in (
        files["in-addr.arpa"].path.read_text()
    )
    if shutil.which("kzonecheck") is None:
        pytest.skip("kzonecheck not installed (Debian package knot-dnssecutils)")
    for zone_file in files.values():
        outcome = zonefile.check(zone_file)
        assert outcome is not None and outcome[0], outcome


def test_queries() -> None:
    assert qps.parse_qtypes("a") == {"A": 1.0}
    assert qps.parse_qtypes("mix") == {"A": 60.0, "AAAA": 10.0, "SRV": 20.0, "NX": 10.0}
    with pytest.raises(ValueError, match="MX"):
        qps.parse_qtypes("A,MX")
    catalog = gencluster.generate(gencluster.Shape(services=30, seed=3)).catalog
    lines = qps.queries(catalog, {"A": 1.0}, seed=1)
    assert sorted(lines) == sorted(f"{s.name}.{s.namespace}.svc.cluster.local A" for s in catalog)
    mixed = qps.queries(catalog, qps.parse_qtypes("mix"), seed=1, mixed_case=True)
    assert {line.split()[1] for line in mixed} == {"A", "AAAA", "SRV"}
    assert all(line.split()[0].lower().endswith(".svc.cluster.local") for line in mixed)


def test_knotd_serves_what_we_serve(loaded: list[model.ClusterObject], tmp_path: Path,
                                    cluster: gencluster.Cluster) -> None:
    """The comparison is fair only if knotd answers exactly as we do."""
    if shutil.which("knotd") is None:
        pytest.skip("knotd not installed (Debian package knot)")
    zone = zonefile.build_zone(loaded)
    files = zonefile.write(zone, tmp_path / "zones")
    port = qps.free_port()
    config = qps.knot_config(tmp_path / "knot", port, files)
    handler = Handler(zone)
    lines = qps.queries(cluster.catalog, qps.parse_qtypes("mix"), seed=2)[:60]
    with qps.running(["knotd", "-c", str(config)], tmp_path / "knot.log") as process:
        deadline = time.monotonic() + 10
        while not qps.answering(process, port):
            assert time.monotonic() < deadline, (tmp_path / "knot.log").read_text()
            time.sleep(0.05)
        theirs = qps.sample_answers(port, lines)
    for line in lines:
        name, qtype = line.split()
        reply = handler.handle(dns.message.make_query(name, qtype).to_wire())
        assert isinstance(reply, bytes)
        assert qps.describe(dns.message.from_wire(reply)) == theirs[line], line


def test_costs_rows_are_answered(tmp_path: Path) -> None:
    """bench.costs: every row's query gets the answer its label says (no SERVFAIL/REFUSED)."""
    gencluster.write(gencluster.generate(gencluster.Shape(services=5, seed=3)), tmp_path)
    (tmp_path / "wide.yaml").write_text(
        "\n---\n".join(json.dumps(d) for d in costs.wide_service(150)), encoding="utf-8")
    zone = zonefile.build_zone(manifests.load(tmp_path))
    handler = Handler(zone)
    for row in costs.rows(150):
        name, qtype = row.query.split()
        wire = handler.handle(dns.message.make_query(name, qtype).to_wire())
        assert isinstance(wire, bytes), row
        reply = dns.message.from_wire(wire)
        rcode = "NXDOMAIN" if "NXDOMAIN" in row.label else "NOERROR"
        assert dns.rcode.to_text(reply.rcode()) == rcode, row
        assert bool(reply.answer) == ("NODATA" not in row.label and rcode == "NOERROR"), row
        assert bool(reply.flags & dns.flags.TC) == ("(TC)" in row.label), row


@pytest.mark.parametrize("bind", [None, "127.0.0.1"])
def test_kubeadm_corefile_forms_are_read(bind: str | None) -> None:
    text = qps.kubeadm_corefile(5353, bind=bind)
    config = corefile.parse(text)
    assert ".:5353 {" in text and "loadbalance" in text and "/etc/resolv.conf" not in text
    assert config is not None
    with pytest.raises(ValueError, match="--forms"):
        qps.parse_forms("loopback,everywhere")
    assert qps.parse_forms("all,kubeadm-all") == ["loopback", "all", "kubeadm-all"]


def test_gencluster_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.gencluster", "--services", "5", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "5 services" in result.stderr
    assert len(manifests.load(tmp_path)) > 5
