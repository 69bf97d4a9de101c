"""CoreDNS's ``rewrite`` plugin: the query is changed before the rest of the chain sees it, and
the reply is changed back before the client sees it.

One ``rewrite`` directive is one rule (its arguments on the line, or, with fewer than two on the
line, every token of its block)::

    rewrite [continue|stop] name [exact|prefix|suffix|substring|regex] FROM TO [answer ...]
    rewrite [continue|stop] type FROM TO
    rewrite [continue|stop] class IN TO
    rewrite [continue|stop] ttl [exact|prefix|suffix|substring|regex] NAME TTL|MIN-MAX
    rewrite [continue|stop] rcode [exact|prefix|suffix|substring|regex] NAME FROM TO

The rules of a server block run in the Corefile's order on the lower-cased question name as the
earlier rules left it. A rule that applies changes the question and may add *response rules*;
``stop`` (the default) ends the walk there, ``continue`` goes on to the next rule. Then the rest
of the chain answers the rewritten query, and the reply is reverted (CoreDNS's
``ResponseReverter``): the question goes back to the client's, byte for byte, and the response
rules run over every record of the authority, answer and additional sections, the last rule
collected first. Two CoreDNS details are kept on purpose: when only ``continue`` rules applied
and none of them asked for a response rule, the reply goes out untouched (its question is the
rewritten one); and a rewrite whose new name is not a domain name is SERVFAIL for the client's
question.

What maps names back (``answer``):

- ``exact`` rules always map the new name back to the one asked (owner names, and the names
  inside CNAME, NS, PTR, MX, SRV, NAPTR, DNAME and the SOA's primary server);
- ``prefix``, ``substring`` and ``regex`` rules do so with ``answer auto``;
- ``suffix`` rules with ``answer auto`` swap the suffix back on every name of the reply;
- ``answer name FROM TO`` / ``answer value FROM TO`` rewrite owner names / those values by a
  regular expression (TO with ``{0}``…``{100}`` for its groups), the whole name on a match;
- without any of these, owner names stay as the rest of the chain wrote them.

The Corefile gives one :class:`RewriteOptions` per directive and the server builds one
:class:`Rewrite` per directive; the plugins of a block sit next to each other in the chain and
share one :class:`_Session` per query (carried on the request), so ``stop``, ``continue`` and
the reverter act over all of them exactly as CoreDNS's one plugin with many rules does.

The fast path: :meth:`Rewrite.interception` takes off it the queries a rule may change whose
names the cluster zone's index holds: an ``exact`` name, the zone under a ``suffix``, the types
of a ``type`` rule; every query for ``prefix``, ``substring`` and ``regex`` rules and ``class IN``
rules. A rule that can only match names outside the cluster (and reverse) zones intercepts
nothing.

Refused (``Unsupported``): ``edns0`` and ``cname`` rules, ``class`` rules for classes other than
IN (this server refuses such queries before the chain), and regular expressions written in the
RE2-only syntax that Python's ``re`` does not have.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import warnings
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from dnsserver.config.directives import BadValue, Directive, ParseContext, Token, Unsupported
from dnsserver.config.settings import REVERSE_ZONES
from dnsserver.plugins import chain
from dnsserver.plugins.upstream import fit_udp
from dnsserver.serve import wire
from zones.records import SERVFAIL

PLUGIN = "rewrite"
MATCH_KINDS = ("exact", "prefix", "suffix", "substring", "regex")
_OPT = 41
_MAX_TTL_RANGE = 2147483647  # "MIN-" means up to this
_MAX_GROUP_REFERENCE = 100  # {0} .. {100} are substituted

# Mnemonics a rule takes (CoreDNS's DNS library, upper case; no TYPEnnn form).
TYPES = wire.TYPE_MNEMONICS
CLASSES = wire.CLASS_MNEMONICS
RCODES = wire.RCODE_MNEMONICS
_MAX_RCODE_NUMBER = 23


# -- options (what the Corefile says; frozen and comparable) --------------------------------

@dataclass(frozen=True, slots=True)
class NameMatch:
    """Which question names a rule applies to: ``kind`` is one of :data:`MATCH_KINDS`;
    ``pattern`` is lower case with a trailing dot, or a raw regular expression for ``regex``."""

    kind: str
    pattern: str


@dataclass(frozen=True, slots=True)
class AnswerRewrite:
    """``answer name|value FROM TO``: ``target`` is ``name`` (owner names) or ``value``."""

    target: str
    pattern: str
    replacement: str  # lower case, trailing dot, {n} for the groups


@dataclass(frozen=True, slots=True)
class NameRule:
    match: NameMatch
    replacement: str  # lower case, trailing dot ({n} for a regex)
    auto: bool  # map the new name back in the reply (always for exact)
    answers: tuple[AnswerRewrite, ...] = ()


@dataclass(frozen=True, slots=True)
class TypeRule:
    old: int
    new: int


@dataclass(frozen=True, slots=True)
class ClassRule:
    old: int
    new: int


@dataclass(frozen=True, slots=True)
class TtlRule:
    match: NameMatch
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class RcodeRule:
    match: NameMatch
    old: int
    new: int


Rule = NameRule | TypeRule | ClassRule | TtlRule | RcodeRule


@dataclass(frozen=True, slots=True)
class RewriteOptions:
    """One ``rewrite`` directive: one rule, and whether the walk stops after it applies."""

    rule: Rule
    stop: bool = True

    @property
    def plugin(self) -> str:
        return PLUGIN

    def build(self, context: chain.BuildContext) -> Rewrite:
        return Rewrite(self, context.cluster_zones)


# -- names as CoreDNS's rules see them: presentation text ----------------------------------

_SPECIAL = frozenset(b".\x20'@;()\"\\")
_ESCAPED = tuple(
    "\\" + chr(byte) if byte in _SPECIAL
    else f"\\{byte:03d}" if byte < 0x20 or byte > 0x7E
    else chr(byte)
    for byte in range(256)
)
_PLAIN_LABEL = re.compile(rb"[-0-9A-Za-z_*]*")

Labels = tuple[bytes, ...]


def _text(labels: Sequence[bytes]) -> str:
    """``labels`` as a fully qualified name in presentation form, escaped as CoreDNS prints."""
    if not labels:
        return "."
    parts = []
    for label in labels:
        if _PLAIN_LABEL.fullmatch(label):
            parts.append(label.decode("ascii"))
        else:
            parts.append("".join(_ESCAPED[byte] for byte in label))
    return ".".join(parts) + "."


def _labels_of_wire(name: bytes) -> Labels:
    labels = []
    position = 0
    while name[position]:
        end = position + 1 + name[position]
        labels.append(name[position + 1 : end])
        position = end
    return tuple(labels)


def _name(text: str) -> Labels | None:
    """The labels of presentation-form ``text``; None when it is not a domain name (an empty
    label, a label over 63 octets, over 255 octets in all, a dangling escape)."""
    if text == ".":
        return ()
    if not text or text[0] == ".":
        return None
    if "\\" not in text:  # the common case: no escapes
        parts = (text[:-1] if text.endswith(".") else text).encode().split(b".")
        if b"" in parts or any(len(part) > 63 for part in parts) \
                or sum(len(part) + 1 for part in parts) + 1 > wire.MAX_NAME_LENGTH:
            return None
        return tuple(parts)
    labels: list[bytes] = []
    label = bytearray()
    position, end = 0, len(text)
    while position < end:
        char = text[position]
        if char == "\\":
            digits = text[position + 1 : position + 4]
            if len(digits) == 3 and digits.isascii() and digits.isdigit():
                if int(digits) > 255:
                    return None
                label.append(int(digits))
                position += 4
            elif position + 1 < end:
                label += text[position + 1].encode()
                position += 2
            else:
                return None
        elif char == ".":
            if not label:
                return None
            labels.append(bytes(label))
            label = bytearray()
            position += 1
        else:
            label += char.encode()
            position += 1
        if len(label) > 63:
            return None
    if label:
        labels.append(bytes(label))
    if sum(len(item) + 1 for item in labels) + 1 > wire.MAX_NAME_LENGTH:
        return None
    return tuple(labels)


def _to_wire(labels: Labels) -> bytes:
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"


def _normalized(text: str) -> str:
    """CoreDNS's ``Normalize``: a trailing dot added unless there is one, then lower case."""
    trailing_backslashes = len(text[:-1]) - len(text[:-1].rstrip("\\"))
    if not text.endswith(".") or trailing_backslashes % 2:
        text += "."
    return text.lower()


