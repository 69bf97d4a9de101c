"""CoreDNS's ``hosts`` plugin: names and addresses from a hosts file and from the Corefile.

::

    hosts [FILE [ZONES...]] {
        [IP NAME...]              # inline entries, before any fallthrough line
        ttl SECONDS               # 3600; 1 to 65535
        no_reverse                # no PTR records for the entries
        reload DURATION           # 5s; how often the file is checked, 0 reads it once
        fallthrough [ZONES...]
    }

FILE is ``/etc/hosts`` by default; ZONES (the server block's by default) are the names the
plugin speaks for: an entry's name outside them is dropped. Both the file and the inline lines
are read as a hosts file: ``IP NAME...`` per line, ``#`` to the end of the line a comment,
anything else skipped without a word. An IPv4-mapped IPv6 address is its IPv4 address.

Answers, as CoreDNS 1.13 gives them (``plugin/hosts/hosts.go``): A and AAAA of a name from the
file, then from the inline lines (both, duplicates kept), AA set, TTL ``ttl``, the owner in
lower case. A name with entries asked for a type it has none of is NODATA without an SOA,
never handed on. A name without entries inside ZONES is SERVFAIL (there is no SOA to say
NXDOMAIN with) unless ``fallthrough`` covers it. A PTR query for an address with entries is
answered whatever ZONES say; any other PTR query, and any name outside ZONES, goes to the next
plugin.

The file is read when the plugin is built, then every ``reload`` if its modification time or
size changed. A file that cannot be read leaves the last entries read in place (a file missing
at start is only a warning: it is read once it appears). Answers are encoded when the file is
read, not per query.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain as chained

from dnsserver.config import directives
from dnsserver.config.directives import (
    BadValue,
    Directive,
    ParseContext,
    Token,
    UnknownOption,
    Unsupported,
    arity,
    duration,
    integer,
)
from dnsserver.config.settings import ROOT_ZONE, ConfigError, normalize_zone
from dnsserver.plugins import chain
from dnsserver.plugins.upstream import fit_udp
from dnsserver.serve import wire
from zones import names
from zones.records import AAAA, NOERROR, PTR, SERVFAIL, A

log = logging.getLogger("dnsserver.hosts")

NAME = "hosts"
DEFAULT_FILE = "/etc/hosts"
DEFAULT_TTL = 3600
DEFAULT_RELOAD = 5.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Entry = tuple[Address, bytes]  # an address and a lower-case wire name
Snapshot = tuple[int, int]  # the file's modification time (ns) and size when it was read

_IN_ADDR_ARPA = b"\x07in-addr\x04arpa\x00"
_IP6_ARPA = b"\x03ip6\x04arpa\x00"
_RECORD_HEADER = struct.Struct(">HHIH")
_COUNTS = struct.Struct(">HHHH")


# -- options -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class HostsOptions:
    """A ``hosts`` directive. Zones are in our spelling (lower case, no dot, ``.`` the root)."""

    path: str = DEFAULT_FILE
    origins: tuple[str, ...] = (ROOT_ZONE,)
    inline: tuple[Entry, ...] = ()  # in line order, names already inside ``origins``
    ttl: int = DEFAULT_TTL
    reverse: bool = True
    reload: float = DEFAULT_RELOAD  # seconds between looks at the file; 0: read it once
    fallthrough: tuple[str, ...] = ()  # zones whose unknown names go on; () none

    @property
    def plugin(self) -> str:
        return NAME

    def build(self, context: chain.BuildContext) -> Hosts:
        return Hosts(self, context)


def parse(directive: Directive, context: ParseContext) -> HostsOptions | None:
    """The options of a ``hosts`` directive (CoreDNS's ``plugin/hosts/setup.go`` grammar)."""
    path = DEFAULT_FILE
    origins = context.zones
    if directive.args:
        path = directive.args[0].text
        _check_file(directive.args[0], path, context)
        if len(directive.args) > 1:
            origins = _zones(directive.args[1:], "hosts", context)
    origin_wires = tuple(names.to_wire(zone) for zone in origins)

    ttl, reverse, reload = DEFAULT_TTL, True, DEFAULT_RELOAD
    fallthrough: tuple[str, ...] = ()
    lines: list[tuple[Token, str]] = []
    for option in directive.body or ():
        keyword = option.name.text
        if option.body is not None:
            raise BadValue.at(option.name, f"hosts {keyword}: takes no block")
        if keyword == "fallthrough":
            fallthrough = (_zones(option.args, "hosts fallthrough", context)
                           if option.args else (ROOT_ZONE,))
        elif keyword == "no_reverse":
            arity(option, "hosts no_reverse", 0, 0)
            reverse = False
        elif keyword == "ttl":
            ttl = _ttl(option, context)
        elif keyword == "reload":
            reload = _reload(option)
        elif keyword == "fallthrough_unsupported":
            context.soft(Unsupported.at(option.name, "hosts: fallthrough_unsupported (CoreDNS "
                                        "1.14) is not supported: other types of a known name "
                                        "are NODATA"))
        elif not fallthrough:
            # CoreDNS keeps every other line before a fallthrough as a hosts-file line
            lines.append((option.name, " ".join(t.text for t in (option.name, *option.args))))
        else:
            context.soft(UnknownOption.at(option.name, f"hosts: unknown option {keyword!r} "
                                          "(inline entries go before fallthrough)"))

    inline: list[Entry] = []
    for token, line in lines:
        parsed = _parse_line(line)
        if parsed is None:
            context.warn(token, f"hosts: {line!r} is neither an option nor an entry "
                         "(IP NAME...); ignored")
            continue
        address, hostnames = parsed
        for name in hostnames:
            name_wire = _inside(name, origin_wires)
            if name_wire is None:
                context.warn(token, f"hosts: {name!r} is not a name in the zones "
                             f"{', '.join(origins) or '(none)'}; ignored")
            else:
                inline.append((address, name_wire))
    return HostsOptions(path, origins, tuple(inline), ttl, reverse, reload, fallthrough)


def _check_file(token: Token, path: str, context: ParseContext) -> None:
    """A missing file is a warning (it may appear later), another failure an error."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        context.warn(token, f"hosts: file {path} does not exist; its entries are served once "
                     "it does")
        return
    except OSError as exc:
        raise BadValue.at(token, f"hosts: unable to access hosts file {path!r}: "
                          f"{exc.strerror or exc}") from None
    if stat.S_ISDIR(status.st_mode):
        context.warn(token, f"hosts: {path} is a directory")


def _ttl(option: Directive, context: ParseContext) -> int:
    if not option.args:
        raise BadValue.at(option.name, "hosts ttl: expected a number of seconds")
    if len(option.args) > 1:
        context.warn(option.args[1], "hosts ttl: only the first argument is used")
    return integer(option.args[0], "hosts ttl", 1, 65535)


def _reload(option: Directive) -> float:
    (value,) = arity(option, "hosts reload", 1, 1)
    if value.text.startswith("-"):
        raise BadValue.at(value, f"hosts reload: {value.text!r} is negative (0 turns reloading "
                          "off)")
    return duration(value, "hosts reload")


def _zones(tokens: Iterable[Token], what: str, context: ParseContext) -> tuple[str, ...]:
    """Zone arguments as CoreDNS reads them: ``[scheme://]ZONE[:PORT]``, a CIDR meaning its
    reverse zones. CoreDNS drops one it cannot read without a word; we warn."""
    zones: list[str] = []
    for token in tokens:
        text = token.text.partition("://")[2] or token.text
        head, colon, port = text.rpartition(":")
        if colon and port.isdigit():
            text = head
        try:
            zones += _reverse_zones(text) if "/" in text else [normalize_zone(text)]
        except (ConfigError, ValueError):
            context.warn(token, f"{what}: {token.text!r} is not a zone; ignored")
    return tuple(zones)


def _reverse_zones(cidr: str) -> list[str]:
    """The reverse zones of a network, split on octet (nibble) boundaries as CoreDNS does."""
    if cidr.startswith(":") or (cidr.startswith("0") and ":" in cidr):
        raise ValueError(f"{cidr!r} is not a network CoreDNS accepts")
    return list(directives.reverse_zones(ipaddress.ip_network(cidr, strict=False)))


# -- the hosts-file format -----------------------------------------------------------------

def _parse_line(line: str) -> tuple[Address, list[str]] | None:
    """``IP NAME...`` of one line, or None for a line that is not an entry."""
    fields = line.partition("#")[0].split()
    if len(fields) < 2:
        return None
    address = _address(fields[0])
    return None if address is None else (address, fields[1:])


def _address(text: str) -> Address | None:
    """An IP address as Go's ``net.ParseIP`` reads it (an IPv6 zone is dropped); an
    IPv4-mapped IPv6 address is its IPv4 address."""
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _inside(name: str, origins: tuple[bytes, ...]) -> bytes | None:
    """``name``'s lower-case wire form when it is a DNS name inside one of ``origins``."""
    text = name.encode("utf-8", "surrogateescape").lower()
    labels = [] if text == b"." else text.removesuffix(b".").split(b".")
    if any(not label or len(label) > 63 for label in labels):
        return None
    name_wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    if len(name_wire) > wire.MAX_NAME_LENGTH:
        return None
    return name_wire if any(chain.in_zone(name_wire, zone) for zone in origins) else None


def parse_file(text: str, origins: tuple[bytes, ...]) -> Iterator[Entry]:
    """Every entry of a hosts file whose name is inside ``origins``, in file order."""
    for line in text.split("\n"):
        parsed = _parse_line(line)
        if parsed is None:
            continue
        address, hostnames = parsed
        for name in hostnames:
            name_wire = _inside(name, origins)
            if name_wire is not None:
                yield address, name_wire


def _reverse_owners(address: Address) -> tuple[bytes, ...]:
    """The PTR names CoreDNS answers for ``address``. For IPv4 that includes the ip6.arpa name
    of its IPv4-mapped form: Go prints that address in dotted form, so it finds the entries."""
    owners = [address.reverse_pointer]
    if address.version == 4:
        owners.append(ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + address.packed)
                      .reverse_pointer)
    return tuple(names.to_wire(owner) for owner in owners)


# -- the answers ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Table:
    """Everything the plugin answers, encoded: per name its A and AAAA records (and counts),
    per reverse name its PTR records. Swapped whole when the file changes."""

    names: dict[bytes, tuple[bytes, int, bytes, int]]
    pointers: dict[bytes, tuple[bytes, int]]


def build_table(entries: Iterable[Entry], ttl: int, reverse: bool) -> Table:
    v4: dict[bytes, list[bytes]] = {}
    v6: dict[bytes, list[bytes]] = {}
    targets: dict[bytes, list[bytes]] = {}
    for address, name in entries:
        rtype = A if address.version == 4 else AAAA
        record = name + _RECORD_HEADER.pack(rtype, 1, ttl, len(address.packed)) + address.packed
        (v4 if rtype == A else v6).setdefault(name, []).append(record)
        if reverse:
            for owner in _reverse_owners(address):
                targets.setdefault(owner, []).append(name)
    names = {
        name: (b"".join(v4.get(name, ())), len(v4.get(name, ())),
               b"".join(v6.get(name, ())), len(v6.get(name, ())))
        for name in {**v4, **v6}
    }
    pointers = {
        owner: (b"".join(owner + _RECORD_HEADER.pack(PTR, 1, ttl, len(target)) + target
                         for target in found), len(found))
        for owner, found in targets.items()
    }
    return Table(names, pointers)


def read_file(path: str, origins: tuple[bytes, ...]) -> tuple[Snapshot, list[Entry]] | None:
    """The file's entries and what it looked like when read; None if it cannot be opened.
    A directory reads as empty, as in Go."""
    try:
        with open(path, "rb") as file:
            status = os.fstat(file.fileno())
            data = file.read()
    except IsADirectoryError:
        try:
            status = os.stat(path)
        except OSError:
            return None
        data = b""
    except OSError:
        return None
    text = data.decode("utf-8", "surrogateescape")
    return (status.st_mtime_ns, status.st_size), list(parse_file(text, origins))


class Hosts:
    """The running plugin: the current :class:`Table`, and the task that re-reads the file."""

    __slots__ = ("_changed", "_fall", "_interception", "_origins", "_served", "_snapshot",
                 "_table", "_task", "options")

    def __init__(self, options: HostsOptions, context: chain.BuildContext) -> None:
        self.options = options
        self._origins = tuple(names.to_wire(zone) for zone in options.origins)
        self._fall = tuple(names.to_wire(zone) for zone in options.fallthrough)
        # what the fast path may answer: the cluster zones, and every reverse name
        self._served = (*(names.to_wire(zone) for zone in context.cluster_zones),
                        _IN_ADDR_ARPA, _IP6_ARPA)
        # called when interception() changes (a file edit); the server rebuilds its guard
        self._changed = context.interception_changed
        self._snapshot: Snapshot | None = None
        self._task: asyncio.Task[None] | None = None
        loaded = read_file(options.path, self._origins)
        file_entries: list[Entry] = []
        if loaded is not None:
            self._snapshot, file_entries = loaded
        self._table = self._build(file_entries)
        self._interception = self._intercepted()

    @property
    def name(self) -> str:
        return NAME

    def _build(self, file_entries: list[Entry]) -> Table:
        options = self.options
        return build_table(chained(file_entries, options.inline), options.ttl, options.reverse)

    # -- queries

    def serve(self, request: chain.Request, next_plugin: chain.Next) -> chain.Reply:
        key, qtype, table = request.key, request.query.qtype, self._table
        if qtype == PTR:
            pointers = table.pointers.get(key)
            if pointers is None:  # not an address of ours: on, whatever fallthrough says
                return next_plugin(request)
            return self._reply(request, *pointers)
        if not any(chain.in_zone(key, zone) for zone in self._origins):
            return next_plugin(request)
        records = table.names.get(key)
        if records is None:
            if any(chain.in_zone(key, zone) for zone in self._fall):
                return next_plugin(request)
            return self._servfail(request)
        if qtype == A:
            return self._reply(request, records[0], records[1])
        if qtype == AAAA:
            return self._reply(request, records[2], records[3])
        return self._reply(request, b"", 0)  # the name exists: NODATA, with no SOA to give

    def _reply(self, request: chain.Request, body: bytes, count: int) -> bytes:
        data, query = request.data, request.query
        edns = query.edns
        flags = bytes((0x84 | (data[2] & 0x79), data[3] & 0x10))  # QR AA, opcode RD; CD
        opt = b"" if edns is None else wire.opt_record(edns.udp_size, int(edns.do))
        reply = b"".join((data[:2], flags, _COUNTS.pack(1, count, 0, 1 if opt else 0),
                          data[wire.HEADER_LENGTH:query.question_end], body, opt))
        request.count(query.qtype, NOERROR, NAME)
        return fit_udp(reply, _limit(request))

    @staticmethod
    def _servfail(request: chain.Request) -> bytes:
        """What CoreDNS's server writes when hosts returns SERVFAIL without a reply: the
        question, no AA, the client's OPT mirrored; counted without a plugin, as there."""
        data, query = request.data, request.query
        edns = query.edns
        flags = bytes((0x80 | (data[2] & 0x79), (data[3] & 0x10) | SERVFAIL))
        opt = b"" if edns is None else wire.opt_record(edns.udp_size, int(edns.do))
        reply = b"".join((data[:2], flags, _COUNTS.pack(1, 0, 0, 1 if opt else 0),
                          data[wire.HEADER_LENGTH:query.question_end], opt))
        request.count(query.qtype, SERVFAIL, "")
        return reply

    def interception(self) -> chain.Interception:
        return self._interception

    def _intercepted(self) -> chain.Interception:
        """Names with entries that the fast path might also answer, and the parts of ZONES
        inside the served zones where an unknown name is SERVFAIL here (no fallthrough)."""
        served = self._served
        table = self._table
        names = frozenset(
            name for name in chained(table.names, table.pointers)
            if any(chain.in_zone(name, zone) for zone in served)
        )
        zones: list[bytes] = []
        for origin in self._origins:
            for zone in served:
                if chain.in_zone(zone, origin):
                    inner = zone
                elif chain.in_zone(origin, zone):
                    inner = origin
                else:
                    continue
                if inner not in zones and not any(chain.in_zone(inner, f) for f in self._fall):
                    zones.append(inner)
        return chain.Interception(names=names, zones=tuple(zones))

    # -- the file

    async def start(self) -> None:
        if self.options.reload > 0 and self._task is None:
            self._task = asyncio.create_task(self._watch(), name="hosts reload")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.options.reload)
            try:
                await self.refresh()
            except Exception:  # a bug: keep the entries we have and keep watching
                log.exception("hosts: reading %s failed", self.options.path)

    async def refresh(self) -> None:
        """Read the file again if its modification time or size changed since last time."""
        try:
            status = os.stat(self.options.path)
        except OSError:
            return  # gone or unreadable: the entries read last stay
        if (status.st_mtime_ns, status.st_size) == self._snapshot:
            return
        loaded = await asyncio.to_thread(self._load)
        if loaded is None:
            return
        self._snapshot, self._table = loaded
        log.debug("hosts: read %s: %d names, %d reverse names", self.options.path,
                  len(self._table.names), len(self._table.pointers))
        interception = self._intercepted()
        if interception != self._interception:
            self._interception = interception
            self._changed()

    def _load(self) -> tuple[Snapshot, Table] | None:
        loaded = read_file(self.options.path, self._origins)
        if loaded is None:
            return None
        snapshot, entries = loaded
        return snapshot, self._build(entries)


def _limit(request: chain.Request) -> int:
    if request.tcp:
        return wire.MAX_MESSAGE_SIZE
    edns = request.query.edns
    return wire.udp_limit(None if edns is None else edns.udp_size)
