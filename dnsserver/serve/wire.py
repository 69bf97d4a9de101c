"""DNS messages at the byte level: a bounds-checked query parser, replies, OPT and truncation.

The hot path in :mod:`dnsserver.serve.handler` reads the common query shape with slices; this module
holds the careful parser for everything else and the helpers both share.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right
from dataclasses import dataclass

from zones.records import FORMERR, NOTIMP, OPT

HEADER_LENGTH = 12
MAX_NAME_LENGTH = 255
MIN_UDP_SIZE = 512
MAX_MESSAGE_SIZE = 65535
OUR_UDP_SIZE = 1232  # what we advertise when a reply has no OPT of the client's to mirror
BADVERS = 16
_U16 = struct.Struct(">H")
_COUNTS = struct.Struct(">HHHH")
_OPT_FLAGS = (b"\x00\x00\x00\x00\x00\x00", b"\x00\x00\x80\x00\x00\x00")  # ext-rcode..RDLEN

# miekg/dns's mnemonics (StringToType, StringToClass, StringToRcode), as the Corefile spells
# them: upper case, no TYPEnnn form. rewrite and template read types, classes and rcodes so.
TYPE_MNEMONICS: dict[str, int] = {
    "A": 1, "NS": 2, "MD": 3, "MF": 4, "CNAME": 5, "SOA": 6, "MB": 7, "MG": 8, "MR": 9,
    "NULL": 10, "PTR": 12, "HINFO": 13, "MINFO": 14, "MX": 15, "TXT": 16, "RP": 17,
    "AFSDB": 18, "X25": 19, "ISDN": 20, "RT": 21, "NSAP-PTR": 23, "SIG": 24, "KEY": 25,
    "PX": 26, "GPOS": 27, "AAAA": 28, "LOC": 29, "NXT": 30, "EID": 31, "NIMLOC": 32,
    "SRV": 33, "ATMA": 34, "NAPTR": 35, "KX": 36, "CERT": 37, "DNAME": 39, "OPT": 41,
    "APL": 42, "DS": 43, "SSHFP": 44, "IPSECKEY": 45, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48,
    "DHCID": 49, "NSEC3": 50, "NSEC3PARAM": 51, "TLSA": 52, "SMIMEA": 53, "HIP": 55,
    "NINFO": 56, "RKEY": 57, "TALINK": 58, "CDS": 59, "CDNSKEY": 60, "OPENPGPKEY": 61,
    "CSYNC": 62, "ZONEMD": 63, "SVCB": 64, "HTTPS": 65, "SPF": 99, "UINFO": 100, "UID": 101,
    "GID": 102, "UNSPEC": 103, "NID": 104, "L32": 105, "L64": 106, "LP": 107, "EUI48": 108,
    "EUI64": 109, "NXNAME": 128, "TKEY": 249, "TSIG": 250, "IXFR": 251, "AXFR": 252,
    "MAILB": 253, "MAILA": 254, "ANY": 255, "URI": 256, "CAA": 257, "AVC": 258,
    "AMTRELAY": 260, "RESINFO": 261, "TA": 32768, "DLV": 32769,
}
CLASS_MNEMONICS: dict[str, int] = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
RCODE_MNEMONICS: dict[str, int] = {
    "NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "NOTIMPL": 4,
    "REFUSED": 5, "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10,
    "DSOTYPENI": 11, "BADSIG": 16, "BADKEY": 17, "BADTIME": 18, "BADMODE": 19, "BADNAME": 20,
    "BADALG": 21, "BADTRUNC": 22, "BADCOOKIE": 23,
}


def opt_record(udp_size: int, do: int) -> bytes:
    """The reply's OPT: the client's UDP size (at least 512) and DO bit mirrored, as CoreDNS
    does, and no options."""
    return b"\x00\x00\x29" + _U16.pack(max(udp_size, MIN_UDP_SIZE)) + _OPT_FLAGS[do]


class FormError(ValueError):
    """The message is not a well-formed DNS query."""


class Truncated(FormError):
    """The message ends in the middle of a field."""


@dataclass(frozen=True, slots=True)
class Edns:
    udp_size: int
    version: int
    do: bool


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: enough to answer it and to echo its question exactly."""

    question_end: int  # offset just past QCLASS
    name: bytes  # the question name as sent (case kept), uncompressed wire form
    qtype: int
    qclass: int
    edns: Edns | None


