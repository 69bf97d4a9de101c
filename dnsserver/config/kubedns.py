"""Read kube-dns's ConfigMap (``kube-system/kube-dns``) into stub domains and an upstream.

A cluster moving off kube-dns carries this ConfigMap; ``--kube-dns-config PATH`` takes it as
it is, either the manifest (YAML or JSON, what ``kubectl get cm kube-dns -n kube-system -o
yaml`` prints) or the folder it is mounted at (kube-dns's ``--config-dir``: one file per key)::

    data:
      stubDomains: |
        {"acme.local": ["1.2.3.4", "1.2.3.5:5353"]}
      upstreamNameservers: |
        ["8.8.8.8", "[2001:db8::1]:53"]

The keys are read as kube-dns reads them (kubernetes/dns ``pkg/dns/config``): ``stubDomains``
is a JSON object from a domain (a lower-case DNS-1123 subdomain) to its nameservers,
``upstreamNameservers`` a JSON list of at most three; a nameserver is ``IP``, ``IP:PORT`` or
``[IPv6]:PORT`` (port 53 by default). kube-dns's ``federations`` is refused (not implemented
here); other keys are ignored by kube-dns, so they are warnings here. Unlike kube-dns,
a nameserver given as a host name is refused: kube-dns looked it up once at start-up, this
server (like CoreDNS's ``forward``, and kubeadm's translation to it) needs the address.

The mapping is the one the Kubernetes documentation gives for CoreDNS ("Customizing DNS
Service"): each stub domain is forwarded to its nameservers, as a ``forward ZONE …`` line of
the main server block would be (with that block's cache), and ``upstreamNameservers`` is
``forward .`` in place of the node's resolv.conf. Typed flags still win (:mod:`dnsserver.cli`
applies ``--upstream`` and ``--stub-domain`` after this); a zone a Corefile already forwards
is a conflict.

:func:`parse_data` and :func:`parse_manifest` are pure; :func:`read_folder` reads a mounted
ConfigMap; :func:`load` takes either path and logs the warnings; :func:`apply` lays the result
over a :class:`~dnsserver.config.settings.Config`. Every error names the file (and the line,
for a YAML manifest) and the key.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from dnsserver.config.settings import (
    ROOT_ZONE,
    Config,
    ConfigError,
    StubDomain,
    format_host_port,
    name_in_zone,
)
from dnsserver.plugins.forward import ForwardConfig
from dnsserver.plugins.upstream import MAX_UPSTREAMS

log = logging.getLogger("dnsserver.kubedns")

FEDERATIONS = "federations"
STUB_DOMAINS = "stubDomains"
UPSTREAM_NAMESERVERS = "upstreamNameservers"
KEYS = (FEDERATIONS, STUB_DOMAINS, UPSTREAM_NAMESERVERS)
MAX_UPSTREAM_NAMESERVERS = 3  # kube-dns's limit (glibc's MAXNS)
DNS_PORT = 53

# k8s.io/apimachinery's IsDNS1123Subdomain: lower-case labels of [a-z0-9-], 253 at most
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")


class KubeDNSConfigError(ConfigError):
    """The kube-dns ConfigMap cannot be used."""


@dataclass(frozen=True, slots=True)
class Value:
    """One key of the ConfigMap: its text, and where it is (the prefix of every message)."""

    text: str
    where: str


@dataclass(frozen=True, slots=True)
class KubeStubDomain:
    """One ``stubDomains`` entry: names under ``zone`` go to ``nameservers`` (HOST:PORT)."""

    zone: str
    nameservers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KubeDNSConfig:
    """What the ConfigMap sets. Nameservers are ``HOST:PORT``, IPv6 in brackets."""

    stub_domains: tuple[KubeStubDomain, ...] = ()
    upstream_nameservers: tuple[str, ...] = ()  # empty: the default upstream stays
    # where each key was read (for the messages of :func:`apply`)
    locations: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Parsed:
    config: KubeDNSConfig
    warnings: tuple[str, ...]


# -- the data ------------------------------------------------------------------------------

def parse_data(data: Mapping[str, Value]) -> Parsed:
    """The settings of a ConfigMap's ``data`` (key → its text and location)."""
    warnings = []
    for key, value in data.items():
        if key not in KEYS:
            warnings.append(_unknown_key(key, value.where))
    federations = data.get(FEDERATIONS)
    if federations is not None and federations.text.strip():
        # kube-dns reads "name=domain,…"; blank means none.
        raise KubeDNSConfigError(f"{federations.where}: federation is not implemented by this "
                                 "server; remove the key to switch")
    stubs: tuple[KubeStubDomain, ...] = ()
    if STUB_DOMAINS in data:
        stubs = _stub_domains(data[STUB_DOMAINS], warnings)
    upstreams: tuple[str, ...] = ()
    if UPSTREAM_NAMESERVERS in data:
        upstreams = _upstream_nameservers(data[UPSTREAM_NAMESERVERS])
    locations = {key: value.where for key, value in data.items() if key in KEYS}
    return Parsed(KubeDNSConfig(stubs, upstreams, locations), tuple(warnings))


