"""CoreDNS's ``template`` plugin: answers built from Go templates for names matching a regex.

::

    template CLASS TYPE [ZONE...] {
        match REGEX...            # Go RE2 syntax; several allowed, the first that matches wins
        answer RR...              # a Go template that renders one zone-file record
        additional RR...
        authority RR...
        rcode CODE                # NOERROR by default
        ederror CODE [REASON]     # an Extended DNS Error (RFC 8914) in the reply's OPT
        fallthrough [ZONE...]     # a name no regex matches goes on instead of SERVFAIL
        upstream                  # accepted and ignored, as CoreDNS does
    }

How a query is answered (CoreDNS 1.13 ``plugin/template/template.go`` and ``setup.go``). Each
``template`` line is one plugin in the chain, in Corefile order, so several templates of one
block are tried one after the other exactly as CoreDNS's list of templates:

1. A name outside the template's zones (the server block's by default; the longest zone that
   holds the name is ``.Zone``), of another class, or of another type goes to the next plugin.
   A template of type ``ANY`` takes every type, and a query of type ``ANY`` matches every
   template type.
2. The lower-case name (with its trailing dot, escaped as CoreDNS prints names) is searched,
   not anchored, with each regex in turn. None matching: SERVFAIL, or the next plugin where
   ``fallthrough`` covers the name.
3. ``rcode SERVFAIL`` is a plain SERVFAIL. Otherwise the reply has AA set, the rcode, and the
   rendered records in order, exactly as rendered (owner, TTL and type are the template's; no
   SOA is added: ``rcode NXDOMAIN`` alone is an NXDOMAIN with empty sections). A record that
   cannot be rendered or read is a SERVFAIL (logged once per template record).
4. For an A or AAAA query, a rendered CNAME is followed: its target is asked, with the same
   type, of the plugins after this one, and the answer records found follow the CNAME.

The templates are a subset of Go's ``text/template``: text, ``{{ .Field }}`` for ``.Name``,
``.Zone``, ``.Class``, ``.Type``, ``.Regex``, ``.Remote``, ``.Match``, ``.Group`` (and
``.Group.NAME``), ``.Question.Name``/``.Qtype``/``.Qclass``, string and integer literals,
``index``, ``parseInt``, parentheses and pipes, ``{{-``/``-}}`` trimming and comments. Anything
else Go has (``if``, ``range``, variables, ``printf``, ``.Message``, ``.Meta`` …) is refused
when the Corefile is read, with its line, instead of being rendered differently. The same goes
for regexes: Go's syntax is translated to Python's, and what Python would read differently is
refused. The rendered text is read as a zone-file line (miekg/dns ``NewRR``: origin ``.``,
TTL 3600, class IN by default, ``$TTL``/``$ORIGIN`` allowed) for A, AAAA, NS, CNAME, DNAME,
PTR, MX, SRV, SOA, TXT, SPF (and MB, MD, MF, MG, MR, NSAP-PTR), and any type in RFC 3597's
``\\# LENGTH HEX`` form.
"""

from __future__ import annotations

import binascii
import inspect
import ipaddress
import logging
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dnsserver.config import directives
from dnsserver.config.directives import (
    BadValue,
    CorefileError,
    Directive,
    ParseContext,
    Token,
    UnknownOption,
    Unsupported,
    arity,
)
from dnsserver.config.settings import ROOT_ZONE, ConfigError, normalize_zone
from dnsserver.plugins import chain
from dnsserver.plugins.upstream import fit_udp
from dnsserver.serve import wire
from zones import names
from zones.records import AAAA, ANY, CNAME, SERVFAIL, A

log = logging.getLogger("dnsserver.template")

NAME = "template"
CLASS_IN, CLASS_ANY = 1, 255
DEFAULT_TTL = 3600  # miekg/dns NewRR's
EDE_OPTION = 15  # RFC 8914
EDE_UDP_SIZE = 4096  # the OPT CoreDNS adds for ederror when the query had none

# miekg/dns's names (StringToClass, StringToType, StringToRcode): the Corefile's CLASS, TYPE
# and rcode must be spelled exactly so, upper case (and "None", "Reserved" as miekg has them).
CLASSES = wire.CLASS_MNEMONICS
TYPES = {"None": 0, **wire.TYPE_MNEMONICS, "Reserved": 65535}
TYPE_NAMES = {number: name for name, number in TYPES.items()}
RCODES = wire.RCODE_MNEMONICS
SECTIONS = ("answer", "additional", "authority")

_COUNTS = struct.Struct(">HHHH")
_RECORD_HEADER = struct.Struct(">HHIH")


# -- options -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Regex:
    """One ``match`` regex: Go's text (``.Regex``) and its Python translation."""

    go: str
    python: str


@dataclass(frozen=True, slots=True)
class RecordTemplate:
    """One ``answer``/``additional``/``authority`` argument, compiled."""

    source: str
    nodes: tuple[Node, ...]

    @property
    def static(self) -> bool:
        return all(isinstance(node, Text) for node in self.nodes)


@dataclass(frozen=True, slots=True)
class TemplateOptions:
    """One ``template`` directive. Zones are in our spelling (lower case, no dot, ``.`` root)."""

    qclass: int
    qtype: int
    zones: tuple[str, ...]
    server_zones: tuple[str, ...]  # the server block's: CoreDNS hands it no other names
    regexes: tuple[Regex, ...]
    answer: tuple[RecordTemplate, ...] = ()
    additional: tuple[RecordTemplate, ...] = ()
    authority: tuple[RecordTemplate, ...] = ()
    rcode: int = 0
    ederror: tuple[int, str] | None = None
    fallthrough: tuple[str, ...] | None = None  # None: no fallthrough; ROOT_ZONE: every name

    @property
    def plugin(self) -> str:
        return NAME

    def build(self, context: chain.BuildContext) -> Template:
        return Template(self, context)


