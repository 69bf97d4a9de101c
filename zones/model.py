"""Stripped, immutable views of the Kubernetes objects that DNS needs.

Only :mod:`zones.convert` builds these from API dicts; everything else works on them. Each keeps
just the fields an answer depends on, so a cluster of 50,000 endpoints stays small in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PodsMode(StrEnum):
    """How ``a-b-c-d.<ns>.pod.<zone>`` names are answered (CoreDNS ``pods`` option)."""

    DISABLED = "disabled"
    INSECURE = "insecure"
    VERIFIED = "verified"


@dataclass(frozen=True, slots=True)
class Port:
    """A Service port or an EndpointSlice port; ``name`` is "" when unnamed."""

    name: str
    protocol: str  # upper case: TCP, UDP or SCTP
    port: int


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    cluster_ips: tuple[str, ...]  # empty for headless and ExternalName services
    headless: bool
    external_name: str  # "" unless type ExternalName
    ports: tuple[Port, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready endpoint of a slice: its addresses and the label its DNS name uses."""

    addresses: tuple[str, ...]
    hostname: str  # "" when the endpoint has none


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service_name: str  # the kubernetes.io/service-name label; "" when absent
    endpoints: tuple[Endpoint, ...]  # ready ones only (conditions.ready absent or true)
    ports: tuple[Port, ...]
    trigger_time: float | None  # endpoints.kubernetes.io/last-change-trigger-time, Unix seconds

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    ips: tuple[str, ...]  # status.podIPs, primary first
    running: bool  # phase not Succeeded/Failed/Unknown and not terminating
    host_network: bool

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str

    @property
    def key(self) -> tuple[str, str]:
        return ("", self.name)


ClusterObject = Service | EndpointSlice | Pod | Namespace
