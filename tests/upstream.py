"""A small real upstream DNS server for tests: UDP and TCP on one loopback port.

``FakeUpstream(records, soa=...)`` serves zone-file lines (``"www.example.com. 300 IN A
192.0.2.1"``, parsed by dnslib) from its own event loop in a background thread, so it works
under synchronous tests and next to a test's own ``asyncio.run``. Answers: the records of the
name and type (following CNAMEs inside the zone), NODATA for names that exist (or have names
below them) without that type, NXDOMAIN otherwise; the SOA goes in the authority section of
both when one is given. Replies carry RA=1, AA=0 like a recursive resolver's, and an OPT
record when the query had one. UDP replies larger than the client allows (512 bytes, or its
EDNS size) are truncated to header + question with TC=1.

Switches, settable at any time from the test thread:

- ``truncate_udp``: every UDP reply is TC=1 with no records (forces the TCP retry);
- ``delay``: seconds before each reply is sent (other queries are not held up);
- ``drop``: no reply at all (the queries are still counted);
- ``servfail``: every reply is SERVFAIL;
- ``spoof``: before each real UDP reply, send replies that must be ignored (wrong ID, wrong
  question name, wrong qtype, not a response, a runt), each saying ``6.6.6.6``;
- ``lowercase``: the reply's question (and owners) are lower-cased, like a server that does not
  echo 0x20 case.

Counters: ``queries["udp"]``, ``queries["tcp"]``, ``log`` (transport, qname, qtype name) and
``edns`` ((UDP size, DO) or None per query).
``stop()`` closes the port; ``start()`` opens the same port again (an upstream coming back).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType

import dnslib

SPOOF_ADDRESS = "6.6.6.6"


class FakeUpstream:
    def __init__(
        self, records: Iterable[str] = (), *, soa: str | None = None, host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.records: dict[str, list[dnslib.RR]] = {}
        for line in records:
            for rr in dnslib.RR.fromZone(line):
                self.records.setdefault(str(rr.rname).lower(), []).append(rr)
        self.soa = dnslib.RR.fromZone(soa)[0] if soa else None
        self.truncate_udp = False
        self.delay = 0.0
        self.drop = False
        self.servfail = False
        self.spoof = False
        self.lowercase = False
        self.queries = {"udp": 0, "tcp": 0}
        self.log: list[tuple[str, str, str]] = []
        self.edns: list[tuple[int, bool] | None] = []  # per query: (UDP size, DO) or None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Transport] = set()

    # -- life cycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: what a Forwarder or resolv.conf line takes."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> FakeUpstream:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake upstream", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), loop).result(timeout=5)
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._tcp = await loop.create_server(
            lambda: _TcpProtocol(self), self.host, self.port, family=family, reuse_address=True
        )
        self.port = self._tcp.sockets[0].getsockname()[1]
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.host, self.port), family=family
        )

    async def _close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for connection in list(self._connections):
                connection.close()
            await self._tcp.wait_closed()
        self._udp = self._tcp = None

    # -- answering --------------------------------------------------------------------------

    def replies(self, data: bytes, transport: str) -> list[tuple[float, bytes]]:
        """What to send for ``data``: (delay, bytes) pairs, in order; empty to send nothing."""
        try:
            request = dnslib.DNSRecord.parse(data)
        except Exception:
            return []
        if request.header.qr or not request.questions:
            return []
        self.queries[transport] += 1
        question = request.q
        self.log.append((transport, str(question.qname), dnslib.QTYPE.get(question.qtype)))
        opt = [rr for rr in request.ar if rr.rtype == dnslib.QTYPE.OPT]
        self.edns.append((opt[0].rclass, bool(opt[0].ttl & 0x8000)) if opt else None)
        if self.drop:
            return []
        reply = self.answer(request)
        wire = reply.pack()
        if transport == "udp":
            limit = max(opt[0].rclass, 512) if opt else 512
            if self.truncate_udp or len(wire) > limit:
                reply.header.tc = 1
                reply.rr, reply.auth = [], []
                reply.ar = [rr for rr in reply.ar if rr.rtype == dnslib.QTYPE.OPT]
                wire = reply.pack()
        sends = []
        if self.spoof and transport == "udp":
            sends = [(0.0, fake) for fake in self.spoofs(request)]
        sends.append((self.delay if not sends else max(self.delay, 0.05), wire))
        return sends

    def answer(self, request: dnslib.DNSRecord) -> dnslib.DNSRecord:
        question = request.q
        qname = question.qname
        if self.lowercase:
            qname = dnslib.DNSLabel(str(qname).lower())
        header = dnslib.DNSHeader(id=request.header.id, qr=1, aa=0, ra=1, rd=request.header.rd)
        question_out = dnslib.DNSQuestion(qname, question.qtype, question.qclass)
        reply = dnslib.DNSRecord(header, q=question_out)
        if any(rr.rtype == dnslib.QTYPE.OPT for rr in request.ar):
            reply.add_ar(dnslib.EDNS0(udp_len=1232))
        if self.servfail:
            reply.header.rcode = dnslib.RCODE.SERVFAIL
            return reply
        name, owner = str(qname).lower(), qname
        for _ in range(8):  # follow CNAMEs inside the zone
            rrsets = self.records.get(name, [])
            matching = [
                rr for rr in rrsets if question.qtype in (rr.rtype, 255)
            ]
            cnames = [rr for rr in rrsets if rr.rtype == dnslib.QTYPE.CNAME]
            if matching:
                for rr in matching:
                    reply.add_answer(dnslib.RR(owner, rr.rtype, rr.rclass, rr.ttl, rr.rdata))
                return reply
            if cnames and question.qtype != dnslib.QTYPE.CNAME:
                cname = cnames[0]
                reply.add_answer(
                    dnslib.RR(owner, cname.rtype, cname.rclass, cname.ttl, cname.rdata)
                )
                owner = cname.rdata.label
                name = str(owner).lower()
                continue
            break
        exists = name in self.records or any(known.endswith("." + name) for known in self.records)
        if not exists and not reply.rr:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
        if self.soa is not None and not reply.rr:
            reply.add_auth(self.soa)
        return reply

    def spoofs(self, request: dnslib.DNSRecord) -> list[bytes]:
        question = request.q

        def fake(*, qid: int, qname: str | dnslib.DNSLabel, qtype: int, qr: int = 1) -> bytes:
            header = dnslib.DNSHeader(id=qid, qr=qr, ra=1, rd=1)
            record = dnslib.DNSRecord(header, q=dnslib.DNSQuestion(qname, qtype))
            record.add_answer(dnslib.RR(qname, qtype, rdata=dnslib.A(SPOOF_ADDRESS), ttl=60))
            return bytes(record.pack())

        qid = request.header.id
        return [
            fake(qid=(qid + 1) & 0xFFFF, qname=question.qname, qtype=question.qtype),
            fake(qid=qid, qname="evil." + str(question.qname), qtype=question.qtype),
            fake(qid=qid, qname=question.qname, qtype=question.qtype ^ 0x40),
            fake(qid=qid, qname=question.qname, qtype=question.qtype, qr=0),
            qid.to_bytes(2, "big") + b"\x81",
        ]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: FakeUpstream) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        for delay, reply in self.server.replies(data, "udp"):
            loop.call_later(delay, self._send, reply, addr)

    def _send(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # a client that went away


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, server: FakeUpstream) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._connections.add(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while len(self.buffer) >= 2:
            length = int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) < 2 + length:
                return
            message, self.buffer = self.buffer[2 : 2 + length], self.buffer[2 + length :]
            for delay, reply in self.server.replies(message, "tcp"):
                loop.call_later(delay, self._send, reply)

    def _send(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(len(reply).to_bytes(2, "big") + reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server._connections.discard(self.transport)
        self.transport = None


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback UDP port with nothing listening on it (bound and closed again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    yield port