def parse(directive: Directive, context: ParseContext) -> TemplateOptions | None:
    """The options of a ``template`` directive (CoreDNS's ``plugin/template/setup.go``).

    Malformed values raise :class:`BadValue`. What CoreDNS accepts but this server does not
    do is refused through ``context.soft``: in lenient mode the whole template is left out
    (a template answering from part of its options would answer wrongly)."""
    class_token, type_token, *zone_tokens = arity(directive, NAME, 2, None)
    qclass = CLASSES.get(class_token.text)
    if qclass is None:
        raise BadValue.at(class_token, f"template: invalid query class {class_token.text!r} "
                          f"(one of {', '.join(CLASSES)}, in upper case)")
    qtype = TYPES.get(type_token.text)
    if qtype is None:
        raise BadValue.at(type_token, f"template: invalid query type {type_token.text!r} "
                          "(a type name such as A, AAAA, PTR or ANY, in upper case)")
    refused = False

    def refuse(error: CorefileError) -> None:
        nonlocal refused
        refused = True
        context.soft(error)

    if qclass not in (CLASS_IN, CLASS_ANY):
        refuse(Unsupported.at(class_token, f"template: class {class_token.text} is not "
                              "supported: queries of classes other than IN are refused before "
                              "any plugin (use IN or ANY)"))
    zones = _zones(zone_tokens, "template", context) if zone_tokens else context.zones

    regexes: list[Regex] = []
    sections: dict[str, list[RecordTemplate]] = {section: [] for section in SECTIONS}
    rcode = 0
    ederror: tuple[int, str] | None = None
    fallthrough: tuple[str, ...] | None = None
    for option in directive.body or ():
        keyword = option.name.text
        if option.body is not None:
            raise BadValue.at(option.name, f"template {keyword}: takes no block")
        if keyword == "match":
            for token in arity(option, "template match", 1, None):
                try:
                    regexes.append(Regex(token.text, translate_regex(token.text)))
                except RegexError as exc:
                    raise BadValue.at(token, f"template: could not parse regex "
                                      f"{token.text!r}: {exc}") from None
                except RegexUnsupported as exc:
                    refuse(Unsupported.at(token, f"template: regex {token.text!r}: {exc} is "
                                          "not supported"))
        elif keyword in SECTIONS:
            for token in arity(option, f"template {keyword}", 1, None):
                try:
                    sections[keyword].append(_record_template(token.text))
                except TemplateError as exc:
                    raise BadValue.at(token, f"template: could not compile {keyword} "
                                      f"{token.text!r}: {exc}") from None
                except TemplateUnsupported as exc:
                    refuse(Unsupported.at(token, f"template: {keyword} {token.text!r}: {exc} "
                                          "is not supported"))
        elif keyword == "rcode":
            (value,) = arity(option, "template rcode", 1, 1)
            code = RCODES.get(value.text)
            if code is None:
                raise BadValue.at(value, f"template: unknown rcode {value.text!r} (a name such "
                                  "as NOERROR, NXDOMAIN or SERVFAIL, in upper case)")
            if code > 15:
                refuse(Unsupported.at(value, f"template: rcode {value.text} is not supported: "
                                      "extended rcodes need an OPT record the query may lack"))
            rcode = code
        elif keyword == "ederror":
            values = arity(option, "template ederror", 1, 2)
            if not _DIGITS.fullmatch(values[0].text) or int(values[0].text) > 0xFFFF:
                raise BadValue.at(values[0], f"template: extended DNS error code "
                                  f"{values[0].text!r} is not a number from 0 to 65535")
            ederror = (int(values[0].text), values[1].text if len(values) > 1 else "")
        elif keyword == "fallthrough":
            fallthrough = (_zones(option.args, "template fallthrough", context)
                           if option.args else (ROOT_ZONE,))
        elif keyword == "upstream":
            context.warn(option.name, "template: option 'upstream' has no effect (CoreDNS "
                         "ignores it too); ignored")
        else:
            refuse(UnknownOption.at(option.name, f"template: unknown option {keyword!r}"))
    if refused:
        return None
    return TemplateOptions(
        qclass=qclass, qtype=qtype, zones=zones, server_zones=context.zones,
        regexes=tuple(regexes) or (Regex(".*", ".*"),),
        answer=tuple(sections["answer"]), additional=tuple(sections["additional"]),
        authority=tuple(sections["authority"]), rcode=rcode, ederror=ederror,
        fallthrough=fallthrough,
    )


def _zones(tokens: Iterable[Token], what: str, context: ParseContext) -> tuple[str, ...]:
    """Zone arguments as CoreDNS reads them: ``[scheme://]ZONE[:PORT]``, a CIDR meaning its
    reverse zones. CoreDNS drops one it cannot read without a word; we warn."""
    zones: list[str] = []
    for token in tokens:
        text = token.text.partition("://")[2] or token.text
        head, colon, port = text.rpartition(":")
        if colon and port.isdigit() and "/" not in text:
            text = head
        try:
            found = _reverse_zones(text) if "/" in text else [normalize_zone(text)]
        except (ConfigError, ValueError):
            context.warn(token, f"{what}: {token.text!r} is not a zone; ignored")
            continue
        zones += [zone for zone in found if zone not in zones]
    return tuple(zones)


def _reverse_zones(cidr: str) -> list[str]:
    """The reverse zones of a network, its host bits ignored (CoreDNS's template does)."""
    return list(directives.reverse_zones(ipaddress.ip_network(cidr, strict=False)))


def _record_template(text: str) -> RecordTemplate:
    """``text`` compiled; a record whose type can be seen without rendering is checked now."""
    template = RecordTemplate(text, compile_template(text))
    if template.static:
        try:
            read_record(text)
        except RecordError as exc:
            raise TemplateError(f"not a resource record: {exc}") from None
        except RecordUnsupported as exc:
            raise TemplateUnsupported(str(exc)) from None
    else:
        _check_record_type(template.nodes)
    return template


# -- the plugin ----------------------------------------------------------------------------

class Template(chain.FixedPlugin):
    """One ``template`` directive on the slow path."""

    name = NAME

    def __init__(self, options: TemplateOptions, context: chain.BuildContext) -> None:
        self.options = options
        # longest first: the zone that holds a name is the most specific one (``.Zone``)
        self._zones = sorted(((names.to_wire(z), _zone_text(z)) for z in options.zones),
                             key=lambda pair: -len(pair[0]))
        self._server_zones = tuple(names.to_wire(z) for z in options.server_zones)
        self._everywhere = ROOT_ZONE in options.server_zones
        self._regexes = tuple((re.compile(r.python, re.ASCII), r.go) for r in options.regexes)
        self._fallthrough = (None if options.fallthrough is None
                             else tuple(names.to_wire(z) for z in options.fallthrough))
        self._sections = tuple(tuple(_Item(t) for t in getattr(options, section))
                               for section in SECTIONS)
        self._dynamic = any(item.record is None for items in self._sections for item in items)
        self._logged: set[str] = set()
        self._opt_without_edns = b""
        self._ede = b""
        if options.ederror is not None:
            code, reason = options.ederror
            text = reason.encode()
            self._ede = struct.pack(">HHH", EDE_OPTION, 2 + len(text), code) + text
            self._opt_without_edns = _with_option(wire.opt_record(EDE_UDP_SIZE, 1), self._ede)
        self._interception = self._intercepted(context)

    # -- chain.Plugin (interception, start and close: chain.FixedPlugin's)

    def serve(self, request: chain.Request, next_plugin: chain.Next) -> chain.Reply:
        key, qtype = request.key, request.qtype
        options = self.options
        if not self._everywhere and not any(chain.in_zone(key, z) for z in self._server_zones):
            return next_plugin(request)
        zone = next((text for zone, text in self._zones if chain.in_zone(key, zone)), None)
        if zone is None or (ANY not in (options.qtype, qtype) and qtype != options.qtype):
            return next_plugin(request)
        name = presentation(key)
        found = next(((match, source) for regex, source in self._regexes
                      if (match := regex.search(name)) is not None), None)
        if found is None:
            if self._fallthrough is not None and any(
                chain.in_zone(key, z) for z in self._fallthrough
            ):
                return next_plugin(request)
            return self._servfail(request)
        match, source = found
        if options.rcode == SERVFAIL:
            return self._servfail(request)
        data = self._data(request, zone, name, source, match) if self._dynamic else None
        rendered: list[list[Record]] = []
        for items in self._sections:
            section = []
            for item in items:
                record = item.record or self._render(item.template, data)
                if record is None:
                    return self._servfail(request)
                section.append(record)
            rendered.append(section)
        answer, additional, authority = rendered
        if qtype in (A, AAAA) and any(record.rtype == CNAME for record in answer):
            return self._chase(request, answer, authority, additional, next_plugin)
        return self._reply(request, answer, authority, additional, ())

    # -- answering

    def _render(self, template: RecordTemplate, data: dict[str, Any] | None) -> Record | None:
        assert data is not None
        try:
            return read_record(render(template.nodes, data))
        except (TemplateError, RecordError, RecordUnsupported) as exc:
            if template.source not in self._logged:  # once per record, not per query
                self._logged.add(template.source)
                log.error("template %r failed (SERVFAIL): %s", template.source, exc)
            return None

    def _data(self, request: chain.Request, zone: str, name: str, regex: str,
              match: re.Match[str]) -> dict[str, Any]:
        """What a Go template sees (CoreDNS's ``templateData``)."""
        groups = [match.group(0), *(value or "" for value in match.groups())]
        group = {str(index): value for index, value in enumerate(groups)}
        group.update((label, groups[index]) for label, index in match.re.groupindex.items())
        qtype = request.qtype
        query = request.query
        return {
            "Zone": zone, "Name": name, "Regex": regex, "Match": groups, "Group": group,
            "Class": "IN",  # only class IN reaches the chain
            "Type": TYPE_NAMES.get(self.options.qtype if qtype == ANY else qtype, ""),
            "Remote": request.client,
            "Question": {"Name": presentation(query.name), "Qtype": qtype,
                         "Qclass": query.qclass},
        }

    def _chase(self, request: chain.Request, answer: list[Record], authority: list[Record],
               additional: list[Record], next_plugin: chain.Next) -> chain.Reply:
        """CNAME targets asked of the plugins after this one (CoreDNS asks its whole chain)."""
        chased = [next_plugin(_question_for(request, record.target))
                  if record.target is not None else None for record in answer]
        if not any(inspect.iscoroutine(reply) for reply in chased):
            return self._reply(request, answer, authority, additional,
                               [r if isinstance(r, bytes) else None for r in chased])
        return self._chased(request, answer, authority, additional, chased)

    async def _chased(self, request: chain.Request, answer: list[Record],
                      authority: list[Record], additional: list[Record],
                      chased: list[chain.Reply]) -> bytes | None:
        replies: list[bytes | None] = []
        for pending in chased:
            reply = await pending if inspect.iscoroutine(pending) else pending
            replies.append(reply if isinstance(reply, bytes) else None)
        return self._reply(request, answer, authority, additional, replies)

    def _reply(self, request: chain.Request, answer: list[Record], authority: list[Record],
               additional: list[Record], chased: Sequence[bytes | None]) -> bytes:
        data, query = request.data, request.query
        records: list[bytes] = []
        truncated = False
        for index, record in enumerate(answer):
            records.append(record.wire)
            found = chased[index] if chased else None
            if found is not None:
                more, truncated = answer_records(found)
                records += more
        edns = query.edns
        if self._ede:
            opt = (self._opt_without_edns if edns is None
                   else _with_option(wire.opt_record(edns.udp_size, int(edns.do)), self._ede))
        else:
            opt = b"" if edns is None else wire.opt_record(edns.udp_size, int(edns.do))
        rcode = self.options.rcode
        flags = 0x80 | (data[2] & 0x79) | 0x04 | (0x02 if truncated else 0)  # QR, AA, TC
        reply = b"".join((
            data[:2], bytes((flags, rcode | (data[3] & 0x10))),
            _COUNTS.pack(1, len(records), len(authority), len(additional) + (1 if opt else 0)),
            data[wire.HEADER_LENGTH : query.question_end],
            *records, *(r.wire for r in authority), *(r.wire for r in additional), opt,
        ))
        request.count(query.qtype, rcode, NAME)
        if request.tcp:
            return reply
        return fit_udp(reply, wire.udp_limit(edns.udp_size if edns else None))

    def _servfail(self, request: chain.Request) -> bytes:
        """The SERVFAIL CoreDNS's server writes when a template returns one unwritten."""
        request.count(request.qtype, SERVFAIL, "")
        return wire.error_reply(request.data, request.query, SERVFAIL)

    # -- the fast path

    def _intercepted(self, context: chain.BuildContext) -> chain.Interception:
        """The names this template may answer that the cluster zone's index may hold: the
        template's zones within the server block's, within the cluster and reverse zones."""
        if self.options.qclass not in (CLASS_IN, CLASS_ANY):
            return chain.NOTHING
        mine = _overlap((zone for zone, _ in self._zones),
                        () if self._everywhere else self._server_zones)
        indexed = [names.to_wire(z) for z in (*context.cluster_zones, *names.REVERSE_ZONES)]
        zones = _overlap(mine, indexed)
        if not zones:
            return chain.NOTHING
        qtype = self.options.qtype
        return chain.Interception(
            zones=tuple(zones), qtypes=None if qtype == ANY else frozenset({qtype, ANY})
        )


