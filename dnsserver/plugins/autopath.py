"""Server-side search paths (CoreDNS ``autopath @kubernetes``), with its known flaws fixed.

A pod resolving ``api`` with ``ndots:5`` first asks for ``api.<its-ns>.svc.<zone>``. When that
name does not exist, we walk the rest of the pod's search path here (``svc.<zone>``, ``<zone>``,
the host's search domains, then the name as written) and answer the first name that exists with
``CNAME <asked> -> <found>`` plus the found name's records: one round trip instead of up to ten.

Better than CoreDNS (SPEC §3.6, §7 #4):
- the client pod is found by any of its ``podIPs``, and only when that is certain: hostNetwork
  pods (sharing the node's IP) and pods that are not running never count, and when live pods of
  two namespaces claim one IP we do not guess;
- the walk stops at the first name that EXISTS, whatever the qtype, so A and AAAA agree: both
  NOERROR (a name that exists without records of the type is NODATA for the asked name, as in
  CoreDNS, so a glibc client walks on exactly as it would without autopath);
- outcomes, negative ones included, are cached until the zone changes.

Steps outside the served zones (host search domains, the name as written) are asked of the
forwarder when there is one: the first of them ends the walk, and its answer is the reply
(CNAME and records, or its NXDOMAIN/NODATA for the asked name). Without a forwarder the walk
covers the served zones only, and the client goes on by itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dnsserver.config import directives
from dnsserver.config.directives import Directive, ParseContext, Token, Unsupported, arity
from zones import names
from zones.records import (
    CNAME,
    NXDOMAIN,
    SERVFAIL,
    Answer,
    name_wire,
    positive,
    rr,
    section_records,
)
from zones.zone import Zone

CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class AutopathOptions:
    """``autopath [ZONES...] @kubernetes``: the zones (the cluster's by default), each with the
    argument it came from, checked against the cluster zones once every block is read."""

    zones: tuple[tuple[str, Token], ...]
    directive: Token  # where autopath was turned on


def parse(directive: Directive, context: ParseContext) -> AutopathOptions:
    """``autopath [ZONES...] @kubernetes``: the search path from the client pod."""
    args = arity(directive, "autopath", 1, None)
    source = args[-1]
    zones = tuple((zone, token) for token in args[:-1]
                  for zone in directives.zones(token, "autopath"))
    if source.text != "@kubernetes":
        kind = "plugin" if source.text.startswith("@") else "resolv.conf"
        raise Unsupported.at(source, f"autopath: only '@kubernetes' is supported, not the "
                             f"{kind} {source.text!r}")
    directives.options(directive, context, "autopath", {})
    return AutopathOptions(zones, directive.name)


class AutoPath:
    def __init__(
        self, zone: Zone, search_domains: Sequence[str] = (),
        upstream: Callable[[bytes], bool] | None = None,
    ) -> None:
        """``upstream`` says whether the forwarder answers a name outside the zones; with it,
        the walk goes on to such names (host search domains, the name as written)."""
        self.zone = zone
        self.upstream = upstream
        self.search_domains = [d.strip(".").lower() for d in search_domains if d.strip(".")]
        self.successes = 0
        self._cache: dict[tuple[str, bytes, int], Answer | None] = {}
        self._cache_serial = -1

    def answer(self, key: bytes, qtype: int, client: str) -> Answer | None:
        """The answer for the lower-case wire name ``key`` asked by ``client``, or None when
        autopath does not apply (the caller answers as usual)."""
        namespace = self.client_namespace(client)
        if namespace is None:
            return None
        if self._cache_serial != self.zone.serial or len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
            self._cache_serial = self.zone.serial
        cache_key = (namespace, key, qtype)
        if cache_key in self._cache:
            answer = self._cache[cache_key]
        else:
            answer = self._cache[cache_key] = self._walk(namespace, key, qtype)
        if answer is not None:
            self.successes += 1
        return answer

    def forget(self) -> None:
        """Drop the kept outcomes (the forwarding changed)."""
        self._cache.clear()

    def client_namespace(self, client: str) -> str | None:
        """The namespace of the one kind of live pod that owns ``client``, if certain."""
        ip = _canonical_ip(client)
        if ip is None:
            return None
        namespaces = {
            pod.namespace for pod in self.zone.pods_at(ip) if pod.running and not pod.host_network
        }
        return namespaces.pop() if len(namespaces) == 1 else None

    def search_path(self, namespace: str, zone: str) -> list[str]:
        """The pod's search list as kubelet writes it (SPEC §3.1), then "" for the name as is."""
        return [f"{namespace}.svc.{zone}", f"svc.{zone}", zone, *self.search_domains, ""]

    def _walk(self, namespace: str, key: bytes, qtype: int) -> Answer | None:
        for zone_name in self.zone.origins:
            path = self.search_path(namespace, zone_name)
            first = names.to_wire(path[0])
            if not key.endswith(first) or len(key) == len(first):
                continue
            base = key[: len(key) - len(first)]  # the labels the client typed, no root
            for step, suffix in enumerate(path[1:], start=1):
                candidate = base + (names.to_wire(suffix) if suffix else b"\x00")
                found = self.zone.lookup(candidate, qtype)
                if found is None and self.upstream is not None and self.upstream(candidate):
                    # Outside the zones: the handler asks the upstream, this step and the
                    # outside ones after it, while they are NXDOMAIN.
                    rest = [base + (names.to_wire(s) if s else b"\x00") for s in path[step:]]
                    steps = tuple(
                        names.from_wire(c) for c in rest
                        if self.zone.lookup(c, qtype) is None and self.upstream(c)
                    )
                    return positive([])._replace(steps=steps, finish_upstream=True)
                if found is None or found.rcode == NXDOMAIN:
                    continue
                if found.rcode == SERVFAIL:  # not synced: let the normal answer say so
                    return None
                return self._cname_answer(key, candidate, qtype)
            return None
        return None

    def _cname_answer(self, asked: bytes, target: bytes, qtype: int) -> Answer | None:
        """``CNAME <question> -> target`` and the target's records, owned by the target.

        When the target has no records of the type, NODATA for the asked name, as CoreDNS
        answers: a CNAME would end a glibc client's search where its own walk would go on
        (``shop`` finding the namespace ``shop.svc.<zone>`` and stopping short of a host
        domain), and NODATA is still NOERROR for A and AAAA alike.
        """
        rrsets = self.zone.rrsets_at(target)
        ttl = self.zone.ttl
        records: list[bytes] = []
        extra: list[bytes] = []
        if rrsets is not None and qtype != CNAME:
            records, extra = section_records(rrsets, qtype, ttl, target, self.zone.chase)
            if not records:
                return self.zone.nodata_for(asked)
        cname = rr(b"\xc0\x0c", CNAME, ttl, name_wire(names.from_wire(target)))
        return positive([cname, *records], extra)


def _canonical_ip(client: str) -> str | None:
    try:
        ip = ipaddress.ip_address(client.split("%", maxsplit=1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
