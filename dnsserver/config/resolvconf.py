"""resolv.conf, read the way glibc reads it, and the upstream addresses it names.

:func:`parse` is a pure function from the file's text to a :class:`ResolvConf`; :func:`read`
reads a file. Both the forwarder (``forward . /etc/resolv.conf``) and the client-side stub
resolver use them.

The grammar (glibc ``resolv/res_init.c``, resolv.conf(5)):

- a line whose first character is ``#`` or ``;`` is a comment; a keyword starts its line;
- ``nameserver ADDR``: an IPv4 or IPv6 address (``fe80::1%eth0`` scope kept). glibc has no
  port syntax; as our extension (for tests and stub domains) ``IP:PORT`` and ``[V6]:PORT`` are
  accepted too. Unparseable addresses are skipped and reported in :attr:`ResolvConf.problems`.
  Every nameserver is kept, in order; glibc itself uses only the first three (:data:`MAXNS`);
- ``search D…`` and ``domain D``: whichever comes last wins (``domain D`` means ``search D``).
  Trailing dots are dropped (``.`` alone, the root, is kept);
- ``options``: ``ndots:N`` (capped at 15, like glibc and musl), ``timeout:N`` (capped at 30),
  ``attempts:N`` (capped at 5), ``rotate`` and the rest, all also kept verbatim in
  :attr:`ResolvConf.options`. Later options override earlier ones. ``RES_OPTIONS`` from the
  environment is not read: this module never looks at the environment.

Missing nameservers are not filled in: glibc falls back to 127.0.0.1 (:data:`GLIBC_DEFAULT`),
which for a DNS server is a loop, so deciding that is the caller's business.

:func:`systemd_resolved_fallback` implements what every DNS server on a systemd-resolved host
has to do (CoreDNS loop README, coredns/coredns#2087): when the file names only the local stub
``127.0.0.53`` (or the ``127.0.0.54`` proxy stub), the real upstreams are in
``/run/systemd/resolve/resolv.conf``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

DNS_PORT = 53
MAXNS = 3
MAX_NDOTS = 15
MAX_TIMEOUT = 30
MAX_ATTEMPTS = 5
ETC_RESOLV_CONF = Path("/etc/resolv.conf")
SYSTEMD_RESOLVED_UPSTREAMS = Path("/run/systemd/resolve/resolv.conf")
SYSTEMD_RESOLVED_STUBS = frozenset({"127.0.0.53", "127.0.0.54"})


class UpstreamError(ValueError):
    """The text is not an upstream address (IP, IP:PORT or [V6]:PORT)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """One DNS server to send queries to: an IP address literal and a port."""

    host: str
    port: int = DNS_PORT

    def __str__(self) -> str:
        """``1.2.3.4:53`` or ``[::1]:53``: CoreDNS's ``to`` label, and parseable again."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def family(self) -> int:
        """4 or 6."""
        return 6 if ":" in self.host else 4


def parse_upstream(text: str, default_port: int = DNS_PORT) -> Upstream:
    """``IP``, ``IP:PORT``, ``[V6]``, ``[V6]:PORT`` or a bare IPv6 address (optionally with a
    ``dns://`` prefix, as CoreDNS accepts); raises :class:`UpstreamError`."""
    spec = text.strip()
    spec = spec.removeprefix("dns://")
    port = default_port
    if spec.startswith("["):
        host, bracket, rest = spec[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise UpstreamError(f"{text!r}: expected [IPv6]:PORT")
        if rest:
            port = _port(rest[1:], text)
    elif spec.count(":") == 1:
        host, _, port_text = spec.partition(":")
        port = _port(port_text, text)
    else:
        host = spec  # IPv4, or IPv6 without brackets (no port possible then)
    address, scope = host.partition("%")[::2]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise UpstreamError(f"{text!r}: {host!r} is not an IP address") from None
    if scope and parsed.version != 6:
        raise UpstreamError(f"{text!r}: a %scope needs an IPv6 address")
    canonical = str(parsed) + (f"%{scope}" if scope else "")
    return Upstream(canonical, port)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise UpstreamError(f"{whole!r}: port {text!r} is not a number from 1 to 65535")
    return int(text)


@dataclass(frozen=True, slots=True)
class ResolvConf:
    nameservers: tuple[Upstream, ...] = ()
    search: tuple[str, ...] = ()
    ndots: int = 1
    timeout: int = 5
    attempts: int = 2
    rotate: bool = False
    options: tuple[str, ...] = ()  # every option token, in order, as written
    problems: tuple[str, ...] = field(default=(), compare=False)  # lines that were skipped


GLIBC_DEFAULT = Upstream("127.0.0.1")


def parse(text: str, *, default_port: int = DNS_PORT) -> ResolvConf:
    """The resolver configuration ``text`` describes (see the module docstring for the rules).

    ``default_port`` is the port of a nameserver written without one (tests use 5353 etc.)."""
    nameservers: list[Upstream] = []
    search: tuple[str, ...] = ()
    options: list[str] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or raw[0] in "#;":
            continue
        keyword, *values = line.split()
        if keyword == "nameserver":
            if not values:
                problems.append(f"line {number}: nameserver without an address")
                continue
            try:
                nameservers.append(parse_upstream(values[0], default_port))
            except UpstreamError as exc:
                problems.append(f"line {number}: {exc}")
        elif keyword == "search":
            search = tuple(_domain(value) for value in values)
        elif keyword == "domain":
            search = (_domain(values[0]),) if values else ()
        elif keyword == "options":
            options.extend(values)
        elif keyword != "sortlist":
            problems.append(f"line {number}: unknown keyword {keyword!r}")
    ndots, timeout, attempts, rotate = 1, 5, 2, False
    for option in options:
        name, _, value = option.partition(":")
        if name == "rotate":
            rotate = True
        elif name in ("ndots", "timeout", "attempts"):
            if not value.isdigit():
                problems.append(f"option {option!r}: {name} needs a number")
            elif name == "ndots":
                ndots = min(int(value), MAX_NDOTS)
            elif name == "timeout":
                timeout = min(max(int(value), 1), MAX_TIMEOUT)
            else:
                attempts = min(max(int(value), 1), MAX_ATTEMPTS)
    return ResolvConf(
        nameservers=tuple(nameservers), search=search, ndots=ndots, timeout=timeout,
        attempts=attempts, rotate=rotate, options=tuple(options), problems=tuple(problems),
    )


def _domain(text: str) -> str:
    return text if text == "." else text.rstrip(".")


def read(path: Path, *, default_port: int = DNS_PORT) -> ResolvConf:
    """:func:`parse` of the file at ``path``; ``OSError`` when it cannot be read."""
    return parse(path.read_text(encoding="utf-8", errors="replace"), default_port=default_port)


@dataclass(frozen=True, slots=True)
class Choice:
    """The configuration to use, the file it came from, and why (None when nothing to say)."""

    conf: ResolvConf
    path: Path
    note: str | None = None


def only_systemd_resolved_stub(conf: ResolvConf) -> bool:
    """True when every nameserver is systemd-resolved's local stub (and there is at least one)."""
    return bool(conf.nameservers) and all(
        ns.host in SYSTEMD_RESOLVED_STUBS and ns.port == DNS_PORT for ns in conf.nameservers
    )


def systemd_resolved_fallback(
    path: Path = ETC_RESOLV_CONF, resolved_path: Path = SYSTEMD_RESOLVED_UPSTREAMS
) -> Choice:
    """Read ``path``; if it names only systemd-resolved's stub, use ``resolved_path`` instead.

    Forwarding to 127.0.0.53 from a pod is a loop or a black hole (the stub lives in the node's
    network namespace), so the file systemd-resolved writes with the real upstreams is used,
    and :attr:`Choice.note` says so. When that file is missing or names no nameserver, the
    original configuration is returned with a note saying the stub could not be avoided; the
    caller's loop check then refuses the loopback upstream. ``OSError`` if ``path`` is unreadable.
    """
    conf = read(path)
    if not only_systemd_resolved_stub(conf):
        return Choice(conf, path)
    stubs = ", ".join(str(ns) for ns in conf.nameservers)
    try:
        resolved = read(resolved_path)
    except OSError as exc:
        return Choice(conf, path, f"{path} names only the systemd-resolved stub ({stubs}) and "
                                  f"{resolved_path} cannot be read ({exc.strerror})")
    if not resolved.nameservers:
        return Choice(conf, path, f"{path} names only the systemd-resolved stub ({stubs}) and "
                                  f"{resolved_path} names no nameserver")
    upstreams = ", ".join(str(ns) for ns in resolved.nameservers)
    return Choice(resolved, resolved_path,
                  f"{path} names only the systemd-resolved stub ({stubs}); "
                  f"using the upstreams in {resolved_path} instead: {upstreams}")


__all__ = [
    "DNS_PORT", "Choice", "ResolvConf", "Upstream", "UpstreamError", "parse", "parse_upstream",
    "read", "systemd_resolved_fallback",
]