class _Item:
    """A record template, and its record when it renders the same for every query."""

    __slots__ = ("record", "template")

    def __init__(self, template: RecordTemplate) -> None:
        self.template = template
        self.record = read_record(template.source) if template.static else None


def _overlap(zones: Iterable[bytes], within: Sequence[bytes]) -> list[bytes]:
    """The parts of ``zones`` inside ``within`` (no ``within`` at all: every zone)."""
    found: list[bytes] = []
    for zone in zones:
        for other in within or (zone,):
            part = zone if chain.in_zone(zone, other) else other if chain.in_zone(other, zone) \
                else None
            if part is not None and part not in found:
                found.append(part)
    return found


def _zone_text(zone: str) -> str:
    return "." if zone == ROOT_ZONE else zone + "."


def _with_option(opt: bytes, option: bytes) -> bytes:
    """An OPT record (with no options yet) carrying ``option``."""
    return opt[:-2] + struct.pack(">H", len(option)) + option


def _question_for(request: chain.Request, target: bytes) -> chain.Request:
    """The query for ``target`` CoreDNS's ``upstream.Lookup`` makes: the client's header, type
    and EDNS, the class IN."""
    query = request.query
    edns = query.edns
    opt = b"" if edns is None else wire.opt_record(edns.udp_size, int(edns.do))
    question = target + struct.pack(">HH", query.qtype, CLASS_IN)
    data = (request.data[:4] + _COUNTS.pack(1, 0, 0, 1 if opt else 0) + question + opt)
    parsed = wire.Query(wire.HEADER_LENGTH + len(question), target, query.qtype, CLASS_IN, edns)
    return chain.Request(data, parsed, target.lower(), request.tcp, request.client,
                         request.count)


# -- names ---------------------------------------------------------------------------------

_PLAIN_LABEL = re.compile(rb"[-0-9A-Za-z_*/+=:,!#$%&<>?\[\]^`{|}~]*")
_ESCAPES = tuple(
    "\\" + chr(byte) if chr(byte) in ".\\ '@;()\"" else
    f"\\{byte:03d}" if byte < 0x20 or byte > 0x7E else chr(byte)
    for byte in range(256)
)


def presentation(name: bytes) -> str:
    """An uncompressed wire name as miekg/dns prints it: dotted, trailing dot, special
    characters escaped (``\\.``, ``\\032``)."""
    labels = names.wire_labels(name)
    if not labels:
        return "."
    return "".join(
        (label.decode("ascii") if _PLAIN_LABEL.fullmatch(label)
         else "".join(_ESCAPES[byte] for byte in label)) + "."
        for label in labels
    )


def answer_records(reply: bytes) -> tuple[list[bytes], bool]:
    """The answer records of ``reply``, each uncompressed so it can be copied into another
    message, and its TC bit. A malformed reply gives no records."""
    try:
        cursor = wire.Cursor(reply, wire.HEADER_LENGTH)
        qdcount, ancount = struct.unpack_from(">HH", reply, 4)
        for _ in range(qdcount):
            cursor.name(allow_pointers=True)
            cursor.take(4)
        records = []
        for _ in range(ancount):
            owner = _read_name(reply, cursor)
            rtype, rclass, ttl, length = _RECORD_HEADER.unpack(cursor.take(10))
            end = cursor.offset + length
            rdata = _expand_rdata(reply, cursor, rtype, end)
            cursor.offset = end
            records.append(owner + _RECORD_HEADER.pack(rtype, rclass, ttl, len(rdata)) + rdata)
    except (wire.FormError, struct.error, IndexError):
        return [], False
    return records, bool(reply[2] & 0x02)


_NAME_RDATA = frozenset({2, 3, 4, 5, 7, 8, 9, 12, 39})  # NS MD MF CNAME MB MG MR PTR DNAME


def _expand_rdata(message: bytes, cursor: wire.Cursor, rtype: int, end: int) -> bytes:
    """RDATA with its compressed names written out (the types RFC 3597 lets compress)."""
    if rtype in _NAME_RDATA:
        return _read_name(message, cursor)
    if rtype == 15:  # MX
        return cursor.take(2) + _read_name(message, cursor)
    if rtype == 6:  # SOA
        return _read_name(message, cursor) + _read_name(message, cursor) + cursor.take(20)
    return cursor.take(end - cursor.offset)


