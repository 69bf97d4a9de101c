"""The server's configuration: one small frozen value, built from flags (or a Corefile later)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zones.model import PodsMode

DEFAULT_LISTEN = ("127.0.0.1", 5353)


class ConfigError(ValueError):
    """The configuration cannot be used."""


@dataclass(frozen=True, slots=True)
class Config:
    listen: tuple[tuple[str, int], ...] = (DEFAULT_LISTEN,)
    zones: tuple[str, ...] = ("cluster.local",)
    ttl: int = 5
    pods: PodsMode = PodsMode.INSECURE
    manifests: Path | None = None
    kubeconfig: Path | None = None
    context: str | None = None
    tcp_idle_timeout: float = 10.0
    max_tcp_connections: int = 1000
    watch_inactivity_timeout: float = 90.0
    watch_backoff_unit: float = 1.0


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` (``:PORT`` alone means every IPv4 address)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5353 or [::1]:53")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"--listen {text!r}: write IPv6 addresses in brackets, e.g. [::1]:53")
    return (host or "0.0.0.0", int(port_text))


def parse_zone(text: str) -> str:
    zone = text.strip().strip(".").lower()
    labels = zone.split(".")
    if not zone or any(not label or len(label) > 63 for label in labels) or len(zone) > 250:
        raise ConfigError(f"--zone {text!r} is not a domain name")
    return zone


def parse_ttl(text: str) -> int:
    if not text.isdigit() or int(text) > 3600:
        raise ConfigError(f"--ttl {text!r}: expected a number of seconds from 0 to 3600")
    return int(text)
