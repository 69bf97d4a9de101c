"""What one Service publishes, worked out lazily from the Service and its slices alone.

A :class:`ServiceView` is made when an event touches the Service. It lists the names the Service
owns (cheap: what the index needs as keys), and computes the record sets of one of those names
only when that name is first asked for. Keeping record sets out of memory until they are used is
what keeps a 50,000-endpoint cluster small. Nothing here looks at other Services, so the cost
of an event is the size of the Service it touches (CoreDNS ``kubernetes.go`` ``findServices``).

Record rules (SPEC §2.1-2.5): ClusterIP Services answer their ClusterIPs; headless ones their
ready endpoints (none ready: the name does not exist); SRV weights are 100 split over the
entries before de-duplication; every ready endpoint has a name (hostname, else dashed IP), under
ClusterIP Services too, as CoreDNS does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from zones import model, names
from zones.records import RRSets, Srv, srv_weight

# Which of a Service's names a record set is for: the Service itself, a named port
# (port name, protocol), or an endpoint (its label).
SERVICE = ""
Selector = str | tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Entry:
    """One (address, port) backend, as CoreDNS counts them for SRV weights."""

    address: str
    port: model.Port | None
    label: str


@dataclass(frozen=True, slots=True)
class ServiceView:
    """One Service with its slices (ready endpoints only) in one zone."""

    svc: model.Service
    slices: tuple[model.EndpointSlice, ...]
    zone: str

    @property
    def owner(self) -> str:
        return names.service_name(self.svc.name, self.svc.namespace, self.zone)

    def owned_names(self) -> Iterator[tuple[str, Selector]]:
        """Every name this Service answers for, with the selector :meth:`rrsets` takes."""
        svc = self.svc
        if svc.external_name:
            if not names.is_ip(svc.external_name):  # CoreDNS keeps names that can be targets
                yield self.owner, SERVICE
            return
        labels = dict.fromkeys(label for _, label in self.addresses())
        if svc.headless:
            if not labels:  # no ready endpoint: the name does not exist (NXDOMAIN)
                return
            ports = dict.fromkeys((p.name, p.protocol) for s in self.slices for p in s.ports)
        else:
            ports = dict.fromkeys((p.name, p.protocol) for p in svc.ports)
        yield self.owner, SERVICE
        for port, protocol in ports:
            if port:
                name = names.port_name(port, protocol, svc.name, svc.namespace, self.zone)
                yield name, (port, protocol)
        for label in labels:
            yield names.endpoint_name(label, svc.name, svc.namespace, self.zone), label

    def addresses(self) -> Iterator[tuple[str, str]]:
        """(address, endpoint label) of every ready endpoint address."""
        for eps in self.slices:
            for endpoint in eps.endpoints:
                for address in endpoint.addresses:
                    yield address, names.endpoint_label(endpoint.hostname, address)

    def reverse_entries(self) -> Iterator[tuple[str, str]]:
        """(IP, endpoint label) for PTR records; the label is "" for a ClusterIP."""
        for ip in self.svc.cluster_ips:
            yield ip, ""
        yield from self.addresses()

    def rrsets(self, selector: Selector) -> RRSets:
        svc = self.svc
        if svc.external_name:
            return RRSets(cname=svc.external_name)
        entries = self._entries()
        if isinstance(selector, tuple):
            entries = [e for e in entries if e.port and (e.port.name, e.port.protocol) == selector]
        elif selector:
            entries = [e for e in entries if e.label == selector]
        if svc.headless or (selector and not isinstance(selector, tuple)):
            return self._endpoint_rrsets(entries)
        return self._cluster_ip_rrsets(selector)

    def _cluster_ip_rrsets(self, selector: Selector) -> RRSets:
        svc = self.svc
        ports = [p for p in svc.ports if not selector or (p.name, p.protocol) == selector]
        weight = srv_weight(len(ports) * len(svc.cluster_ips))
        srv = tuple(
            Srv(weight, port, self.owner, svc.cluster_ips)
            for port in dict.fromkeys(p.port for p in ports)
        )
        v4, v6 = split_families(svc.cluster_ips)
        return RRSets(a=v4, aaaa=v6, srv=srv)

    def _endpoint_rrsets(self, entries: list[_Entry]) -> RRSets:
        """A/AAAA of the entries' addresses and one SRV per (target, port)."""
        v4, v6 = split_families(tuple(dict.fromkeys(e.address for e in entries)))
        with_port = [e for e in entries if e.port is not None]
        weight = srv_weight(len(with_port))
        targets: dict[tuple[str, int], list[str]] = {}
        svc = self.svc
        for entry in with_port:
            assert entry.port is not None
            target = names.endpoint_name(entry.label, svc.name, svc.namespace, self.zone)
            addresses = targets.setdefault((target, entry.port.port), [])
            if entry.address not in addresses:
                addresses.append(entry.address)
        srv = tuple(
            Srv(weight, port, target, tuple(ips)) for (target, port), ips in targets.items()
        )
        return RRSets(a=v4, aaaa=v6, srv=srv)

    def _entries(self) -> list[_Entry]:
        entries: list[_Entry] = []
        for eps in self.slices:
            ports: tuple[model.Port | None, ...] = eps.ports or (None,)
            for endpoint in eps.endpoints:
                for address in endpoint.addresses:
                    label = names.endpoint_label(endpoint.hostname, address)
                    entries.extend(_Entry(address, port, label) for port in ports)
        return entries


def view(svc: model.Service, slices: Iterable[model.EndpointSlice], zone: str) -> ServiceView:
    return ServiceView(svc, tuple(s for s in slices if s.endpoints), zone)


def split_families(ips: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(ip for ip in ips if ":" not in ip), tuple(ip for ip in ips if ":" in ip)