def _in_zone(name: Labels, zone: Labels) -> bool:
    """Whether ``name`` is ``zone`` or below it (both lower case)."""
    return len(name) >= len(zone) and name[len(name) - len(zone) :] == zone


# -- regular expressions: CoreDNS's are RE2 --------------------------------------------------

_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")
_GO_ONLY_ESCAPES = "pPQCE"
_KNOWN_ESCAPES = set("afnrtvxdDsSwWbBAz0") | set(_GO_ONLY_ESCAPES)
_MAX_REPEAT = 1000


class _BadRegex(ValueError):
    """Not a regular expression RE2 (so CoreDNS) accepts."""


class _Re2Only(ValueError):
    """RE2 syntax that Python's ``re`` has no equivalent for here."""


def _regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled with RE2's meaning: constructs RE2 refuses (look-around,
    back-references, possessive and atomic groups, conditionals) are refused too, ``\\z`` and
    ``(?<name>…)`` are translated, and RE2-only classes raise :class:`_Re2Only`."""
    out: list[str] = []
    position, end, in_class = 0, len(pattern), False
    while position < end:
        char = pattern[position]
        following = pattern[position + 1 : position + 2]
        if char == "\\":
            if not following:
                raise _BadRegex("trailing backslash")
            if following.isalnum() and following not in _KNOWN_ESCAPES:
                raise _BadRegex(f"unknown escape \\{following}")
            if following in _GO_ONLY_ESCAPES or (
                    following == "x" and pattern[position + 2 : position + 3] == "{"):
                raise _Re2Only(f"\\{following}")
            if following == "0":
                digits = re.match(r"0[0-7]{0,2}", pattern[position + 1 :])
                assert digits is not None
                out.append("\\" + digits.group())
                position += 1 + len(digits.group())
                continue
            out.append("\\Z" if following == "z" else char + following)
            position += 2
            continue
        if in_class:
            if char == "[" and following == ":":
                raise _Re2Only("[:class:]")
            in_class = char != "]"
            out.append(char)
            position += 1
            continue
        if char == "[":
            in_class = True
            opening = re.match(r"\[\^?\]?", pattern[position:])
            assert opening is not None
            out.append(opening.group())
            position += len(opening.group())
            continue
        if char == "(" and following == "?":
            rest = pattern[position + 2 :]
            named = re.match(r"P?<([A-Za-z0-9_]+)>", rest)
            flags = re.match(r"([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])", rest)
            if named:
                out.append(f"(?P<{named.group(1)}>")
                position += 2 + len(named.group())
                continue
            if not flags or not set(flags.group(1) + (flags.group(2) or "")) <= set("imsU"):
                raise _BadRegex("unsupported group syntax")
            if "U" in flags.group(0):
                raise _Re2Only("the U flag")
            if flags.group(3) == ")" and (position or flags.group(2) is not None):
                raise _Re2Only("flags in the middle of the expression")
        if char in "*+?}" and following == "+":
            raise _BadRegex("nested repetition")
        if char == "{":
            repeat = _REPEAT.match(pattern, position)
            if repeat and any(int(n) > _MAX_REPEAT for n in repeat.groups() if n):
                raise _BadRegex("repeat count over 1000")
        out.append(char)
        position += 1
    try:
        with warnings.catch_warnings():  # "possible nested set" and the like: RE2 has no sets
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile("".join(out))
    except (re.error, OverflowError, RecursionError) as exc:
        raise _BadRegex(str(exc)) from None


def _group_references(template: str) -> int:
    """How many distinct ``{n}`` (n up to 100) ``template`` uses, as CoreDNS counts them."""
    return sum(f"{{{index}}}" in template for index in range(_MAX_GROUP_REFERENCE + 1))


def _expand(template: str, found: re.Match[str]) -> str:
    """``template`` with ``{0}``, ``{1}``, … replaced by the match's groups, in that order."""
    values = (found.group(0), *found.groups())
    for index, value in enumerate(values):
        template = template.replace(f"{{{index}}}", value or "")
    return template


