"""``dnsserver resolve NAME``: what a pod's libc asks, query by query (the ndots:5 problem).

By default it plays a glibc pod in namespace ``default`` of ``cluster.local`` asking
127.0.0.1:5353 (``dnsserver``'s default address) for A+AAAA, as ``getaddrinfo`` does::

    dnsserver resolve www.example.com            # 4 steps, 8+ queries
    dnsserver resolve www.example.com. --musl    # a trailing dot: the name as-is only
    dnsserver resolve api --namespace shop --search us-west-2.compute.internal
    dnsserver resolve _http._tcp.api.shop --type SRV --resolv-conf /tmp/pod-resolv.conf

Exit status: 0 when there is an answer, 1 when there is none (NXDOMAIN, no data, errors),
2 for usage errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import dns.rdatatype

from dnsserver.client import resolver

DEFAULT_SERVER = ("127.0.0.1", 5353)
EXIT_ANSWER, EXIT_NO_ANSWER, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """The arguments cannot be used."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the name an application looks up")
    parser.add_argument("--namespace", metavar="NS",
                        help="the pod's namespace: search NS.svc.ZONE svc.ZONE ZONE "
                             "(default: default)")
    parser.add_argument("--zone", metavar="ZONE", help="cluster domain (default cluster.local)")
    parser.add_argument("--ndots", type=int, metavar="N",
                        help="names with at least N dots are tried as-is first "
                             "(default 5, as kubelet writes; capped at 15)")
    parser.add_argument("--search", action="extend", nargs="+", default=[], metavar="D",
                        help="more search domains after the pod's (the node's, as kubelet "
                             "appends them)")
    parser.add_argument("--server", metavar="HOST:PORT",
                        help="nameserver to ask (default 127.0.0.1:5353)")
    parser.add_argument("--resolv-conf", type=Path, metavar="PATH",
                        help="read nameservers, search list and options from this file "
                             "instead of building a pod's (not with --namespace/--zone)")
    parser.add_argument("--musl", action="store_true",
                        help="behave like musl (Alpine) instead of glibc")
    parser.add_argument("--type", default="ADDR", metavar="TYPE",
                        help="A, AAAA, SRV, ... or ADDR for A+AAAA as getaddrinfo asks "
                             "(default ADDR)")
    parser.add_argument("--tcp", action="store_true", help="ask over TCP (options use-vc)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="wait per round (default 5; musl waits it out on REFUSED)")
    parser.add_argument("--attempts", type=int, metavar="N", help="rounds (default 2)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnsserver resolve",
        description="Resolve NAME the way a pod's glibc or musl does and print every query.",
    )
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Resolve and print; the exit status (0 answer, 1 no answer, 2 usage error)."""
    try:
        config = config_from(args)
        qtype = _qtype(args.type)
        resolution = resolver.resolve(args.name, qtype, config)
    except (UsageError, resolver.ResolvConfError, ValueError) as exc:
        print(f"dnsserver resolve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for line in report(resolution):
        print(line)
    return EXIT_ANSWER if resolution.ok else EXIT_NO_ANSWER


def config_from(args: argparse.Namespace) -> resolver.ResolverConfig:
    mode: resolver.Mode = "musl" if args.musl else "glibc"
    servers = (parse_server(args.server),) if args.server else None
    timing: dict[str, float] = {}
    if args.timeout is not None:
        timing["timeout"] = args.timeout
    if args.attempts is not None:
        timing["attempts"] = args.attempts
    if args.resolv_conf is not None:
        if args.namespace is not None or args.zone is not None:
            raise UsageError("--resolv-conf gives the search list: drop --namespace/--zone")
        try:
            text = args.resolv_conf.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {args.resolv_conf}: {exc}") from None
        read = resolver.ResolverConfig.from_resolv_conf(text, mode=mode)
        return resolver.ResolverConfig(
            nameservers=servers or read.nameservers,
            search=tuple(dict.fromkeys((*read.search, *args.search))),
            ndots=read.ndots if args.ndots is None else args.ndots, mode=mode,
            timeout=timing.get("timeout", read.timeout),
            attempts=int(timing.get("attempts", read.attempts)),
            use_tcp=args.tcp or read.use_tcp,
        )
    return resolver.ResolverConfig.for_pod(
        args.namespace or "default", args.zone or "cluster.local",
        nameservers=servers or (DEFAULT_SERVER,), host_search=args.search,
        ndots=5 if args.ndots is None else args.ndots, mode=mode,
        timeout=timing.get("timeout", 5.0), attempts=int(timing.get("attempts", 2)),
        use_tcp=args.tcp,
    )


def parse_server(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[V6]:PORT``; port 53 when not given."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"--server {text!r}: expected [V6]:PORT")
            port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--server {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5353")
    return (host, int(port))


def _qtype(text: str) -> str:
    if text.upper() == "ADDR":
        return "ADDR"
    try:
        return dns.rdatatype.to_text(dns.rdatatype.from_text(text))
    except dns.rdatatype.UnknownRdatatype:
        raise UsageError(f"--type {text!r}: expected A, AAAA, SRV, ... or ADDR") from None


# -- printing ------------------------------------------------------------------------------


def report(resolution: resolver.Resolution) -> list[str]:
    """The lines ``dnsserver resolve`` prints: the setup, each step's queries, the answer."""
    config = resolution.config
    lines = [f";; {config.describe()}", f";; {_plan(resolution)}"]
    number = 0
    for index, step in enumerate(resolution.steps, start=1):
        lines.append(f"step {index}: {step.name}")
        for query in step.queries:
            number += 1
            outcome = query.rcode or query.error or "no reply"
            notes = [note for note, on in (("tcp", query.tcp), (_ignored(config), query.ignored))
                     if on]
            extra = f"  ({', '.join(notes)})" if notes else ""
            lines.append(f"  #{number:<3} {query.qtype:<5} {outcome:<9} "
                         f"{query.answers} answer{'s' if query.answers != 1 else ''}{extra}")
        lines.append(f"  -> {step.result}" + (f" ({step.rcode})" if step.rcode else ""))
    steps = len(resolution.steps)
    lines.append(f";; {number} quer{'y' if number == 1 else 'ies'} in {steps} "
                 f"step{'s' if steps != 1 else ''}")
    if resolution.ok:
        lines.append(f";; answer from {resolution.name}")
        lines += [line for rrset in resolution.records for line in rrset.to_text().splitlines()]
    else:
        rcode = f", last rcode {resolution.rcode}" if resolution.rcode else ""
        lines.append(f";; no answer: {resolution.status}{rcode}")
    hint = _hint(resolution)
    if hint:
        lines.append(f";; hint: {hint}")
    return lines


def _ignored(config: resolver.ResolverConfig) -> str:
    return "set aside, next server/attempt" if config.mode == "glibc" else \
        "ignored by musl, waiting on"


def _plan(resolution: resolver.Resolution) -> str:
    name, config = resolution.question, resolution.config
    dots = name.count(".")
    asked = "+".join(resolution.qtypes)
    if name.endswith("."):
        return f"{name} {asked}: a trailing dot, so the name as-is only"
    if config.mode == "musl" and resolution.qtypes[0] not in resolver.ADDR:
        return f"{name} {asked}: musl's res_search is res_query, so no search list"
    if dots >= config.ndots:
        then = "no search at all (musl)" if config.mode == "musl" else "then the search list"
        return f"{name} {asked}: {dots} dots >= ndots {config.ndots}: as-is first, {then}"
    return (f"{name} {asked}: {dots} dot{'s' if dots != 1 else ''} < ndots {config.ndots}: "
            f"the search list first, then the name as-is")


def _hint(resolution: resolver.Resolution) -> str:
    """For a dotted name that was searched and then answered as-is (or not at all)."""
    name = resolution.question
    answered_as_is = resolution.ok and resolution.name == resolver.absolute_name(name)
    if name.endswith(".") or "." not in name or len(resolution.steps) < 2:
        return ""
    if resolution.ok and not answered_as_is:
        return ""
    return (f"{len(resolution.queries)} queries; an external name is cheaper with a trailing "
            f"dot ({name.rstrip('.')}.) or a lower ndots (dnsConfig.options)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
