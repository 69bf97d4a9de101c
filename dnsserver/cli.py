"""``dnsserver``: the command line.

``dnsserver`` alone serves the bundled example cluster on 127.0.0.1:5353;
``dnsserver serve --manifests PATH`` serves a file or folder of manifests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dnsserver.client import resolve_cli
from dnsserver.cluster import manifests
from dnsserver.cluster import watch as kube
from dnsserver.config import corefile, kubedns, resolvconf
from dnsserver.config.settings import (
    CacheConfig,
    CacheLimits,
    Config,
    ConfigError,
    ConfigOverrides,
    ForwardConfig,
    HealthConfig,
    LogConfig,
    StubDomain,
    parse_listen,
    parse_ttl,
    parse_zone,
    split_host_port,
)
from dnsserver.plugins import upstream as forward
from dnsserver.serve import app
from zones import model
from zones.model import PodsMode

log = logging.getLogger("dnsserver")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnsserver", description="Kubernetes cluster DNS server (CoreDNS kubernetes plugin).",
    )
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="answer DNS for a cluster (the default command)")
    add_serve_arguments(serve)
    resolve = commands.add_parser(
        "resolve", help="resolve a name as a pod's glibc or musl does, printing every query")
    resolve_cli.add_arguments(resolve)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags default to None so that only the ones typed are laid over a Corefile."""
    source = parser.add_argument_group("what to serve")
    source.add_argument("--manifests", type=Path, metavar="PATH",
                        help="a YAML/JSON file or folder of manifests (no cluster needed)")
    source.add_argument("--kubeconfig", type=Path, metavar="PATH",
                        help="follow the cluster of this kubeconfig")
    source.add_argument("--context", help="kubeconfig context (default: the current one)")
    source.add_argument("--corefile", "-conf", dest="corefile", type=Path, metavar="PATH",
                        help="a CoreDNS Corefile (kubeadm's works unchanged); flags win over it")
    source.add_argument("--kube-dns-config", type=Path, metavar="PATH",
                        help="kube-dns's ConfigMap (a manifest, or the folder it is mounted at): "
                             "its stubDomains and upstreamNameservers")
    source.add_argument("--lenient", action="store_true",
                        help="warn about unknown Corefile plugins and options instead of failing")
    dns = parser.add_argument_group("DNS")
    dns.add_argument("--listen", action="append", metavar="HOST:PORT",
                     help="UDP and TCP address, repeatable (default 127.0.0.1:5353)")
    dns.add_argument("--zone", action="append", metavar="ZONE",
                     help="cluster domain, repeatable (default cluster.local)")
    dns.add_argument("--ttl", help="TTL of cluster records (default 5)")
    dns.add_argument("--pods", choices=[m.value for m in PodsMode],
                     help="pod records a-b-c-d.<ns>.pod.<zone> (default insecure)")
    dns.add_argument("--autopath", action="store_true", default=None,
                     help="walk pods' search paths server-side (watches Pods)")
    dns.add_argument("--upstream", action="append", metavar="ADDR|FILE|none",
                     help="forward names outside the cluster to these servers (repeatable; "
                          "a resolv.conf path takes its nameservers). Default: /etc/resolv.conf "
                          "when running in a pod, otherwise none (such names are REFUSED)")
    dns.add_argument("--stub-domain", action="append", metavar="ZONE=ADDR[,ADDR]",
                     help="forward one domain to its own servers, repeatable")
    dns.add_argument("--cache", type=int, metavar="SECONDS",
                     help="cache forwarded answers up to this TTL (0: no cache)")
    dns.add_argument("--loadbalance", action="store_true", default=None,
                     help="rotate the order of A/AAAA records from reply to reply")
    dns.add_argument("--log-queries", action="store_true", default=None,
                     help="log every query in CoreDNS's log format")
    dns.add_argument("--search-domain", action="append", metavar="DOMAIN",
                     help="host search domain for --autopath, repeatable "
                          "(default: the search line of /etc/resolv.conf)")
    ops = parser.add_argument_group(
        "HTTP endpoints (default in a pod without a Corefile: :8080, :8181, :9153 and a 5 s "
        "lame duck, as kubeadm's Corefile; off otherwise)")
    ops.add_argument("--health", metavar="ADDR", help="/health address, e.g. :8080, or none")
    ops.add_argument("--ready", metavar="ADDR", help="/ready address, e.g. :8181, or none")
    ops.add_argument("--metrics", metavar="ADDR", help="/metrics address, e.g. :9153, or none")
    ops.add_argument("--lameduck", type=float, metavar="SECONDS",
                     help="on SIGTERM, keep answering this long with /ready at 503")
    limits = parser.add_argument_group("limits and timeouts")
    limits.add_argument("--tcp-idle-timeout", type=float, metavar="SECONDS",
                        help="close TCP connections idle this long (default 10)")
    limits.add_argument("--max-tcp-connections", type=int, metavar="N",
                        help="open TCP connections at most (default 1000)")
    limits.add_argument("--watch-inactivity-timeout", type=float, metavar="SECONDS",
                        help="reconnect a watch silent this long, bookmarks included (default 90)")
    limits.add_argument("--watch-backoff", type=float, metavar="SECONDS",
                        help="first retry delay after an API error; grows 1,1,2,3,5,8x")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])


