"""Manifests on disk: what loads, what is skipped, and broken ones that must not be served.

A broken manifest makes ``dnsserver serve`` exit non-zero before it listens, with a message
that names the file and the document (and the List item), never a traceback.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import dns.rcode
import pytest
from conftest import CliRunner, RunningServer, StartServer

from dnsserver.cluster import manifests
from zones import model

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"
GOOD_SERVICE = (
    "apiVersion: v1\nkind: Service\nmetadata: {name: ok, namespace: team}\n"
    "spec: {clusterIP: 10.96.7.7, ports: [{name: http, port: 80}]}\n"
)

BROKEN: dict[str, tuple[str, str, str]] = {
    # case: (file content, the document named in the message, words the message must have)
    "bad yaml": (
        NAMESPACE + "---\napiVersion: v1\nkind: Service\nmetadata: {name: x\n",
        "document 2", "invalid YAML",
    ),
    "a list where a document belongs": (
        NAMESPACE + "---\n- kind: Service\n  metadata: {name: x}\n",
        "document 2", "not a Kubernetes object",
    ),
    "a list where spec belongs": (
        NAMESPACE + "---\n" + GOOD_SERVICE + "---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: team}\n"
        "spec: [{clusterIP: 10.96.0.5}]\n",
        "document 3", "spec",
    ),
    "a list where metadata belongs": (
        "apiVersion: v1\nkind: Service\nmetadata: [name, x]\nspec: {clusterIP: 10.96.0.5}\n",
        "document 1", "metadata",
    ),
    "bad clusterIP": (
        NAMESPACE + "---\napiVersion: v1\nkind: Service\n"
        "metadata: {name: bad, namespace: team}\nspec: {clusterIP: 10.96.0.300}\n",
        "document 2", "10.96.0.300",
    ),
    "bad EndpointSlice address": (
        NAMESPACE + "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        "metadata: {name: bad-1, namespace: team, labels: {kubernetes.io/service-name: bad}}\n"
        "addressType: IPv4\nendpoints:\n  - addresses: [10.244.1.999]\n",
        "document 2", "10.244.1.999",
    ),
    "bad port": (
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: team}\n"
        "spec: {clusterIP: 10.96.0.5, ports: [{name: http, port: 70000}]}\n",
        "document 1", "70000",
    ),
    "no kind": (
        NAMESPACE + "---\napiVersion: v1\nmetadata: {name: x}\n",
        "document 2", "kind",
    ),
    "bad item in a List": (
        "apiVersion: v1\nkind: List\nitems:\n"
        "  - {apiVersion: v1, kind: Namespace, metadata: {name: team}}\n"
        "  - {apiVersion: v1, kind: Service, metadata: {name: bad, namespace: team},"
        " spec: {clusterIP: not-an-ip}}\n",
        "document 1, item 2", "not-an-ip",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_manifest_is_not_served(run_cli: CliRunner, tmp_path: Path, case: str) -> None:
    content, document, words = BROKEN[case]
    path = tmp_path / "cluster.yaml"
    path.write_text(content)
    result = run_cli("serve", "--manifests", str(path), "--listen", "127.0.0.1:0")
    assert result.returncode == 1, result.stderr
    assert f"{path}, {document}" in result.stderr
    assert words in result.stderr
    assert "serving" not in result.stderr
    assert "Traceback" not in result.stderr


def test_broken_file_in_a_folder_is_named(run_cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "a-good.yaml").write_text(NAMESPACE)
    bad = tmp_path / "sub" / "b-bad.yml"
    bad.parent.mkdir()
    bad.write_text(NAMESPACE + "---\nkind: Service\nmetadata: {name: x}\nspec: {clusterIP: x}\n")
    result = run_cli("serve", "--manifests", str(tmp_path), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert f"{bad}, document 2" in result.stderr
    assert "serving" not in result.stderr


def test_missing_folder(run_cli: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_cli("serve", "--manifests", str(missing), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert f"{missing}: no such file or folder" in result.stderr
    assert "serving" not in result.stderr


def test_empty_folder(run_cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("kind: Service\n")  # not a manifest suffix
    result = run_cli("serve", "--manifests", str(tmp_path), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert str(tmp_path) in result.stderr
    assert "no .yaml, .yml or .json files" in result.stderr
    assert "serving" not in result.stderr


# -- what loads --------------------------------------------------------------------------------

LIST_YAML = """\
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Namespace
    metadata: {name: team}
  - apiVersion: v1
    kind: Service
    metadata: {name: alpha, namespace: team}
    spec: {clusterIP: 10.96.50.1, ports: [{name: http, port: 80, protocol: TCP}]}
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: alpha, namespace: team}
    spec: {replicas: 2, template: {spec: {containers: [{name: c, image: x}]}}}
"""

TYPED_YAML = """\
apiVersion: v1
kind: ServiceList
items:
  - metadata: {name: beta, namespace: team}
    spec: {ports: [{name: http, port: 8080}]}
  - metadata: {name: delta, namespace: team}
    spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team}
