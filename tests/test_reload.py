"""Reloading the configuration (SIGHUP, and the Corefile's ``reload``) while serving.

Every reload keeps answering every query and stays ready: a query loop and a /ready probe run
in the background throughout and must never see a failure.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from kubeapi import KubeAPIServer
from livecluster import ServerProcess, eventually, kubeconfig

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"

pytestmark = pytest.mark.timeout(60)


def corefile(ttl: int, extra: str = "") -> str:
    return (".:53 {\n  kubernetes cluster.local in-addr.arpa ip6.arpa {\n    pods insecure\n"
            f"    ttl {ttl}\n  }}\n  ready 127.0.0.1:0\n{extra}}}\n")


def ttl_of(port: int, name: str = "web.default.svc.cluster.local") -> int:
    reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)
    assert dns.rcode.to_text(reply.rcode()) == "NOERROR"
    return int(reply.answer[0].ttl)


class Watchdog:
    """Queries and /ready probes in a loop; counts every failure."""

    def __init__(self, port: int, ready_url: str) -> None:
        self.port, self.ready_url = port, ready_url
        self.queries = self.failures = self.probes = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ttl_of(self.port)
                self.queries += 1
            except Exception as exc:  # any failure is what we count
                self.failures += 1
                self.problems.append(f"query: {exc!r}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                    assert response.status == 200
                self.probes += 1
            except (urllib.error.URLError, AssertionError, OSError) as exc:
                self.failures += 1
                self.problems.append(f"ready: {exc!r}")
            time.sleep(0.01)

    def stop(self) -> None:
        deadline = time.monotonic() + 5
        while (self.queries <= 10 or self.probes <= 10) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(5)
        assert self.queries > 10 and self.probes > 10
        assert self.failures == 0, self.problems[:5]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path, Path, str]]:
    path = tmp_path / "Corefile"
    path.write_text(corefile(5))
    manifests = tmp_path / "cluster.yaml"
    shutil.copy(EXAMPLE, manifests)
    proc = ServerProcess(["--corefile", str(path), "--manifests", str(manifests)])
    ready = eventually(lambda: _url(proc, "ready"))
    yield proc, path, manifests, ready
    proc.stop()


def _url(proc: ServerProcess, what: str) -> str:
    for line in proc.text().splitlines():
        if f"{what} on http://" in line:
            return line.split(f"{what} on ", 1)[1].strip()
    raise AssertionError(f"no {what} address yet")


def test_sighup_applies_a_changed_corefile_without_a_failed_query(
    served: tuple[ServerProcess, Path, Path, str]
) -> None:
    proc, path, _, ready = served
    assert ttl_of(proc.port) == 5
    dog = Watchdog(proc.port, ready)
    time.sleep(0.3)
    path.write_text(corefile(30))
    proc.process.send_signal(signal.SIGHUP)
    eventually(lambda: _expect(ttl_of(proc.port), 30))
    time.sleep(0.3)
    dog.stop()
    assert "reloaded the configuration" in proc.text()


def test_a_broken_corefile_keeps_the_running_configuration(
    served: tuple[ServerProcess, Path, Path, str]
) -> None:
    proc, path, _, _ = served
    path.write_text(corefile(30, "  nosuchplugin\n"))
    proc.process.send_signal(signal.SIGHUP)
    eventually(lambda: _expect("reload failed, the running configuration stays" in proc.text(),
                               True))
    assert "nosuchplugin" in proc.text()
    assert ttl_of(proc.port) == 5


def test_sighup_reads_the_manifests_again(served: tuple[ServerProcess, Path, Path, str]) -> None:
    proc, _, manifests, ready = served
    with manifests.open("a") as out:
        out.write("---\napiVersion: v1\nkind: Service\nmetadata: {name: added, namespace: shop}\n"
                  "spec: {clusterIP: 10.96.77.7}\n")
    dog = Watchdog(proc.port, ready)
    proc.process.send_signal(signal.SIGHUP)
    eventually(lambda: _expect(_address(proc.port, "added.shop.svc.cluster.local"), "10.96.77.7"))
    dog.stop()


def test_the_reload_plugin_notices_a_changed_corefile(tmp_path: Path) -> None:
    path = tmp_path / "Corefile"
    path.write_text(corefile(5, "  reload 2s\n"))
    proc = ServerProcess(["--corefile", str(path), "--manifests", str(EXAMPLE)])
    try:
        assert ttl_of(proc.port) == 5
        path.write_text(corefile(7, "  reload 2s\n"))
        eventually(lambda: _expect(ttl_of(proc.port), 7), timeout=30)  # 2s ± 1s, busy machine
        assert "changed; reloading" in proc.text()
    finally:
        proc.stop()


def test_reload_while_following_the_api_keeps_the_watch(tmp_path: Path) -> None:
    with KubeAPIServer() as api:
        api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        api.apply({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "one", "namespace": "default"},
                   "spec": {"clusterIP": "10.96.9.1"}})
        path = tmp_path / "Corefile"
        path.write_text(corefile(5))
        proc = ServerProcess(["--corefile", str(path), "--kubeconfig",
                              str(kubeconfig(api, tmp_path))])
        try:
            eventually(lambda: _expect(ttl_of(proc.port, "one.default.svc.cluster.local"), 5))
            path.write_text(corefile(30))
            proc.process.send_signal(signal.SIGHUP)
            eventually(lambda: _expect(ttl_of(proc.port, "one.default.svc.cluster.local"), 30))
            # events after the reload reach the new zone
            api.apply({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "two", "namespace": "default"},
                       "spec": {"clusterIP": "10.96.9.2"}})
            eventually(lambda: _expect(_address(proc.port, "two.default.svc.cluster.local"),
                                       "10.96.9.2"))
            assert ttl_of(proc.port, "two.default.svc.cluster.local") == 30
        finally:
            proc.stop()


def _address(port: int, name: str) -> str:
    reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)
    return reply.answer[0][0].to_text() if reply.answer else dns.rcode.to_text(reply.rcode())


def _expect(actual: object, expected: object) -> None:
    assert actual == expected


def _health(port: int) -> int | str:
    """The status of GET /health on ``port``, or "refused"."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return int(response.status)
    except urllib.error.URLError:
        return "refused"