class Cursor:
    """Reads a message front to back; reading past the end raises :class:`Truncated`."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def take(self, count: int) -> bytes:
        end = self.offset + count
        if end > len(self.data):
            raise Truncated(f"message ends at byte {len(self.data)}, needed {end}")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def name(self, *, allow_pointers: bool) -> bytes:
        """A domain name; its uncompressed wire form when it has no pointer."""
        start = self.offset
        while True:
            length = self.u8()
            if length == 0:
                break
            if length & 0xC0 == 0xC0:
                if not allow_pointers:
                    raise FormError("compression pointer in the question name")
                self.take(1)  # a pointer ends the name; its target is not needed here
                break
            if length > 63:
                raise FormError(f"label length {length} is over 63")
            self.take(length)
            if self.offset - start >= MAX_NAME_LENGTH:  # the root octet still to come
                raise FormError("name is longer than 255 octets")
        return self.data[start : self.offset]


def parse_query(data: bytes) -> Query:
    """Parse a query after the header checks; raises :class:`FormError` when malformed."""
    qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", data, 4)
    if qdcount != 1:
        raise FormError(f"QDCOUNT is {qdcount}, not 1")
    cursor = Cursor(data, HEADER_LENGTH)
    name = cursor.name(allow_pointers=False)
    qtype, qclass = cursor.u16(), cursor.u16()
    question_end = cursor.offset
    edns = None
    for _ in range(ancount + nscount):
        _skip_record(cursor)
    for _ in range(arcount):
        found = _read_additional(cursor)
        if found is not None:
            if edns is not None:
                raise FormError("more than one OPT record")
            edns = found
    return Query(question_end, name, qtype, qclass, edns)


def _skip_record(cursor: Cursor) -> None:
    cursor.name(allow_pointers=True)
    cursor.take(8)
    cursor.take(cursor.u16())


def _read_additional(cursor: Cursor) -> Edns | None:
    owner = cursor.name(allow_pointers=True)
    rtype, rclass = cursor.u16(), cursor.u16()
    extended = cursor.take(4)
    cursor.take(cursor.u16())
    if rtype != OPT:
        return None
    if owner != b"\x00":
        raise FormError("OPT record owner is not the root")
    return Edns(udp_size=rclass, version=extended[1], do=bool(extended[2] & 0x80))


def udp_limit(edns_size: int | None) -> int:
    """The largest UDP reply the client accepts: 512 without EDNS, else what it advertised."""
    if edns_size is None:
        return MIN_UDP_SIZE
    return min(max(edns_size, MIN_UDP_SIZE), MAX_MESSAGE_SIZE)


def header_only(data: bytes, rcode: int) -> bytes:
    """A reply with no sections, for queries too broken to echo (FORMERR, NOTIMP)."""
    flags = bytes((0x80 | (data[2] & 0x79), rcode))  # QR, opcode and RD kept
    return data[:2] + flags + b"\x00" * 8


def error_reply(data: bytes, query: Query, rcode: int) -> bytes:
    """A reply echoing the question with ``rcode`` and no records (REFUSED, SERVFAIL, BADVERS)."""
    edns = query.edns
    counts = b"\x00\x01\x00\x00\x00\x00" + (b"\x00\x01" if edns else b"\x00\x00")
    flags = bytes((0x80 | (data[2] & 0x79), (rcode & 0x0F) | (data[3] & 0x10)))
    reply = data[:2] + flags + counts + data[HEADER_LENGTH : query.question_end]
    if edns is not None:
        extended = (rcode >> 4).to_bytes(1, "big")
        reply += (
            b"\x00\x00\x29" + OUR_UDP_SIZE.to_bytes(2, "big") + extended
            + (b"\x00\x80\x00" if edns.do else b"\x00\x00\x00") + b"\x00\x00"
        )
    return reply


def split_records(body: bytes, count: int) -> list[bytes]:
    """The first ``count`` records of a section we encoded (owners are pointers or plain names)."""
    records = []
    offset = 0
    for _ in range(count):
        start = offset
        if body[offset] & 0xC0 == 0xC0:
            offset += 2
        else:
            while body[offset]:
                offset += 1 + body[offset]
            offset += 1
        offset += 10 + _U16.unpack_from(body, offset + 8)[0]
        records.append(body[start:offset])
    return records


def truncate(
    head: bytes, question: bytes, body: bytes, answer_len: int, counts: bytes, opt: bytes,
    limit: int,
) -> bytes:
    """Fit a positive reply into ``limit`` bytes, whole records only (RFC 2181 §9): drop
    additional records that do not fit, then answer records, and set TC only in that case.

    ``head`` is ID and flags; ``counts`` the reply's QDCOUNT..ARCOUNT (no OPT counted).
    """
    ancount, arcount = _U16.unpack_from(counts, 2)[0], _U16.unpack_from(counts, 6)[0]
    room = limit - HEADER_LENGTH - len(question) - len(opt)
    answer = split_records(body[:answer_len], ancount)
    kept = _fill(answer, room)
    truncated = len(kept) < len(answer)
    extra = [] if truncated else _fill(split_records(body[answer_len:], arcount), room - answer_len)
    if truncated:
        head = head[:2] + bytes((head[2] | 0x02, head[3]))
    sections = struct.pack(">HHHH", 1, len(kept), 0, len(extra) + (1 if opt else 0))
    return head + sections + question + b"".join(kept) + b"".join(extra) + opt


def cut(
    head: bytes, question: bytes, body: bytes, ends: array[int], ancount: int, opt: bytes,
    limit: int,
) -> bytes:
    """:func:`truncate` for a body whose record ends are known (``Answer.ends``): the same
    bytes, found by bisection instead of by splitting the body into records."""
    room = limit - HEADER_LENGTH - len(question) - len(opt)
    kept = bisect_right(ends, room, 0, ancount)
    if kept < ancount:  # answer records dropped: no additional ones, and TC
        head = head[:2] + bytes((head[2] | 0x02, head[3]))
        last = kept
    else:
        last = bisect_right(ends, room, ancount)
    sections = _COUNTS.pack(1, kept, 0, last - kept + (1 if opt else 0))
    return b"".join((head, sections, question, body[: ends[last - 1] if last else 0], opt))


def _fill(records: list[bytes], room: int) -> list[bytes]:
    kept = []
    for record in records:
        if len(record) > room:
            break
        kept.append(record)
        room -= len(record)
    return kept



# Our own OPT (no client OPT to mirror, e.g. a reply built from a cached upstream answer).
OPT_RECORDS = (opt_record(OUR_UDP_SIZE, 0), opt_record(OUR_UDP_SIZE, 1))


__all__ = ["FORMERR", "NOTIMP", "Cursor", "Edns", "FormError", "Query", "parse_query"]


def rotate_addresses(reply: bytes, turn: int) -> bytes:
    """``reply`` with the addresses of each A or AAAA RRset in its answer section rotated by
    ``turn`` (CoreDNS ``loadbalance`` on a forwarded or cached reply). Only the RDATA moves,
    among records of one owner, type and length, so every name and compression pointer stays
    where it was, and a CNAME chain stays first. A reply that cannot be read is returned as
    it is; so is any reply but NOERROR."""
    if len(reply) < HEADER_LENGTH or reply[3] & 0x0F or reply[6:8] in (b"\x00\x00", b"\x00\x01"):
        return reply
    try:
        cursor = Cursor(reply, HEADER_LENGTH)
        for _ in range(_U16.unpack_from(reply, 4)[0]):
            cursor.name(allow_pointers=True)
            cursor.take(4)
        groups: dict[bytes, list[int]] = {}  # owner + type + length -> RDATA offsets
        for _ in range(_U16.unpack_from(reply, 6)[0]):
            owner = cursor.name(allow_pointers=True)
            head = cursor.take(10)
            length = _U16.unpack_from(head, 8)[0]
            rtype = _U16.unpack_from(head, 0)[0]
            if rtype in (1, 28):
                groups.setdefault(owner + head[:2] + head[8:], []).append(cursor.offset)
            cursor.take(length)
    except (FormError, struct.error):
        return reply
    rotated = bytearray(reply)
    for key, offsets in groups.items():
        if len(offsets) < 2:
            continue
        size = _U16.unpack_from(key, len(key) - 2)[0]
        values = [reply[at : at + size] for at in offsets]
        shift = turn % len(values)
        for at, value in zip(offsets, values[shift:] + values[:shift], strict=True):
            rotated[at : at + size] = value
    return bytes(rotated)
