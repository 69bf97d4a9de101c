"""Our zone as RFC 1035 zone files, so that knotd can serve exactly what we serve.

    python -m bench.zonefile --manifests DIR --out ZONEDIR [--no-reverse] [--check]

The :class:`~zones.zone.Zone` is built from the manifests as the server builds it
(``dnsserver.cluster.manifests.load``, then ``Zone.reconcile`` of each kind in one ``batch``, as
``DnsServer.load`` does) and every owner name of :meth:`Zone.records` is written with its A, AAAA,
SRV, PTR, CNAME and TXT records and our TTLs, plus SOA and NS at each apex (the SOA as our
handler answers it, so the file follows however the server builds it). Each served zone is its
own file: ``cluster.local.zone``, and, unless ``reverse=False``, ``in-addr.arpa.zone`` and
``ip6.arpa.zone`` with the PTR records.

What a static zone cannot say the same way (none of it is asked by the A-query bench):

- Pod names (``a-b-c-d.<ns>.pod.<zone>``) we answer for any IP (``pods insecure``); the file
  holds them only for the Pods of the manifests (``pods verified``: the running ones).
- A name that exists with no records (``<ns>.svc.<zone>`` of a namespace without Services) is
  NODATA for us; knotd answers NXDOMAIN unless a name below it exists (an empty non-terminal).
- For a CNAME owner, knotd returns the CNAME for every qtype; we do for A, AAAA and CNAME only.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset

from dnsserver.cluster import manifests
from dnsserver.serve.handler import Handler
from zones import model, names
from zones.model import PodsMode
from zones.records import RRSets
from zones.zone import Zone

DEFAULT_ORIGINS = ("cluster.local",)


@dataclass(frozen=True, slots=True)
class ZoneFile:
    origin: str
    path: Path
    names: int
    records: int


def build_zone(
    objects: Sequence[model.ClusterObject], *, origins: Sequence[str] = DEFAULT_ORIGINS,
    ttl: int = 5, pods: PodsMode = PodsMode.INSECURE, dns_ips: Sequence[str] = ("127.0.0.1",),
) -> Zone:
    """The zone our server serves for ``objects`` (``dns_ips``: its listen addresses)."""
    zone = Zone(origins, ttl=ttl, pods=pods, dns_ips=dns_ips)
    with zone.batch():
        for kind in (model.Namespace, model.Service, model.EndpointSlice, model.Pod):
            zone.reconcile(kind, objects)
    zone.synced = True
    return zone


def render(zone: Zone, *, reverse: bool = True) -> dict[str, list[str]]:
    """The lines of each served zone's file, by origin (reverse zones only if ``reverse``)."""
    origins = [o for o in zone.origins if reverse or not _is_reverse(o)]
    owners: dict[str, list[tuple[str, RRSets]]] = {o: [] for o in origins}
    for name, rrsets in zone.records():
        origin = _origin_of(name, origins)
        if origin is not None:
            owners[origin].append((name, rrsets))
    handler = Handler(zone)
    files = {}
    for origin in origins:
        soa = _soa(handler, origin)
        ttl = soa[0].minimum  # our records' TTL (CoreDNS: the SOA minimum is the zone's TTL)
        lines = [f"$ORIGIN {origin}.", f"$TTL {ttl}", f"{origin}. {soa.ttl} IN SOA {soa[0]}"]
        for name, rrsets in sorted(owners[origin], key=lambda item: _canonical(item[0])):
            lines.extend(_records(name, rrsets, ttl))
        if not _is_reverse(origin):
            lines.extend(_pod_records(zone, origin, ttl))
        files[origin] = lines
    return files