# -- replies: a small message codec that keeps every byte it does not change ----------------

class _Malformed(ValueError):
    """The reply cannot be read."""


class _Unencodable(ValueError):
    """A response rule made a name that is not a domain name (CoreDNS fails to write it)."""


# How a type's RDATA holds names (so they are decompressed and can be rewritten): a count of
# fixed octets, "name", "string" (a character-string), or "rest".
_LAYOUTS: dict[int, tuple[int | str, ...]] = {
    **{rtype: ("name",) for rtype in (2, 3, 4, 5, 7, 8, 9, 12, 39)},
    6: ("name", "name", "rest"), 14: ("name", "name"), 17: ("name", "name"),
    15: (2, "name"), 18: (2, "name"), 21: (2, "name"), 36: (2, "name"), 26: (2, "name", "name"),
    33: (6, "name"), 35: (4, "string", "string", "string", "name"),
}
_COMPRESSED = frozenset((2, 3, 4, 5, 6, 7, 8, 9, 12, 14, 15))  # RFC 1035's types only
# The record "value" CoreDNS's value rules rewrite: the first name of these types' RDATA
# (SRV target, MX exchange, CNAME, NS, DNAME, NAPTR replacement, SOA primary server, PTR).
_VALUE_TYPES = frozenset((33, 15, 5, 2, 39, 35, 6, 12))


class _Record:
    __slots__ = ("owner", "rclass", "rdata", "rtype", "ttl")

    def __init__(self, owner: Labels, rtype: int, rclass: int, ttl: int,
                 rdata: list[bytes | Labels]) -> None:
        self.owner = owner
        self.rtype = rtype
        self.rclass = rclass
        self.ttl = ttl
        self.rdata = rdata  # raw octets, and the names of a _LAYOUTS type as labels

    def value_index(self) -> int | None:
        if self.rtype not in _VALUE_TYPES:
            return None
        for index, piece in enumerate(self.rdata):
            if isinstance(piece, tuple):
                return index
        return None


class _Message:
    """A reply, read into questions and records; names uncompressed."""

    __slots__ = ("additional", "answer", "authority", "header", "questions", "rcode")

    def __init__(self, data: bytes) -> None:
        if len(data) < wire.HEADER_LENGTH:
            raise _Malformed("no header")
        self.header = data[:4]
        qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", data, 4)
        position = wire.HEADER_LENGTH
        self.questions: list[tuple[Labels, bytes]] = []
        for _ in range(qdcount):
            name, position = _read_name(data, position)
            self.questions.append((name, _take(data, position, 4)))
            position += 4
        self.answer, position = _read_records(data, position, ancount)
        self.authority, position = _read_records(data, position, nscount)
        self.additional, position = _read_records(data, position, arcount)
        opt = self.opt()
        self.rcode = (data[3] & 0x0F) | ((opt.ttl >> 24) << 4 if opt is not None else 0)

    def opt(self) -> _Record | None:
        return next((record for record in self.additional if record.rtype == _OPT), None)

    def encode(self) -> bytes:
        opt = self.opt()
        if opt is not None:
            opt.ttl = (opt.ttl & 0x00FFFFFF) | ((self.rcode >> 4) & 0xFF) << 24
        elif self.rcode > 0x0F:
            raise _Unencodable("an extended rcode needs an OPT record")
        head = self.header[:3] + bytes(((self.header[3] & 0xF0) | (self.rcode & 0x0F),))
        out = bytearray(head + struct.pack(">HHHH", len(self.questions), len(self.answer),
                                           len(self.authority), len(self.additional)))
        offsets: dict[Labels, int] = {}
        for name, tail in self.questions:
            _write_name(out, name, offsets, compress=True)
            out += tail
        for record in (*self.answer, *self.authority, *self.additional):
            _write_name(out, record.owner, offsets, compress=True)
            out += struct.pack(">HHIH", record.rtype, record.rclass, record.ttl, 0)
            start = len(out)
            compress = record.rtype in _COMPRESSED
            for piece in record.rdata:
                if isinstance(piece, tuple):
                    _write_name(out, piece, offsets, compress=compress)
                else:
                    out += piece
            struct.pack_into(">H", out, start - 2, len(out) - start)
        return bytes(out)


