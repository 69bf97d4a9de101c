"""The record sets one Service contributes to a zone: built from the Service and its slices only.

An event about a Service or one of its EndpointSlices calls :func:`service_names` for that one
Service; the zone swaps the result in. Nothing here looks at other Services, so the cost of an
event is the size of the Service it touches (CoreDNS ``kubernetes.go`` ``findServices``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from zones import model, names
from zones.records import RRSets, Srv, srv_weight


@dataclass(frozen=True, slots=True)
class ServiceRecords:
    """What one Service publishes: owner names with their record sets, and reverse entries."""

    names: dict[str, RRSets] = field(default_factory=dict)
    cluster_ptrs: dict[str, str] = field(default_factory=dict)  # ClusterIP -> service name
    endpoint_ptrs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # IP -> endpoint names


@dataclass(frozen=True, slots=True)
class _Entry:
    """One (address, port) backend of a headless Service, as CoreDNS counts them for SRV."""

    address: str
    port: model.Port | None
    label: str


def service_names(
    svc: model.Service, slices: Iterable[model.EndpointSlice], zone: str
) -> ServiceRecords:
    if svc.external_name:
        return _external_name(svc, zone)
    ready = [s for s in slices if s.endpoints]
    if svc.headless:
        return _headless(svc, ready, zone)
    return _cluster_ip(svc, ready, zone)


def _external_name(svc: model.Service, zone: str) -> ServiceRecords:
    if names.is_ip(svc.external_name):  # CoreDNS keeps only names that can be CNAME targets
        return ServiceRecords()
    owner = names.service_name(svc.name, svc.namespace, zone)
    return ServiceRecords(names={owner: RRSets(cname=svc.external_name)})


def _cluster_ip(
    svc: model.Service, slices: list[model.EndpointSlice], zone: str
) -> ServiceRecords:
    owner = names.service_name(svc.name, svc.namespace, zone)
    v4, v6 = _split_families(svc.cluster_ips)
    backend = Srv(0, 0, owner, svc.cluster_ips)

    def srv_for(ports: Iterable[model.Port]) -> tuple[Srv, ...]:
        ports = list(ports)
        weight = srv_weight(len(ports) * len(svc.cluster_ips))
        unique = dict.fromkeys(p.port for p in ports)
        return tuple(Srv(weight, port, owner, backend.addresses) for port in unique)

    result = ServiceRecords(cluster_ptrs=dict.fromkeys(svc.cluster_ips, owner))
    result.names[owner] = RRSets(a=v4, aaaa=v6, srv=srv_for(svc.ports))
    for port in svc.ports:
        if port.name:
            name = names.port_name(port.name, port.protocol, svc.name, svc.namespace, zone)
            result.names[name] = RRSets(a=v4, aaaa=v6, srv=srv_for([port]))
    _add_endpoint_names(result, svc, _entries(slices), zone)
    return result


def _headless(svc: model.Service, slices: list[model.EndpointSlice], zone: str) -> ServiceRecords:
    entries = _entries(slices)
    result = ServiceRecords()
    if not entries:  # no ready endpoint: the name does not exist (NXDOMAIN)
        return result
    owner = names.service_name(svc.name, svc.namespace, zone)
    result.names[owner] = _address_rrsets(entries, svc, zone)
    for (port_name, protocol), matching in _by_named_port(entries).items():
        name = names.port_name(port_name, protocol, svc.name, svc.namespace, zone)
        result.names[name] = _address_rrsets(matching, svc, zone)
    _add_endpoint_names(result, svc, entries, zone)
    return result


def _add_endpoint_names(
    result: ServiceRecords, svc: model.Service, entries: list[_Entry], zone: str
) -> None:
    """``<endpoint>.<svc>.<ns>.svc.<zone>`` for every ready endpoint, and their reverse names."""
    by_label: dict[str, list[_Entry]] = {}
    for entry in entries:
        by_label.setdefault(entry.label, []).append(entry)
    ptrs: dict[str, dict[str, None]] = {}
    for label, group in by_label.items():
        name = names.endpoint_name(label, svc.name, svc.namespace, zone)
        result.names[name] = _address_rrsets(group, svc, zone)
        for entry in group:
            ptrs.setdefault(entry.address, {})[name] = None
    result.endpoint_ptrs.update((ip, tuple(targets)) for ip, targets in ptrs.items())


def _address_rrsets(entries: list[_Entry], svc: model.Service, zone: str) -> RRSets:
    """A/AAAA of the entries' addresses and one SRV per (target, port), weights before dedup."""
    v4, v6 = _split_families(tuple(dict.fromkeys(e.address for e in entries)))
    with_port = [e for e in entries if e.port is not None]
    weight = srv_weight(len(with_port))
    srv: dict[tuple[str, int], list[str]] = {}
    for entry in with_port:
        assert entry.port is not None
        target = names.endpoint_name(entry.label, svc.name, svc.namespace, zone)
        addresses = srv.setdefault((target, entry.port.port), [])
        if entry.address not in addresses:
            addresses.append(entry.address)
    records = tuple(
        Srv(weight, port, target, tuple(addresses)) for (target, port), addresses in srv.items()
    )
    return RRSets(a=v4, aaaa=v6, srv=records)


def _entries(slices: Iterable[model.EndpointSlice]) -> list[_Entry]:
    entries: list[_Entry] = []
    for eps in slices:
        ports: tuple[model.Port | None, ...] = eps.ports or (None,)
        for endpoint in eps.endpoints:
            for address in endpoint.addresses:
                label = names.endpoint_label(endpoint.hostname, address)
                entries.extend(_Entry(address, port, label) for port in ports)
    return entries


def _by_named_port(entries: list[_Entry]) -> dict[tuple[str, str], list[_Entry]]:
    groups: dict[tuple[str, str], list[_Entry]] = {}
    for entry in entries:
        if entry.port is not None and entry.port.name:
            groups.setdefault((entry.port.name, entry.port.protocol), []).append(entry)
    return groups


def _split_families(ips: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(ip for ip in ips if ":" not in ip), tuple(ip for ip in ips if ":" in ip)

