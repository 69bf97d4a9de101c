"""Kubernetes API dicts to :mod:`zones.model` objects.

This is the only module that knows API field paths. Objects that the API server would have
rejected raise :class:`ConversionError` with a message that names the field, so a broken
manifest is reported clearly instead of being served half-understood.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from zones import model

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
PROTOCOLS = ("TCP", "UDP", "SCTP")
STOPPED_PHASES = ("Succeeded", "Failed", "Unknown")

KINDS = ("Service", "EndpointSlice", "Pod", "Namespace")


class ConversionError(ValueError):
    """The object is not a valid Kubernetes object of its kind."""


def to_model(obj: Mapping[str, Any], kind: str | None = None) -> model.ClusterObject:
    """Convert one API object of a kind in :data:`KINDS` (default: ``obj['kind']``)."""
    kind = kind or str(obj.get("kind", ""))
    converter = _CONVERTERS.get(kind)
    if converter is None:
        raise ConversionError(f"unsupported kind {kind!r}")
    return converter(obj)


def service(obj: Mapping[str, Any]) -> model.Service:
    meta = _metadata(obj)
    spec = _mapping(obj.get("spec", {}), "spec")
    svc_type = str(spec.get("type") or "ClusterIP")
    if svc_type == "ExternalName":
        external = spec.get("externalName")
        if not isinstance(external, str) or not external:
            raise ConversionError("spec.externalName is required for type ExternalName")
        return model.Service(
            namespace=meta[0], name=meta[1], cluster_ips=(), headless=False,
            external_name=external.rstrip(".").lower(), ports=_service_ports(spec),
        )
    raw_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    if not isinstance(raw_ips, list):
        raise ConversionError("spec.clusterIPs must be a list")
    headless = any(str(ip) == "None" for ip in raw_ips)
    cluster_ips = () if headless else tuple(_ip(ip, "spec.clusterIPs") for ip in raw_ips)
    if not headless and not cluster_ips:
        raise ConversionError("spec.clusterIP is missing (use \"None\" for a headless Service)")
    return model.Service(
        namespace=meta[0], name=meta[1], cluster_ips=_unique(cluster_ips), headless=headless,
        external_name="", ports=_service_ports(spec),
    )


def endpoint_slice(obj: Mapping[str, Any]) -> model.EndpointSlice:
    namespace, name = _metadata(obj)
    meta = _mapping(obj.get("metadata", {}), "metadata")
    labels = _mapping(meta.get("labels") or {}, "metadata.labels")
    annotations = _mapping(meta.get("annotations") or {}, "metadata.annotations")
    address_type = str(obj.get("addressType") or "IPv4")
    endpoints: tuple[model.Endpoint, ...] = ()
    if address_type in ("IPv4", "IPv6"):
        raw = obj.get("endpoints") or []
        if not isinstance(raw, list):
            raise ConversionError("endpoints must be a list")
        endpoints = tuple(
            ep for i, item in enumerate(raw) if (ep := _ready_endpoint(item, i)) is not None
        )
    elif address_type != "FQDN":
        raise ConversionError(f"addressType {address_type!r} is not IPv4, IPv6 or FQDN")
    return model.EndpointSlice(
        namespace=namespace, name=name,
        service_name=sys.intern(str(labels.get(SERVICE_NAME_LABEL) or "").lower()),
        endpoints=endpoints, ports=_slice_ports(obj.get("ports") or []),
        trigger_time=_timestamp(annotations.get(TRIGGER_TIME_ANNOTATION)),
    )


def pod(obj: Mapping[str, Any]) -> model.Pod:
    namespace, name = _metadata(obj)
    meta = _mapping(obj.get("metadata", {}), "metadata")
    spec = _mapping(obj.get("spec") or {}, "spec")
    status = _mapping(obj.get("status") or {}, "status")
    raw_ips = [item.get("ip") for item in status.get("podIPs") or [] if isinstance(item, dict)]
    if not raw_ips and status.get("podIP"):
        raw_ips = [status["podIP"]]
    ips = _unique(tuple(_ip(ip, "status.podIPs") for ip in raw_ips if ip))
    running = status.get("phase") not in STOPPED_PHASES and not meta.get("deletionTimestamp")
    return model.Pod(
        namespace=namespace, name=name, ips=ips, running=running,
        host_network=bool(spec.get("hostNetwork")),
    )


def namespace(obj: Mapping[str, Any]) -> model.Namespace:
    meta = _mapping(obj.get("metadata"), "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ConversionError("metadata.name is required")
    return model.Namespace(name=name.lower())


_CONVERTERS: dict[str, Callable[[Mapping[str, Any]], model.ClusterObject]] = {
    "Service": service,
    "EndpointSlice": endpoint_slice,
    "Pod": pod,
    "Namespace": namespace,
}


def _metadata(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _mapping(obj.get("metadata"), "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ConversionError("metadata.name is required")
    ns = meta.get("namespace") or "default"
    if not isinstance(ns, str):
        raise ConversionError("metadata.namespace must be a string")
    # Namespace names repeat across thousands of objects: one string each.
    return sys.intern(ns.lower()), name.lower()


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConversionError(f"{field} must be a mapping")
    return value


def _ip(value: object, field: str) -> str:
    """The canonical text of an IP address. IPv4 (nearly every address in a cluster) is
    checked by the C parser, ``ipaddress`` being ten times slower at 50,000 endpoints."""
    text = str(value)
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
    except OSError:
        pass
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise ConversionError(f"{field}: {value!r} is not an IP address") from None


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _protocol(value: object, field: str) -> str:
    protocol = str(value or "TCP").upper()
    if protocol not in PROTOCOLS:
        raise ConversionError(f"{field}: protocol {value!r} is not TCP, UDP or SCTP")
    return protocol


def _port_number(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConversionError(f"{field}: port {value!r} is not a number from 1 to 65535")
    return value


def _service_ports(spec: Mapping[str, Any]) -> tuple[model.Port, ...]:
    raw = spec.get("ports") or []
    if not isinstance(raw, list):
        raise ConversionError("spec.ports must be a list")
    ports = []
    for i, raw_item in enumerate(raw):
        item = _mapping(raw_item, f"spec.ports[{i}]")
        ports.append(_port(
            str(item.get("name") or "").lower(),
            _protocol(item.get("protocol"), f"spec.ports[{i}]"),
            _port_number(item.get("port"), f"spec.ports[{i}]"),
        ))
    return tuple(ports)


def _slice_ports(raw: object) -> tuple[model.Port, ...]:
    if not isinstance(raw, list):
        raise ConversionError("ports must be a list")
    ports = []
    for i, raw_item in enumerate(raw):
        item = _mapping(raw_item, f"ports[{i}]")
        if item.get("port") is None:  # nil port: "all ports", which has no SRV form
            continue
        ports.append(_port(
            str(item.get("name") or "").lower(),
            _protocol(item.get("protocol"), f"ports[{i}]"),
            _port_number(item.get("port"), f"ports[{i}]"),
        ))
    if len(_PORT_TUPLES) > _MAX_SHARED:
        _PORT_TUPLES.clear()
    return _PORT_TUPLES.setdefault(tuple(ports), tuple(ports))


# Most slices carry the same few ports: share the objects (bounded by the distinct ports).
_PORTS: dict[tuple[str, str, int], model.Port] = {}
_PORT_TUPLES: dict[tuple[model.Port, ...], tuple[model.Port, ...]] = {}
_MAX_SHARED = 10_000


def _port(name: str, protocol: str, number: int) -> model.Port:
    key = (name, protocol, number)
    port = _PORTS.get(key)
    if port is None:
        if len(_PORTS) > _MAX_SHARED:
            _PORTS.clear()
        port = _PORTS[key] = model.Port(sys.intern(name), protocol, number)
    return port


def _ready_endpoint(item: object, index: int) -> model.Endpoint | None:
    field = f"endpoints[{index}]"
    item = _mapping(item, field)
    conditions = _mapping(item.get("conditions") or {}, f"{field}.conditions")
    if conditions.get("ready") is False:  # absent (None) means ready
        return None
    raw = item.get("addresses") or []
    if not isinstance(raw, list) or not raw:
        raise ConversionError(f"{field}.addresses must be a non-empty list")
    addresses = _unique(tuple(_ip(ip, f"{field}.addresses") for ip in raw))
    return model.Endpoint(addresses=addresses, hostname=str(item.get("hostname") or "").lower())


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
