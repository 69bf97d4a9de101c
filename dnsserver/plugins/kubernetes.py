"""CoreDNS's ``kubernetes`` plugin: its options and their parser.

::

    kubernetes [ZONES...] {
        endpoint URL                      # the API server; in a pod: the service account's
        tls CERT KEY CACERT               # for a remote endpoint
        kubeconfig KUBECONFIG [CONTEXT]
        namespaces NAMESPACE...           # only these; all by default
        pods disabled|insecure|verified   # disabled
        ttl TTL                           # 5; 0 to 3600
        fallthrough [ZONES...]
        startup_timeout DURATION          # 5s
    }

:func:`parse` reads the directive into :class:`KubernetesOptions` (errors name the file and
line; CoreDNS options this server lacks are refused, or left out with ``--lenient``). The
Corefile's builder copies them into the Config's fields. The answers come from :mod:`zones`
and :mod:`dnsserver.serve.handler`, the cluster from :mod:`dnsserver.cluster.watch`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dnsserver.config import directives
from dnsserver.config.directives import (
    BadValue,
    Directive,
    ParseContext,
    arity,
    duration,
    integer,
)
from dnsserver.config.settings import ROOT_ZONE, KubeTLS, name_in_zone
from zones.model import PodsMode

UNSUPPORTED = ("labels", "namespace_labels", "noendpoints", "ignore", "transfer", "multicluster",
               "zonal", "endpoint_pod_names", "apiserver_qps", "apiserver_burst",
               "apiserver_max_inflight")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    """One ``kubernetes`` directive: the cluster zones (reverse ones apart) and the API."""

    zones: tuple[str, ...]
    reverse_zones: tuple[str, ...] = ()
    ttl: int = 5
    pods: PodsMode = PodsMode.DISABLED  # CoreDNS's default; kubeadm says "pods insecure"
    kubeconfig: Path | None = None
    context: str | None = None
    endpoint: str | None = None
    tls: KubeTLS | None = None
    namespaces: tuple[str, ...] = ()
    fallthrough: bool = False
    fallthrough_zones: tuple[str, ...] = ()
    startup_timeout: float = 5.0


def parse(directive: Directive, context: ParseContext) -> KubernetesOptions:
    """The options of a ``kubernetes`` directive; its zones are the server block's by default."""
    what = "kubernetes"
    zones = (directives.zone_list(directive.args, what, refuse_duplicates=True)
             or context.zones)
    unreachable = [z for z in zones if not any(name_in_zone(z, b) for b in context.zones)]
    if unreachable:  # CoreDNS hands this block only names in its zones
        context.warn(directive.name, f"kubernetes: {', '.join(unreachable)} outside the server "
                     f"block's zones ({', '.join(context.zones)}) will not be served")
        zones = tuple(z for z in zones if z not in unreachable)
    cluster = tuple(z for z in zones if not is_reverse(z))
    if ROOT_ZONE in cluster:
        raise BadValue.at(directive.name, "kubernetes: the root zone cannot be the cluster "
                          "zone; name it, e.g. 'kubernetes cluster.local in-addr.arpa "
                          "ip6.arpa'")
    if not cluster:
        raise BadValue.at(directive.name, "kubernetes: needs a zone that is not a reverse zone")
    reverse = tuple(z for z in zones if is_reverse(z))
    endpoint: str | None = None
    tls: KubeTLS | None = None
    kubeconfig: Path | None = None
    kube_context: str | None = None
    namespaces: tuple[str, ...] = ()
    pods = PodsMode.DISABLED
    ttl = 5
    fallthrough = False
    fallthrough_zones: tuple[str, ...] = ()
    startup_timeout = 5.0

    def set_endpoint(option: Directive) -> None:
        nonlocal endpoint
        urls = arity(option, f"{what} endpoint", 1, None)
        parts = urlsplit(urls[0].text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BadValue.at(urls[0], f"{what} endpoint: {urls[0].text!r} is not an "
                              "http(s) URL")
        if len(urls) > 1:
            context.warn(urls[1], f"{what} endpoint: only the first URL is used")
        endpoint = urls[0].text

    def set_tls(option: Directive) -> None:
        nonlocal tls
        cert, key, ca = arity(option, f"{what} tls", 3, 3)
        tls = KubeTLS(Path(cert.text), Path(key.text), Path(ca.text))

    def set_kubeconfig(option: Directive) -> None:
        nonlocal kubeconfig, kube_context
        args = arity(option, f"{what} kubeconfig", 1, 2)
        kubeconfig = Path(args[0].text)
        kube_context = args[1].text if len(args) > 1 else None

    def set_namespaces(option: Directive) -> None:
        nonlocal namespaces
        names = arity(option, f"{what} namespaces", 1, None)
        for token in names:
            if not _NAMESPACE.match(token.text):
                raise BadValue.at(token, f"{what} namespaces: {token.text!r} is not a "
                                  "namespace name")
        namespaces = tuple(dict.fromkeys((*namespaces, *(t.text for t in names))))

    def set_pods(option: Directive) -> None:
        nonlocal pods
        (mode,) = arity(option, f"{what} pods", 1, 1)
        try:
            pods = PodsMode(mode.text)
        except ValueError:
            raise BadValue.at(mode, f"{what} pods: {mode.text!r} is not one of disabled, "
                              "insecure, verified") from None

    def set_ttl(option: Directive) -> None:
        nonlocal ttl
        (value,) = arity(option, f"{what} ttl", 1, 1)
        ttl = integer(value, f"{what} ttl", 0, 3600)

    def set_fallthrough(option: Directive) -> None:
        nonlocal fallthrough, fallthrough_zones
        fallthrough = True
        fallthrough_zones = directives.zone_list(option.args, f"{what} fallthrough",
                                                 refuse_duplicates=True)

    def set_startup_timeout(option: Directive) -> None:
        nonlocal startup_timeout
        (value,) = arity(option, f"{what} startup_timeout", 1, 1)
        startup_timeout = duration(value, f"{what} startup_timeout")
        if startup_timeout <= 0:  # CoreDNS cannot start with it either
            raise BadValue.at(value, f"{what} startup_timeout: must be more than 0")

    directives.options(directive, context, what, {
        "endpoint": set_endpoint, "tls": set_tls, "kubeconfig": set_kubeconfig,
        "namespaces": set_namespaces, "pods": set_pods, "ttl": set_ttl,
        "fallthrough": set_fallthrough, "startup_timeout": set_startup_timeout,
    }, unsupported=UNSUPPORTED)
    return KubernetesOptions(cluster, reverse, ttl, pods, kubeconfig, kube_context, endpoint,
                             tls, namespaces, fallthrough, fallthrough_zones, startup_timeout)


def is_reverse(zone: str) -> bool:
    """Whether ``zone`` is under ``in-addr.arpa`` or ``ip6.arpa``."""
    return any(zone == suffix or zone.endswith("." + suffix)
               for suffix in ("in-addr.arpa", "ip6.arpa"))
