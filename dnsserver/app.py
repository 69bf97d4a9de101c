"""The running server: zone, source of cluster objects, listeners; start-up and shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from dnsserver import kube, manifests, resolvconf
from dnsserver.autopath import AutoPath
from dnsserver.config import Config
from dnsserver.handler import Handler
from dnsserver.transport import DnsListeners, Limits
from zones import model
from zones.zone import Zone

log = logging.getLogger("dnsserver")


def example_manifests() -> Path:
    """The bundled example cluster (package data)."""
    return Path(str(resources.files("dnsserver") / "example" / "cluster.yaml"))


def source_of(config: Config) -> Path | None:
    """Manifests to serve, or None for the Kubernetes API (kubeconfig or in-cluster)."""
    if config.manifests is not None:
        return config.manifests
    if (
        config.kubeconfig is not None or config.kube_endpoint is not None
        or os.environ.get("KUBERNETES_SERVICE_HOST")
    ):
        return None
    return example_manifests()


class DnsServer:
    """One server: call :meth:`start`, then :meth:`stop` (or :meth:`run` until a signal)."""

    def __init__(self, config: Config, objects: Sequence[model.ClusterObject] | None = None):
        self.config = config
        self.kube: kube.KubeSource | None = None
        dns_ips = [host for host, _ in config.listen if host not in ("0.0.0.0", "::")]
        self.zone = Zone(config.zones, ttl=config.ttl, pods=config.pods, dns_ips=dns_ips,
                         reverse=bool(config.reverse_zones))
        self.autopath: AutoPath | None = None
        if config.autopath:
            domains = config.search_domains
            if domains is None:  # the host's, as kubelet appends them to pods' search lists
                domains = _host_search_domains(Path("/etc/resolv.conf"))
            self.autopath = AutoPath(self.zone, domains)
        self.handler = Handler(self.zone, self.autopath)
        limits = Limits(config.tcp_idle_timeout, config.max_tcp_connections)
        self.listeners = DnsListeners(self.handler.handle, limits)
        self._stopping = asyncio.Event()
        if objects is not None:
            self.load(objects)

    def load(self, objects: Sequence[model.ClusterObject]) -> None:
        """Serve exactly ``objects`` (offline mode): the zone is complete, so it is synced."""
        with self.zone.batch():
            for kind in (model.Namespace, model.Service, model.EndpointSlice, model.Pod):
                self.zone.reconcile(kind, objects)
        self.zone.synced = True

    @property
    def watches_pods(self) -> bool:
        """Pods are listed only when an answer depends on them (they are many)."""
        return self.config.pods is model.PodsMode.VERIFIED or self.config.autopath

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return self.listeners.addresses

    async def start(self, api: object | None = None) -> None:
        """Listen first (answering SERVFAIL for unknown names until synced), then follow ``api``."""
        await self.listeners.start(list(self.config.listen))
        if api is not None:
            options = kube.Options(
                inactivity_timeout=self.config.watch_inactivity_timeout,
                backoff_unit=self.config.watch_backoff_unit,
            )
            self.kube = kube.KubeSource(
                self.zone, api, asyncio.get_running_loop(),
                pods=self.watches_pods, options=options,
            )
            self.kube.start()

    async def stop(self) -> None:
        if self.kube is not None:
            await asyncio.to_thread(self.kube.stop)
        await self.listeners.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self, describe: str, api: object | None = None) -> None:
        """Serve until SIGTERM or SIGINT."""
        await self.start(api)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        where = ", ".join(_format_address(a) for a in self.addresses)
        log.info("serving %s (%s) from %s on %s, udp and tcp",
                 ", ".join(self.zone.origins[:1]), _summary(self.zone), describe, where)
        await self._stopping.wait()
        log.info("shutting down")
        await self.stop()


def _summary(zone: Zone) -> str:
    counts: dict[str, int] = {}
    for obj in zone.objects():
        counts[type(obj).__name__] = counts.get(type(obj).__name__, 0) + 1
    return ", ".join(
        f"{counts.get(kind, 0)} {label}"
        for kind, label in (("Namespace", "namespaces"), ("Service", "services"),
                            ("EndpointSlice", "endpoint slices"), ("Pod", "pods"))
    )


def _format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def load_manifests(path: Path) -> list[model.ClusterObject]:
    return manifests.load(path)


def _host_search_domains(path: Path) -> tuple[str, ...]:
    try:
        return resolvconf.read(path).search
    except OSError:
        return ()