def _read_name(message: bytes, cursor: wire.Cursor) -> bytes:
    """A name at the cursor, compression pointers followed; the cursor moves past it."""
    out = bytearray()
    offset, jumps = cursor.offset, 0
    while True:
        length = message[offset]
        if length & 0xC0 == 0xC0:
            if jumps == 0:
                cursor.offset = offset + 2
            jumps += 1
            if jumps > 64:
                raise wire.FormError("compression loop")
            offset = (length & 0x3F) << 8 | message[offset + 1]
            continue
        if length > 63:
            raise wire.FormError("bad label length")
        out += message[offset : offset + 1 + length]
        offset += 1 + length
        if len(out) > wire.MAX_NAME_LENGTH:
            raise wire.FormError("name too long")
        if length == 0:
            if jumps == 0:
                cursor.offset = offset
            if offset > len(message):
                raise wire.FormError("name past the end")
            return bytes(out)


# -- Go regular expressions ----------------------------------------------------------------

class RegexError(ValueError):
    """Go's regexp package rejects the expression."""


class RegexUnsupported(ValueError):
    """Go accepts the expression, but Python's ``re`` would not read it the same way."""


_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\x00-\x7f", "blank": "\t ",
    "cntrl": "\x00-\x1f\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@[-`{-~", "space": "\t\n\v\f\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_SIMPLE_ESCAPES = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"
_DIGITS = re.compile(r"[0-9]+")
_CAPTURE_NAME = re.compile(r"[0-9A-Za-z_]+")
_MAX_REPEAT = 1000  # Go's limit on {n,m}


def translate_regex(source: str) -> str:
    """A Python pattern (to compile with ``re.ASCII``) matching exactly what Go's
    ``regexp.Compile(source)`` matches, with the same groups, on any query name.

    Names are ASCII with special bytes escaped (``\\032``), so Go's and Python's ideas of
    Unicode classes and of newlines never meet the input; the translation spells out what the
    two syntaxes read differently (``{,n}``, octal and ``\\x{..}`` escapes, ``\\z``, POSIX
    classes, ``(?<name>``) and refuses the rest (``\\p{..}``, the ``U`` flag, flags after
    the start)."""
    out: list[str] = []
    names_seen: set[str] = set()
    depth = 0
    position = 0
    previous = "start"  # what a repetition would apply to: start, atom, repeat, assertion
    end = len(source)
    while position < end:
        char = source[position]
        if char == "\\":
            fragment, position, kind = _escape(source, position)
            if fragment:
                out.append(fragment)
                previous = kind
            continue
        if char == "[":
            fragment, position = _char_class(source, position)
            out.append(fragment)
            previous = "atom"
            continue
        repeat = _repeat(source, position) if char in "*+?{" else None
        if repeat is not None:
            operator, position = repeat
            if previous == "start":
                raise RegexError(f"missing argument to repetition operator: {operator!r}")
            if previous == "repeat":
                raise RegexError(f"invalid nested repetition operator: {operator!r}")
            if previous == "assertion":  # Go repeats an empty-width assertion; Python needs a group
                out[-1] = f"(?:{out[-1]})"
            out.append(operator)
            previous = "repeat"
            continue
        position += 1
        if char == "(":
            fragment, position, opened = _group(source, position, names_seen, bool(out))
            out.append(fragment)
            depth += opened
            if opened:
                previous = "start"
        elif char == ")":
            if depth == 0:
                raise RegexError("unexpected )")
            depth -= 1
            out.append(")")
            previous = "atom"
        elif char == "|":
            out.append("|")
            previous = "start"
        elif char in "^$":
            out.append(char)
            previous = "assertion"
        elif char == ".":
            out.append(".")
            previous = "atom"
        else:
            out.append(_literal(ord(char)))
            previous = "atom"
    if depth:
        raise RegexError("missing closing )")
    python = "".join(out)
    try:
        re.compile(python, re.ASCII)
    except re.error as exc:  # a translation Python still reads otherwise
        raise RegexUnsupported(f"a form Python's re rejects ({exc})") from None
    return python


def _literal(code: int) -> str:
    if chr(code).isascii() and (chr(code).isalnum() or chr(code) == "_"):
        return chr(code)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _repeat(source: str, position: int) -> tuple[str, int] | None:
    """The repetition operator at ``position`` (with a lazy ``?``), or None when ``{`` there
    does not start one (Go then reads ``{`` literally, where Python reads ``{,n}``)."""
    char = source[position]
    if char == "{":
        found = re.match(r"\{([0-9]+)(,([0-9]*))?\}", source[position:])
        if found is None or _leading_zero(found.group(1)) or _leading_zero(found.group(3)):
            return None
        low = int(found.group(1))
        high = low if found.group(2) is None else int(found.group(3) or -1)
        if low > _MAX_REPEAT or high > _MAX_REPEAT or (high >= 0 and low > high):
            raise RegexError(f"invalid repeat count: {found.group(0)!r}")
        operator = found.group(0)
        position += len(operator)
    else:
        operator = char
        position += 1
    if source.startswith("?", position):
        operator += "?"
        position += 1
    return operator, position


def _leading_zero(digits: str | None) -> bool:
    return digits is not None and len(digits) > 1 and digits[0] == "0"


def _group(source: str, position: int, names_seen: set[str],
           anything_before: bool) -> tuple[str, int, int]:
    """The group opened by the ``(`` before ``position``: (Python text, new position, whether
    it opens a group)."""
    if not source.startswith("?", position):
        return "(", position, 1
    rest = source[position + 1 :]
    if rest.startswith(("P<", "<")):
        start = position + (3 if rest.startswith("P<") else 2)
        close = source.find(">", start)
        if close < 0:
            raise RegexError(f"invalid named capture: {source[position - 1:]!r}")
        label = source[start:close]
        if not _CAPTURE_NAME.fullmatch(label):
            raise RegexError(f"invalid named capture: {source[position - 1:close + 1]!r}")
        if label in names_seen:
            raise RegexError(f"duplicate capture group name: {label!r}")
        names_seen.add(label)
        if not label.isidentifier():
            raise RegexUnsupported(f"the group name {label!r} (Python's must not start with "
                                   "a digit)")
        return f"(?P<{label}>", close + 1, 1
    found = re.match(r"([imsU]*)(?:-([imsU]*))?([:)])", rest)
    if found is None or (found.group(2) is not None and not found.group(2)):
        raise RegexError(f"invalid or unsupported Perl syntax: {source[position - 1:][:4]!r}")
    flags, negated, closing = found.group(1), found.group(2), found.group(3)
    position += 1 + found.end()
    if "U" in flags + (negated or ""):
        raise RegexUnsupported("the U (ungreedy) flag")
    if closing == ":":
        return f"(?{flags}{'-' + negated if negated else ''}:", position, 1
    if not flags and not negated:  # "(?)" changes nothing
        return "", position, 0
    if anything_before or negated:
        raise RegexUnsupported(f"flags {source[position - found.end() - 2:position]!r} after "
                               "the start (write (?flags:...) instead)")
    return f"(?{flags})", position, 0


def _escape(source: str, position: int) -> tuple[str, int, str]:
    """The escape at ``position`` outside a class: (Python text, new position, kind)."""
    if position + 1 >= len(source):
        raise RegexError("trailing backslash at end of expression")
    char = source[position + 1]
    if char in "AbB":
        return "\\" + char, position + 2, "assertion"
    if char == "z":
        return "\\Z", position + 2, "assertion"
    if char in "dDsSwW":
        return "\\" + char, position + 2, "atom"
    if char in "pP":
        raise RegexUnsupported(f"the Unicode class {source[position:position + 3]!r}")
    if char == "Q":
        close = source.find("\\E", position + 2)
        literal = source[position + 2 :] if close < 0 else source[position + 2 : close]
        after = len(source) if close < 0 else close + 2
        return "".join(_literal(ord(c)) for c in literal), after, "atom"
    code, position = _escape_code(source, position + 1)
    return _literal(code), position, "atom"