def overrides_from(args: argparse.Namespace) -> ConfigOverrides:
    """The settings typed on the command line (None: not typed)."""
    for flag in ("tcp_idle_timeout", "max_tcp_connections", "watch_inactivity_timeout",
                 "watch_backoff"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            name = "--" + flag.replace("_", "-")
            raise ConfigError(f"{name} must be positive, not {value}")
    if args.manifests is not None and args.kubeconfig is not None:
        raise ConfigError("--manifests and --kubeconfig exclude each other")
    zones = tuple(dict.fromkeys(parse_zone(z) for z in args.zone)) if args.zone else None
    search = tuple(d.strip(".").lower() for d in args.search_domain) if args.search_domain else None
    return ConfigOverrides(
        listen=tuple(parse_listen(text) for text in args.listen) if args.listen else None,  # type: ignore[typeddict-item]
        zones=zones,  # type: ignore[typeddict-item]
        ttl=parse_ttl(args.ttl) if args.ttl is not None else None,  # type: ignore[typeddict-item]
        pods=PodsMode(args.pods) if args.pods else None,  # type: ignore[typeddict-item]
        manifests=args.manifests,
        kubeconfig=args.kubeconfig,
        context=args.context,
        tcp_idle_timeout=args.tcp_idle_timeout,
        max_tcp_connections=args.max_tcp_connections,
        watch_inactivity_timeout=args.watch_inactivity_timeout,
        watch_backoff_unit=args.watch_backoff,
        search_domains=search,
        autopath=args.autopath,
        loadbalance=args.loadbalance,
        log=LogConfig() if args.log_queries else None,
    )


def config_from(args: argparse.Namespace) -> Config:
    """The Corefile's settings (if one is given) with the typed flags laid over them."""
    base = corefile.load(args.corefile, lenient=args.lenient) if args.corefile else Config()
    config = base.merged(overrides_from(args))
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if args.corefile is None and in_pod and app.source_of(config) is None:
        # In a pod without a Corefile: what kubeadm's Corefile sets up (dnsPolicy: Default).
        config = replace(
            config, health=HealthConfig(":8080", lameduck=5.0), ready_address=":8181",
            prometheus_address=":9153", forward=ForwardConfig(max_concurrent=1000),
            cache=CacheConfig(success=CacheLimits(10000, 30), denial=CacheLimits(10000, 30)),
            fallthrough=True, fallthrough_zones=config.reverse_zones,
        )
    config = _with_ops_flags(config, args)
    if args.kube_dns_config is not None:  # before --upstream and --stub-domain, which win
        config = kubedns.apply(config, kubedns.load(args.kube_dns_config))
    return _with_forward_flags(config, args)


def _with_forward_flags(config: Config, args: argparse.Namespace) -> Config:
    if args.upstream:
        if [u.lower() for u in args.upstream] == ["none"]:
            config = replace(config, forward=None)
        else:
            try:
                targets = tuple(
                    u if u.startswith("/") else str(resolvconf.parse_upstream(u))
                    for u in args.upstream
                )
            except ValueError as exc:
                raise ConfigError(f"--upstream: {exc}") from None
            config = replace(config, forward=replace(config.forward or ForwardConfig(), to=targets))
    if args.stub_domain:
        stubs = []
        for text in args.stub_domain:
            try:
                zone, upstreams = forward.parse_stub_domain(text)
            except (forward.ForwardConfigError, ValueError) as exc:
                raise ConfigError(f"--stub-domain {exc}") from None
            stubs.append(StubDomain(zone, ForwardConfig(to=tuple(map(str, upstreams)))))
        config = replace(config, stub_domains=(*config.stub_domains, *stubs))
    if args.cache is not None:
        if args.cache < 0:
            raise ConfigError(f"--cache must not be negative, not {args.cache}")
        cache = (CacheConfig(success=CacheLimits(10000, args.cache),
                             denial=CacheLimits(10000, args.cache)) if args.cache else None)
        config = replace(config, cache=cache)
    return config


def _with_ops_flags(config: Config, args: argparse.Namespace) -> Config:
    def address(text: str | None, current: str | None) -> str | None:
        if text is None:
            return current
        if text.lower() == "none":
            return None
        split_host_port(text)  # raises ConfigError with the reason
        return text

    health = config.health
    health_address = address(args.health, health.address if health else None)
    lameduck = args.lameduck if args.lameduck is not None else (health.lameduck if health else 0)
    if lameduck < 0:
        raise ConfigError(f"--lameduck must not be negative, not {lameduck}")
    return replace(
        config,
        health=HealthConfig(health_address, lameduck) if health_address else None,
        ready_address=address(args.ready, config.ready_address),
        prometheus_address=address(args.metrics, config.prometheus_address),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0].startswith("-") and arguments[0] not in ("-h", "--help")):
        arguments.insert(0, "serve")
    args = parser.parse_args(arguments)
    if args.command == "resolve":
        return resolve_cli.run(args)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s",
    )
    try:
        config = config_from(args)
    except (ConfigError, OSError) as exc:
        parser.error(str(exc))
    return serve(config, args)


