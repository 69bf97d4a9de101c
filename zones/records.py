"""Record sets per owner name, and their encoding into ready-to-send answer sections.

A :class:`RRSets` says what one name holds, independent of the question; :func:`encode` turns it
into an :class:`Answer` for one qtype: the exact bytes that follow the question in a reply. The
owner of every answer record is the pointer ``0xC00C`` to the question name, so the reply echoes
the client's spelling of the name (0x20 case randomisation) without any per-query work.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

import dnslib

from zones import names

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41
IXFR, AXFR, ANY = 251, 252, 255
# The only types a name of ours can hold records of (SOA aside, at the apex): every other type
# is NODATA wherever the name exists, known without looking at the name's data.
RECORD_QTYPES = frozenset({A, NS, CNAME, PTR, TXT, AAAA, SRV})
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
CLASS_IN = 1
AA = 0x04

QNAME_POINTER = b"\xc0\x0c"
DNS_VERSION = "1.1.0"
DNS_VERSION_TTL = 28800
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400
_RR_HEADER = struct.Struct(">HHIH")
_COUNTS = struct.Struct(">HHHH")
# A body this long may not fit in a 512-byte UDP reply (header 12, the longest question 259,
# an OPT 11): longer answers keep where each record ends, so cutting them costs a bisection.
CUTTABLE_BODY = 512 - 12 - 259 - 11


@dataclass(frozen=True, slots=True)
class Srv:
    """One SRV record and the addresses of its target (for the additional section)."""

    weight: int
    port: int
    target: str
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RRSets:
    """Everything one owner name holds. An empty one is a name that exists with no data."""

    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    srv: tuple[Srv, ...] = ()
    ptr: tuple[str, ...] = ()
    cname: str = ""
    txt: tuple[str, ...] = ()
    ns: tuple[Srv, ...] = ()  # NS targets reuse Srv for their glue addresses
    apex: bool = False
    txt_ttl: int = DNS_VERSION_TTL


class Answer(NamedTuple):
    """The reply to one (name, qtype), minus header ID/flags and the question.

    ``counts``/``counts_edns`` are QDCOUNT..ARCOUNT without and with an OPT record. When ``soa``
    is set the answer is negative and the authority section is ``soa.authority`` at send time,
    so the SOA serial stays current without rebuilding cached answers.
    """

    rcode: int
    aa: int  # 0x04 (the AA bit of the flags' first byte) when the zone's data answered
    counts: bytes
    counts_edns: bytes
    body: bytes
    soa: SoaRecord | None
    ancount: int
    answer_len: int
    variants: tuple[bytes, ...] = ()  # loadbalance: bodies with the answer records rotated
    chase: str = ""  # a CNAME to a name outside the zones, whose records the server must fetch
    steps: tuple[str, ...] = ()  # autopath: names outside the zones still to walk, in order
    # The answer is not complete: the server finishes it upstream (``chase`` or ``steps``), so
    # the fast path leaves it to the slow path. A field, not a property: the fast path reads it.
    finish_upstream: bool = False
    # Bodies longer than CUTTABLE_BODY: the offset just past each record (answer records, then
    # additional ones), one array per variant (or one for ``body``), so that truncation finds
    # the records that fit by bisection instead of splitting the body on every reply.
    ends: tuple[array[int], ...] = ()


MAX_ROTATIONS = 8


class SoaRecord:
    """The current SOA of one zone; mutable so that negative answers always carry the new serial.

    Its owner and the zone in its MNAME/RNAME are pointers to the zone's labels inside the
    question, so they come back in the client's case, as CoreDNS builds them from the qname.
    """

    __slots__ = ("_answer", "_by_offset", "_numbers", "origin", "serial", "ttl", "zone_length")

    def __init__(self, origin: str, ttl: int, serial: int) -> None:
        self.origin = origin
        self.zone_length = len(names.to_wire(origin))
        self.ttl = ttl
        self.serial = serial
        self._numbers = b""
        self._by_offset: dict[int, bytes] = {}
        self._answer: Answer | None = None
        self.set_serial(serial)

    def set_serial(self, serial: int) -> None:
        self.serial = serial
        self._numbers = struct.pack(">IIIII", serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, self.ttl)
        self._by_offset = {}
        self._answer = None

    @property
    def answer(self) -> Answer:
        """The answer to an SOA query at the apex, kept until the serial changes."""
        if self._answer is None:
            self._answer = positive([self.authority_for(self.zone_length)])
        return self._answer

    def authority_for(self, name_length: int) -> bytes:
        """The SOA record for a reply whose question name is ``name_length`` octets long."""
        offset = 12 + name_length - self.zone_length
        record = self._by_offset.get(offset)
        if record is None:
            zone = (0xC000 | offset).to_bytes(2, "big")
            rdata = b"\x02ns\x03dns" + zone + b"\x0ahostmaster" + zone + self._numbers
            record = rr(zone, SOA, min(self.ttl, 300), rdata)
            self._by_offset[offset] = record
        return record


# The records of an in-zone CNAME target (empty: it has none), or None for a name outside the
# served zones, which the client (or a forwarder) resolves.
Chase = Callable[[str, int], "list[bytes] | None"]


@dataclass(frozen=True, slots=True)
class Origin:
    """One served zone and its shared negative answers."""

    name: str
    ttl: int
    soa: SoaRecord
    nodata: Answer
    nxdomain: Answer
    servfail: Answer
    refused: Answer
    loadbalance: bool = False

    @classmethod
    def create(cls, name: str, ttl: int, serial: int, loadbalance: bool = False) -> Origin:
        soa = SoaRecord(name, ttl, serial)
        return cls(
            name=name, ttl=ttl, soa=soa,
            nodata=negative(NOERROR, soa), nxdomain=negative(NXDOMAIN, soa),
            servfail=negative(SERVFAIL, soa), refused=bare(REFUSED), loadbalance=loadbalance,
        )


def negative(rcode: int, soa: SoaRecord) -> Answer:
    return Answer(rcode, AA, _COUNTS.pack(1, 0, 1, 0), _COUNTS.pack(1, 0, 1, 1), b"", soa, 0, 0)


def bare(rcode: int) -> Answer:
    """An answer with no records at all (REFUSED, FORMERR, ...)."""
    return Answer(rcode, 0, _COUNTS.pack(1, 0, 0, 0), _COUNTS.pack(1, 0, 0, 1), b"", None, 0, 0)


def positive(
    answer: list[bytes], additional: Iterable[bytes] = (), name_length: int | None = None,
    rotate: bool = False,
) -> Answer:
    """A NOERROR answer. Given the question name's length, the owner of each additional record
    becomes a pointer to the same name written in an answer's RDATA (an SRV target), as a
    compressing server would: SRV answers with their glue then fit in 512 bytes far more often.
    """
    extra = list(dict.fromkeys(additional))
    answer_bytes = b"".join(answer)
    if name_length is not None:
        extra = [_compress_owner(r, answer_bytes, 12 + name_length + 4) for r in extra]
    body = answer_bytes + b"".join(extra)
    cuttable = len(body) > CUTTABLE_BODY
    variants: tuple[bytes, ...] = ()
    ends: tuple[array[int], ...] = (_ends(answer + extra),) if cuttable else ()
    # CoreDNS ``loadbalance`` shuffles the address records of each reply and keeps a CNAME
    # chain first (glibc reads the chain before the addresses); a few rotations, encoded now
    # and taken in turn, spread clients as well at no per-query cost. Additional records keep
    # their pointers.
    chain = [r for r in answer if _record_type(r) not in (A, AAAA)] if rotate else []
    addresses = answer[len(chain):]
    if rotate and len(addresses) > 1 and answer[: len(chain)] == chain:
        steps = min(len(addresses), MAX_ROTATIONS)
        starts = [i * len(addresses) // steps for i in range(steps)]
        rotations = [chain + addresses[s:] + addresses[:s] + extra for s in starts]
        variants = tuple(b"".join(records) for records in rotations)
        if cuttable:  # records of one length (A, AAAA) end at the same offsets in every turn
            same = len({len(r) for r in addresses}) == 1
            ends = ends * steps if same else tuple(_ends(records) for records in rotations)
    return Answer(
        NOERROR,
        AA,
        _COUNTS.pack(1, len(answer), 0, len(extra)),
        _COUNTS.pack(1, len(answer), 0, len(extra) + 1),
        body, None, len(answer), len(answer_bytes), variants, ends=ends,
    )


def _record_type(record: bytes) -> int:
    """The TYPE of one encoded record: after its owner (labels, or a pointer)."""
    position = 0
    while record[position] and record[position] < 0xC0:
        position += 1 + record[position]
    position += 2 if record[position] >= 0xC0 else 1
    return int.from_bytes(record[position : position + 2], "big")


def _ends(records: list[bytes]) -> array[int]:
    return array("I", accumulate(len(r) for r in records))


def _compress_owner(record: bytes, answer: bytes, answer_offset: int) -> bytes:
    """``record`` with its (uncompressed) owner replaced by a pointer into ``answer``.

    Any byte-exact copy of a name, root label included, decodes to that name, so the first
    occurrence found is a correct pointer target.
    """
    end = 0
    while record[end]:
        end += 1 + record[end]
    found = answer.find(record[: end + 1])
    if found < 0 or answer_offset + found >= 0x4000:
        return record
    return (0xC000 | (answer_offset + found)).to_bytes(2, "big") + record[end + 1 :]


def without_records(qtype: int, origin: Origin, apex: bool) -> Answer | None:
    """The answer for ``qtype`` at an existing name when it does not depend on the name's
    records (None for :data:`RECORD_QTYPES`): transfers are refused, SOA is answered at the
    apex only, and every other type is NODATA."""
    if qtype in RECORD_QTYPES:
        return None
    if qtype in (AXFR, IXFR):
        return origin.refused
    if qtype == SOA and apex:
        return origin.soa.answer
    return origin.nodata


def encode(
    rrsets: RRSets, qtype: int, origin: Origin, chase: Chase | None = None,
    name_length: int | None = None,
) -> Answer:
    """The answer for ``qtype`` at a name holding ``rrsets`` (NODATA when it holds none);
    ``name_length``, the question name's wire length, lets additional records be compressed."""
    fixed = without_records(qtype, origin, rrsets.apex)
    if fixed is not None:
        return fixed
    answer, additional = section_records(rrsets, qtype, origin.ttl, QNAME_POINTER, chase)
    if not answer:
        return origin.nodata
    if rrsets.cname and qtype in (A, AAAA) and len(answer) == 1:
        # A CNAME to a name outside the zones: the server finishes the answer upstream.
        return positive(answer)._replace(chase=rrsets.cname, finish_upstream=True)
    rotate = origin.loadbalance and qtype in (A, AAAA)
    return positive(answer, additional, name_length, rotate)


