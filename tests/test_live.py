"""The server following a live (double of the) Kubernetes API, through the official client.

Every scenario changes the cluster through the API double and asserts real DNS answers over
UDP from the server process, which talks to the double through a kubeconfig.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeapi import KubeAPIServer
from livecluster import (
    ServerProcess,
    answer_of,
    assert_serves_exactly,
    eventually,
    kubeconfig,
    server,
)

pytestmark = pytest.mark.timeout(90)

Obj = dict[str, Any]


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(name: str, ns: str = "default", ip: str = "10.96.1.1", **spec: Any) -> Obj:
    body: Obj = {
        "clusterIP": ip,
        "clusterIPs": [ip] if ip != "None" else ["None"],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    }
    body.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": body,
    }


def external(name: str, target: str, ns: str = "default") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ExternalName", "externalName": target},
    }


def endpoints(
    name: str, svc: str, ns: str = "default", addresses: list[tuple[str, str, bool]] = ()
) -> Obj:  # type: ignore[assignment]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [ip],
                **({"hostname": host} if host else {}),
                "conditions": {"ready": ready},
            }
            for ip, host, ready in addresses
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


BASE = [
    namespace("default"),
    namespace("kube-system"),
    namespace("team"),
    service("kubernetes", ip="10.96.0.1"),
    service("web", ip="None"),
    endpoints(
        "web-1", "web", addresses=[("10.244.0.1", "web-0", True), ("10.244.0.2", "web-1", True)]
    ),
    service("api", ns="team", ip="10.96.2.2"),
]


@pytest.fixture
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as fake:
        for obj in BASE:
            fake.apply(obj)
        yield fake


@pytest.fixture
def dns(api: KubeAPIServer, tmp_path: Path) -> Iterator[ServerProcess]:
    args = ["--kubeconfig", str(kubeconfig(api, tmp_path)), "--watch-backoff", "0.1"]
    with server(args) as proc:
        eventually(
            lambda: _check(
                proc.port, "kubernetes.default.svc.cluster.local", ("NOERROR", {"A 10.96.0.1"})
            )
        )
        api.wait_for_watches(None, 3)
        yield proc


def _check(port: int, name: str, expected: tuple[str, set[str]], qtype: str = "A") -> None:
    assert answer_of(port, name, qtype) == expected


def _expect(port: int, name: str, expected: tuple[str, set[str]], qtype: str = "A") -> None:
    eventually(lambda: _check(port, name, expected, qtype))


def test_initial_list_is_served(dns: ServerProcess) -> None:
    _expect(
        dns.port, "web.default.svc.cluster.local", ("NOERROR", {"A 10.244.0.1", "A 10.244.0.2"})
    )
    _expect(dns.port, "web-1.web.default.svc.cluster.local", ("NOERROR", {"A 10.244.0.2"}))
    _expect(dns.port, "api.team.svc.cluster.local", ("NOERROR", {"A 10.96.2.2"}))
    _expect(dns.port, "missing.default.svc.cluster.local", ("NXDOMAIN", set()))


def test_lists_in_pages_and_watches_with_bookmarks(api: KubeAPIServer, tmp_path: Path) -> None:
    for i in range(1200):
        api.apply(service(f"bulk-{i}", ns="team", ip=f"10.97.{i // 250}.{i % 250 + 1}"))
    args = ["--kubeconfig", str(kubeconfig(api, tmp_path))]
    with server(args) as proc:
        _expect(proc.port, "bulk-1199.team.svc.cluster.local", ("NOERROR", {"A 10.97.4.200"}))
        lists = [r for r in api.requests if "services" in r.path and "watch" not in r.query]
        continues = [r for r in lists if "continue" in r.query]
        assert lists and all(r.query.get("limit") == "500" for r in lists)
        assert len(continues) >= 2  # 1,203 services in pages of 500
        api.wait_for_watches("Service", 1)
        watches = [r for r in api.requests if "services" in r.path and "watch" in r.query]
        assert watches[0].query.get("allowWatchBookmarks") == "true"
        assert watches[0].query.get("resourceVersion")


def test_new_service_resolves(api: KubeAPIServer, dns: ServerProcess) -> None:
    # Asked before it exists (and the NXDOMAIN kept by the server), then created.
    assert answer_of(dns.port, "fresh.default.svc.cluster.local") == ("NXDOMAIN", set())
    assert answer_of(dns.port, "fresh.default.svc.cluster.local", "AAAA") == ("NXDOMAIN", set())
    api.apply(service("fresh", ip="10.96.3.3"))
    _expect(dns.port, "fresh.default.svc.cluster.local", ("NOERROR", {"A 10.96.3.3"}))
    _expect(
        dns.port,
        "_http._tcp.fresh.default.svc.cluster.local",
        ("NOERROR", {"SRV 0 100 80 fresh.default.svc.cluster.local."}),
        "SRV",
    )


def test_endpoints_scale_and_become_not_ready(api: KubeAPIServer, dns: ServerProcess) -> None:
    api.apply(
        endpoints(
            "web-1",
            "web",
            addresses=[
                ("10.244.0.1", "web-0", True),
                ("10.244.0.2", "web-1", True),
                ("10.244.0.3", "web-2", True),
            ],
        )
    )
    _expect(
        dns.port,
        "web.default.svc.cluster.local",
        ("NOERROR", {"A 10.244.0.1", "A 10.244.0.2", "A 10.244.0.3"}),
    )
    _expect(dns.port, "web-2.web.default.svc.cluster.local", ("NOERROR", {"A 10.244.0.3"}))
    _expect(
        dns.port,
        "3.0.244.10.in-addr.arpa",
        ("NOERROR", {"PTR web-2.web.default.svc.cluster.local."}),
        "PTR",
    )
    api.apply(
        endpoints(
            "web-1",
            "web",
            addresses=[
                ("10.244.0.1", "web-0", True),
                ("10.244.0.2", "web-1", False),
                ("10.244.0.3", "web-2", True),
            ],
        )
    )
    _expect(
        dns.port, "web.default.svc.cluster.local", ("NOERROR", {"A 10.244.0.1", "A 10.244.0.3"})
    )
    _expect(dns.port, "web-1.web.default.svc.cluster.local", ("NXDOMAIN", set()))
    api.apply(endpoints("web-1", "web", addresses=[("10.244.0.1", "web-0", False)]))
    _expect(dns.port, "web.default.svc.cluster.local", ("NXDOMAIN", set()))  # no ready endpoint
    _expect(dns.port, "3.0.244.10.in-addr.arpa", ("NXDOMAIN", set()), "PTR")


def test_deleted_service_is_nxdomain(api: KubeAPIServer, dns: ServerProcess) -> None:
    api.delete("Service", "team", "api")
    _expect(dns.port, "api.team.svc.cluster.local", ("NXDOMAIN", set()))
    _expect(dns.port, "2.2.96.10.in-addr.arpa", ("NXDOMAIN", set()), "PTR")


def test_service_changes_type_and_back(api: KubeAPIServer, dns: ServerProcess) -> None:
    name = "api.team.svc.cluster.local"
    api.apply(external("alias", "api.team.svc.cluster.local", ns="team"))
    _expect(dns.port, "alias.team.svc.cluster.local",
            ("NOERROR", {"CNAME api.team.svc.cluster.local.", "A 10.96.2.2"}))
    api.apply(external("api", "api.example.com", ns="team"))
    _expect(dns.port, name, ("NOERROR", {"CNAME api.example.com."}), "CNAME")
    _expect(dns.port, "2.2.96.10.in-addr.arpa", ("NXDOMAIN", set()), "PTR")
    api.apply(external("api", "other.example.com", ns="team"))
    _expect(dns.port, name, ("NOERROR", {"CNAME other.example.com."}), "CNAME")
    api.apply(service("api", ns="team", ip="None"))
    _expect(dns.port, name, ("NXDOMAIN", set()))  # headless without endpoints
    api.apply(endpoints("api-x", "api", ns="team", addresses=[("10.244.9.9", "", True)]))
    _expect(dns.port, name, ("NOERROR", {"A 10.244.9.9"}))
    api.apply(service("api", ns="team", ip="10.96.2.3"))
    _expect(dns.port, name, ("NOERROR", {"A 10.96.2.3"}))
    # the in-zone CNAME follows its target's changes
    _expect(dns.port, "alias.team.svc.cluster.local",
            ("NOERROR", {"CNAME api.team.svc.cluster.local.", "A 10.96.2.3"}))
    _expect(dns.port, "10-244-9-9.api.team.svc.cluster.local", ("NOERROR", {"A 10.244.9.9"}))


def test_namespace_disappears(api: KubeAPIServer, dns: ServerProcess) -> None:
    _expect(dns.port, "team.svc.cluster.local", ("NOERROR", set()))
    api.delete("Namespace", "", "team")
    _expect(dns.port, "team.svc.cluster.local", ("NXDOMAIN", set()))
    _expect(dns.port, "api.team.svc.cluster.local", ("NXDOMAIN", set()))
    _expect(dns.port, "10-1-2-3.team.pod.cluster.local", ("NXDOMAIN", set()))
    api.apply(namespace("team"))
    _expect(dns.port, "api.team.svc.cluster.local", ("NOERROR", {"A 10.96.2.2"}))


def test_watch_dropped_mid_stream(api: KubeAPIServer, dns: ServerProcess) -> None:
    assert api.drop_watches() >= 3
    api.apply(service("after-drop", ip="10.96.4.4"))
    api.delete("Service", "team", "api")
    _expect(dns.port, "after-drop.default.svc.cluster.local", ("NOERROR", {"A 10.96.4.4"}))
    _expect(dns.port, "api.team.svc.cluster.local", ("NXDOMAIN", set()))
    assert "Traceback" not in dns.text()


def test_410_gone_relists_and_reconciles(api: KubeAPIServer, dns: ServerProcess) -> None:
    api.set_down(True)
    api.apply(service("while-away", ip="10.96.5.5"))
    api.delete("Service", "team", "api")
    api.apply(endpoints("web-1", "web", addresses=[("10.244.0.7", "web-7", True)]))
    api.compact()  # our resourceVersion is now too old: the watch gets 410 Gone
    api.set_down(False)
    eventually(
        lambda: assert_serves_exactly(
            dns.port,
            _all(api),
            gone=[
                "api.team.svc.cluster.local",
                "web-0.web.default.svc.cluster.local",
                "2.2.96.10.in-addr.arpa",
            ],
        ),
        timeout=20,
    )
    assert "expired; listing again" in dns.text()


def test_api_down_while_changes_happen(api: KubeAPIServer, dns: ServerProcess) -> None:
    api.set_down(True)
    # Cut streams are routine; failing to reconnect is losing the API, said once per watch.
    eventually(lambda: _true("lost the Kubernetes API" in dns.text()))
    # The last known state keeps being served while the API is away.
    _expect(dns.port, "api.team.svc.cluster.local", ("NOERROR", {"A 10.96.2.2"}))
    for i in range(20):
        api.apply(service(f"burst-{i}", ns="team", ip=f"10.96.6.{i + 1}"))
    api.delete("Service", "team", "api")
    api.delete("Namespace", "", "kube-system")
    eventually(
        lambda: _check(
            dns.port, "web.default.svc.cluster.local", ("NOERROR", {"A 10.244.0.1", "A 10.244.0.2"})
        ),
        timeout=3,
    )
    api.set_down(False)
    eventually(
        lambda: assert_serves_exactly(
            dns.port,
            _all(api),
            gone=["api.team.svc.cluster.local", "kube-system.svc.cluster.local"],
        ),
        timeout=30,
    )
    log = dns.text()
    assert log.count("lost the Kubernetes API") <= 4  # once per watch, never per retry
    assert "the Kubernetes API is back" in log


def test_servfail_before_sync_then_nxdomain(api: KubeAPIServer, tmp_path: Path) -> None:
    api.set_failing(500)
    with server(["--kubeconfig", str(kubeconfig(api, tmp_path)), "--watch-backoff", "0.1"]) as proc:
        for _ in range(3):
            assert answer_of(proc.port, "missing.default.svc.cluster.local")[0] == "SERVFAIL"
        reply = answer_of(proc.port, "www.example.com")
        assert reply[0] == "REFUSED"
        api.set_failing(None)
        _expect(proc.port, "missing.default.svc.cluster.local", ("NXDOMAIN", set()))
        _expect(
            proc.port,
            "web.default.svc.cluster.local",
            ("NOERROR", {"A 10.244.0.1", "A 10.244.0.2"}),
        )


def test_bad_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    missing = tmp_path / "nope.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "dnsserver", "serve", "--kubeconfig", str(missing)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "error: cannot use the kubeconfig" in done.stderr
    assert "Traceback" not in done.stderr


def _all(api: KubeAPIServer) -> list[Obj]:
    return [obj for kind in ("Namespace", "Service", "EndpointSlice") for obj in api.get_all(kind)]


def _true(condition: bool) -> None:
    assert condition