def _unknown_key(key: str, where: str) -> str:
    close = difflib.get_close_matches(key, KEYS, n=1) or [
        known for known in KEYS if known.lower() == key.lower()]
    hint = f"; did you mean {close[0]}?" if close else ""
    return (f"{where}: unknown key, ignored as kube-dns ignores it (it reads "
            f"{', '.join(KEYS)}){hint}")


def _json(value: Value) -> Any:
    try:
        return json.loads(value.text)
    except json.JSONDecodeError as exc:
        raise KubeDNSConfigError(f"{value.where}: not valid JSON: {exc.msg} (line {exc.lineno}, "
                                 f"column {exc.colno})") from None


def _stub_domains(value: Value, warnings: list[str]) -> tuple[KubeStubDomain, ...]:
    where = value.where
    seen: set[str] = set()

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        for zone, _ in items:
            if zone in seen:
                warnings.append(f"{where}: {zone!r} is given twice; the last list is used, as "
                                "in kube-dns")
            seen.add(zone)
        return dict(items)

    try:
        parsed = json.loads(value.text, object_pairs_hook=pairs)
    except json.JSONDecodeError:
        parsed = _json(value)  # raises with the message
    if parsed is None:  # JSON null: no stub domains, as in kube-dns
        return ()
    if not isinstance(parsed, dict):
        raise KubeDNSConfigError(f"{where}: expected a JSON object of domain to nameservers, "
                                 f'e.g. {{"acme.local": ["1.2.3.4"]}}, not {_json_type(parsed)}')
    stubs = []
    for zone, listed in parsed.items():
        if not _is_dns1123_subdomain(zone):
            raise KubeDNSConfigError(f"{where}: {zone!r} is not a valid domain name (lower-case "
                                     "letters, digits, '-' and '.', no trailing dot)")
        servers = [] if listed is None else listed  # null: none, as in kube-dns
        if not isinstance(servers, list):
            raise KubeDNSConfigError(f"{where}: {zone!r}: expected a list of nameservers, e.g. "
                                     f'["1.2.3.4"], not {_json_type(servers)}')
        if not servers:
            warnings.append(f"{where}: {zone!r} has no nameservers; ignored, as in kube-dns")
            continue
        if len(servers) > MAX_UPSTREAMS:
            raise KubeDNSConfigError(f"{where}: {zone!r}: at most {MAX_UPSTREAMS} nameservers "
                                     f"(CoreDNS's forward limit), not {len(servers)}")
        nameservers = tuple(dict.fromkeys(
            _nameserver(server, f"{where}: {zone!r}") for server in servers))
        stubs.append(KubeStubDomain(zone, nameservers))
    return tuple(stubs)


def _upstream_nameservers(value: Value) -> tuple[str, ...]:
    where = value.where
    parsed = _json(value)
    if parsed is None:
        return ()
    if not isinstance(parsed, list):
        raise KubeDNSConfigError(f'{where}: expected a JSON list of nameservers, e.g. ["8.8.8.8"], '
                                 f"not {_json_type(parsed)}")
    if len(parsed) > MAX_UPSTREAM_NAMESERVERS:
        raise KubeDNSConfigError(f"{where}: at most {MAX_UPSTREAM_NAMESERVERS} nameservers, "
                                 f"not {len(parsed)}")
    return tuple(dict.fromkeys(_nameserver(server, where) for server in parsed))