def section_records(
    rrsets: RRSets, qtype: int, ttl: int, owner: bytes, chase: Chase | None = None
) -> tuple[list[bytes], list[bytes]]:
    """The answer and additional records of ``rrsets`` for ``qtype``, owned by ``owner``."""
    if rrsets.cname:
        if qtype == CNAME or (qtype in (A, AAAA) and not names.is_ip(rrsets.cname)):
            records = [rr(owner, CNAME, ttl, name_wire(rrsets.cname))]
            chased = chase(rrsets.cname, qtype) if qtype != CNAME and chase else None
            if chased is None:
                return records, []
            # CoreDNS answers an in-zone target that has no such records with NODATA.
            return (records + chased if chased else []), []
        return [], []
    if qtype == A:
        return [rr(owner, A, ttl, address_rdata(ip)) for ip in rrsets.a], []
    if qtype == AAAA:
        return [rr(owner, AAAA, ttl, address_rdata(ip)) for ip in rrsets.aaaa], []
    if qtype == SRV:
        answer = [
            rr(owner, SRV, ttl, struct.pack(">HHH", 0, s.weight, s.port) + name_wire(s.target))
            for s in rrsets.srv
        ]
        return answer, glue(rrsets.srv, ttl)
    if qtype == PTR:
        return [rr(owner, PTR, ttl, name_wire(target)) for target in rrsets.ptr], []
    if qtype == TXT:
        return [rr(owner, TXT, rrsets.txt_ttl, txt_rdata(text)) for text in rrsets.txt], []
    if qtype == NS:
        return [rr(owner, NS, ttl, name_wire(n.target)) for n in rrsets.ns], glue(rrsets.ns, ttl)
    return [], []


def glue(targets: Iterable[Srv], ttl: int) -> list[bytes]:
    """A/AAAA records for SRV or NS targets, one per (target, address)."""
    return [
        rr(names.to_wire(t.target), AAAA if ":" in ip else A, ttl, address_rdata(ip))
        for t in targets
        for ip in t.addresses
    ]


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return owner + _RR_HEADER.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata


def name_wire(name: str) -> bytes:
    buffer = dnslib.DNSBuffer()
    buffer.encode_name_nocompress(dnslib.DNSLabel(name))
    return bytes(buffer.data)


def address_rdata(ip: str) -> bytes:
    record = dnslib.AAAA(ip) if ":" in ip else dnslib.A(ip)
    buffer = dnslib.DNSBuffer()
    record.pack(buffer)
    return bytes(buffer.data)


def txt_rdata(text: str) -> bytes:
    buffer = dnslib.DNSBuffer()
    dnslib.TXT(text).pack(buffer)
    return bytes(buffer.data)


def srv_weight(entries: int) -> int:
    """CoreDNS/SkyDNS weight: 100 split evenly over the entries before de-duplication."""
    return max(1, 100 // entries) if entries else 100