def _take(data: bytes, position: int, count: int) -> bytes:
    if position + count > len(data):
        raise _Malformed("message ends early")
    return data[position : position + count]


def _read_name(data: bytes, position: int) -> tuple[Labels, int]:
    labels: list[bytes] = []
    after: int | None = None
    length_so_far = 1
    jumps = 0
    try:
        while True:
            length = data[position]
            if length & 0xC0 == 0xC0:
                if after is None:
                    after = position + 2
                jumps += 1
                if jumps > 127:
                    raise _Malformed("compression loop")
                position = (length & 0x3F) << 8 | data[position + 1]
                continue
            if length & 0xC0:
                raise _Malformed("unknown label type")
            if length == 0:
                return tuple(labels), after if after is not None else position + 1
            end = position + 1 + length
            length_so_far += length + 1
            if end > len(data) or length_so_far > wire.MAX_NAME_LENGTH:
                raise _Malformed("name ends early or is over 255 octets")
            labels.append(data[position + 1 : end])
            position = end
    except IndexError:
        raise _Malformed("message ends early") from None


def _read_records(data: bytes, position: int, count: int) -> tuple[list[_Record], int]:
    records = []
    for _ in range(count):
        owner, position = _read_name(data, position)
        rtype, rclass, ttl, length = struct.unpack(">HHIH", _take(data, position, 10))
        start = position + 10
        end = start + length
        _take(data, start, length)
        layout = _LAYOUTS.get(rtype)
        rdata: list[bytes | Labels] = (
            _read_rdata(data, start, end, layout) if layout else [data[start:end]])
        records.append(_Record(owner, rtype, rclass, ttl, rdata))
        position = end
    return records, position


def _read_rdata(data: bytes, start: int, end: int,
                layout: tuple[int | str, ...]) -> list[bytes | Labels]:
    pieces: list[bytes | Labels] = []
    position = start
    for item in layout:
        if item == "name":
            name, position = _read_name(data, position)
            pieces.append(name)
        elif item == "string":
            size = 1 + _take(data, position, 1)[0]
            pieces.append(_take(data, position, size))
            position += size
        elif item == "rest":
            pieces.append(data[position:end])
            position = end
        else:
            assert isinstance(item, int)
            pieces.append(_take(data, position, item))
            position += item
        if position > end:
            raise _Malformed("RDATA overruns its length")
    if position < end:
        pieces.append(data[position:end])
    return pieces


def _write_name(out: bytearray, labels: Labels, offsets: dict[Labels, int], *,
                compress: bool) -> None:
    """Append a name, pointing at an earlier identical suffix when ``compress`` (names are
    compared case-sensitively, like CoreDNS's packer, so the client's case stays its own)."""
    for index in range(len(labels)):
        suffix = labels[index:]
        known = offsets.get(suffix)
        if compress and known is not None:
            out += struct.pack(">H", 0xC000 | known)
            return
        if known is None and len(out) < 0x4000:
            offsets[suffix] = len(out)
        out.append(len(labels[index]))
        out += labels[index]
    out.append(0)


# -- response rules: run over every record of the reply ------------------------------------

ResponseRule = Callable[[_Message, _Record], None]
StringRewrite = Callable[[str], str]


def _remap(old: str, new: str) -> StringRewrite:
    """``old`` (the rewritten question) and the names under it back to ``new`` (as asked)."""
    under = "." + old

    def rewrite(text: str) -> str:
        if text == old:
            return new
        if text.endswith(under):
            return text[: len(text) - len(old)] + new
        return text

    return rewrite


def _swap_suffix(suffix: str, replacement: str) -> StringRewrite:
    def rewrite(text: str) -> str:
        return text[: len(text) - len(suffix)] + replacement if text.endswith(suffix) else text

    return rewrite


def _by_regex(pattern: re.Pattern[str], template: str) -> StringRewrite:
    def rewrite(text: str) -> str:
        found = pattern.search(text)
        return _expand(template, found) if found else text

    return rewrite


def _owner_rule(rewrite: StringRewrite) -> ResponseRule:
    def apply(message: _Message, record: _Record) -> None:
        if record.rtype == _OPT:  # its owner is the root, not a name of the reply
            return
        text = _text(record.owner)
        changed = rewrite(text)
        if changed != text:
            record.owner = _encodable(changed)

    return apply