data: {clusterIP: not-an-ip, spec: "[1, 2]"}
---
apiVersion: v1
kind: Service
metadata: {name: lone, namespace: implicit}
spec: {clusterIP: 10.96.60.6}
"""

JSON_OBJECTS = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "gamma", "namespace": "team"},
         "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "gamma-1", "namespace": "team",
                      "labels": {"kubernetes.io/service-name": "gamma"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": ["10.244.5.1"], "hostname": "g-0"},
                       {"addresses": ["10.244.5.2"], "conditions": {"ready": True}},
                       {"addresses": ["10.244.5.3"], "conditions": {"ready": False}}],
         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
    ],
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("manifests")
    (root / "list.yaml").write_text(LIST_YAML)
    (root / "typed.yml").write_text(TYPED_YAML)
    (root / "nested").mkdir()
    (root / "nested" / "gamma.json").write_text(json.dumps(JSON_OBJECTS))
    (root / "README.md").write_text("# not a manifest: {{ skipped")
    return root


@pytest.fixture(scope="module")
def folder_server(dns_server: StartServer, folder: Path) -> RunningServer:
    return dns_server(folder)


def _by_key(objects: list[model.ClusterObject]) -> dict[tuple[str, str, str], object]:
    return {(type(obj).__name__, *obj.key): obj for obj in objects}


def test_lists_typed_lists_and_json_load(folder: Path) -> None:
    loaded = _by_key(manifests.load(folder))
    assert set(loaded) == {
        ("Namespace", "", "team"), ("Namespace", "", "implicit"),
        ("Service", "team", "alpha"), ("Service", "team", "beta"), ("Service", "team", "delta"),
        ("Service", "team", "gamma"), ("Service", "implicit", "lone"),
        ("EndpointSlice", "team", "gamma-1"),
    }  # no Deployment, no ConfigMap


def test_service_without_cluster_ip_gets_a_stable_address(folder: Path, tmp_path: Path) -> None:
    def allocated(path: Path) -> dict[str, str]:
        return {
            obj.name: obj.cluster_ips[0] for obj in manifests.load(path)
            if isinstance(obj, model.Service) and obj.name in ("beta", "delta")
        }

    first, second = allocated(folder), allocated(folder)
    assert first == second
    assert first["beta"] != first["delta"]
    service_range = ipaddress.ip_network("10.96.0.0/12")
    for ip in first.values():
        assert ipaddress.ip_address(ip) in service_range
        assert ip not in ("10.96.0.0", "10.96.0.1", "10.96.0.10", "10.111.255.255")
    # the same Service alone in another folder gets the same address
    (tmp_path / "beta.yaml").write_text(TYPED_YAML.split("---", maxsplit=1)[0])
    assert allocated(tmp_path)["beta"] == first["beta"]


def test_allocation_avoids_addresses_in_use(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(TYPED_YAML.split("---", maxsplit=1)[0])
    beta = {o.name: o for o in manifests.load(tmp_path) if isinstance(o, model.Service)}["beta"]
    taken = beta.cluster_ips[0]
    (tmp_path / "b.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: holder, namespace: other}\n"
        f"spec: {{clusterIP: {taken}}}\n"
    )
    services = {o.name: o for o in manifests.load(tmp_path) if isinstance(o, model.Service)}
    assert services["holder"].cluster_ips == (taken,)
    assert services["beta"].cluster_ips[0] != taken


def test_served_folder_answers(folder_server: RunningServer, folder: Path) -> None:
    def a(name: str) -> list[str]:
        reply = folder_server.query(name, "A")
        assert reply.rcode() == dns.rcode.NOERROR, name
        return sorted(rdata.address for rrset in reply.answer for rdata in rrset)

    assert a("alpha.team.svc.cluster.local") == ["10.96.50.1"]
    beta = {o.name: o for o in manifests.load(folder) if isinstance(o, model.Service)}["beta"]
    assert a("beta.team.svc.cluster.local") == list(beta.cluster_ips)
    assert a("gamma.team.svc.cluster.local") == ["10.244.5.1", "10.244.5.2"]
    assert a("g-0.gamma.team.svc.cluster.local") == ["10.244.5.1"]
    assert a("lone.implicit.svc.cluster.local") == ["10.96.60.6"]


def test_implicit_namespace_exists(folder_server: RunningServer) -> None:
    reply = folder_server.query("implicit.svc.cluster.local", "A")
    assert reply.rcode() == dns.rcode.NOERROR  # NODATA: the namespace exists
    assert not reply.answer
    assert len(reply.authority) == 1
    reply = folder_server.query("10-244-1-5.implicit.pod.cluster.local", "A")
    assert [rrset.to_text() for rrset in reply.answer] == [
        "10-244-1-5.implicit.pod.cluster.local. 5 IN A 10.244.1.5"]
    assert folder_server.query("nosuch.svc.cluster.local", "A").rcode() == dns.rcode.NXDOMAIN


def test_skipped_kinds_serve_nothing(folder_server: RunningServer) -> None:
    # the ConfigMap's broken "clusterIP" was never read; the Deployment is no Service
    assert folder_server.query("settings.team.svc.cluster.local", "A").rcode() == 3
    reply = folder_server.query("alpha.team.svc.cluster.local", "A")
    assert len(reply.answer) == 1

