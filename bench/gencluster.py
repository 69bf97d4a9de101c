"""Synthetic Kubernetes clusters for benchmarks, the same from the same seed.

    python -m bench.gencluster --services 1000 --out /tmp/cluster
    python -m bench.gencluster --services 10000 --endpoints 50000 --pods 50000 --out DIR

A cluster has N Services spread unevenly over M application namespaces, ``kubernetes.default``
and ``kube-dns.kube-system`` included (they are two of the N), in a mix like a real cluster's:

- most are ClusterIP (a few NodePort or LoadBalancer, a few dual-stack) with 1-3 named ports;
- some are headless, mostly StatefulSet-style (endpoint hostnames ``<svc>-0``, ``<svc>-1``...);
- some are ExternalName, mostly to outside names, a few to another Service of the cluster.

E endpoints are spread over the Services that have a selector (most have a few, a few have
many, some are scaled to zero), cut into EndpointSlices of at most 100 with the
``kubernetes.io/service-name`` label; about 5% are not ready. A dual-stack Service lists each
endpoint in an IPv4 and in an IPv6 slice (one endpoint, two slices). With P pods, the first
pods are the ones behind the endpoints (same names and IPs); the rest are pods no Service
selects: jobs, host-network agents, completed pods.

:func:`generate` returns plain API dicts (what ``kubectl get -o yaml`` prints, trimmed) and a
:class:`ServiceInfo` catalog for query generators; :func:`write` writes multi-document YAML.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import yaml

try:
    from yaml import CSafeDumper as Dumper  # libyaml: ~10x faster than the pure-Python dumper
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeDumper as Dumper  # type: ignore[assignment]

Manifest = dict[str, Any]

SLICE_CAPACITY = 100  # the EndpointSlice controller's default maxEndpointsPerSlice
PODS_PER_NODE = 110  # kubelet's default maxPods; one /24 of pod addresses per node
NOT_READY_SHARE = 0.05
HEADLESS_SHARE = 0.10
EXTERNAL_NAME_SHARE = 0.05
DUAL_STACK_SHARE = 0.05
SCALED_TO_ZERO_SHARE = 0.02
TRIGGER_TIME = "2026-11-01T12:00:00Z"
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes' generateName uses

_TEAMS = (
    "payments", "checkout", "search", "identity", "catalog", "shipping", "billing", "ads",
    "analytics", "messaging", "media", "platform", "data", "ml", "support", "inventory",
    "orders", "pricing", "reviews", "notify", "auth", "gateway", "ledger", "growth",
)
_COMPONENTS = (
    "api", "web", "worker", "frontend", "backend", "cache", "db", "queue", "gateway", "auth",
    "cart", "user", "order", "invoice", "report", "search", "index", "feed", "image", "email",
    "sms", "push", "session", "profile", "config", "rules", "score", "router", "proxy", "sync",
)
_ROLES = ("", "svc", "server", "internal", "public", "v2", "grpc", "read", "write", "admin")
_STATEFUL = ("postgres", "redis", "kafka", "zookeeper", "etcd", "mongo", "cassandra", "nats",
             "elasticsearch", "rabbitmq", "mysql", "minio")
_PROVIDERS = ("rds.amazonaws", "database.azure", "cloudsql.googleapis", "partner", "legacy",
              "saas-vendor", "mail-relay", "cdn")
# (name, port, targetPort, protocol)
_PORTS = (
    ("http", 80, 8080, "TCP"), ("https", 443, 8443, "TCP"), ("grpc", 9090, 9090, "TCP"),
    ("metrics", 9100, 9100, "TCP"), ("admin", 8081, 8081, "TCP"), ("http-alt", 8000, 8000, "TCP"),
    ("health", 8086, 8086, "TCP"), ("tcp-amqp", 5672, 5672, "TCP"), ("udp-syslog", 514, 514, "UDP"),
    ("ws", 8088, 8088, "TCP"),
)
_STATEFUL_PORTS = (
    ("client", 2379, 2379, "TCP"), ("peer", 2380, 2380, "TCP"), ("tcp-db", 5432, 5432, "TCP"),
    ("tcp-redis", 6379, 6379, "TCP"), ("gossip", 7946, 7946, "UDP"),
)
_PORT_COUNTS = ((1, 2, 3), (5, 3, 2))  # 1-3 named ports, mostly one


class ServiceKind(StrEnum):
    CLUSTER_IP = "ClusterIP"
    HEADLESS = "Headless"
    EXTERNAL_NAME = "ExternalName"


@dataclass(frozen=True, slots=True)
class Shape:
    """How big a cluster to make. Zero means the default that depends on ``services``."""

    services: int = 1000
    namespaces: int = 0  # application namespaces besides default and kube-system; 0: N / 25
    endpoints: int = 0  # 0: five per Service
    pods: int = 0
    seed: int = 1

    def resolved(self) -> Shape:
        if self.services < 2:
            raise ValueError("a cluster has at least 2 Services (kubernetes and kube-dns)")
        if min(self.namespaces, self.endpoints, self.pods) < 0:
            raise ValueError("namespaces, endpoints and pods must not be negative")
        return replace(
            self,
            namespaces=self.namespaces or max(1, self.services // 25),
            endpoints=self.endpoints or 5 * self.services,
        )


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """One generated Service as a query generator sees it."""

    namespace: str
    name: str
    kind: ServiceKind
    ports: tuple[tuple[str, str], ...]  # (name, protocol) of its named ports
    hostnames: tuple[str, ...]  # hostnames of ready endpoints (StatefulSet-style headless)
    ready: int  # ready endpoints
    dual_stack: bool


@dataclass(slots=True)
class Cluster:
    shape: Shape
    namespaces: list[Manifest] = field(default_factory=list)
    services: list[Manifest] = field(default_factory=list)
    slices: list[Manifest] = field(default_factory=list)
    pods: list[Manifest] = field(default_factory=list)
    catalog: list[ServiceInfo] = field(default_factory=list)

    def documents(self) -> Iterator[Manifest]:
        yield from self.namespaces
        yield from self.services
        yield from self.slices
        yield from self.pods

    @property
    def endpoint_count(self) -> int:
        """Endpoints of the cluster, each counted once (not once per dual-stack slice)."""
        return sum(
            len(s["endpoints"]) for s in self.slices if s["addressType"] == "IPv4"
        )

    def summary(self) -> str:
        return (
            f"{len(self.namespaces)} namespaces, {len(self.services)} services, "
            f"{len(self.slices)} endpoint slices ({self.endpoint_count} endpoints), "
            f"{len(self.pods)} pods"
        )


@dataclass(slots=True)
class _Backend:
    """One endpoint (one pod) behind a Service."""

    pod: str
    ips: tuple[str, ...]  # IPv4 first, then IPv6 for dual-stack Services
    node: str
    hostname: str
    ready: bool


def generate(shape: Shape | None = None) -> Cluster:
    """A cluster of ``shape`` (default: 1,000 Services); the same seed gives the same cluster."""
    return _Generator((shape or Shape()).resolved()).run()


def write(cluster: Cluster, directory: Path, *, style: str = "block") -> list[Path]:
    """Write ``directory/{namespaces,services,endpointslices,pods}.yaml``; returns the paths.

    ``style="block"`` is block YAML from CSafeDumper, as ``kubectl -o yaml`` prints it;
    ``style="flow"`` writes each document on one line in flow style (JSON, which YAML parsers
    read as YAML), about 12x faster: 0.7 s instead of 8 s for 10,000 Services, 50,000
    endpoints and 50,000 pods.
    """
    directory.mkdir(parents=True, exist_ok=True)
    groups = {
        "namespaces.yaml": cluster.namespaces,
        "services.yaml": cluster.services,
        "endpointslices.yaml": cluster.slices,
        "pods.yaml": cluster.pods,
    }
    written = []
    for filename, documents in groups.items():
        if not documents:
            continue
        path = directory / filename
        with path.open("w", encoding="utf-8") as stream:
            dump(documents, stream, style=style)
        written.append(path)
    return written


def dump(documents: Sequence[Manifest], stream: IO[str], *, style: str = "block") -> None:
    """Multi-document YAML, ``---`` before every document."""
    if style == "flow":
        for document in documents:
            stream.write("---\n")
            stream.write(json.dumps(document, separators=(",", ":")))
            stream.write("\n")
    elif style == "block":
        yaml.dump_all(documents, stream, Dumper=Dumper, sort_keys=False, explicit_start=True)
    else:
        raise ValueError(f"unknown style {style!r}: expected block or flow")


class _Generator:
    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.rng = random.Random(shape.seed)
        self.cluster = Cluster(shape)
        self.next_cluster_ip = 256  # 10.96.1.0 on: 10.96.0.1 and .10 are kubernetes, kube-dns
        self.next_pod_ip = 0
        self.taken_names: set[tuple[str, str, str]] = set()  # (kind, namespace, name)
        self.backends: list[tuple[str, str, _Backend]] = []  # (namespace, app, backend)

    def run(self) -> Cluster:
        namespaces = self._namespaces()
        self._system_services()
        kinds = self._service_kinds(self.shape.services - 2)
        counts = self._endpoint_counts(kinds, self.shape.endpoints - 3)
        weights = [self.rng.paretovariate(1.0) for _ in namespaces]  # a few big namespaces
        homes = self.rng.choices(namespaces, weights=weights, k=len(kinds))
        for kind, count, namespace in zip(kinds, counts, homes, strict=True):
            self._service(kind, namespace, count)
        self._pods()
        return self.cluster

    # -- namespaces and the two system Services -------------------------------------------

    def _namespaces(self) -> list[str]:
        names = []
        for i in range(self.shape.namespaces):
            team = _TEAMS[i % len(_TEAMS)]
            names.append(team if i < len(_TEAMS) else f"{team}-{i // len(_TEAMS) + 1}")
        for name in ("default", "kube-system", *names):
            self.cluster.namespaces.append(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )
        return names

    def _system_services(self) -> None:
        kubernetes = self._service_manifest(
            "default", "kubernetes", ServiceKind.CLUSTER_IP, [("https", 443, 6443, "TCP")],
            cluster_ips=["10.96.0.1"], selector=False,
        )
        api_server = _Backend("", ("172.18.0.2",), "control-plane", "", True)
        self._publish(kubernetes, [api_server], [("https", 443, 6443, "TCP")], managed=False)
        dns_ports = [("dns", 53, 53, "UDP"), ("dns-tcp", 53, 53, "TCP"),
                     ("metrics", 9153, 9153, "TCP")]
        kube_dns = self._service_manifest(
            "kube-system", "kube-dns", ServiceKind.CLUSTER_IP, dns_ports,
            cluster_ips=["10.96.0.10"],
        )
        template = f"coredns-{self._suffix(10)}"
        backends = [self._backend("kube-system", "kube-dns", template, "", False) for _ in range(2)]
        self._publish(kube_dns, backends, dns_ports)

    # -- Services ---------------------------------------------------------------------------

    def _service_kinds(self, count: int) -> list[ServiceKind]:
        kinds = []
        for _ in range(count):
            draw = self.rng.random()
            if draw < EXTERNAL_NAME_SHARE:
                kinds.append(ServiceKind.EXTERNAL_NAME)
            elif draw < EXTERNAL_NAME_SHARE + HEADLESS_SHARE:
                kinds.append(ServiceKind.HEADLESS)
            else:
                kinds.append(ServiceKind.CLUSTER_IP)
        return kinds

    def _endpoint_counts(self, kinds: list[ServiceKind], total: int) -> list[int]:
        """Spread ``total`` endpoints: one each first, the rest by a long-tailed weight."""
        counts = [0] * len(kinds)
        weights = [0.0] * len(kinds)
        for i, kind in enumerate(kinds):
            if kind is ServiceKind.EXTERNAL_NAME or self.rng.random() < SCALED_TO_ZERO_SHARE:
                continue
            cap = 8.0 if kind is ServiceKind.HEADLESS else 60.0  # StatefulSets stay small
            weights[i] = min(self.rng.paretovariate(1.2), cap)
        backed = [i for i, w in enumerate(weights) if w]
        if total <= 0 or not backed:
            return counts
        for i in backed[:total]:
            counts[i] = 1
        rest = total - min(total, len(backed))
        weight_sum = sum(weights)
        for i in backed:
            counts[i] += int(rest * weights[i] / weight_sum)
        leftover = total - sum(counts)
        by_weight = sorted(backed, key=lambda i: -weights[i])
        for step in range(leftover):
            counts[by_weight[step % len(by_weight)]] += 1
        return counts

    def _service(self, kind: ServiceKind, namespace: str, count: int) -> None:
        rng = self.rng
        if kind is ServiceKind.HEADLESS:
            base = rng.choice(_STATEFUL)
            name = self._unique("Service", namespace, f"{base}-{rng.choice(_COMPONENTS)}")
        else:
            component, role = rng.choice(_COMPONENTS), rng.choice(_ROLES)
            name = self._unique("Service", namespace, f"{component}-{role}" if role else component)
        if kind is ServiceKind.EXTERNAL_NAME:
            self._external_name(namespace, name)
            return
        pool = _STATEFUL_PORTS if kind is ServiceKind.HEADLESS else _PORTS
        port_count = rng.choices(*_PORT_COUNTS)[0]
        ports = rng.sample(pool, min(port_count, len(pool)))
        dual = kind is ServiceKind.CLUSTER_IP and rng.random() < DUAL_STACK_SHARE
        manifest = self._service_manifest(namespace, name, kind, ports, dual_stack=dual)
        stateful = kind is ServiceKind.HEADLESS and rng.random() < 0.75
        template = "" if stateful else f"{name}-{self._suffix(rng.choice((9, 10)))}"
        backends = [
            self._backend(namespace, name, template, f"{name}-{i}" if stateful else "", dual)
            for i in range(count)
        ]
        self._publish(manifest, backends, ports)

    def _external_name(self, namespace: str, name: str) -> None:
        in_cluster = [s for s in self.cluster.catalog[-50:] if s.kind is ServiceKind.CLUSTER_IP]
        if in_cluster and self.rng.random() < 0.2:
            other = self.rng.choice(in_cluster)
            target = f"{other.name}.{other.namespace}.svc.cluster.local"
        else:
            target = f"{name}.{self.rng.choice(_PROVIDERS)}.example.com"
        self.cluster.services.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": target},
        })
        self.cluster.catalog.append(
            ServiceInfo(namespace, name, ServiceKind.EXTERNAL_NAME, (), (), 0, False)
        )

    def _service_manifest(
        self, namespace: str, name: str, kind: ServiceKind,
        ports: Sequence[tuple[str, int, int, str]], *,
        cluster_ips: list[str] | None = None, dual_stack: bool = False, selector: bool = True,
    ) -> Manifest:
        spec: Manifest = {}
        if kind is ServiceKind.HEADLESS:
            spec.update(type="ClusterIP", clusterIP="None", clusterIPs=["None"])
        else:
            if cluster_ips is None:
                index = self.next_cluster_ip
                self.next_cluster_ip += 1
                cluster_ips = [_service_v4(index)]
                if dual_stack:
                    cluster_ips.append(f"fd00:10:96::{index:x}")
            draw = self.rng.random()
            service_type = "NodePort" if draw < 0.03 else "LoadBalancer" if draw < 0.05 else None
            spec.update(type=service_type or "ClusterIP", clusterIP=cluster_ips[0],
                        clusterIPs=cluster_ips)
        if dual_stack:
            spec.update(ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
        spec["ports"] = [
            {"name": p, "port": port, "protocol": proto, "targetPort": target}
            for p, port, target, proto in ports
        ]
        if selector:
            spec["selector"] = {"app": name}
        return {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": spec,
        }

    # -- endpoints and their slices -------------------------------------------------------

    def _backend(self, namespace: str, app: str, template: str, hostname: str,
                 dual: bool) -> _Backend:
        index = self.next_pod_ip
        self.next_pod_ip += 1
        pod = self._unique("Pod", namespace, hostname or f"{template}-{self._suffix(5)}")
        ips = _pod_ips(index, dual)
        backend = _Backend(pod, ips, _node_name(index), hostname,
                           self.rng.random() >= NOT_READY_SHARE)
        self.backends.append((namespace, app, backend))
        return backend

    def _publish(self, service: Manifest, backends: list[_Backend],
                 ports: Sequence[tuple[str, int, int, str]], *, managed: bool = True) -> None:
        meta = service["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        slice_ports = [{"name": p, "port": target, "protocol": proto}
                       for p, _port, target, proto in ports]
        dual = len(service["spec"].get("clusterIPs", ())) == 2
        families = ("IPv4", "IPv6") if dual else ("IPv4",)
        for position, family in enumerate(families):
            for start in range(0, len(backends), SLICE_CAPACITY):
                chunk = backends[start : start + SLICE_CAPACITY]
                self.cluster.slices.append(
                    self._slice(namespace, name, family, position, chunk, slice_ports, managed)
                )
        self.cluster.services.append(service)
        kind = (ServiceKind.HEADLESS if service["spec"].get("clusterIP") == "None"
                else ServiceKind.CLUSTER_IP)
        self.cluster.catalog.append(ServiceInfo(
            namespace, name, kind,
            tuple((p, proto) for p, _port, _target, proto in ports),
            tuple(b.hostname for b in backends if b.ready and b.hostname),
            sum(b.ready for b in backends), len(families) == 2,
        ))

    def _slice(self, namespace: str, service: str, family: str, position: int,
               backends: list[_Backend], ports: list[Manifest], managed: bool) -> Manifest:
        endpoints = []
        for b in backends:
            endpoint: Manifest = {
                "addresses": [b.ips[position]],
                "conditions": {"ready": b.ready, "serving": b.ready, "terminating": False},
            }
            if b.hostname:
                endpoint["hostname"] = b.hostname
            endpoint["nodeName"] = b.node
            if b.pod:
                endpoint["targetRef"] = {"kind": "Pod", "name": b.pod, "namespace": namespace}
            endpoints.append(endpoint)
        labels = {"kubernetes.io/service-name": service}
        if managed:
            labels["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io"
        name = service if not managed else self._unique(
            "EndpointSlice", namespace, f"{service}-{self._suffix(5)}"
        )
        return {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": name, "namespace": namespace, "labels": labels,
                "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": TRIGGER_TIME},
            },
            "addressType": family,
            "endpoints": endpoints,
            "ports": ports,
        }

    # -- pods -------------------------------------------------------------------------------

    def _pods(self) -> None:
        wanted = self.shape.pods
        for namespace, app, backend in self.backends[:wanted]:
            if backend.pod:
                self.cluster.pods.append(_pod_manifest(
                    namespace, backend.pod, app, backend.node, backend.ips,
                    "Running" if backend.ready else "Pending",
                ))
        namespaces = [ns["metadata"]["name"] for ns in self.cluster.namespaces]
        while len(self.cluster.pods) < wanted:
            draw = self.rng.random()
            namespace = self.rng.choice(namespaces)
            if draw < 0.05:  # a node agent on the host network: the node's address
                node = self.rng.randrange(max(1, self.next_pod_ip // PODS_PER_NODE + 1))
                name = self._unique("Pod", namespace, f"node-agent-{self._suffix(5)}")
                self.cluster.pods.append(_pod_manifest(
                    namespace, name, "node-agent", _node_name(node * PODS_PER_NODE),
                    (_node_ip(node),), "Running", host_network=True,
                ))
                continue
            index = self.next_pod_ip
            self.next_pod_ip += 1
            job = f"{self.rng.choice(_COMPONENTS)}-job-{self._suffix(8)}"
            name = self._unique("Pod", namespace, f"{job}-{self._suffix(5)}")
            phase = "Succeeded" if draw < 0.25 else "Running"
            self.cluster.pods.append(_pod_manifest(
                namespace, name, job, _node_name(index), _pod_ips(index, False), phase,
            ))

    # -- names ------------------------------------------------------------------------------

    def _suffix(self, length: int) -> str:
        return "".join(self.rng.choices(_SUFFIX_ALPHABET, k=length))

    def _unique(self, kind: str, namespace: str, name: str) -> str:
        candidate, n = name, 1
        while (kind, namespace, candidate) in self.taken_names:
            n += 1
            candidate = f"{name}-{n}"
        self.taken_names.add((kind, namespace, candidate))
        return candidate


def _pod_manifest(namespace: str, name: str, app: str, node: str, ips: tuple[str, ...],
                  phase: str, *, host_network: bool = False) -> Manifest:
    spec: Manifest = {"nodeName": node}
    if host_network:
        spec["hostNetwork"] = True
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": spec,
        "status": {"phase": phase, "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]},
    }


def _service_v4(index: int) -> str:
    """The ``index``-th address of 10.96.0.0/12."""
    if index >= 1 << 20:
        raise ValueError("more Services than 10.96.0.0/12 holds")
    return f"10.{96 + (index >> 16)}.{(index >> 8) & 255}.{index & 255}"


def _pod_ips(index: int, dual: bool) -> tuple[str, ...]:
    """Pod ``index``: node ``index // 110``, whose /24 is in 10.244.0.0/14 and on."""
    node, host = divmod(index, PODS_PER_NODE)
    if node >= 12 * 256:
        raise ValueError("more pods than 10.244.0.0-10.255.255.255 holds")
    v4 = f"10.{244 + (node >> 8)}.{node & 255}.{host + 2}"
    return (v4, f"fd00:10:244:{node:x}::{host + 2:x}") if dual else (v4,)