def _value_rule(rewrite: StringRewrite) -> ResponseRule:
    def apply(message: _Message, record: _Record) -> None:
        index = record.value_index()
        if index is None:
            return
        value = record.rdata[index]
        assert isinstance(value, tuple)
        text = _text(value)
        changed = rewrite(text)
        if changed != text:
            record.rdata[index] = _encodable(changed)

    return apply


def _encodable(text: str) -> Labels:
    labels = _name(text)
    if labels is None:
        raise _Unencodable(text)
    return labels


def _ttl_rule(low: int, high: int) -> ResponseRule:
    def apply(message: _Message, record: _Record) -> None:
        if record.rtype == _OPT:  # its TTL field holds EDNS flags, not a TTL
            return
        if record.ttl < low:
            record.ttl = low
        elif record.ttl > high:
            record.ttl = high

    return apply


def _rcode_rule(old: int, new: int) -> ResponseRule:
    def apply(message: _Message, record: _Record) -> None:
        # CoreDNS applies it once per record: a reply without records keeps its rcode.
        if message.rcode == old:
            message.rcode = new

    return apply


# -- the plugin ----------------------------------------------------------------------------

class _Session:
    """One query's walk through the rewrite rules of its block: what the client asked, the
    response rules collected, whether a ``stop`` rule ended the walk."""

    __slots__ = ("failed", "original", "rules", "stopped")

    def __init__(self, original: chain.Request) -> None:
        self.original = original
        self.rules: list[ResponseRule] = []
        self.stopped = False
        self.failed = False

    def finish(self, reply: chain.Reply) -> chain.Reply:
        """The reply for the client: reverted unless only ``continue`` rules applied and none
        of them asked for a response rule (then CoreDNS writes it as it came)."""
        if self.failed or (not self.stopped and not self.rules):
            return reply
        if reply is None or isinstance(reply, bytes):
            return self.revert(reply)
        return self._revert_later(reply)

    async def _revert_later(self, pending: Coroutine[Any, Any, bytes | None]) -> bytes | None:
        return self.revert(await pending)

    def revert(self, reply: bytes | None) -> bytes | None:
        if reply is None:
            return None
        original = self.original
        try:
            message = _Message(reply)
        except _Malformed:
            return wire.error_reply(original.data, original.query, SERVFAIL)
        if message.questions:
            question = original.data[wire.HEADER_LENGTH : original.query.question_end]
            message.questions[0] = (_labels_of_wire(original.query.name), question[-4:])
        if self.rules:
            rules = self.rules[::-1]  # the last rule collected runs first
            for record in (*message.authority, *message.answer, *message.additional):
                for rule in rules:
                    rule(message, record)
        try:
            out = message.encode()
        except _Unencodable:
            return None  # CoreDNS cannot write such a reply: the client gets nothing
        if original.tcp:
            return out
        edns = original.query.edns
        return fit_udp(out, wire.udp_limit(edns.udp_size if edns else None))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Rewritten(chain.Request):
    """A request one of the rules changed (or collected a response rule for)."""

    session: _Session


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a rule that applies does: a new name (labels), type and class; response rules."""

    name: Labels | None  # None: keep the name
    qtype: int
    qclass: int
    rules: tuple[ResponseRule, ...]
    invalid: bool = False  # the new name is not a domain name


Apply = Callable[[str, int, int], _Outcome | None]


class Rewrite(chain.FixedPlugin):
    """One rewrite rule on the slow path (see the module docstring)."""

    def __init__(self, options: RewriteOptions, cluster_zones: Sequence[str]) -> None:
        self.options = options
        self._stop = options.stop
        self._apply = _compile(options.rule)
        self._interception = _interception(options.rule, cluster_zones)

    @property
    def name(self) -> str:
        return PLUGIN

    def serve(self, request: chain.Request, next_plugin: chain.Next) -> chain.Reply:
        session = request.session if isinstance(request, _Rewritten) else None
        if session is not None and session.stopped:
            return next_plugin(request)
        query = request.query
        outcome = self._apply(_text(_labels_of_wire(request.key)), query.qtype, query.qclass)
        if outcome is None:
            return next_plugin(request)
        first = session is None
        if session is None:
            session = _Session(request)
        if outcome.invalid:  # SERVFAIL for the client's question, as the server writes it
            session.failed = True
            original = session.original
            original.count(original.query.qtype, SERVFAIL, "")
            return wire.error_reply(original.data, original.query, SERVFAIL)
        session.rules.extend(outcome.rules)
        session.stopped = self._stop
        reply = next_plugin(_rewritten(request, outcome, session))
        return session.finish(reply) if first else reply


def _rewritten(request: chain.Request, outcome: _Outcome, session: _Session) -> _Rewritten:
    """``request`` with the outcome's question: new data, the query parsed again, a new key."""
    values = {field.name: getattr(request, field.name) for field in dataclasses.fields(request)
              if field.name != "session"}
    query = request.query
    if outcome.name is not None or (outcome.qtype, outcome.qclass) != (query.qtype, query.qclass):
        name = _to_wire(outcome.name) if outcome.name is not None else query.name
        data = (request.data[: wire.HEADER_LENGTH] + name
                + struct.pack(">HH", outcome.qtype, outcome.qclass)
                + request.data[query.question_end :])
        values.update(data=data, query=wire.parse_query(data), key=name.lower())
    return _Rewritten(**values, session=session)


