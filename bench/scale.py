"""Scale benchmark for following a live cluster (not a timed test).

    python -m bench.scale                      # 10,000 Services / 50,000 endpoints
    python -m bench.scale --pods 50000         # ... and 50,000 Pods watched (--pods verified)

In one run: a synthetic cluster (bench.gencluster) is loaded into the Kubernetes API double of
the tests (real HTTP list/watch), our server is started against it through a kubeconfig, pinned
to CPU 0 (the API double runs in this process, pinned to CPU 1), and we print:

- time from process start to synced (every initial list applied), and to the first answer;
- peak RSS of the server process (VmHWM), after sync and at the end;
- time to apply one event to a zone of that size (median, p99), measured in this process on the
  same objects: the zone work an event costs, without the network;
- propagation latency from an API change (an EndpointSlice gains an endpoint) to the new name
  being answered over UDP (median, p99 over --changes changes).

Targets (issue 3): ready <= 2 s, RSS <= 140 MB, propagation median <= 5 ms, p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode

from bench import gencluster
from zones import convert, model
from zones.zone import Zone

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from kubeapi import KubeAPIServer

TARGETS = {"ready_s": 2.0, "rss_mb": 140.0, "propagation_median_ms": 5.0,
           "propagation_p99_ms": 20.0}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def rss_peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) / 1024 if found else float("nan")


def ask(sock: socket.socket, port: int, name: str) -> int:
    """One UDP A query; the rcode (-1 on timeout)."""
    query = dns.message.make_query(name, "A")
    sock.sendto(query.to_wire(), ("127.0.0.1", port))
    try:
        reply = dns.message.from_wire(sock.recv(65535))
    except (TimeoutError, dns.exception.DNSException):
        return -1
    return reply.rcode()


@contextlib.contextmanager
def server(kubeconfig: Path, pods: bool) -> Iterator[tuple[subprocess.Popen[str], int, float]]:
    args = [sys.executable, "-m", "dnsserver", "serve", "--kubeconfig", str(kubeconfig),
            "--listen", "127.0.0.1:0", "--log-level", "info"]
    if pods:
        args += ["--pods", "verified"]
    started = time.monotonic()
    process = subprocess.Popen(["taskset", "-c", "0", *args], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    port = 0
    synced = 0.0
    lines: list[str] = []
    while not synced:
        line = process.stderr.readline()
        if not line:
            raise RuntimeError("server exited:\n" + "".join(lines))
        lines.append(line)
        if found := re.search(r" on 127\.0\.0\.1:(\d+), udp and tcp", line):
            port = int(found.group(1))
        if "synced with the Kubernetes API" in line:
            synced = time.monotonic() - started
    drain = threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True)  # type: ignore[union-attr]
    drain.start()
    try:
        yield process, port, synced
    finally:
        process.terminate()
        process.wait(timeout=20)


def warm_up(api: KubeAPIServer) -> None:
    """List everything once, so the API double serves the server's lists from its JSON cache
    (a real API server answers from its watch cache; our double must not be the bottleneck)."""
    for path in ("/api/v1/namespaces", "/api/v1/services", "/api/v1/pods",
                 "/apis/discovery.k8s.io/v1/endpointslices"):
        token = ""
        while True:
            url = f"{api.url}{path}?limit=500" + (f"&continue={token}" if token else "")
            with urllib.request.urlopen(url) as response:
                token = json.loads(response.read())["metadata"].get("continue", "")
            if not token:
                break


def apply_times(cluster: gencluster.Cluster, samples: int) -> list[float]:
    """Seconds to apply one changed EndpointSlice to a zone holding the whole cluster."""
    objects = [convert.to_model(doc) for doc in cluster.documents()]
    zone = Zone()
    with zone.batch():
        for kind in (model.Namespace, model.Service, model.EndpointSlice, model.Pod):
            zone.reconcile(kind, objects)
    slices = [obj for obj in objects if isinstance(obj, model.EndpointSlice) and obj.endpoints]
    times = []
    for i in range(samples):
        eps = slices[(i * 7919) % len(slices)]
        extra = model.Endpoint((f"10.255.{i // 250}.{i % 250 + 1}",), "")
        changed = model.EndpointSlice(eps.namespace, eps.name, eps.service_name,
                                      (*eps.endpoints, extra), eps.ports, eps.trigger_time)
        began = time.perf_counter()
        zone.apply(changed)
        times.append(time.perf_counter() - began)
    return times


def propagation(api: KubeAPIServer, cluster: gencluster.Cluster, port: int,
                changes: int) -> list[float]:
    """Seconds from an API write to its name answering NOERROR, polled over UDP."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    slices = [s for s in cluster.slices if s["endpoints"] and s["addressType"] == "IPv4"]
    latencies = []
    for i in range(changes):
        doc = json.loads(json.dumps(slices[(i * 104729) % len(slices)]))
        ip = f"10.254.{i // 250}.{i % 250 + 1}"
        doc["endpoints"].append({"addresses": [ip], "conditions": {"ready": True}})
        svc = doc["metadata"]["labels"]["kubernetes.io/service-name"]
        name = f"{ip.replace('.', '-')}.{svc}.{doc['metadata']['namespace']}.svc.cluster.local"
        began = time.perf_counter()
        api.apply(doc)
        deadline = began + 5
        while ask(sock, port, name) != dns.rcode.NOERROR:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{name} did not appear within 5 s")
        latencies.append(time.perf_counter() - began)
    sock.close()
    return latencies