def _node_name(pod_index: int) -> str:
    return f"node-{pod_index // PODS_PER_NODE:04d}"


def _node_ip(node: int) -> str:
    return f"172.18.{(node + 3) >> 8}.{(node + 3) & 255}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gencluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000, help="Services (default 1000)")
    parser.add_argument("--namespaces", type=int, default=0,
                        help="application namespaces (default: one per 25 Services)")
    parser.add_argument("--endpoints", type=int, default=0,
                        help="endpoints in all (default: 5 per Service)")
    parser.add_argument("--pods", type=int, default=0, help="Pods (default 0)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--style", choices=("block", "flow"), default="block",
                        help="block YAML (default), or one flow-style (JSON) line per "
                             "document: 12x faster to write")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write DIR/{namespaces,services,endpointslices,pods}.yaml "
                             "(default: one stream on stdout)")
    args = parser.parse_args(argv)
    try:
        shape = Shape(args.services, args.namespaces, args.endpoints, args.pods, args.seed)
        started = time.perf_counter()
        cluster = generate(shape)
        generated = time.perf_counter()
        if args.out is None:
            dump(list(cluster.documents()), sys.stdout, style=args.style)
        else:
            write(cluster, args.out, style=args.style)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"{cluster.summary()}; generated in {generated - started:.2f} s, "
          f"written in {time.perf_counter() - generated:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
