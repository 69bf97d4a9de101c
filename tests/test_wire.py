"""Malformed and unusual packets, sent as raw bytes over UDP and TCP, with exact expectations.

The error ladder (SPEC §2.0, §2.19; dnspython's nanonameserver): too short for a header or a
response → no reply; unknown opcode → NOTIMP; malformed → FORMERR (header only); class not
IN → REFUSED; EDNS version not 0 → BADVERS. "No reply" is checked without waiting for a
timeout: a good query sent right after the bad one must be the first thing answered.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from conftest import RunningServer, StartServer, read_exact

GOOD_NAME = "kubernetes.default.svc.cluster.local"
Exchange = Callable[[RunningServer, bytes], "bytes | None"]


def header(
    qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def question(name: str = GOOD_NAME, qtype: int = 1, qclass: int = 1) -> bytes:
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label)
    return wire + b"\x00" + struct.pack(">HH", qtype, qclass)


def good_query(qid: int) -> bytes:
    return header(qid) + question()


def send_udp(server: RunningServer, data: bytes) -> bytes | None:
    """Send ``data``, then a good query; the reply to ``data`` if one came first, else None."""
    with server.udp_socket() as sock:
        sock.send(data)
        sock.send(good_query(0xBEEF))
        first = sock.recv(65535)
        if first[:2] == b"\xbe\xef":
            return None
        second = sock.recv(65535)
        assert second[:2] == b"\xbe\xef", "the good query after it was not answered"
        return first


def send_tcp(server: RunningServer, data: bytes) -> bytes | None:
    """The same over one TCP connection: ``data``, then a good query, pipelined."""
    with server.tcp_socket() as sock:
        good = good_query(0xBEEF)
        sock.sendall(struct.pack(">H", len(data)) + data + struct.pack(">H", len(good)) + good)
        first = read_tcp_message(sock)
        if first[:2] == b"\xbe\xef":
            return None
        second = read_tcp_message(sock)
        assert second[:2] == b"\xbe\xef", "the good query after it was not answered"
        return first


def read_tcp_message(sock: socket.socket) -> bytes:
    (length,) = struct.unpack(">H", read_exact(sock, 2))
    return read_exact(sock, length)


TRANSPORTS = {"udp": send_udp, "tcp": send_tcp}


@pytest.fixture(params=list(TRANSPORTS))
def send(request: pytest.FixtureRequest) -> Exchange:
    exchange: Exchange = TRANSPORTS[request.param]
    return exchange


def rcode_of(reply: bytes) -> int:
    return reply[3] & 0x0F


def counts_of(reply: bytes) -> tuple[int, int, int, int]:
    qd, an, ns, ar = struct.unpack(">HHHH", reply[4:12])
    return qd, an, ns, ar


# -- no reply -------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"\x12", b"\x12\x34\x01\x00\x00", header()[:11]],
                         ids=["1 byte", "5 bytes", "11 bytes"])
def test_shorter_than_a_header_gets_no_reply(
    example: RunningServer, send: Exchange, data: bytes
) -> None:
    assert send(example, data) is None


def test_empty_datagram_gets_no_reply(example: RunningServer) -> None:
    # over TCP an empty message is a zero length prefix, which closes the connection
    assert send_udp(example, b"") is None


def test_a_response_gets_no_reply(example: RunningServer, send: Exchange) -> None:
    assert send(example, header(flags=0x8100) + question()) is None


# -- header-only errors: NOTIMP and FORMERR -------------------------------------------------

@pytest.mark.parametrize("opcode", [2, 4, 5], ids=["STATUS", "NOTIFY", "UPDATE"])
def test_unknown_opcode_is_notimp(example: RunningServer, send: Exchange, opcode: int) -> None:
    reply = send(example, header(qid=0x4321, flags=opcode << 11 | 0x0100) + question())
    assert reply is not None
    assert reply[:2] == b"\x43\x21"
    assert reply[2] & 0x80  # QR
    assert (reply[2] >> 3) & 0x0F == opcode
    assert reply[2] & 0x01  # RD copied
    assert rcode_of(reply) == dns.rcode.NOTIMP
    assert counts_of(reply) == (0, 0, 0, 0)
    assert len(reply) == 12


MALFORMED = {
    "qdcount 0": header(qd=0),
    "qdcount 2": header(qd=2) + question() + question("web.default.svc.cluster.local"),
    "label over 63": header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    "pointer in question": header() + b"\x03web\xc0\x0c\x00\x01\x00\x01",
    "bare pointer": header() + b"\xc0\x0c\x00\x01\x00\x01",
    "name cut short": header() + b"\x0akubernetes\x07def",
    "no qtype": header() + question()[:-4],
    "half a qclass": header() + question()[:-1],
    "name over 255": header() + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",
    "ancount but no answer": header(an=1) + question(),
    "arcount but no record": header(ar=1) + question(),
}


@pytest.mark.parametrize("data", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_is_formerr(example: RunningServer, send: Exchange, data: bytes) -> None:
    reply = send(example, data)
    assert reply is not None
    assert reply[:2] == data[:2]
    assert reply[2] & 0x80
    assert reply[2] & 0x01  # RD copied
    assert not reply[2] & 0x04  # not authoritative for a question it could not read
    assert rcode_of(reply) == dns.rcode.FORMERR
    assert counts_of(reply) == (0, 0, 0, 0)
    assert len(reply) == 12


def test_name_of_exactly_255_octets_is_read(example: RunningServer, send: Exchange) -> None:
    """The limit is inclusive: 255 octets parse (and, outside every zone, are REFUSED)."""
    name = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"a" * 61 + b"\x00"
    assert len(name) == 255
    reply = send(example, header() + name + b"\x00\x01\x00\x01")
    assert reply is not None
    assert rcode_of(reply) == dns.rcode.REFUSED
    assert reply[12:] == name + b"\x00\x01\x00\x01"


# -- class, EDNS ----------------------------------------------------------------------------

@pytest.mark.parametrize("rdclass", ["CH", "ANY", "HS"])
def test_class_other_than_in_is_refused(
    example: RunningServer, rdclass: str, transport: str
) -> None:
    query = dns.message.make_query(GOOD_NAME, "A", rdclass)
    reply = example.exchange(query, tcp=transport == "tcp")
    assert reply.rcode() == dns.rcode.REFUSED
    assert reply.question == query.question
    assert not reply.flags & dns.flags.AA
    assert not reply.answer and not reply.authority and not reply.additional


@pytest.fixture(params=["udp", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_opt_is_echoed(example: RunningServer, transport: str) -> None:
    reply = example.query(GOOD_NAME, "A", tcp=transport == "tcp", use_edns=0)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.edns == 0
    assert not reply.ednsflags & dns.flags.DO
    assert [rrset.to_text() for rrset in reply.answer] == [f"{GOOD_NAME}. 5 IN A 10.96.0.1"]


def test_edns_reply_mirrors_the_client_udp_size(example: RunningServer) -> None:
    """CoreDNS reuses the request's OPT: version 0, the client's UDP size (SPEC §2.19)."""
    for payload in (1232, 4096, 1400):
        reply = example.query(GOOD_NAME, "A", use_edns=0, payload=payload)
        assert reply.edns == 0
        assert reply.payload == payload


def test_edns_version_1_is_badvers(example: RunningServer, transport: str) -> None:
    query = dns.message.make_query(GOOD_NAME, "A", use_edns=1)
    reply = example.exchange(query, tcp=transport == "tcp")
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0
    assert reply.question == query.question
    assert not reply.answer and not reply.authority


def test_do_bit_is_echoed(example: RunningServer, transport: str) -> None:
    reply = example.query(GOOD_NAME, "A", tcp=transport == "tcp", want_dnssec=True)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.edns == 0
    assert reply.ednsflags & dns.flags.DO
    assert len(reply.answer) == 1


def test_do_bit_is_echoed_on_negative_answers(example: RunningServer) -> None:
    reply = example.query("nope.default.svc.cluster.local", "A", want_dnssec=True)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.ednsflags & dns.flags.DO
    assert len(reply.authority) == 1


def test_two_opt_records_are_formerr(example: RunningServer, send: Exchange) -> None:
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    reply = send(example, header(ar=2) + question() + opt + opt)
    assert reply is not None
    assert rcode_of(reply) == dns.rcode.FORMERR
    assert counts_of(reply) == (0, 0, 0, 0)


def test_opt_owner_not_root_is_formerr(example: RunningServer, send: Exchange) -> None:
    opt = b"\x01a\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    reply = send(example, header(ar=1) + question() + opt)
    assert reply is not None
    assert rcode_of(reply) == dns.rcode.FORMERR


def test_cookie_option_is_answered_normally(example: RunningServer, transport: str) -> None:
    cookie = dns.edns.CookieOption(b"\x01\x02\x03\x04\x05\x06\x07\x08", b"")
    reply = example.query(GOOD_NAME, "A", tcp=transport == "tcp", use_edns=0, options=[cookie])
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.edns == 0
    assert [rrset.to_text() for rrset in reply.answer] == [f"{GOOD_NAME}. 5 IN A 10.96.0.1"]


def test_non_opt_additional_record_is_ignored(example: RunningServer, send: Exchange) -> None:
    extra = b"\x00\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\x0a\x00\x00\x01"  # . A 10.0.0.1
    reply = send(example, header(ar=1) + question() + extra)
    assert reply is not None
    assert rcode_of(reply) == dns.rcode.NOERROR
    assert counts_of(reply) == (1, 1, 0, 0)


# -- the header and question of a reply ------------------------------------------------------

@pytest.mark.parametrize("rd", [True, False])
@pytest.mark.parametrize(
    "name", ["KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.LoCaL", "NoPe.Default.svc.CLUSTER.local"]
)
def test_reply_echoes_id_question_and_rd(
    example: RunningServer, send: Exchange, rd: bool, name: str
) -> None:
    flags = 0x0100 if rd else 0x0000
    query = header(qid=0xA5A5, flags=flags) + question(name)
    reply = send(example, query)
    assert reply is not None
    assert reply[:2] == b"\xa5\xa5"
    assert reply[12 : len(query)] == query[12:]  # the question, byte for byte, case kept
    assert reply[2] & 0x80  # QR
    assert reply[2] & 0x04  # AA
    assert bool(reply[2] & 0x01) == rd
    assert not reply[3] & 0x80  # RA
    assert not reply[2] & 0x02  # TC
    assert reply[2] & 0x78 == 0  # opcode QUERY
    assert counts_of(reply)[0] == 1


def test_reply_owner_echoes_query_case(example: RunningServer, send: Exchange) -> None:
    name = "KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.LoCaL"
    reply = send(example, header() + question(name))
    assert reply is not None
    message = dns.message.from_wire(reply)
    (rrset,) = message.answer
    assert rrset.name.to_text() == name + "."


# -- truncation ------------------------------------------------------------------------------

BIG_ENDPOINTS = 80
BIG_NAME = "big.default.svc.cluster.local"
BIG_IPS = {f"10.244.10.{i}" for i in range(1, BIG_ENDPOINTS + 1)}


FIVE_NAME = "five.default.svc.cluster.local"
FIVE_IPS = [f"10.244.20.{i}" for i in range(1, 6)]


def headless_manifest(name: str, ips: list[str]) -> str:
    endpoints = "\n".join(f"  - addresses: [{ip}]\n    conditions: {{ready: true}}" for ip in ips)
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
        "spec:\n  clusterIP: None\n  ports: [{name: http, port: 80, protocol: TCP}]\n"
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata:\n  name: {name}-1\n  namespace: default\n"
        f"  labels: {{kubernetes.io/service-name: {name}}}\n"
        f"addressType: IPv4\nendpoints:\n{endpoints}\n"
        "ports: [{name: http, port: 80, protocol: TCP}]\n"
    )


@pytest.fixture(scope="module")
def big(dns_server: StartServer, tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    """A headless Service with 80 ready endpoints (coredns/coredns#5362), and one with 5."""
    path: Path = tmp_path_factory.mktemp("big") / "big.yaml"
    big_ips = sorted(BIG_IPS, key=lambda ip: int(ip.rsplit(".", 1)[1]))
    path.write_text(
        headless_manifest("big", big_ips) + "---\n" + headless_manifest("five", FIVE_IPS)
    )
    return dns_server(path)


def _udp_wire(server: RunningServer, query: dns.message.Message) -> bytes:
    with server.udp_socket() as sock:
        sock.send(query.to_wire())
        return sock.recv(65535)


def test_udp_without_edns_truncates_to_512_whole_records(big: RunningServer) -> None:
    query = dns.message.make_query(BIG_NAME, "A")
    wire = _udp_wire(big, query)
    assert len(wire) <= 512
    reply = dns.message.from_wire(wire, one_rr_per_rrset=True)  # raises on a partial record
    assert reply.id == query.id
    assert reply.flags & dns.flags.TC
    assert reply.rcode() == dns.rcode.NOERROR
    got = [rdata.address for rrset in reply.answer for rdata in rrset]
    assert got, "a truncated reply keeps the records that fit"
    assert len(got) == len(set(got))
    assert set(got) <= BIG_IPS
    # CoreDNS's binary search may leave one record's room unused, never more (16 = one A)
    assert len(wire) + 2 * 16 > 512, "far fewer records than fit"
    assert not reply.additional and not reply.authority


def test_udp_with_small_edns_truncates_too(big: RunningServer) -> None:
    query = dns.message.make_query(BIG_NAME, "A", use_edns=0, payload=512)
    wire = _udp_wire(big, query)
    assert len(wire) <= 512
    reply = dns.message.from_wire(wire, one_rr_per_rrset=True)
    assert reply.flags & dns.flags.TC
    assert reply.edns == 0  # the OPT record stays
    assert 0 < len(reply.answer) < BIG_ENDPOINTS


def test_udp_with_edns_4096_fits(big: RunningServer) -> None:
    query = dns.message.make_query(BIG_NAME, "A", use_edns=0, payload=4096)
    wire = _udp_wire(big, query)
    reply = dns.message.from_wire(wire, one_rr_per_rrset=True)
    assert not reply.flags & dns.flags.TC
    assert {rdata.address for rrset in reply.answer for rdata in rrset} == BIG_IPS
    assert len(reply.answer) == BIG_ENDPOINTS


def test_tcp_carries_the_whole_answer(big: RunningServer) -> None:
    reply = big.query(BIG_NAME, "A", tcp=True)
    assert not reply.flags & dns.flags.TC
    assert len(reply.answer) == BIG_ENDPOINTS
    assert {rdata.address for rrset in reply.answer for rdata in rrset} == BIG_IPS


def test_tcp_srv_carries_answer_and_additional(big: RunningServer) -> None:
    reply = big.query(BIG_NAME, "SRV", tcp=True)
    assert not reply.flags & dns.flags.TC
    assert len(reply.answer) == BIG_ENDPOINTS
    weights = {rdata.weight for rrset in reply.answer for rdata in rrset}
    assert weights == {100 // BIG_ENDPOINTS}
    assert len(reply.additional) == BIG_ENDPOINTS


def test_udp_srv_drops_records_whole_and_sets_tc(big: RunningServer) -> None:
    query = dns.message.make_query(BIG_NAME, "SRV")
    wire = _udp_wire(big, query)
    assert len(wire) <= 512
    reply = dns.message.from_wire(wire, one_rr_per_rrset=True)
    assert reply.flags & dns.flags.TC
    assert 0 < len(reply.answer) < BIG_ENDPOINTS
    for rrset in reply.answer:
        assert rrset.rdtype == dns.rdatatype.SRV


def test_udp_srv_keeps_the_additional_records_that_fit(big: RunningServer) -> None:
    """Truncation compresses first and keeps every record that fits (SPEC §2.19).

    CoreDNS's ``Scrub``/miekg ``Truncate`` turn on name compression when a reply is over the
    limit: the five SRV records (62 octets each) and their five A records (16 octets each, the
    owner a pointer to the SRV target) fit in 438 octets, so nothing is dropped and TC is clear.
    """
    query = dns.message.make_query(FIVE_NAME, "SRV")
    wire = _udp_wire(big, query)
    assert len(wire) <= 512
    reply = dns.message.from_wire(wire, one_rr_per_rrset=True)
    assert not reply.flags & dns.flags.TC
    assert len(reply.answer) == len(FIVE_IPS)
    additional = sorted(rdata.address for rrset in reply.additional for rdata in rrset)
    assert additional == FIVE_IPS


def test_srv_additional_complete_with_edns(big: RunningServer) -> None:
    reply = big.query(FIVE_NAME, "SRV", use_edns=0, payload=1232)
    assert not reply.flags & dns.flags.TC
    assert len(reply.answer) == len(FIVE_IPS)
    assert sorted(r.address for rrset in reply.additional for r in rrset) == FIVE_IPS