def _escape_code(source: str, position: int) -> tuple[int, int]:
    """The character an escape stands for; ``position`` is just after the backslash."""
    char = source[position]
    following = source[position + 1 : position + 3]
    if char in "1234567" and not (following and following[0] in _OCTAL):
        raise RegexError(f"invalid escape sequence: {source[position - 1:position + 1]!r} "
                         "(back-references do not exist in Go)")
    if char in "01234567":
        digits = char
        for next_char in following:
            if next_char not in _OCTAL:
                break
            digits += next_char
        return int(digits, 8), position + len(digits)
    if char == "x":
        if source.startswith("{", position + 1):
            close = source.find("}", position + 2)
            digits = source[position + 2 : close] if close > 0 else ""
            if not digits or any(c not in _HEX for c in digits) or int(digits, 16) > 0x10FFFF:
                raise RegexError(f"invalid escape sequence: {source[position - 1:][:12]!r}")
            return int(digits, 16), close + 1
        digits = source[position + 1 : position + 3]
        if len(digits) < 2 or any(c not in _HEX for c in digits):
            raise RegexError(f"invalid escape sequence: {source[position - 1:position + 3]!r}")
        return int(digits, 16), position + 3
    if char in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[char], position + 1
    if char.isascii() and not char.isalnum():
        return ord(char), position + 1
    raise RegexError(f"invalid escape sequence: {source[position - 1:position + 1]!r}")


def _char_class(source: str, position: int) -> tuple[str, int]:
    """The class ``[...]`` at ``position``, every member spelled out for Python."""
    start = position
    position += 1
    negated = source.startswith("^", position)
    if negated:
        position += 1
    members: list[str] = []
    first = True
    while True:
        if position >= len(source):
            raise RegexError(f"missing closing ]: {source[start:]!r}")
        char = source[position]
        if char == "]" and not first:
            break
        first = False
        if source.startswith("[:", position):
            close = source.find(":]", position + 2)
            if close >= 0:
                label = source[position + 2 : close]
                if label.startswith("^"):
                    raise RegexUnsupported(f"the negated class [:{label}:] inside brackets")
                if label not in _POSIX_CLASSES:
                    raise RegexError(f"invalid character class range: [:{label}:]")
                members.append(_class_ranges(_POSIX_CLASSES[label]))
                position = close + 2
                continue
        if char == "\\" and source[position + 1 : position + 2] in ("d", "D", "s", "S", "w", "W"):
            members.append(source[position : position + 2])
            position += 2
            continue
        if char == "\\" and source[position + 1 : position + 2] in ("p", "P"):
            raise RegexUnsupported(f"the Unicode class {source[position:position + 3]!r}")
        low, position = _class_char(source, position)
        if source.startswith("-", position) and source[position + 1 : position + 2] not in (
            "]", ""
        ):
            high, position = _class_char(source, position + 1)
            if high < low:
                raise RegexError(f"invalid character class range: {chr(low)}-{chr(high)}")
            members.append(f"{_literal(low)}-{_literal(high)}")
        else:
            members.append(_literal(low))
    return "[" + "^" * negated + "".join(members) + "]", position + 1


def _class_char(source: str, position: int) -> tuple[int, int]:
    if source[position] == "\\":
        if position + 1 >= len(source):
            raise RegexError("trailing backslash at end of expression")
        return _escape_code(source, position + 1)
    return ord(source[position]), position + 1


def _class_ranges(spec: str) -> str:
    out, index = [], 0
    while index < len(spec):
        if spec[index + 1 : index + 2] == "-" and index + 2 < len(spec):
            out.append(f"{_literal(ord(spec[index]))}-{_literal(ord(spec[index + 2]))}")
            index += 3
        else:
            out.append(_literal(ord(spec[index])))
            index += 1
    return "".join(out)


# -- Go templates (the subset CoreDNS users write) -----------------------------------------

class TemplateError(ValueError):
    """Go's text/template rejects the template, or running it can only fail."""


class TemplateUnsupported(ValueError):
    """Go accepts the template; this server does not implement what it uses."""


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Field:
    path: tuple[str, ...]  # ("Group", "a") for .Group.a


@dataclass(frozen=True, slots=True)
class Literal:
    value: str | int


@dataclass(frozen=True, slots=True)
class Command:
    function: str | None  # None: the command is one operand
    args: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class Action:
    pipeline: Pipeline


Operand = Field | Literal | Pipeline
Node = Text | Action

_FIELDS = frozenset({"Zone", "Name", "Regex", "Match", "Group", "Class", "Type", "Remote",
                     "Question"})
_QUESTION_FIELDS = frozenset({"Name", "Qtype", "Qclass"})
_FUNCTIONS = frozenset({"index", "parseInt"})
_GO_FUNCTIONS = frozenset({"and", "call", "html", "js", "len", "not", "or", "print", "printf",
                           "println", "slice", "urlquery", "eq", "ge", "gt", "le", "lt", "ne"})
_KEYWORDS = frozenset({"block", "break", "continue", "define", "else", "end", "if", "range",
                       "template", "with"})
_SPACES = " \t\r\n"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_NUMBER = re.compile(r"[+-]?[0-9.][0-9A-Za-z_.+-]*")
_GO_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
               "\\": "\\", '"': '"'}
_NO_VALUE = object()  # a missing map key: Go prints "<no value>"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # field, string, number, ident, (, ), |
    value: Any
    spaced: bool  # white space before it


def compile_template(text: str) -> tuple[Node, ...]:
    """Go's ``text/template`` parse of ``text``, for the subset this server runs."""
    nodes: list[Node] = []
    position, trim_next = 0, False
    while True:
        start = text.find("{{", position)
        chunk = text[position:] if start < 0 else text[position:start]
        if trim_next:
            chunk = chunk.lstrip(_SPACES)
        if start < 0:
            if chunk:
                nodes.append(Text(chunk))
            return tuple(nodes)
        inner = start + 2
        if text[inner : inner + 1] == "-" and text[inner + 1 : inner + 2] in tuple(_SPACES):
            chunk = chunk.rstrip(_SPACES)
            inner += 2
        if chunk:
            nodes.append(Text(chunk))
        if text.startswith("/*", inner):
            position, trim_next = _comment_end(text, inner)
            continue
        tokens, position, trim_next = _lex_action(text, inner)
        nodes.append(Action(_parse_action(tokens)))


def _comment_end(text: str, position: int) -> tuple[int, bool]:
    close = text.find("*/", position + 2)
    if close < 0:
        raise TemplateError("unclosed comment")
    after = close + 2
    if text[after : after + 1] in tuple(_SPACES) and text.startswith("-}}", after + 1):
        return after + 4, True
    if text.startswith("}}", after):
        return after + 2, False
    raise TemplateError("comment ends before closing delimiter")


def _lex_action(text: str, position: int) -> tuple[list[_Token], int, bool]:
    """The tokens of the action starting at ``position``; where it ends; whether it trims."""
    tokens: list[_Token] = []
    spaced, depth = True, 0
    while True:
        if position >= len(text):
            raise TemplateError("unclosed action")
        char = text[position]
        if text.startswith("}}", position) or (
            char in _SPACES and text.startswith("-}}", position + 1)
        ):
            if depth:
                raise TemplateError("unclosed left paren")
            return (tokens, position + 2, False) if char == "}" else (tokens, position + 4, True)
        if char in _SPACES:
            position += 1
            spaced = True
            continue
        kind, value, end = _lex_token(text, position)
        if kind == "(":
            depth += 1
        elif kind == ")":
            depth -= 1
            if depth < 0:
                raise TemplateError("unexpected right paren")
        tokens.append(_Token(kind, value, spaced))
        position, spaced = end, False