def _compile(rule: Rule) -> Apply:
    """The function that applies ``rule`` to (lower-case name, qtype, qclass)."""
    if isinstance(rule, TypeRule):
        old_type, new_type = rule.old, rule.new

        def retype(name: str, qtype: int, qclass: int) -> _Outcome | None:
            return _Outcome(None, new_type, qclass, ()) if qtype == old_type else None

        return retype
    if isinstance(rule, ClassRule):
        old_class, new_class = rule.old, rule.new

        def reclass(name: str, qtype: int, qclass: int) -> _Outcome | None:
            return _Outcome(None, qtype, new_class, ()) if qclass == old_class else None

        return reclass
    if isinstance(rule, TtlRule | RcodeRule):
        matches = _matcher(rule.match)
        added = ((_ttl_rule(rule.low, rule.high),) if isinstance(rule, TtlRule)
                 else (_rcode_rule(rule.old, rule.new),))

        def respond(name: str, qtype: int, qclass: int) -> _Outcome | None:
            return _Outcome(None, qtype, qclass, added) if matches(name) else None

        return respond
    return _name_rule(rule)


def _matcher(match: NameMatch) -> Callable[[str], bool]:
    pattern = match.pattern
    if match.kind == "exact":
        return lambda name: name == pattern
    if match.kind == "prefix":
        return lambda name: name.startswith(pattern)
    if match.kind == "suffix":
        return lambda name: name.endswith(pattern)
    if match.kind == "substring":
        return lambda name: pattern in name
    compiled = _regex(pattern)
    return lambda name: compiled.search(name) is not None


def _name_rule(rule: NameRule) -> Apply:
    kind, pattern, replacement = rule.match.kind, rule.match.pattern, rule.replacement
    static: list[ResponseRule] = []
    if kind == "suffix" and rule.auto:
        back = _swap_suffix(replacement, pattern)
        static += [_owner_rule(back), _value_rule(back)]
    for answer in rule.answers:
        rewrite = _by_regex(_regex(answer.pattern), answer.replacement)
        static.append(_owner_rule(rewrite) if answer.target == "name" else _value_rule(rewrite))
    fixed = tuple(static)
    remaps = kind == "exact" or (rule.auto and kind != "suffix")
    compiled = _regex(pattern) if kind == "regex" else None

    def new_name(name: str) -> str | None:
        if kind == "exact":
            return replacement if name == pattern else None
        if kind == "prefix":
            return replacement + name[len(pattern):] if name.startswith(pattern) else None
        if kind == "suffix":
            return name[: len(name) - len(pattern)] + replacement if name.endswith(pattern) \
                else None
        if kind == "substring":
            return name.replace(pattern, replacement) if pattern in name else None
        assert compiled is not None
        found = compiled.search(name)
        return _expand(replacement, found) if found else None

    def rename(name: str, qtype: int, qclass: int) -> _Outcome | None:
        changed = new_name(name)
        if changed is None:
            return None
        labels = _name(changed)
        if labels is None:
            return _Outcome(None, qtype, qclass, (), invalid=True)
        rules = fixed
        if remaps:
            back = _remap(changed, name)
            rules = (_owner_rule(back), _value_rule(back), *fixed)
        return _Outcome(labels, qtype, qclass, rules)

    return rename


# -- which queries leave the fast path -----------------------------------------------------

_EVERYTHING = chain.Interception(zones=(b"\x00",))


def _interception(rule: Rule, cluster_zones: Sequence[str]) -> chain.Interception:
    """The queries ``rule`` may change among those the cluster zone's index answers (names
    in the cluster zones and the reverse zones)."""
    if isinstance(rule, TypeRule):
        return chain.Interception(zones=(b"\x00",), qtypes=frozenset((rule.old,)))
    if isinstance(rule, ClassRule):  # the fast path answers class IN only
        return _EVERYTHING if rule.old == CLASSES["IN"] else chain.NOTHING
    indexed = []
    for zone in (*cluster_zones, *REVERSE_ZONES):
        labels = _name(_normalized(zone))
        if labels is not None:
            indexed.append(tuple(label.lower() for label in labels))
    return _names_matching(rule.match, indexed)


def _names_matching(match: NameMatch, indexed: Sequence[Labels]) -> chain.Interception:
    pattern = match.pattern
    if match.kind == "exact":
        labels = _name(pattern)
        if labels is None or not any(_in_zone(labels, zone) for zone in indexed):
            return chain.NOTHING
        return chain.Interception(names=frozenset((_to_wire(labels),)))
    if match.kind != "suffix" or pattern == ".":  # prefix, substring, regex: any name
        return _EVERYTHING
    # A suffix is the end of some label (empty when it starts with a dot) and the whole
    # names below it: "cluster.local." is "…cluster" + "local.", ".svc.cluster.local." is
    # "" + "svc.cluster.local.". Matched names are below that parent, and their label just
    # below it ends with that end.
    head, _, parent_text = pattern.partition(".")
    if "\\" in head:  # an escaped dot: not worth working out
        return _EVERYTHING
    parent = _name(parent_text or ".")
    tail = _name(head + ".") if head else ()
    if parent is None or tail is None or len(tail) > 1:
        return _EVERYTHING
    ending = tail[0] if tail else b""
    zones: list[Labels] = []
    for zone in indexed:
        if _in_zone(parent, zone):  # the whole parent is on the fast path
            zones.append(parent)
        elif _in_zone(zone, parent) and zone[len(zone) - len(parent) - 1].endswith(ending):
            zones.append(zone)
    if not zones:
        return chain.NOTHING
    if () in zones:
        return _EVERYTHING
    return chain.Interception(zones=tuple(dict.fromkeys(_to_wire(zone) for zone in zones)))


