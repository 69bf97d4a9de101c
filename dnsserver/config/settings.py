"""The server's configuration: one small frozen value, built from flags or from a Corefile.

:class:`Config` holds everything a server needs. The CLI builds it from flags;
:mod:`dnsserver.config.corefile` builds it from a CoreDNS Corefile. The two meet in
:meth:`Config.merged`, which lays the flags a user typed over a Corefile's values.

The defaults are those of the flag-built server: the bundled cluster on 127.0.0.1:5353, no
forwarding, no cache, no HTTP endpoints. A Corefile turns each plugin on explicitly; the
plugin's own defaults (CoreDNS's) live on the sub-config, e.g. ``HealthConfig().address``.

Zones are written lower case without the trailing dot (``cluster.local``); the root zone is
``"."``. Durations are float seconds.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

from dnsserver.plugins.chain import PluginOptions
from zones.model import PodsMode

if TYPE_CHECKING:  # "X as X": re-exported, see __getattr__ below
    from dnsserver.plugins.cache import CacheConfig as CacheConfig  # noqa: PLC0414
    from dnsserver.plugins.cache import CacheLimits as CacheLimits  # noqa: PLC0414
    from dnsserver.plugins.errors import ErrorsOptions
    from dnsserver.plugins.forward import ForwardConfig as ForwardConfig  # noqa: PLC0414
    from dnsserver.plugins.forward import ForwardPolicy as ForwardPolicy  # noqa: PLC0414

DEFAULT_LISTEN = ("127.0.0.1", 5353)
ROOT_ZONE = "."
REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")
RESOLV_CONF = "/etc/resolv.conf"

# CoreDNS's plugin/log formats; ``{common}`` is the default.
COMMON_LOG_FORMAT = ('{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} '
                     '{>bufsize}" {rcode} {>rflags} {rsize} {duration}')
COMBINED_LOG_FORMAT = COMMON_LOG_FORMAT + ' "{>opcode}"'
LOG_CLASSES = ("success", "denial", "error", "all")


class ConfigError(ValueError):
    """The configuration cannot be used."""


# -- plugin sub-configs --------------------------------------------------------------------

# ``forward`` and ``cache`` keep their options with their code (dnsserver/plugins/forward.py,
# cache.py), which imports this module; they are importable from here too, loaded on first use.
_PLUGIN_OPTIONS = {
    "ForwardConfig": "dnsserver.plugins.forward", "ForwardPolicy": "dnsserver.plugins.forward",
    "CacheConfig": "dnsserver.plugins.cache", "CacheLimits": "dnsserver.plugins.cache",
}


def __getattr__(name: str) -> object:
    module = _PLUGIN_OPTIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """CoreDNS ``health``: ``GET /health`` says OK while the process runs."""

    address: str = ":8080"
    lameduck: float = 0.0  # keep serving this long after SIGTERM


@dataclass(frozen=True, slots=True)
class ReloadConfig:
    """CoreDNS ``reload``: poll the Corefile every ``interval`` ± ``jitter`` seconds."""

    interval: float = 30.0
    jitter: float = 15.0


@dataclass(frozen=True, slots=True)
class LogConfig:
    """CoreDNS ``log``: one line per query under ``zones``, for the response ``classes``."""

    zones: tuple[str, ...] = (ROOT_ZONE,)
    format: str = COMMON_LOG_FORMAT
    classes: tuple[str, ...] = ("all",)  # any of success, denial, error; or all


@dataclass(frozen=True, slots=True)
class StubDomain:
    """Names under ``zone`` go to ``forward`` (an extra server block, or ``forward ZONE …``).

    ``cache`` is the cache that applies to these answers: the extra block's own cache, or the
    main block's when the ``forward`` line sits in the main block.
    """

    zone: str
    forward: ForwardConfig
    cache: CacheConfig | None = None
    own_block: bool = False  # a server block of its own: the main block's plugins never see it


@dataclass(frozen=True, slots=True)
class KubeTLS:
    """CoreDNS kubernetes ``tls CERT KEY CACERT`` for a remote ``endpoint``."""

    cert: Path
    key: Path
    ca: Path


# -- the whole configuration ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Config:
    """One server's configuration.

    Routing, in CoreDNS's plugin order: a name under ``zones``/``reverse_zones`` is answered
    from the cluster; an NXDOMAIN there goes on only where :meth:`falls_through` says so;
    then the longest matching :class:`StubDomain` (a ``"."`` stub catches everything), then
    ``forward``. Without a forwarder the cluster's answer stands.
    """

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
    # -- the kubernetes plugin
    reverse_zones: tuple[str, ...] = REVERSE_ZONES  # () serves no PTR records
    fallthrough: bool = False
    fallthrough_zones: tuple[str, ...] = ()  # with fallthrough: () means every zone
    namespaces: tuple[str, ...] = ()  # () exposes every namespace
    kube_endpoint: str | None = None  # API server URL (kubernetes ``endpoint``)
    kube_tls: KubeTLS | None = None
    # Listen once synced with the API, or after this long (then SERVFAIL, not NXDOMAIN, until
    # synced); 0 listens at once. A Corefile's kubernetes has CoreDNS's 5s.
    startup_timeout: float = 0.0
    autopath: bool = False  # ``autopath @kubernetes``: server-side search path
    search_domains: tuple[str, ...] | None = None  # autopath's host part; None: resolv.conf
    # -- the rest of the server block
    server_zones: tuple[str, ...] = (ROOT_ZONE,)  # the main block's zones; outside → REFUSED
    forward: ForwardConfig | None = None
    stub_domains: tuple[StubDomain, ...] = ()
    cache: CacheConfig | None = None
    health: HealthConfig | None = None
    ready_address: str | None = None  # ``ready``: ":8181"
    prometheus_address: str | None = None  # ``prometheus``: "localhost:9153" unless given
    log: LogConfig | None = None
    errors: ErrorsOptions | None = None  # the errors plugin: log forwarding's failures
    reload: ReloadConfig | None = None
    loadbalance: bool = False
    chain: tuple[PluginOptions, ...] = ()  # rewrite, template, hosts … in the Corefile's order
    corefile: Path | None = None  # the file this came from (what ``reload`` watches)

    @property
    def log_queries(self) -> bool:
        return self.log is not None

    def falls_through(self, name: str) -> bool:
        """Whether a cluster NXDOMAIN for ``name`` is handed on (kubernetes ``fallthrough``)."""
        if not self.fallthrough:
            return False
        return not self.fallthrough_zones or any(
            name_in_zone(name, zone) for zone in self.fallthrough_zones
        )

    def merged(self, overrides: ConfigOverrides) -> Config:
        """This config with ``overrides`` laid over it; keys whose value is None are skipped.

        The CLI uses it to put the flags a user typed over a Corefile: give the flags an
        argparse default of None, collect them into a :class:`ConfigOverrides`, and
        ``corefile.load(path).merged(overrides)``. Unknown keys raise :class:`ConfigError`.
        """
        names = {f.name for f in fields(Config)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
        changes = {key: value for key, value in overrides.items() if value is not None}
        return replace(self, **cast("dict[str, Any]", changes))


class ConfigOverrides(TypedDict, total=False):
    """The fields a command line may set over a Corefile (see :meth:`Config.merged`)."""

    listen: tuple[tuple[str, int], ...]
    zones: tuple[str, ...]
    ttl: int
    pods: PodsMode
    manifests: Path | None
    kubeconfig: Path | None
    context: str | None
    tcp_idle_timeout: float
    max_tcp_connections: int
    watch_inactivity_timeout: float
    watch_backoff_unit: float
    log: LogConfig | None
    health: HealthConfig | None
    ready_address: str | None
    prometheus_address: str | None
    forward: ForwardConfig | None
    search_domains: tuple[str, ...] | None
    corefile: Path | None
    autopath: bool
    loadbalance: bool


# -- value parsers shared by the flags and the Corefile ------------------------------------

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


def normalize_zone(text: str) -> str:
    """A domain name in our zone spelling: lower case, no trailing dot, ``"."`` for the root."""
    if text.strip() == ROOT_ZONE:
        return ROOT_ZONE
    zone = text.strip().strip(".").lower()
    labels = zone.split(".")
    if (not zone or any(not label or len(label) > 63 for label in labels) or len(zone) > 250
            or any(c.isspace() or c in "/:@\\\"'{}" for c in zone)):
        raise ConfigError(f"{text!r} is not a domain name")
    return zone


def parse_zone(text: str) -> str:
    try:
        zone = normalize_zone(text)
    except ConfigError:
        zone = ROOT_ZONE
    if zone == ROOT_ZONE:
        raise ConfigError(f"--zone {text!r} is not a domain name")
    return zone


def name_in_zone(name: str, zone: str) -> bool:
    """Whether ``name`` (any case, trailing dot or not) is ``zone`` or below it."""
    name = name.strip(".").lower()
    return zone in (ROOT_ZONE, name) or name.endswith("." + zone)


def parse_ttl(text: str) -> int:
    if not text.isdigit() or int(text) > 3600:
        raise ConfigError(f"--ttl {text!r}: expected a number of seconds from 0 to 3600")
    return int(text)


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """A Go duration (``500ms``, ``5s``, ``1m30s``, ``1h``; ``0`` alone) in seconds, >= 0."""
    if text == "0":
        return 0.0
    if not text:
        raise ConfigError("'' is not a duration (e.g. 500ms, 5s, 1m30s)")
    position, seconds = 0, 0.0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise ConfigError(f"{text!r} is not a duration (e.g. 500ms, 5s, 1m30s)")
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return seconds


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def split_host_port(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` as (host, port); host "" means every address.

    HOST is an IP address or a host name. Without ``default_port`` the port is required;
    with it, a bare host or IP (``10.0.0.1``, ``2001:db8::1``) takes that port.
    """
    bad = ConfigError(f"{text!r} is not an address (HOST:PORT, e.g. :8080 or 10.0.0.1:53)")
    if default_port is not None:
        try:
            return (str(ipaddress.ip_address(text)), default_port)
        except ValueError:
            pass
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not _is_ip(host, version=6):
            raise bad
        if not rest and default_port is not None:
            return (host, default_port)
        if not rest.startswith(":"):
            raise bad
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
        if ":" in host:
            raise bad
        if host and not _is_ip(host) and not _HOSTNAME.match(host):
            raise bad
        if not port_text and default_port is not None and host:
            return (host, default_port)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise bad
    return (host, int(port_text))


def format_host_port(host: str, port: int) -> str:
    """``host:port``, or ``[host]:port`` for an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_upstream_file(text: str) -> bool:
    """Whether a ``forward`` destination names a resolv.conf-style file, not an address: it
    has a ``/`` (CoreDNS's test too), so ``./resolv.conf`` is a file, read from the working
    directory, like ``/etc/resolv.conf``."""
    return "/" in text


def _is_ip(text: str, *, version: int | None = None) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version