def _lex_token(text: str, position: int) -> tuple[str, Any, int]:
    char = text[position]
    if char in "()|":
        return char, char, position + 1
    if char == '"':
        return _lex_string(text, position)
    if char == "`":
        close = text.find("`", position + 1)
        if close < 0:
            raise TemplateError("unterminated raw quoted string")
        return "string", text[position + 1 : close], close + 1
    if char == ".":
        fields = re.match(r"(\.[A-Za-z_][A-Za-z0-9_]*)+", text[position:])
        if fields is not None:
            end = position + fields.end()
            _check_terminator(text, end)
            return "field", tuple(fields.group(0)[1:].split(".")), end
        if not text[position + 1 : position + 2].isdigit():
            raise TemplateUnsupported("'.' (the whole data)")
    if char == ".":  # a number like .5
        number = _NUMBER.match(text, position)
        assert number is not None
        raise TemplateUnsupported(f"the number {number.group(0)!r}")
    if char.isdigit() or (char in "+-" and text[position + 1 : position + 2].isdigit()):
        number = _NUMBER.match(text, position)
        assert number is not None
        if not _INTEGER.fullmatch(number.group(0)):
            raise TemplateUnsupported(f"the number {number.group(0)!r} (only decimal integers "
                                      "are)")
        _check_terminator(text, number.end())
        return "number", int(number.group(0)), number.end()
    identifier = _IDENTIFIER.match(text, position)
    if identifier is not None:
        _check_terminator(text, identifier.end())
        return "ident", identifier.group(0), identifier.end()
    if char == "$":
        raise TemplateUnsupported("template variables ($)")
    if char == "'":
        raise TemplateUnsupported("character constants")
    if char in ":=,":
        raise TemplateUnsupported(f"{char!r} (variable declarations)")
    raise TemplateError(f"unrecognized character in action: {char!r}")


def _check_terminator(text: str, position: int) -> None:
    after = text[position : position + 1]
    if after and after not in _SPACES and after not in ".,|:()" and not text.startswith(
        "}}", position
    ):
        raise TemplateError(f"bad character {after!r}")


def _lex_string(text: str, position: int) -> tuple[str, Any, int]:
    out: list[str] = []
    index = position + 1
    while True:
        if index >= len(text) or text[index] == "\n":
            raise TemplateError("unterminated quoted string")
        char = text[index]
        if char == '"':
            return "string", "".join(out), index + 1
        if char != "\\":
            out.append(char)
            index += 1
            continue
        escape = text[index + 1 : index + 2]
        if escape in _GO_ESCAPES:
            out.append(_GO_ESCAPES[escape])
            index += 2
        elif escape == "x" and all(c in _HEX for c in text[index + 2 : index + 4]) and len(
            text[index + 2 : index + 4]
        ) == 2:
            out.append(chr(int(text[index + 2 : index + 4], 16)))
            index += 4
        else:
            raise TemplateUnsupported(f"the string escape {text[index:index + 2]!r}")


def _parse_action(tokens: list[_Token]) -> Pipeline:
    if tokens and tokens[0].kind == "ident" and tokens[0].value in _KEYWORDS:
        raise TemplateUnsupported(f"'{{{{{tokens[0].value}}}}}'")
    pipeline, position = _parse_pipeline(tokens, 0)
    if position != len(tokens):
        raise TemplateError(f"unexpected {tokens[position].value!r}")
    return pipeline


def _parse_pipeline(tokens: list[_Token], position: int) -> tuple[Pipeline, int]:
    commands: list[Command] = []
    while True:
        command, position = _parse_command(tokens, position, len(commands) + 1)
        commands.append(command)
        if position < len(tokens) and tokens[position].kind == "|":
            position += 1
            continue
        return Pipeline(tuple(commands)), position


def _parse_command(tokens: list[_Token], position: int, stage: int) -> tuple[Command, int]:
    function: str | None = None
    operands: list[Operand] = []
    while position < len(tokens) and tokens[position].kind not in ("|", ")"):
        token = tokens[position]
        first = function is None and not operands
        if not first and not token.spaced:
            raise TemplateError(f"unexpected {token.value!r} in operand")
        position += 1
        if token.kind == "ident":
            name = token.value
            if name in _KEYWORDS:
                raise TemplateUnsupported(f"'{name}'")
            if name in ("true", "false", "nil"):
                raise TemplateUnsupported(f"the constant {name}")
            if name in _GO_FUNCTIONS:
                raise TemplateUnsupported(f"the function {name}")
            if name not in _FUNCTIONS:
                raise TemplateError(f'function "{name}" not defined')
            if not first:
                raise TemplateError(f"{name} as an argument (call it in parentheses)")
            function = name
        elif token.kind == "(":
            sub, position = _parse_pipeline(tokens, position)
            position += 1  # the lexer made sure the ")" is there
            if position < len(tokens) and tokens[position].kind == "field" and not tokens[
                position
            ].spaced:
                raise TemplateUnsupported("a field of a parenthesized value")
            operands.append(sub)
        elif token.kind == "field":
            operands.append(_field(token.value))
        else:  # string or number
            operands.append(Literal(token.value))
    if function is None and not operands:
        raise TemplateError("missing value for command")
    if function is None:
        if stage > 1:
            raise TemplateError(f"non executable command in pipeline stage {stage}")
        if len(operands) > 1:
            raise TemplateError("can't give argument to non-function")
        return Command(None, tuple(operands)), position
    count = len(operands) + (stage > 1)
    if function == "parseInt" and count != 3:
        raise TemplateError(f"wrong number of args for parseInt: want 3 got {count}")
    if function == "index" and count < 1:
        raise TemplateError("wrong number of args for index: want at least 1 got 0")
    return Command(function, tuple(operands)), position


def _field(path: tuple[str, ...]) -> Field:
    """A field reference, checked against what CoreDNS's template data holds."""
    head = path[0]
    if head == "Message":
        raise TemplateUnsupported(".Message")
    if head == "Meta":
        raise TemplateUnsupported(".Meta (metadata)")
    if head not in _FIELDS:
        raise TemplateError(f"can't evaluate field {head}")
    if head == "Question":
        if len(path) == 1:
            raise TemplateUnsupported(".Question as a whole (use .Question.Name)")
        if len(path) > 2 or path[1] not in _QUESTION_FIELDS:
            raise TemplateError(f"can't evaluate field {path[1]} of .Question")
    elif len(path) > (2 if head == "Group" else 1):
        raise TemplateError(f"can't evaluate field {path[-1]} in a string")
    return Field(path)


def render(nodes: Sequence[Node], data: dict[str, Any]) -> str:
    """The text the template gives for ``data``; raises :class:`TemplateError` where Go's
    execution fails."""
    out = []
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.text)
        else:
            out.append(_printed(_run(node.pipeline, data)))
    return "".join(out)


def _run(pipeline: Pipeline, data: dict[str, Any]) -> Any:
    value: Any = None
    for stage, command in enumerate(pipeline.commands):
        args = [_operand(arg, data) for arg in command.args]
        if command.function is None:
            value = args[0]
            continue
        if stage:
            args.append(value)
        value = _index(args) if command.function == "index" else _parse_int(args)
    return value


def _operand(operand: Operand, data: dict[str, Any]) -> Any:
    if isinstance(operand, Literal):
        return operand.value
    if isinstance(operand, Pipeline):
        return _run(operand, data)
    value = data[operand.path[0]]
    if len(operand.path) > 1:
        value = value.get(operand.path[1], _NO_VALUE)
    return value


def _printed(value: Any) -> str:
    """``value`` as Go's ``fmt.Print`` writes it."""
    if value is _NO_VALUE:
        return "<no value>"
    if isinstance(value, list):
        return "[" + " ".join(_printed(item) for item in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{key}:{value[key]}" for key in sorted(value)) + "]"
    return str(value)