def run(services: int, endpoints: int, pods: int, changes: int) -> dict[str, Any]:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})  # the API double and the probes stay off the server's CPU
    cluster = gencluster.generate(gencluster.Shape(services=services, endpoints=endpoints,
                                                  pods=pods))
    print(f"cluster: {cluster.summary()}", flush=True)
    results: dict[str, Any] = {"services": services, "endpoints": cluster.endpoint_count,
                               "pods": len(cluster.pods)}
    with KubeAPIServer() as api, tempfile.TemporaryDirectory() as tmp:
        for doc in cluster.documents():
            api.apply(doc)
        api.compact()
        warm_up(api)
        kubeconfig = Path(api.write_kubeconfig(str(Path(tmp) / "kubeconfig")))
        with server(kubeconfig, pods=pods > 0) as (process, port, synced):
            results["ready_s"] = synced
            results["rss_after_sync_mb"] = rss_peak_mb(process.pid)
            latencies = propagation(api, cluster, port, changes)
            results["propagation_median_ms"] = statistics.median(latencies) * 1000
            results["propagation_p99_ms"] = percentile(latencies, 0.99) * 1000
            results["rss_mb"] = rss_peak_mb(process.pid)
    applies = apply_times(cluster, 500)
    results["apply_median_ms"] = statistics.median(applies) * 1000
    results["apply_p99_ms"] = percentile(applies, 0.99) * 1000
    return results


def report(results: dict[str, Any]) -> str:
    rows = [
        ("time to ready (synced)", f"{results['ready_s']:.2f} s", "<= 2 s"),
        ("peak RSS after sync", f"{results['rss_after_sync_mb']:.0f} MB", ""),
        ("peak RSS at the end", f"{results['rss_mb']:.0f} MB", "<= 140 MB"),
        ("apply one event, median", f"{results['apply_median_ms']:.2f} ms", ""),
        ("apply one event, p99", f"{results['apply_p99_ms']:.2f} ms", ""),
        ("propagation, median", f"{results['propagation_median_ms']:.2f} ms", "<= 5 ms"),
        ("propagation, p99", f"{results['propagation_p99_ms']:.2f} ms", "<= 20 ms"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value:>10}  {target}" for name, value, target in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=50_000)
    parser.add_argument("--pods", type=int, default=0)
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args(argv)
    results = run(args.services, args.endpoints, args.pods, args.changes)
    print(report(results))
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"scale-{args.services}-{args.pods}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