# -- the Corefile --------------------------------------------------------------------------

def parse(directive: Directive, context: ParseContext) -> RewriteOptions | None:
    """The options of one ``rewrite`` directive (one rule); None when a refused rule is left
    out in lenient mode."""
    tokens = list(directive.args)
    if directive.body is not None:
        if len(tokens) >= 2:
            raise BadValue.at(directive.name, "rewrite: a rule written on its line takes no "
                              "block")
        for item in directive.body:
            if item.body is not None:
                raise BadValue.at(item.name, "rewrite: a rule's block holds no blocks")
            tokens += [item.name, *item.args]
    try:
        return _options(tokens, directive.name)
    except Unsupported as refused:
        context.soft(refused)
        return None


def _options(tokens: list[Token], directive: Token) -> RewriteOptions:
    if not tokens:
        raise BadValue.at(directive, "rewrite: expected a rule: [continue|stop] "
                          "name|type|class|ttl|rcode ...")
    stop = True
    mode = tokens[0].text.lower()
    if mode in ("continue", "stop"):
        if len(tokens) < 2:
            raise BadValue.at(tokens[0], f"rewrite: {mode} must be followed by a rule")
        stop = mode == "stop"
        tokens = tokens[1:]
    kind_token, args = tokens[0], tokens[1:]
    kind = kind_token.text.lower()
    if kind == "name":
        return RewriteOptions(_name_options(kind_token, args), stop)
    if kind in ("type", "class"):
        if len(args) != 2:
            raise BadValue.at(args[2] if len(args) > 2 else kind_token,
                              f"rewrite {kind}: expected FROM TO, got {len(args)} arguments")
        if kind == "type":
            return RewriteOptions(TypeRule(*(_mnemonic(token, TYPES, kind) for token in args)),
                                  stop)
        old, new = (_mnemonic(token, CLASSES, kind) for token in args)
        if old != CLASSES["IN"]:
            raise Unsupported.at(args[0], "rewrite class: only class IN queries reach the "
                                 "plugins here (other classes are refused before them)")
        return RewriteOptions(ClassRule(old, new), stop)
    if kind == "ttl":
        return RewriteOptions(_ttl_options(kind_token, args), stop)
    if kind == "rcode":
        return RewriteOptions(_rcode_options(kind_token, args), stop)
    if kind in ("edns0", "cname"):
        raise Unsupported.at(kind_token, f"rewrite: {kind} rules are not supported")
    if kind == "answer":
        raise BadValue.at(kind_token, "rewrite: an answer rule must follow a name rule")
    raise BadValue.at(kind_token, f"rewrite: unknown rule type {kind_token.text!r} (expected "
                      "name, type, class, ttl or rcode)")


def _mnemonic(token: Token, table: dict[str, int], kind: str) -> int:
    value = table.get(token.text.upper())
    if value is None:
        raise BadValue.at(token, f"rewrite {kind}: unknown {kind} {token.text.upper()!r}")
    return value


def _compiled(token: Token, pattern: str, what: str) -> re.Pattern[str]:
    try:
        return _regex(pattern)
    except _Re2Only as exc:
        raise Unsupported.at(token, f"{what}: {pattern!r} uses RE2 syntax ({exc}) this server "
                             "does not translate") from None
    except _BadRegex:
        raise BadValue.at(token, f"{what}: {pattern!r} is not a valid regular "
                          "expression") from None


def _check_references(token: Token, pattern: str, template: str, what: str) -> None:
    """``template`` may refer to as many groups (``{n}``) as ``pattern`` has, no more."""
    used = _group_references(template)
    groups = _regex(pattern).groups
    if used > groups:
        raise BadValue.at(token, f"{what}: {template!r} refers to more groups ({used}) than "
                          f"{pattern!r} has ({groups})")


def _name_options(kind_token: Token, args: list[Token]) -> NameRule:
    what = "rewrite name"
    if len(args) < 2:
        raise BadValue.at(kind_token, f"{what}: expected [MATCH] FROM TO")
    if len(args) == 2:
        kind, source, target = "exact", args[0], args[1]
    else:
        kind, source, target = args[0].text.lower(), args[1], args[2]
    if kind not in MATCH_KINDS:  # (CoreDNS reads the answer options first; same verdict)
        raise BadValue.at(args[0], f"{what}: match {args[0].text!r} is not one of "
                          f"{', '.join(MATCH_KINDS)} (a rule with answer options names it)")
    auto = False
    answers: tuple[AnswerRewrite, ...] = ()
    if len(args) > 3:
        auto, answers = _answer_options(args[3:], kind, args[2])
    if kind == "regex":
        _compiled(source, source.text, what)
        _check_references(target, source.text, target.text, what)
        match = NameMatch(kind, source.text)
    else:
        match = NameMatch(kind, _normalized(source.text))
    replacement = _normalized(target.text)
    if kind == "exact":  # CoreDNS checks TO as an expression too (and FROM's {n} against it)
        _compiled(target, replacement, what)
        _check_references(source, replacement, match.pattern, what)
    return NameRule(match, replacement, auto or kind == "exact", answers)


