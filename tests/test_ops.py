"""/health, /ready and /metrics of the real server, and the lame-duck shutdown, from outside."""

from __future__ import annotations

import datetime
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubeapi import KubeAPIServer
from livecluster import ServerProcess, answer_of, eventually, kubeconfig
from prometheus_client.parser import text_string_to_metric_families

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"
OPS = ["--health", "127.0.0.1:0", "--ready", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]

pytestmark = pytest.mark.timeout(60)


def endpoints(proc: ServerProcess) -> dict[str, str]:
    """path -> URL, from the log lines the server prints at start."""
    def found() -> dict[str, str]:
        urls = dict(re.findall(r"(\w+) on (http://\S+)", proc.text()))
        assert {"health", "ready", "metrics"} <= set(urls), proc.text()
        return urls
    return eventually(found)  # type: ignore[no-any-return]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(url)
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, ls), v in metrics.items()
        if n == name and all((k, labels[k]) in ls for k in labels)
    )


@pytest.fixture
def offline() -> Iterator[ServerProcess]:
    proc = ServerProcess(["--manifests", str(EXAMPLE), *OPS, "--lameduck", "2"])
    yield proc
    proc.stop()  # also after the process ended by itself: closes its pipe


def test_health_and_ready_when_serving_manifests(offline: ServerProcess) -> None:
    urls = endpoints(offline)
    assert get(urls["health"]) == (200, "OK")
    assert get(urls["ready"]) == (200, "OK")
    assert get(urls["health"].replace("/health", "/nope"))[0] == 404


def test_metrics_count_queries_with_coredns_names(offline: ServerProcess) -> None:
    url = endpoints(offline)["metrics"]
    before = samples(url)
    for _ in range(7):
        assert answer_of(offline.port, "web.default.svc.cluster.local")[0] == "NOERROR"
    for _ in range(3):
        assert answer_of(offline.port, "nope.default.svc.cluster.local", "AAAA")[0] == "NXDOMAIN"
    after = samples(url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("coredns_dns_requests_total", proto="udp", family="1", type="A") == 7
    assert moved("coredns_dns_requests_total", proto="udp", family="1", type="AAAA") == 3
    assert moved("coredns_dns_responses_total", rcode="NOERROR", plugin="kubernetes") == 7
    assert moved("coredns_dns_responses_total", rcode="NXDOMAIN", plugin="kubernetes") == 3
    assert moved("coredns_dns_request_duration_seconds_count") == 10
    assert moved("coredns_dns_request_duration_seconds_bucket", le="+Inf") == 10
    server = next(dict(ls)["server"] for (n, ls) in after if n == "coredns_dns_requests_total")
    assert server == f"dns://127.0.0.1:{offline.port}"
    assert value(after, "coredns_build_info") == 1


def test_lame_duck_shutdown(offline: ServerProcess) -> None:
    urls = endpoints(offline)
    assert get(urls["ready"]) == (200, "OK")
    offline.process.send_signal(signal.SIGTERM)
    eventually(lambda: _expect(get(urls["ready"]), (503, "Shutting down")), timeout=1)
    # still answering DNS and healthy during the lame duck period
    assert answer_of(offline.port, "web-0.web.default.svc.cluster.local") == (
        "NOERROR", {"A 10.244.1.10"})
    assert get(urls["health"]) == (200, "OK")
    started = time.monotonic()
    assert offline.process.wait(timeout=10) == 0
    assert 0.5 < time.monotonic() - started < 4
    assert "going into lame duck mode for 2s" in offline.text()


def test_second_signal_ends_the_lame_duck_at_once(offline: ServerProcess) -> None:
    endpoints(offline)
    offline.process.send_signal(signal.SIGTERM)
    eventually(lambda: _expect("lame duck" in offline.text(), True), timeout=2)
    started = time.monotonic()
    offline.process.send_signal(signal.SIGTERM)
    assert offline.process.wait(timeout=5) == 0
    assert time.monotonic() - started < 1.5


def _expect(actual: object, expected: object) -> None:
    assert actual == expected


def test_ready_only_after_the_initial_sync(tmp_path: Path) -> None:
    with KubeAPIServer() as api:
        api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        api.set_failing(503)
        proc = ServerProcess(["--kubeconfig", str(kubeconfig(api, tmp_path)), *OPS,
                              "--watch-backoff", "0.1", "--lameduck", "0"])
        try:
            urls = endpoints(proc)
            assert get(urls["ready"]) == (503, "kubernetes")
            assert get(urls["health"]) == (200, "OK")
            api.set_failing(None)
            eventually(lambda: _expect(get(urls["ready"]), (200, "OK")))
            # The API going away does not make us unready: the last state is served.
            api.set_down(True)
            time.sleep(0.5)
            assert get(urls["ready"]) == (200, "OK")
        finally:
            proc.stop()


def test_programming_latency_is_recorded(tmp_path: Path) -> None:
    with KubeAPIServer() as api:
        for obj in (
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
             "spec": {"clusterIP": "None", "selector": {"app": "web"}}},
        ):
            api.apply(obj)
        proc = ServerProcess(["--kubeconfig", str(kubeconfig(api, tmp_path)), *OPS,
                              "--lameduck", "0"])
        try:
            url = endpoints(proc)["metrics"]
            eventually(lambda: _expect(get(endpoints(proc)["ready"])[0], 200))
            trigger = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=2))
            api.apply({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": "web-x", "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "web"},
                    "annotations": {"endpoints.kubernetes.io/last-change-trigger-time":
                                    trigger.strftime("%Y-%m-%dT%H:%M:%SZ")},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.1.2.3"]}],
            })
            eventually(lambda: _expect(answer_of(proc.port, "web.default.svc.cluster.local"),
                                       ("NOERROR", {"A 10.1.2.3"})))
            metrics = samples(url)
            name = "coredns_kubernetes_dns_programming_duration_seconds"
            assert value(metrics, name + "_count", service_kind="headless_with_selector") == 1
            assert 1.0 <= value(metrics, name + "_sum") < 30
        finally:
            proc.stop()