def _nameserver(server: object, where: str) -> str:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` as ``HOST:PORT`` (kube-dns's
    ``ValidateNameserverIpAndPort``: Go's ``net.ParseIP`` and ``net.SplitHostPort``)."""
    if not isinstance(server, str):
        raise KubeDNSConfigError(f"{where}: nameserver {server!r} is not a string")
    ip = _ip(server)
    if ip is not None:
        return format_host_port(ip, DNS_PORT)
    split = _split_host_port(server)
    host = _ip(split[0]) if split is not None else None
    if split is None or host is None:
        if _is_dns1123_subdomain(server):
            raise KubeDNSConfigError(
                f"{where}: nameserver {server!r} is a host name: kube-dns looked it up once at "
                "start-up, here (as in CoreDNS's forward) it must be an IP address")
        raise KubeDNSConfigError(f"{where}: nameserver {server!r} is not IP, IP:PORT or "
                                 "[IPv6]:PORT")
    port = split[1]
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise KubeDNSConfigError(f"{where}: nameserver {server!r}: bad port number {port!r}")
    return format_host_port(host, int(port))


def _split_host_port(text: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort`` as far as needed here: (host, port), or None without a port
    (an IPv6 address with a port needs brackets)."""
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        return (host, rest[1:]) if closed and rest.startswith(":") else None
    host, colon, port = text.rpartition(":")
    return (host, port) if colon and ":" not in host else None


def _ip(text: str) -> str | None:
    """The address in Python's spelling, or None; zones (``%eth0``) are refused, as by Go."""
    if "%" in text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _is_dns1123_subdomain(text: str) -> bool:
    return (len(text) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(text) is not None
            and all(len(label) <= 63 for label in text.split(".")))


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "a number"


# -- the ConfigMap manifest ----------------------------------------------------------------

def parse_manifest(text: str, *, path: str) -> Parsed:
    """The settings of a ConfigMap manifest, YAML or JSON; ``path`` names it in messages."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("{"):  # JSON: YAML would stumble on its tabs
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise KubeDNSConfigError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        return parse_data(_data(document, path, {}))
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        nodes = [node for node in yaml.compose_all(text, Loader=yaml.SafeLoader)
                 if not _is_null(node)]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise KubeDNSConfigError(f"{path}{line}: not valid YAML: {reason}") from None
    if len(documents) != 1:
        raise KubeDNSConfigError(f"{path}: expected one ConfigMap, found {len(documents)} "
                                 "documents")
    return parse_data(_data(documents[0], path, _key_lines(nodes[0])))


def _data(document: object, path: str, lines: Mapping[str, int]) -> dict[str, Value]:
    if not isinstance(document, dict) or document.get("kind") != "ConfigMap":
        kind = document.get("kind") if isinstance(document, dict) else None
        found = f"kind {kind!r}" if kind else "no kind"
        raise KubeDNSConfigError(f"{path}: expected a ConfigMap (kind: ConfigMap), or the "
                                 f"folder where it is mounted; found {found}")
    data = document.get("data")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KubeDNSConfigError(f"{path}: data: expected a mapping of key to text")
    values = {}
    for key, text in data.items():
        line = lines.get(str(key))
        where = f"{path}:{line}: {key}" if line else f"{path}: {key}"
        if not isinstance(text, str):
            raise KubeDNSConfigError(f"{where}: a ConfigMap's values are text; write the JSON "
                                     "as a string (e.g. after '|')")
        values[str(key)] = Value(text, where)
    return values


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _key_lines(document: yaml.Node) -> dict[str, int]:
    """The line (1-based) of each key under ``data`` in a YAML document."""
    if not isinstance(document, yaml.MappingNode):
        return {}
    for key, value in document.value:
        if key.value == "data" and isinstance(value, yaml.MappingNode):
            return {str(k.value): k.start_mark.line + 1 for k, _ in value.value}
    return {}


# -- the mounted folder --------------------------------------------------------------------

def read_folder(path: Path) -> Parsed:
    """The settings of a ConfigMap mounted at ``path``, read as kube-dns's ``--config-dir``:
    one file per key; hidden entries (the mount's ``..data``) and folders are passed over."""
    data = {}
    try:
        entries = sorted(path.iterdir())
        for entry in entries:
            if entry.name.startswith(".") or entry.is_dir():
                continue
            try:
                text = entry.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise KubeDNSConfigError(f"{entry}: not UTF-8 text") from None
            data[entry.name] = Value(text, str(entry))
    except OSError as exc:
        raise KubeDNSConfigError(f"{exc.filename or path}: cannot read the kube-dns "
                                 f"configuration: {exc.strerror or exc}") from None
    return parse_data(data)


def load_with_warnings(path: Path) -> Parsed:
    """A ConfigMap manifest, or the folder where one is mounted."""
    if path.is_dir():
        return read_folder(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise KubeDNSConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise KubeDNSConfigError(f"{path}: cannot read the kube-dns configuration: "
                                 f"{exc.strerror or exc}") from None
    return parse_manifest(text, path=str(path))


def load(path: Path) -> KubeDNSConfig:
    """:func:`load_with_warnings`, the warnings logged."""
    parsed = load_with_warnings(path)
    for warning in parsed.warnings:
        log.warning("%s", warning)
    return parsed.config


# -- onto the server's configuration -------------------------------------------------------

def apply(config: Config, kube_dns: KubeDNSConfig) -> Config:
    """``config`` with the ConfigMap's stub domains and upstream.

    Each stub domain is forwarded like a ``forward ZONE …`` line of the main server block
    (with its cache). ``upstreamNameservers`` replaces the upstream's addresses (keeping its
    options); with a Corefile, a zone it forwards already (``.`` included) is a conflict.
    """
    forwarded = {stub.zone for stub in config.stub_domains}
    corefile = f"the Corefile {config.corefile}" if config.corefile else "another setting"
    stubs = []
    for entry in kube_dns.stub_domains:
        where = f"{kube_dns.locations.get(STUB_DOMAINS, STUB_DOMAINS)}: {entry.zone!r}"
        if entry.zone in forwarded:
            raise KubeDNSConfigError(f"{where} is forwarded by {corefile} already")
        for cluster in config.zones + config.reverse_zones:
            if name_in_zone(entry.zone, cluster) and not config.falls_through(entry.zone):
                # kube-dns's dnsmasq sends such names to the stub domain; here the cluster
                # answers them, and only a fallthrough hands its NXDOMAIN on.
                raise KubeDNSConfigError(
                    f"{where} is inside the cluster zone {cluster!r}, whose answers are final "
                    "without the kubernetes plugin's fallthrough: the stub domain would never "
                    "be asked")
        stubs.append(StubDomain(entry.zone, ForwardConfig(to=entry.nameservers), config.cache))
    config = replace(config, stub_domains=(*config.stub_domains, *stubs))
    if not kube_dns.upstream_nameservers:
        return config
    upstream = ForwardConfig(to=kube_dns.upstream_nameservers)
    if config.corefile is None:  # the flag-built default upstream, if any, is replaced
        return replace(config, forward=replace(config.forward or ForwardConfig(),
                                               to=upstream.to))
    where = kube_dns.locations.get(UPSTREAM_NAMESERVERS, UPSTREAM_NAMESERVERS)
    if config.forward is not None or ROOT_ZONE in forwarded:
        raise KubeDNSConfigError(f"{where}: '.' is forwarded by {corefile} already")
    if ROOT_ZONE in config.server_zones:
        return replace(config, forward=upstream)
    # The main block serves only its own zones: the upstream serves the rest as a block of
    # its own would ('. { forward . … }').
    return replace(config, stub_domains=(*config.stub_domains,
                                         StubDomain(ROOT_ZONE, upstream, config.cache)))
