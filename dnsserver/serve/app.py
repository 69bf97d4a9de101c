"""The running server: zone, source of cluster objects, listeners; start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import random
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, Metric

from dnsserver.cluster import manifests
from dnsserver.cluster import watch as kube
from dnsserver.config import resolvconf
from dnsserver.config.settings import Config, ConfigError, format_host_port, split_host_port
from dnsserver.plugins import chain
from dnsserver.plugins import forward as forwarding
from dnsserver.plugins.autopath import AutoPath
from dnsserver.plugins.errors import ErrorLog
from dnsserver.plugins.log import QueryLog
from dnsserver.serve import http
from dnsserver.serve.handler import Handler
from dnsserver.serve.http import OpsServer
from dnsserver.serve.metrics import Metrics
from dnsserver.serve.transport import DnsListeners, Limits
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

    def __init__(
        self, config: Config, objects: Sequence[model.ClusterObject] | None = None,
        reloader: Reloader | None = None,
    ) -> None:
        """``reloader`` reads the configuration (and manifests) again, for SIGHUP and the
        Corefile's ``reload``."""
        self.config = config
        self.kube: kube.KubeSource | None = None
        self._reloader = reloader
        self.zone = _make_zone(config)
        self.autopath = _make_autopath(config, self.zone)
        first = config.listen[0]
        self.metrics = Metrics(server=f"dns://{format_host_port(*first)}")
        self.exit_code = 0
        self.plugins = self._make_plugins(config)
        self.handler = Handler(self.zone, self.autopath, self.metrics.queries, _query_log(config),
                               plugins=self.plugins)
        self.handler.serve_zones(_served_zones(config), _other_blocks(config))
        self.handler.loadbalance = config.loadbalance
        self.metrics.add_source(self._autopath_metrics)
        self.metrics.add_source(self._forwarding_metrics)
        self.metrics.add_source(self._reload_metrics)
        self.listeners = DnsListeners(self.handler.handle, _limits(config))
        self.ops = _make_ops(config, self.unready_reason, self.metrics)
        self.lame_duck = False
        self.reload_failures = 0
        self.forwarding: forwarding.Forwarding | None = None
        self._stopping = asyncio.Event()
        self._now = asyncio.Event()
        self._api: object | None = None
        self._tasks: set[asyncio.Task[bool]] = set()
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
        return _watches_pods(self.config)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return self.listeners.addresses

    def unready_reason(self) -> str | None:
        """None when ready for traffic: synced with the cluster and not shutting down. Once
        ready it stays so while the API is away: the last known state keeps being served, and
        every replica turning unready at once would take the cluster's DNS down."""
        if self.lame_duck:
            return "Shutting down"
        return None if self.zone.synced else "kubernetes"

    def _autopath_metrics(self) -> Iterator[Metric]:
        if self.autopath is None:
            return
        family = CounterMetricFamily(
            "coredns_autopath_success", "Counter of requests that did autopath.",
            labels=["server"])
        family.add_metric([self.metrics.collector.server], self.autopath.successes)
        yield family

    def _forwarding_metrics(self) -> Iterator[Metric]:
        if self.forwarding is not None:
            yield from self.forwarding.metrics()

    def _reload_metrics(self) -> Iterator[Metric]:
        failed = CounterMetricFamily("coredns_reload_failed", "Counter of the number of "
                                     "failed reload attempts.")
        failed.add_metric([], self.reload_failures)
        yield failed

    async def start(self, api: object | None = None) -> None:
        """Follow ``api``, and listen once synced or after ``startup_timeout`` (CoreDNS's
        kubernetes start-up wait; 0 listens at once), answering SERVFAIL for names the
        zone cannot deny until synced."""
        await self.ops.start()
        self._api = api
        if api is not None:
            self.kube = self._kube_source(self.zone, self.config)
            self.kube.start()
            if self.config.startup_timeout > 0:
                try:
                    await asyncio.wait_for(self.kube.synced.wait(), self.config.startup_timeout)
                except TimeoutError:
                    log.warning("starting with the Kubernetes API not synced after %gs",
                                self.config.startup_timeout)
        await self.listeners.start(list(self.config.listen))
        self.metrics.collector.server = f"dns://{format_host_port(*self.addresses[0])}"
        # Upstreams are checked against the addresses actually bound: one of them is a loop.
        self.forwarding = _make_forwarding(self.config, self.addresses)
        self.handler.forwarding = self.forwarding
        self._connect_autopath()
        for plugin in self.plugins:
            await plugin.start()

    async def stop(self) -> None:
        """Stop following the API, close the DNS listeners (and their connections), then HTTP."""
        if self.kube is not None:
            await asyncio.to_thread(self.kube.stop)
        await self.listeners.stop()
        if self.forwarding is not None:
            if self.forwarding.errors is not None:
                self.forwarding.errors.flush()  # consolidated counts still pending
            await self.forwarding.close()
        for plugin in self.plugins:
            await plugin.close()
        await self.ops.stop()

    # -- reload ---------------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: read the configuration (and manifests) again and apply them."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> bool:
        """Apply the configuration the reloader reads now; on any error keep the running one."""
        if self._reloader is None:
            return False
        try:
            config, objects = self._reloader()
            await self.reconfigure(config, objects)
        except (ConfigError, manifests.ManifestError, OSError, ValueError) as exc:
            self.reload_failures += 1
            log.error("reload failed, the running configuration stays: %s", exc)
            return False
        log.info("reloaded the configuration")
        return True

    async def reconfigure(
        self, new: Config, objects: Sequence[model.ClusterObject] | None = None
    ) -> None:
        """Switch to ``new`` without dropping queries or going unready, all or nothing.

        1. Build everything that changed beside what runs: the zone (filled from the running
           one, from ``objects``, or from a new watch of the API when what is watched
           changes), autopath, the chain's plugins, the listeners on new addresses, the HTTP
           endpoints, the forwarding. Any failure undoes what this step made and raises: the
           running configuration stays entirely in force.
        2. Swap it all in between two queries (no await in between), then close what is no
           longer used.
        """
        old = self.config
        _check_same_source(old, new)
        built = _Built(self.zone)
        try:
            await self._build(new, objects, built)
        except BaseException:
            await built.undo(self)
            raise
        # -- the swap: nothing below awaits until everything points at the new parts
        previous_kube, previous_forwarding = self.kube, self.forwarding
        previous_plugins = self.plugins
        if built.kube is not None:
            self.kube = built.kube
        elif self.kube is not None and built.zone is not self.zone:
            self.kube.retarget(built.zone)  # events from now on change the new zone
        self.zone, self.autopath, self.config = built.zone, built.autopath, new
        self.handler.use(built.zone, built.autopath, _query_log(new))
        self.handler.serve_zones(_served_zones(new), _other_blocks(new))
        self.handler.loadbalance = new.loadbalance
        self.listeners.connections.limits = _limits(new)
        if built.plugins is not None:
            self.plugins = built.plugins
            self.handler.use_plugins(built.plugins)
        if built.forwarding_changed:
            self.forwarding = built.forwarding
            self.handler.forwarding = built.forwarding
        self._connect_autopath()
        if built.endpoints is not None:
            await self.ops.use(built.endpoints)
        # -- what the new configuration no longer uses
        await self.listeners.close_others(list(new.listen))
        if built.plugins is not None:
            for plugin in previous_plugins:
                await plugin.close()
        if built.forwarding_changed and previous_forwarding is not None:
            await previous_forwarding.close()
        if built.kube is not None and previous_kube is not None:
            await asyncio.to_thread(previous_kube.stop)

    async def _build(self, new: Config, objects: Sequence[model.ClusterObject] | None,
                     built: _Built) -> None:
        """Step 1 of :meth:`reconfigure`: fill ``built`` with what ``new`` changes."""
        old = self.config
        pods_watch_changes = self.kube is not None and _watches_pods(new) != self.watches_pods
        if pods_watch_changes:
            # A new watch, pods included or left out, fills a new zone; it must sync first.
            built.zone = _make_zone(new)
            built.kube = self._kube_source(built.zone, new)
            built.kube.start()
            wait = max(new.startup_timeout, 10.0)
            try:
                await asyncio.wait_for(built.kube.synced.wait(), wait)
            except TimeoutError:
                raise ConfigError(f"the new watch of the API did not sync in {wait:g}s") from None
        elif objects is not None or _zone_shape(old) != _zone_shape(new):
            built.zone = _make_zone(new)
            with built.zone.batch():
                source = objects if objects is not None else list(self.zone.objects())
                for kind in (model.Namespace, model.Service, model.EndpointSlice, model.Pod):
                    built.zone.reconcile(kind, source)
            built.zone.synced = self.zone.synced
        built.autopath = self.autopath
        if built.zone is not self.zone or (old.autopath, old.search_domains) != (
            new.autopath, new.search_domains
        ):
            built.autopath = _make_autopath(new, built.zone)
        if old.chain != new.chain:
            built.plugins = self._make_plugins(new)
        built.listening = await self.listeners.start(list(new.listen))
        if _endpoints(old) != _endpoints(new):
            built.endpoints = _endpoints(new)
            built.ops_opened = await self.ops.open(built.endpoints)
        if _forwarding_shape(old) != _forwarding_shape(new):
            built.forwarding_changed = True
            built.forwarding = _make_forwarding(new, self.listeners.bound(list(new.listen)))
        for plugin in built.plugins or ():
            await plugin.start()
            built.started.append(plugin)

    def _kube_source(self, zone: Zone, config: Config) -> kube.KubeSource:
        assert self._api is not None
        options = kube.Options(inactivity_timeout=config.watch_inactivity_timeout,
                               backoff_unit=config.watch_backoff_unit)
        return kube.KubeSource(zone, self._api, asyncio.get_running_loop(),
                               pods=_watches_pods(config), options=options,
                               programming=self.metrics.programming)

    def _connect_autopath(self) -> None:
        """Let autopath walk on to names the forwarder answers."""
        if self.autopath is not None:
            self.autopath.upstream = self.forwarding.serves if self.forwarding else None
            self.autopath.forget()

    async def _watch_corefile(self) -> None:
        """The Corefile's ``reload``: poll its SHA512 every interval ± jitter (CoreDNS)."""
        config = self.config
        if config.reload is None or config.corefile is None:
            return
        path = config.corefile
        digest = _digest(path)
        while not self._stopping.is_set():
            reload = self.config.reload or config.reload
            delay = reload.interval + random.uniform(-reload.jitter, reload.jitter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(1.0, delay))
            current = _digest(path)
            if current != digest and current is not None:
                digest = current
                log.info("%s changed; reloading", path)
                await self.reload()

    def _make_plugins(self, config: Config) -> list[chain.Plugin]:
        context = chain.BuildContext(
            cluster_zones=config.zones, listen_addresses=lambda: self.addresses,
            fatal=self.fatal, interception_changed=self._interception_changed)
        return [options.build(context) for options in config.chain]

    def _interception_changed(self) -> None:
        # Plugins are built before the handler exists: look it up when a plugin calls.
        self.handler.refresh_guard()

    def fatal(self, message: str) -> None:
        """Stop at once, skipping the lame duck, and exit with status 1 (CoreDNS's
        log.Fatal): what ``loop`` does when it finds a forwarding loop."""
        log.critical("%s", message)
        self.exit_code = 1
        self.request_stop()
        self.request_stop()

    def request_stop(self) -> None:
        """First call: lame duck (if configured), then stop; a second call stops at once."""
        if self._stopping.is_set():
            self._now.set()
        self._stopping.set()

    async def _settle_memory(self) -> None:
        """Once the cluster is in, move what is alive out of the collector's way."""
        if self.kube is not None:
            await self.kube.synced.wait()
        gc.freeze()

    async def run(self, describe: str, api: object | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then shut down in steps:

        1. lame duck: /ready turns 503 at once, DNS keeps answering for ``health.lameduck``
           seconds so that clients and kube-proxy move away (SPEC §4.1); a second signal ends
           it early;
        2. stop following the API, close DNS listeners and connections, close HTTP.
        """
        await self.start(api)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        watcher = loop.create_task(self._watch_corefile())
        settle = loop.create_task(self._settle_memory())
        where = ", ".join(format_host_port(*a) for a in self.addresses)
        log.info("serving %s (%s) from %s on %s, udp and tcp",
                 ", ".join(self.zone.origins[:1]), _summary(self.zone), describe, where)
        for path, address in self.ops.addresses.items():
            log.info("%s on http://%s%s", path.strip("/"), format_host_port(*address), path)
        await self._stopping.wait()
        lameduck = self.config.health.lameduck if self.config.health else 0.0
        if lameduck > 0 and not self._now.is_set():
            self.lame_duck = True
            log.info("going into lame duck mode for %gs", lameduck)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(), lameduck)
        log.info("shutting down")
        watcher.cancel()
        settle.cancel()
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


def _host_search_domains(path: Path) -> tuple[str, ...]:
    try:
        return resolvconf.read(path).search
    except OSError:
        return ()


def _address(text: str | None) -> tuple[str, int] | None:
    """An HTTP endpoint's ``[host]:port`` (``:8080`` = every address), or None when off."""
    if text is None:
        return None
    return split_host_port(text)


Reloader = Callable[[], tuple[Config, "Sequence[model.ClusterObject] | None"]]


def _make_zone(config: Config) -> Zone:
    dns_ips = [host for host, _ in config.listen if host not in ("0.0.0.0", "::")]
    return Zone(config.zones, ttl=config.ttl, pods=config.pods, dns_ips=dns_ips,
                reverse_zones=config.reverse_zones, loadbalance=config.loadbalance,
                namespaces=config.namespaces)


def _make_autopath(config: Config, zone: Zone) -> AutoPath | None:
    if not config.autopath:
        return None
    domains = config.search_domains
    if domains is None:  # the host's, as kubelet appends them to pods' search lists
        domains = _host_search_domains(Path("/etc/resolv.conf"))
    return AutoPath(zone, domains)


def _endpoints(config: Config) -> http.Endpoints:
    return http.endpoints(_address(config.health.address) if config.health else None,
                          _address(config.ready_address), _address(config.prometheus_address))


def _make_ops(config: Config, readiness: Callable[[], str | None], metrics: Metrics) -> OpsServer:
    return OpsServer(
        health=_address(config.health.address) if config.health else None,
        ready=_address(config.ready_address), metrics=_address(config.prometheus_address),
        readiness=readiness, registry=metrics.registry,
    )


def _make_forwarding(config: Config,
                     listen: Sequence[tuple[str, int]]) -> forwarding.Forwarding | None:
    built = forwarding.build(config, listen)
    if built is not None and config.errors is not None:
        built.errors = ErrorLog(config.errors)
    return built


def _other_blocks(config: Config) -> tuple[str, ...]:
    return tuple(stub.zone for stub in config.stub_domains if stub.own_block)


def _served_zones(config: Config) -> tuple[str, ...]:
    """The zones of every server block: the main one's and each stub domain's."""
    return config.server_zones + tuple(stub.zone for stub in config.stub_domains)


def _query_log(config: Config) -> QueryLog | None:
    return QueryLog(config.log) if config.log is not None else None


def _limits(config: Config) -> Limits:
    return Limits(config.tcp_idle_timeout, config.max_tcp_connections)


def _watches_pods(config: Config) -> bool:
    return config.pods is model.PodsMode.VERIFIED or config.autopath


def _check_same_source(old: Config, new: Config) -> None:
    """Where the cluster comes from is fixed at start (the API client is made once)."""
    fields = ("manifests", "kubeconfig", "context", "kube_endpoint", "kube_tls")
    changed = [name for name in fields if getattr(old, name) != getattr(new, name)]
    if changed:
        raise ConfigError(f"changing {', '.join(changed)} needs a restart")


@dataclass(slots=True)
class _Built:
    """What a reload has built so far (step 1 of :meth:`DnsServer.reconfigure`)."""

    zone: Zone
    kube: kube.KubeSource | None = None
    autopath: AutoPath | None = None
    plugins: list[chain.Plugin] | None = None
    started: list[chain.Plugin] = field(default_factory=list)
    listening: list[tuple[str, int]] = field(default_factory=list)  # newly opened
    endpoints: http.Endpoints | None = None  # the HTTP endpoints, when they change
    ops_opened: list[http.Address] = field(default_factory=list)
    forwarding: forwarding.Forwarding | None = None
    forwarding_changed: bool = False

    async def undo(self, server: DnsServer) -> None:
        """Close what was made, and bring back what made way: the running configuration
        stays as it was."""
        for plugin in self.started:
            await plugin.close()
        if self.forwarding is not None:
            await self.forwarding.close()
        await server.listeners.close(self.listening)
        await server.ops.abandon(self.ops_opened)
        if self.kube is not None:
            await asyncio.to_thread(self.kube.stop)


def _zone_shape(config: Config) -> tuple[object, ...]:
    """What the zone is built from: a change means a new zone."""
    return (config.zones, config.ttl, config.pods, config.reverse_zones, config.loadbalance,
            config.namespaces, tuple(host for host, _ in config.listen))


def _forwarding_shape(config: Config) -> tuple[object, ...]:
    return (config.forward, config.stub_domains, config.cache, config.fallthrough,
            config.fallthrough_zones, config.reverse_zones, config.errors)


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha512(path.read_bytes()).digest()
    except OSError:
        return None