def test_query_log_in_coredns_format() -> None:
    proc = ServerProcess(["--manifests", str(EXAMPLE), "--log-queries"])
    try:
        sock_port = _udp_query(proc.port, "Web.default.svc.cluster.local", query_id=4242)
        pattern = (rf'127\.0\.0\.1:{sock_port} - 4242 "A IN Web\.default\.svc\.cluster\.local\. '
                   r'udp \d+ false 512" NOERROR qr,aa,rd \d+ [0-9.]+s')
        eventually(lambda: _expect(bool(re.search(pattern, proc.text())), True))
    finally:
        proc.stop()


def _udp_query(port: int, name: str, query_id: int) -> int:
    """Send one plain query (no EDNS) from a fresh socket; the socket's port."""
    import socket  # noqa: PLC0415

    import dns.message  # noqa: PLC0415

    query = dns.message.make_query(name, "A", use_edns=False)
    query.id = query_id
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(query.to_wire(), ("127.0.0.1", port))
        sock.recv(4096)
        return int(sock.getsockname()[1])


def test_loadbalance_rotates_address_records() -> None:
    import dns.message  # noqa: PLC0415
    import dns.query  # noqa: PLC0415

    def first_addresses(proc: ServerProcess, name: str, times: int) -> list[list[str]]:
        orders = []
        for _ in range(times):
            reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1",
                                  port=proc.port, timeout=2)
            orders.append([r.address for rrset in reply.answer for r in rrset])
        return orders

    balanced = ServerProcess(["--manifests", str(EXAMPLE), "--loadbalance"])
    plain = ServerProcess(["--manifests", str(EXAMPLE)])
    try:
        orders = first_addresses(balanced, "web.default.svc.cluster.local", 6)
        assert {tuple(sorted(o)) for o in orders} == {("10.244.1.10", "10.244.2.11")}
        assert {o[0] for o in orders} == {"10.244.1.10", "10.244.2.11"}  # both lead in turn
        orders = first_addresses(plain, "web.default.svc.cluster.local", 4)
        assert len({tuple(o) for o in orders}) == 1
    finally:
        balanced.stop()
        plain.stop()