def _answer_options(args: list[Token], kind: str, last_argument: Token,
                    ) -> tuple[bool, tuple[AnswerRewrite, ...]]:
    """``answer auto | answer name FROM TO | answer value FROM TO``, repeated; the word
    ``answer`` may be left out after the first."""
    what = f"rewrite name {kind}"
    if len(args) < 2:
        raise BadValue.at(args[0], f"{what}: expected answer auto|name FROM TO|value FROM TO")
    auto = False
    answers: list[AnswerRewrite] = []
    position = 0
    while position < len(args):
        if position == 0 and args[0].text != "answer":
            raise BadValue.at(args[0], f"{what}: {args[0].text!r} is one argument too many "
                              "(answer options start with 'answer')")
        if args[position].text == "answer":
            position += 1
        if position == len(args):
            raise BadValue.at(args[-1], f"{what}: 'answer' needs auto, name or value")
        option = args[position]
        position += 1
        if option.text == "auto":
            auto = True
        elif option.text in ("name", "value"):
            if len(args) - position < 2:
                raise BadValue.at(option, f"{what}: answer {option.text} needs FROM and TO")
            source, target = args[position], args[position + 1]
            _compiled(source, source.text, f"{what} answer {option.text}")
            _check_references(target, source.text, target.text, f"{what} answer {option.text}")
            answers.append(AnswerRewrite(option.text, source.text, _normalized(target.text)))
            position += 2
        else:
            raise BadValue.at(option, f"{what}: unknown answer option {option.text!r} "
                              "(auto, name or value)")
    if auto and any(answer.target == "name" for answer in answers):
        raise BadValue.at(last_argument, f"{what}: answer auto and answer name exclude each "
                          "other")
    return auto, tuple(answers)


def _matched_name(kind_token: Token, args: list[Token], extra: int) -> tuple[NameMatch, int]:
    """``[MATCH] NAME`` followed by ``extra`` values: the match and where the values start."""
    what = f"rewrite {kind_token.text.lower()}"
    if len(args) == 1 + extra:
        return NameMatch("exact", _normalized(args[0].text)), 1
    kind = args[0].text.lower()
    if kind not in MATCH_KINDS:
        raise BadValue.at(args[0], f"{what}: match {args[0].text!r} is not one of "
                          f"{', '.join(MATCH_KINDS)}")
    if kind == "regex":
        _compiled(args[1], args[1].text, what)
        return NameMatch(kind, args[1].text), 2
    return NameMatch(kind, _normalized(args[1].text)), 2


def _ttl_options(kind_token: Token, args: list[Token]) -> TtlRule:
    if not 2 <= len(args) <= 3:
        raise BadValue.at(args[3] if len(args) > 3 else kind_token,
                          f"rewrite ttl: expected [MATCH] NAME TTL, got {len(args)} arguments")
    low, high = _ttl_range(args[-1])
    match, _ = _matched_name(kind_token, args, 1)
    return TtlRule(match, low, high)


def _ttl_range(token: Token) -> tuple[int, int]:
    """``N``, ``MIN-MAX``, ``MIN-`` or ``-MAX`` (not ``-``), in 32-bit unsigned seconds."""
    parts = token.text.split("-")
    numbers: list[int | None] = []
    for part in parts:
        if part and (not re.fullmatch(r"[0-9]+", part) or int(part) > 0xFFFFFFFF):
            numbers = []
            break
        numbers.append(int(part) if part else None)
    if len(numbers) == 1 and numbers[0] is not None:
        return numbers[0], numbers[0]
    if len(numbers) == 2 and numbers != [None, None]:
        low = numbers[0] or 0
        high = _MAX_TTL_RANGE if numbers[1] is None else numbers[1]
        if low <= high:
            return low, high
    raise BadValue.at(token, f"rewrite ttl: {token.text!r} is not a TTL (N, MIN-MAX, MIN- or "
                      "-MAX seconds)")


def _rcode_options(kind_token: Token, args: list[Token]) -> RcodeRule:
    if not 3 <= len(args) <= 4:
        raise BadValue.at(args[4] if len(args) > 4 else kind_token,
                          f"rewrite rcode: expected [MATCH] NAME FROM TO, got {len(args)} "
                          "arguments")
    old, new = (_rcode(token) for token in args[-2:])
    match, _ = _matched_name(kind_token, args, 2)
    return RcodeRule(match, old, new)


def _rcode(token: Token) -> int:
    text = token.text
    if re.fullmatch(r"[0-9]+", text) and int(text) <= _MAX_RCODE_NUMBER:
        return int(text)
    value = RCODES.get(text.upper())
    if value is None:
        raise BadValue.at(token, f"rewrite rcode: {text!r} is not an rcode (0 to 23, or a "
                          "name such as NXDOMAIN)")
    return value