def _index(args: list[Any]) -> Any:
    """Go's ``index``: a slice by position, a map by key (missing: ""), a string's bytes."""
    item = args[0]
    for key in args[1:]:
        if item is _NO_VALUE or key is _NO_VALUE:
            raise TemplateError("index of an invalid value")
        if isinstance(item, (list, str)):
            if not isinstance(key, int):
                raise TemplateError(f"cannot index slice/array with type {_go_type(key)}")
            sequence = item.encode() if isinstance(item, str) else item
            if not 0 <= key < len(sequence):
                raise TemplateError(f"index out of range: {key}")
            item = sequence[key]
        elif isinstance(item, dict):
            if not isinstance(key, str):
                raise TemplateError(f"value has type {_go_type(key)}; should be string")
            item = item.get(key, "")
        else:
            raise TemplateError(f"can't index item of type {_go_type(item)}")
    return item


def _parse_int(args: list[Any]) -> int:
    """CoreDNS's ``parseInt``: Go's ``strconv.ParseUint(s, base, bitSize)``."""
    text, base, bits = args
    if not isinstance(text, str) or text is _NO_VALUE:
        raise TemplateError(f"wrong type for value; expected string; got {_go_type(text)}")
    if not isinstance(base, int) or not isinstance(bits, int):
        raise TemplateError("wrong type for value; expected int")
    value = go_parse_uint(text, base, bits)
    if value is None:
        raise TemplateError(f"strconv.ParseUint: parsing {text!r}: invalid syntax or range")
    return value


def _go_type(value: Any) -> str:
    return {str: "string", int: "int", list: "[]string", dict: "map[string]string"}.get(
        type(value), "invalid")


def go_parse_uint(text: str, base: int, bits: int) -> int | None:
    """Go's ``strconv.ParseUint``; None where Go returns an error."""
    if not text or bits < 0 or bits > 64:
        return None
    bits = bits or 64
    digits = text
    if base == 0:
        base = 10
        if text[0] == "0":
            prefix = text[1:2].lower()
            if len(text) >= 3 and prefix in ("b", "o", "x"):
                base, digits = {"b": 2, "o": 8, "x": 16}[prefix], text[2:]
            else:
                base, digits = 8, text[1:]
        if "_" in text:
            if not _underscores_ok(text):
                return None
            digits = digits.replace("_", "")
    elif not 2 <= base <= 36:
        return None
    value = 0
    for char in digits:
        lowered = char.lower()
        if "0" <= lowered <= "9":
            digit = ord(lowered) - ord("0")
        elif "a" <= lowered <= "z":
            digit = ord(lowered) - ord("a") + 10
        else:
            return None
        if digit >= base:
            return None
        value = value * base + digit
    if value >= 1 << bits:
        return None
    return value


def _underscores_ok(text: str) -> bool:
    """Go's rule for ``_`` in a base-prefixed literal: only between digits."""
    saw, index, hexadecimal = "^", 0, False
    if len(text) >= 2 and text[0] == "0" and text[1].lower() in "box":
        index, saw, hexadecimal = 2, "0", text[1].lower() == "x"
    for char in text[index:]:
        if char.isdigit() or (hexadecimal and char.lower() in "abcdef"):
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


# -- zone-file records (miekg/dns NewRR) ---------------------------------------------------

class RecordError(ValueError):
    """The text is not a resource record miekg/dns would read."""


class RecordUnsupported(ValueError):
    """A record of a type whose text form this server does not read."""


@dataclass(frozen=True, slots=True)
class Record:
    wire: bytes  # owner, type, class, TTL, RDATA: ready to join into a message
    rtype: int
    target: bytes | None  # a CNAME's target (wire form), to chase


@dataclass(frozen=True, slots=True)
class _Word:
    text: str
    quoted: bool


# Types whose presentation form is read here; every other one only as "\# LENGTH HEX".
_NAME_TYPES = frozenset({2, 3, 4, 5, 7, 8, 9, 12, 23, 39})
_TEXT_TYPES = frozenset({16, 99})  # TXT, SPF
_READ_TYPES = _NAME_TYPES | _TEXT_TYPES | {1, 6, 15, 28, 33}
# The type names a record's text may use, in any case (miekg: StringToType[upper(token)]).
_RECORD_TYPES = {name: number for name, number in TYPES.items() if name == name.upper()}


def read_record(text: str) -> Record:
    """The first record in ``text``, read as miekg/dns's ``NewRR`` reads it."""
    origin, default_ttl = b"\x00", DEFAULT_TTL
    for starts_blank, words, blank_after in _zone_lines(text):
        first = words[0]
        directive = first.text.upper() if not (starts_blank or first.quoted) else ""
        if directive in ("$TTL", "$ORIGIN"):
            if len(words) != 2 or words[1].quoted:
                raise RecordError(f"bad {directive} line")
            if directive == "$TTL":
                ttl = _ttl(words[1].text)
                if ttl is None:
                    raise RecordError(f"{words[1].text!r} is not a TTL")
                default_ttl = ttl
            else:
                origin = _name(words[1].text, origin)
            continue
        if directive in ("$INCLUDE", "$GENERATE"):
            raise RecordUnsupported(directive)
        return _record(starts_blank, words, blank_after, origin, default_ttl)
    raise RecordError("no record")


def _zone_lines(text: str) -> Iterator[tuple[bool, list[_Word], bool]]:
    """Zone-file lines (parentheses join lines): whether each starts with a blank, its words,
    and whether a blank (or comment) follows its last word."""
    words: list[_Word] = []
    current: list[str] = []
    starts_blank = blank_after = quoted = escaped = comment = False
    depth = 0

    def flush() -> None:
        nonlocal blank_after
        if current:
            words.append(_Word("".join(current), False))
            current.clear()
            blank_after = False

    for char in text:
        if comment:
            if char != "\n":
                continue
            comment = False
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                words.append(_Word("".join(current), True))
                current.clear()
                quoted = blank_after = False
                continue
            current.append(char)
            continue
        if escaped:
            current.append(char)
            escaped = False
        elif char in " \t":
            flush()
            if not words:
                starts_blank = True
            blank_after = True
        elif char == ";":
            flush()
            comment = blank_after = True
        elif char == "\r":
            continue
        elif char == "\n":
            flush()
            if depth:
                blank_after = True
                continue
            if words:
                yield starts_blank, words, blank_after
            words, starts_blank, blank_after = [], False, False
        elif char in "()":
            flush()
            depth += 1 if char == "(" else -1
            if depth < 0:
                raise RecordError("extra closing brace")
        elif char == '"':
            flush()
            quoted = True
        else:
            if char == "\\":
                escaped = True
            current.append(char)
    if quoted or escaped:
        raise RecordError("unterminated quote or escape")
    if depth:
        raise RecordError("unbalanced brace")
    flush()
    if words:
        yield starts_blank, words, blank_after


def _record(starts_blank: bool, words: list[_Word], blank_after: bool, origin: bytes,
            default_ttl: int) -> Record:
    if starts_blank or words[0].quoted:
        raise RecordError("no owner name at the start")
    owner = _name(words[0].text, origin)
    ttl, rclass, rtype = default_ttl, CLASS_IN, None
    seen_ttl = seen_class = False
    position = 1
    while position < len(words) and rtype is None:
        word = words[position]
        position += 1
        upper = word.text.upper()
        if word.quoted or upper == "ANY":
            raise RecordError(f"expected a TTL, class or type, not {word.text!r}")
        if upper in _RECORD_TYPES:
            rtype = _RECORD_TYPES[upper]
        elif upper.startswith("TYPE"):
            rtype = _number(upper[4:], 16)
            if rtype is None:
                raise RecordError(f"unknown RR type {word.text!r}")
        elif upper in CLASSES or upper.startswith("CLASS"):
            number = CLASSES.get(upper, _number(upper[5:], 16))
            if number is None or seen_class:
                raise RecordError(f"unexpected class {word.text!r}")
            rclass, seen_class = number, True
        else:
            value = _ttl(word.text)
            if value is None or seen_ttl:
                raise RecordError(f"{word.text!r} is not a TTL")
            ttl, seen_ttl = value, True
    if rtype is None:
        raise RecordError("no type")
    rdata = _rdata(rtype, words[position:], blank_after, origin)
    target = rdata if rtype == CNAME and _is_name(rdata) else None
    header = _RECORD_HEADER.pack(rtype, rclass, ttl, len(rdata))
    return Record(owner + header + rdata, rtype, target)


