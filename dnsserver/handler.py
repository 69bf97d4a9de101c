"""One query in, one reply out: the function UDP and TCP share.

:meth:`Handler.handle` is the hot path. For the common query (standard opcode, one question
of class IN, no compression, at most an OPT record) it reads the header and question with
slices, looks the lower-cased name up in the zone's index of pre-encoded answers, and joins the
query's ID and question (so the client's case comes back) with the stored bytes. No DNS
objects are made, nothing is awaited, nothing is logged. Anything else takes
:meth:`Handler._slow_path`, which parses carefully and climbs the error ladder: too short to
have a header → dropped; a reply → dropped; unknown opcode → NOTIMP; malformed → FORMERR;
class not IN → REFUSED; EDNS version not 0 → BADVERS; a bug → SERVFAIL, logged once.
"""

from __future__ import annotations

import logging
import traceback

from dnsserver import wire
from zones.records import NOTIMP, REFUSED, SERVFAIL, Answer
from zones.zone import Zone

log = logging.getLogger("dnsserver")

_PLAIN_QUERY_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00"  # QD=1, AN=0, NS=0, high byte of AR=0


class Handler:
    """Answers queries from a :class:`~zones.zone.Zone`."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self._index = zone.index  # the same dict for the zone's whole life
        self._logged_bugs: set[tuple[str, str, int]] = set()

    def handle(self, data: bytes, tcp: bool = False) -> bytes | None:
        """The reply to ``data``, or None to send nothing. Never raises."""
        try:
            reply = self._fast_path(data, tcp)
            if reply is None:
                reply = self._slow_path(data, tcp)
            return reply
        except Exception as exc:  # a bug: answer SERVFAIL, log the first of its kind
            self._log_bug(exc)
            return _servfail(data)

    def _fast_path(self, data: bytes, tcp: bool) -> bytes | None:
        if len(data) < 17 or data[2] & 0xF8 or data[4:11] != _PLAIN_QUERY_COUNTS:
            return None
        end = 12
        length = data[12]
        while length:
            if length > 63:
                return None
            end += length + 1
            length = data[end]  # IndexError on a short name is caught by handle()
        question_end = end + 5
        if end > 267 or data[end + 3 : question_end] != b"\x00\x01":  # >255 octets, or not IN
            return None
        arcount = data[11]
        if arcount == 0:
            if question_end != len(data):
                return None
            size = None
            do = 0
        elif (
            arcount == 1
            and data[question_end : question_end + 3] == b"\x00\x00\x29"
            and data[question_end + 6] == 0  # EDNS version 0
            and question_end + 11 + (data[question_end + 9] << 8 | data[question_end + 10])
            == len(data)
        ):
            size = data[question_end + 3] << 8 | data[question_end + 4]
            do = data[question_end + 7] >> 7
        else:
            return None
        qtype = data[end + 1] << 8 | data[end + 2]
        key = data[12 : end + 1].lower()
        node = self._index.get(key)
        answer = node[qtype] if node is not None else self.zone.lookup_missing(key, qtype)
        if answer is None:
            return None
        return self._reply(data, question_end, answer, size, do, tcp)

    def _reply(
        self, data: bytes, question_end: int, answer: Answer, size: int | None, do: int, tcp: bool
    ) -> bytes:
        _rcode, aa, counts, counts_edns, body, soa, ancount, answer_len = answer
        head = data[:2] + bytes((0x80 | aa | (data[2] & 0x01), answer.rcode | (data[3] & 0x10)))
        question = data[12:question_end]
        if soa is not None:
            body = soa.authority_for(question_end - 16)
        if size is None:
            reply = b"".join((head, counts, question, body))
            opt = b""
        else:
            opt = wire.OPT_RECORDS[do]
            reply = b"".join((head, counts_edns, question, body, opt))
        limit = wire.MAX_MESSAGE_SIZE if tcp else wire.udp_limit(size)
        if len(reply) > limit:
            return wire.truncate(head, question, body[:answer_len], ancount, opt, limit)
        return reply

    def _slow_path(self, data: bytes, tcp: bool) -> bytes | None:
        if len(data) < wire.HEADER_LENGTH or data[2] & 0x80:
            return None  # no header to answer, or a response: never reply to those
        if data[2] & 0x78:
            return wire.header_only(data, NOTIMP)
        try:
            query = wire.parse_query(data)
        except wire.FormError:
            return wire.header_only(data, wire.FORMERR)
        edns = query.edns
        if edns is not None and edns.version != 0:
            return wire.error_reply(data, query, wire.BADVERS)
        if query.qclass != 1:
            return wire.error_reply(data, query, REFUSED)
        answer = self.zone.lookup(query.name.lower(), query.qtype)
        if answer is None:  # outside every served zone
            return wire.error_reply(data, query, REFUSED)
        size = edns.udp_size if edns is not None else None
        return self._reply(data, query.question_end, answer, size, int(edns.do) if edns else 0, tcp)

    def _log_bug(self, exc: Exception) -> None:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        signature = (type(exc).__name__, frame.filename, frame.lineno or 0)
        if signature not in self._logged_bugs:
            self._logged_bugs.add(signature)
            log.error("bug while answering a query; answering SERVFAIL", exc_info=exc)


def _servfail(data: bytes) -> bytes | None:
    if len(data) < wire.HEADER_LENGTH or data[2] & 0x80:
        return None
    return wire.header_only(data, SERVFAIL)