def _free_tcp_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_reload_that_cannot_listen_changes_nothing(
    served: tuple[ServerProcess, Path, Path, str], tmp_path: Path
) -> None:
    """All or nothing: the new Corefile's health endpoint cannot bind (its port is taken), so
    the new TTL is not applied either and the old endpoint keeps answering; the next good
    Corefile applies both. A query and probe loop sees no failure throughout."""
    import socket  # noqa: PLC0415

    proc, path, _, ready = served
    first = _free_tcp_port()
    path.write_text(corefile(5, f"  health 127.0.0.1:{first}\n"))
    proc.process.send_signal(signal.SIGHUP)
    eventually(lambda: _expect(_health(first), 200))
    dog = Watchdog(proc.port, ready)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        path.write_text(corefile(30, f"  health 127.0.0.1:{busy}\n"))
        proc.process.send_signal(signal.SIGHUP)
        eventually(lambda: _expect(proc.text().count("reload failed"), 1))
        assert ttl_of(proc.port) == 5
        assert _health(first) == 200
    second = _free_tcp_port()
    path.write_text(corefile(30, f"  health 127.0.0.1:{second}\n"))
    proc.process.send_signal(signal.SIGHUP)
    eventually(lambda: _expect((ttl_of(proc.port), _health(second)), (30, 200)))
    assert _health(first) == "refused"
    dog.stop()


def _api_with_two_namespaces(api: KubeAPIServer) -> None:
    for namespace in ("default", "shop"):
        api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    api.apply({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "cart", "namespace": "shop"},
               "spec": {"clusterIP": "10.96.9.9"}})
    api.apply({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "client", "namespace": "default"},
               "status": {"phase": "Running", "podIP": "10.244.5.5",
                          "podIPs": [{"ip": "10.244.5.5"}]}})


def test_a_reload_that_widens_namespaces_serves_them_at_once(tmp_path: Path) -> None:
    with KubeAPIServer() as api:
        _api_with_two_namespaces(api)
        path = tmp_path / "Corefile"
        path.write_text(corefile(5).replace("    pods insecure\n",
                                            "    pods insecure\n    namespaces default\n"))
        proc = ServerProcess(["--corefile", str(path), "--kubeconfig",
                              str(kubeconfig(api, tmp_path))])
        try:
            eventually(lambda: _expect(_address(proc.port, "cart.shop.svc.cluster.local"),
                                       "NXDOMAIN"))
            lists = sum(1 for r in api.requests if "watch" not in r.path)
            path.write_text(corefile(5))
            proc.process.send_signal(signal.SIGHUP)
            eventually(lambda: _expect(_address(proc.port, "cart.shop.svc.cluster.local"),
                                       "10.96.9.9"))
            assert sum(1 for r in api.requests if "watch" not in r.path) == lists  # no relist
        finally:
            proc.stop()


def test_a_reload_that_needs_pods_watches_them_before_it_applies(tmp_path: Path) -> None:
    """``pods insecure`` → ``pods verified``: the pods must be watched now; the reload waits
    for that watch to sync, then a pod's name is answered only if the pod exists."""
    with KubeAPIServer() as api:
        _api_with_two_namespaces(api)
        path = tmp_path / "Corefile"
        path.write_text(corefile(5))
        proc = ServerProcess(["--corefile", str(path), "--kubeconfig",
                              str(kubeconfig(api, tmp_path))])
        try:
            eventually(lambda: _expect(
                _address(proc.port, "10-244-7-7.default.pod.cluster.local"), "10.244.7.7"))
            assert not any("/pods" in r.path for r in api.requests)
            path.write_text(corefile(5).replace("pods insecure", "pods verified"))
            proc.process.send_signal(signal.SIGHUP)
            eventually(lambda: _expect("reloaded the configuration" in proc.text(), True))
            assert _address(proc.port, "10-244-5-5.default.pod.cluster.local") == "10.244.5.5"
            assert _address(proc.port, "10-244-7-7.default.pod.cluster.local") == "NXDOMAIN"
        finally:
            proc.stop()
