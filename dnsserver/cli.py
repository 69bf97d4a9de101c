"""``dnsserver``: the command line.

``dnsserver`` alone serves the bundled example cluster on 127.0.0.1:5353;
``dnsserver serve --manifests PATH`` serves a file or folder of manifests.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from dnsserver import app, kube, manifests
from dnsserver.config import (
    DEFAULT_LISTEN,
    Config,
    ConfigError,
    parse_listen,
    parse_ttl,
    parse_zone,
)
from zones.model import PodsMode

log = logging.getLogger("dnsserver")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnsserver", description="Kubernetes cluster DNS server (CoreDNS kubernetes plugin).",
    )
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="answer DNS for a cluster (the default command)")
    add_serve_arguments(serve)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifests", type=Path, metavar="PATH",
                        help="serve a YAML/JSON file or folder of manifests (no cluster needed)")
    parser.add_argument("--kubeconfig", type=Path, metavar="PATH",
                        help="follow the cluster of this kubeconfig")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--listen", action="append", metavar="HOST:PORT",
                        help="UDP and TCP address, repeatable (default 127.0.0.1:5353)")
    parser.add_argument("--zone", action="append", metavar="ZONE",
                        help="cluster domain, repeatable (default cluster.local)")
    parser.add_argument("--ttl", default="5", help="TTL of cluster records (default 5)")
    parser.add_argument("--pods", default="insecure", choices=[m.value for m in PodsMode],
                        help="pod records a-b-c-d.<ns>.pod.<zone> (default insecure)")
    parser.add_argument("--tcp-idle-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="close TCP connections idle this long (default 10)")
    parser.add_argument("--max-tcp-connections", type=int, default=1000, metavar="N",
                        help="open TCP connections at most (default 1000)")
    parser.add_argument("--watch-inactivity-timeout", type=float, default=90.0,
                        metavar="SECONDS",
                        help="reconnect a watch silent this long, bookmarks included (default 90)")
    parser.add_argument("--watch-backoff", type=float, default=1.0, metavar="SECONDS",
                        help="first retry delay after an API error; grows 1,1,2,3,5,8x")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])


def config_from(args: argparse.Namespace) -> Config:
    for flag in ("tcp_idle_timeout", "max_tcp_connections", "watch_inactivity_timeout",
                 "watch_backoff"):
        if getattr(args, flag) <= 0:
            name = "--" + flag.replace("_", "-")
            raise ConfigError(f"{name} must be positive, not {getattr(args, flag)}")
    if args.manifests is not None and args.kubeconfig is not None:
        raise ConfigError("--manifests and --kubeconfig exclude each other")
    return Config(
        listen=tuple(parse_listen(text) for text in args.listen or ()) or (DEFAULT_LISTEN,),
        zones=tuple(dict.fromkeys(parse_zone(z) for z in args.zone or ["cluster.local"])),
        ttl=parse_ttl(str(args.ttl)),
        pods=PodsMode(args.pods),
        manifests=args.manifests,
        kubeconfig=args.kubeconfig,
        context=args.context,
        tcp_idle_timeout=args.tcp_idle_timeout,
        max_tcp_connections=args.max_tcp_connections,
        watch_inactivity_timeout=args.watch_inactivity_timeout,
        watch_backoff_unit=args.watch_backoff,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0].startswith("-") and arguments[0] not in ("-h", "--help")):
        arguments.insert(0, "serve")
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s",
    )
    try:
        config = config_from(args)
    except ConfigError as exc:
        parser.error(str(exc))
    return serve(config)


def serve(config: Config) -> int:
    source = app.source_of(config)
    api = None
    try:
        if source is None:
            api = kube.api_client(config.kubeconfig, config.context)
            objects = None
            describe = f"the Kubernetes API at {api.configuration.host}"
        else:
            objects = manifests.load(source)
            describe = str(source)
    except (manifests.ManifestError, kube.KubeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    server = app.DnsServer(config, objects)
    try:
        _run(server.run(describe, api))
    except OSError as exc:
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


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