def _rdata(rtype: int, words: list[_Word], blank_after: bool, origin: bytes) -> bytes:
    """The RDATA of a ``rtype`` record from its words."""
    if not words and (not blank_after or rtype in _TEXT_TYPES):
        return b""  # miekg: a record without RDATA (as in dynamic updates)
    if words and words[0].text == "\\#" and not words[0].quoted:
        return _generic_rdata(words[1:])
    if rtype not in _READ_TYPES:
        raise RecordUnsupported(f"{TYPE_NAMES.get(rtype, f'TYPE{rtype}')} records (write them "
                                "as \\# LENGTH HEX)")
    if rtype in _TEXT_TYPES:
        return b"".join(_character_strings(word.text) for word in words)
    if any(word.quoted for word in words):
        raise RecordError("a quoted string in RDATA")
    fields = [word.text for word in words]
    name = TYPE_NAMES[rtype]
    shape = {1: 1, 28: 1, 15: 2, 33: 4, 6: 7}.get(rtype, 1)
    if len(fields) != shape:
        raise RecordError(f"{name} needs {shape} field{'s' * (shape > 1)}, got {len(fields)}")
    if rtype == A:
        return _address(fields[0], 4)
    if rtype == AAAA:
        return _address(fields[0], 6)
    if rtype in _NAME_TYPES:
        return _name(fields[0], origin)
    if rtype == 15:  # MX
        return _uint(fields[0], 16, "MX preference") + _name(fields[1], origin)
    if rtype == 33:  # SRV
        return b"".join(_uint(f, 16, "SRV field") for f in fields[:3]) + _name(fields[3], origin)
    serial = _uint(fields[2], 32, "SOA serial")  # SOA
    timers = []
    for text in fields[3:]:
        value = _number(text, 32)
        value = _ttl(text) if value is None else value
        if value is None:
            raise RecordError(f"bad SOA field {text!r}")
        timers.append(value)
    return (_name(fields[0], origin) + _name(fields[1], origin) + serial
            + struct.pack(">IIII", *timers))


def _generic_rdata(words: list[_Word]) -> bytes:
    """RFC 3597's ``\\# LENGTH HEX...``."""
    if not words or any(word.quoted for word in words):
        raise RecordError("bad RFC 3597 RDATA")
    length = _number(words[0].text, 16)
    digits = "".join(word.text for word in words[1:])
    if length is None or len(digits) != 2 * length:
        raise RecordError("bad RFC 3597 RDATA length")
    try:
        return binascii.unhexlify(digits)
    except (binascii.Error, ValueError):
        raise RecordError("bad RFC 3597 hex") from None


def _address(text: str, version: int) -> bytes:
    try:
        if version == 4 and ":" not in text:
            return ipaddress.IPv4Address(text).packed
        if version == 6 and ":" in text and "%" not in text:
            return ipaddress.IPv6Address(text).packed
    except ValueError:
        pass
    raise RecordError(f"bad {'A' if version == 4 else 'AAAA'} address {text!r}")


def _uint(text: str, bits: int, what: str) -> bytes:
    value = _number(text, bits)
    if value is None:
        raise RecordError(f"bad {what} {text!r}")
    return value.to_bytes(bits // 8, "big")


def _number(text: str, bits: int) -> int | None:
    """Go's ``strconv.ParseUint(text, 10, bits)``."""
    if not _DIGITS.fullmatch(text) or int(text) >= 1 << bits:
        return None
    return int(text)


def _ttl(text: str) -> int | None:
    """miekg/dns's ``stringToTTL``: ``300``, ``5m``, ``1h30m``; uint32 arithmetic wraps."""
    total = current = 0
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    for char in text:
        if "0" <= char <= "9":
            current = (current * 10 + ord(char) - ord("0")) & 0xFFFFFFFF
        elif char.lower() in units:
            total = (total + current * units[char.lower()]) & 0xFFFFFFFF
            current = 0
        else:
            return None
    return (total + current) & 0xFFFFFFFF


def _name(text: str, origin: bytes) -> bytes:
    """A zone-file name (``\\.`` and ``\\DDD`` escapes, ``@``, relative to ``origin``) in wire
    form, in the case it is written."""
    if text == "@":
        return origin
    if text == ".":
        return b"\x00"
    labels: list[bytes] = []
    label = bytearray()
    absolute = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            digits = text[index + 1 : index + 4]
            if len(digits) == 3 and digits.isdigit() and digits.isascii():
                if int(digits) > 255:
                    raise RecordError(f"bad escape in {text!r}")
                label.append(int(digits))
                index += 4
            elif index + 1 < len(text):
                label += text[index + 1].encode()
                index += 2
            else:
                raise RecordError(f"trailing backslash in {text!r}")
            continue
        index += 1
        if char == ".":
            if not label:
                raise RecordError(f"empty label in {text!r}")
            labels.append(bytes(label))
            label.clear()
            absolute = index == len(text)
        else:
            label += char.encode()
    if label:
        labels.append(bytes(label))
    if any(len(part) > 63 for part in labels):
        raise RecordError(f"a label of {text!r} is longer than 63 octets")
    encoded = b"".join(bytes((len(part),)) + part for part in labels)
    encoded += b"\x00" if absolute else origin
    if len(encoded) > wire.MAX_NAME_LENGTH:
        raise RecordError(f"{text!r} is longer than 255 octets")
    return encoded


def _is_name(data: bytes) -> bool:
    """Whether ``data`` is exactly one uncompressed wire name (a CNAME given as ``\\#`` may
    not be)."""
    position = 0
    while position < len(data) and 0 < data[position] <= 63:
        position += data[position] + 1
    return position == len(data) - 1 and data[position] == 0 and len(data) <= 255


def _character_strings(text: str) -> bytes:
    """A TXT word (escapes decoded) as character-strings of at most 255 octets."""
    data = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        digits = text[index + 1 : index + 4]
        if char == "\\" and len(digits) == 3 and digits.isdigit() and digits.isascii():
            data.append(int(digits) & 0xFF)
            index += 4
        elif char == "\\" and index + 1 < len(text):
            data += text[index + 1].encode()
            index += 2
        else:
            data += char.encode()
            index += 1
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [bytearray()]
    return b"".join(bytes((len(chunk),)) + chunk for chunk in chunks)


def _check_record_type(nodes: Sequence[Node]) -> None:
    """A templated record whose type is plain text: refuse a type read only as RFC 3597 when
    the template does not use that form (seen now, not at the first query)."""
    skeleton = "".join(node.text if isinstance(node, Text) else "\x00" for node in nodes)
    words = skeleton.replace("(", " ").replace(")", " ").split()
    if skeleton[:1] in tuple(_SPACES) or not words or words[0].startswith("$"):
        return
    for index, word in enumerate(words[1:4], start=1):
        upper = word.upper()
        if "\x00" in word or upper == "ANY":
            return
        if upper in _RECORD_TYPES:
            rtype = _RECORD_TYPES[upper]
            generic = words[index + 1 : index + 2] == ["\\#"]
            if rtype not in _READ_TYPES and not generic:
                raise TemplateUnsupported(f"{upper} records (write them as \\# LENGTH HEX)")
            return
        if not (upper in CLASSES or _ttl(word) is not None):
            return


__all__ = ["Template", "TemplateOptions", "parse", "presentation", "read_record", "render",
           "translate_regex"]