def write(zone: Zone, directory: Path, *, reverse: bool = True) -> list[ZoneFile]:
    """Write ``directory/<origin>.zone`` for each served zone."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for origin, lines in render(zone, reverse=reverse).items():
        path = directory / f"{origin}.zone"
        path.write_text("\n".join(lines) + "\n", encoding="ascii")
        records = [line for line in lines if not line.startswith("$")]
        written.append(ZoneFile(origin, path, len({r.split()[0] for r in records}), len(records)))
    return written


def check(zone_file: ZoneFile) -> tuple[bool, str] | None:
    """``kzonecheck`` (package knot-dnssecutils) on one file; None when it is not installed."""
    binary = shutil.which("kzonecheck")
    if binary is None:
        return None
    result = subprocess.run(
        [binary, "-o", zone_file.origin, str(zone_file.path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def _soa(handler: Handler, origin: str) -> dns.rrset.RRset:
    """The SOA record set of ``origin`` as our server answers it."""
    reply = handler.handle(dns.message.make_query(f"{origin}.", "SOA").to_wire())
    if not isinstance(reply, bytes):
        raise ValueError(f"no answer to {origin} SOA")
    for rrset in dns.message.from_wire(reply).answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return rrset
    raise ValueError(f"no SOA record in the answer to {origin} SOA")


def _records(name: str, rrsets: RRSets, ttl: int) -> Iterable[str]:
    owner = f"{name}."
    for server in rrsets.ns:
        yield f"{owner} {ttl} IN NS {server.target}."
    if rrsets.cname:
        yield f"{owner} {ttl} IN CNAME {rrsets.cname}."
    for ip in rrsets.a:
        yield f"{owner} {ttl} IN A {ip}"
    for ip in rrsets.aaaa:
        yield f"{owner} {ttl} IN AAAA {ip}"
    for srv in rrsets.srv:
        yield f"{owner} {ttl} IN SRV 0 {srv.weight} {srv.port} {srv.target}."
    for target in rrsets.ptr:
        yield f"{owner} {ttl} IN PTR {target}."
    for text in rrsets.txt:
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        yield f'{owner} {rrsets.txt_ttl} IN TXT "{quoted}"'


def _pod_records(zone: Zone, origin: str, ttl: int) -> Iterable[str]:
    """``<dashed-ip>.<ns>.pod.<origin>`` of every Pod we would answer for (see the docstring)."""
    if zone.pods is PodsMode.DISABLED:
        return
    namespaces = {obj.name for obj in zone.objects() if isinstance(obj, model.Namespace)}
    seen: set[str] = set()
    for obj in zone.objects():
        if not isinstance(obj, model.Pod) or obj.namespace not in namespaces:
            continue
        if zone.pods is PodsMode.VERIFIED and not obj.running:
            continue
        for ip in obj.ips:
            name = f"{names.dashed_ip(ip)}.{obj.namespace}.pod.{origin}."
            if name not in seen:
                seen.add(name)
                yield f"{name} {ttl} IN {'AAAA' if ':' in ip else 'A'} {ip}"


def _origin_of(name: str, origins: Iterable[str]) -> str | None:
    best = None
    for origin in origins:
        if (name == origin or name.endswith(f".{origin}")) and len(origin) > len(best or ""):
            best = origin
    return best


def _canonical(name: str) -> list[str]:
    return name.split(".")[::-1]


def _is_reverse(origin: str) -> bool:
    return origin in names.REVERSE_ZONES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.zonefile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifests", type=Path, required=True, metavar="PATH")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    parser.add_argument("--zone", action="append", metavar="ZONE",
                        help="cluster domain, repeatable (default cluster.local)")
    parser.add_argument("--ttl", type=int, default=5)
    parser.add_argument("--pods", default="insecure", choices=[m.value for m in PodsMode])
    parser.add_argument("--no-reverse", action="store_true", help="skip the reverse zones")
    parser.add_argument("--check", action="store_true", help="run kzonecheck on each file")
    args = parser.parse_args(argv)
    try:
        objects = manifests.load(args.manifests)
    except manifests.ManifestError as exc:
        parser.error(str(exc))
    zone = build_zone(objects, origins=args.zone or DEFAULT_ORIGINS, ttl=args.ttl,
                      pods=PodsMode(args.pods))
    failed = False
    for zone_file in write(zone, args.out, reverse=not args.no_reverse):
        print(f"{zone_file.path}: {zone_file.names} names, {zone_file.records} records")
        if args.check:
            outcome = check(zone_file)
            if outcome is None:
                print("  kzonecheck not installed (Debian package knot-dnssecutils)")
            else:
                failed |= not outcome[0]
                print(f"  kzonecheck: {'ok' if outcome[0] else 'FAILED'} {outcome[1]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