def serve(config: Config, args: argparse.Namespace) -> int:
    # A zone is hundreds of thousands of long-lived objects without cycles: collecting the
    # young generation every 700 allocations (the default) costs a third of a large sync.
    gc.set_threshold(100_000, 50, 100)
    source = app.source_of(config)
    api = None
    try:
        if source is None:
            tls = config.kube_tls
            api = kube.api_client(config.kubeconfig, config.context, config.kube_endpoint,
                                  (tls.cert, tls.key, tls.ca) if tls else None)
            objects = None
            describe = f"the Kubernetes API at {api.configuration.host}"
        else:
            objects = manifests.load(source)
            describe = str(source)
    except (manifests.ManifestError, kube.KubeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    def reload() -> tuple[Config, list[model.ClusterObject] | None]:
        """SIGHUP or a changed Corefile: the flags as typed, the Corefile and manifests anew."""
        new = config_from(args)
        new_source = app.source_of(new)
        if (new_source is None) != (source is None):
            raise ConfigError("switching between manifests and the Kubernetes API needs a restart")
        return new, manifests.load(new_source) if new_source is not None else None

    server = app.DnsServer(config, objects, reload)
    try:
        _run(server.run(describe, api))
    except OSError as exc:
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        return 1
    return server.exit_code


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (faster sockets), else on the stdlib loop."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


if __name__ == "__main__":
    raise SystemExit(main())
