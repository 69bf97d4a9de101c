"""UDP and TCP listeners: pipelining, idle timeout, broken streams, several addresses (RFC 7766)."""

from __future__ import annotations

import socket
import struct
import time

import dns.message
import dns.rcode
import pytest
from conftest import EXAMPLE, RunningServer, StartServer, closed_by_peer, read_reply

NAMES = [
    ("kubernetes.default.svc.cluster.local", "10.96.0.1"),
    ("kube-dns.kube-system.svc.cluster.local", "10.96.0.10"),
    ("api.shop.svc.cluster.local", "10.96.200.5"),
    ("frontend.default.svc.cluster.local", "10.96.100.1"),
]


def framed(message: dns.message.Message) -> bytes:
    wire = message.to_wire()
    return struct.pack(">H", len(wire)) + wire


def test_pipelined_queries_in_one_write_are_answered_in_order(example: RunningServer) -> None:
    queries = [dns.message.make_query(name, "A") for name, _ in NAMES * 3]
    with example.tcp_socket() as sock:
        sock.sendall(b"".join(framed(q) for q in queries))
        replies = [read_reply(sock) for _ in queries]
    assert [r.id for r in replies] == [q.id for q in queries]
    for reply, (name, ip) in zip(replies, NAMES * 3, strict=True):
        assert [rrset.to_text() for rrset in reply.answer] == [f"{name}. 5 IN A {ip}"]


def test_query_split_across_writes_is_answered(example: RunningServer) -> None:
    query = dns.message.make_query(NAMES[0][0], "A")
    data = framed(query)
    with example.tcp_socket() as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(data), 7):
            sock.sendall(data[i : i + 7])
            time.sleep(0.005)
        reply = read_reply(sock)
    assert reply.id == query.id
    assert reply.rcode() == dns.rcode.NOERROR


def test_connection_stays_open_for_more_queries(example: RunningServer) -> None:
    with example.tcp_socket() as sock:
        for name, ip in NAMES:
            query = dns.message.make_query(name, "A")
            sock.sendall(framed(query))
            reply = read_reply(sock)
            assert reply.id == query.id
            assert [rrset.to_text() for rrset in reply.answer] == [f"{name}. 5 IN A {ip}"]
            time.sleep(0.05)


def test_zero_length_prefix_closes_the_connection(example: RunningServer) -> None:
    with example.tcp_socket() as sock:
        sock.sendall(b"\x00\x00")
        assert closed_by_peer(sock, 2.0)


def test_zero_length_prefix_after_a_query_still_answers_the_query(
    example: RunningServer,
) -> None:
    query = dns.message.make_query(NAMES[0][0], "A")
    with example.tcp_socket() as sock:
        sock.sendall(framed(query) + b"\x00\x00")
        assert read_reply(sock).id == query.id
        assert closed_by_peer(sock, 2.0)


@pytest.fixture(scope="module")
def quick_idle(dns_server: StartServer) -> RunningServer:
    return dns_server(EXAMPLE, "--tcp-idle-timeout", "1")


def test_idle_connection_is_closed(quick_idle: RunningServer) -> None:
    with quick_idle.tcp_socket() as sock:
        started = time.monotonic()
        assert not closed_by_peer(sock, 0.6), "closed before the idle timeout"
        assert closed_by_peer(sock, 2.5), "still open long after the 1 s idle timeout"
        assert 0.9 <= time.monotonic() - started <= 3.2


def test_queries_reset_the_idle_timer(quick_idle: RunningServer) -> None:
    query = dns.message.make_query(NAMES[0][0], "A")
    with quick_idle.tcp_socket() as sock:
        for _ in range(3):  # 3 x 0.6 s: longer than the timeout, but never idle for 1 s
            time.sleep(0.6)
            sock.sendall(framed(query))
            assert read_reply(sock).id == query.id
        assert closed_by_peer(sock, 2.5)


def test_half_sent_message_counts_as_idle(quick_idle: RunningServer) -> None:
    """A client that sends a length and stops is closed like an idle one (slowloris)."""
    with quick_idle.tcp_socket() as sock:
        sock.sendall(b"\x00\x40abc")
        assert closed_by_peer(sock, 2.5)


def test_udp_answers_while_tcp_holds_a_half_sent_message(example: RunningServer) -> None:
    query = dns.message.make_query(NAMES[1][0], "A")
    data = framed(query)
    with example.tcp_socket() as sock:
        sock.sendall(data[: len(data) // 2])
        for name, ip in NAMES:
            started = time.monotonic()
            reply = example.query(name, "A")
            assert time.monotonic() - started < 0.5
            assert [rrset.to_text() for rrset in reply.answer] == [f"{name}. 5 IN A {ip}"]
        with example.tcp_socket() as other:  # and other TCP clients too
            other.sendall(framed(dns.message.make_query(NAMES[0][0], "A")))
            assert read_reply(other).rcode() == dns.rcode.NOERROR
        sock.sendall(data[len(data) // 2 :])
        assert read_reply(sock).id == query.id


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_listen_twice(dns_server: StartServer) -> None:
    if not _ipv6_loopback_works():
        pytest.skip("IPv6 loopback ::1 is not available here")
    server = dns_server(EXAMPLE, "--listen", "127.0.0.1:0", "--listen", "[::1]:0")
    assert [host for host, _ in server.addresses] == ["127.0.0.1", "::1"]
    for address in server.addresses:
        for tcp in (False, True):
            reply = server.query(NAMES[0][0], "A", tcp=tcp, address=address)
            assert [rrset.to_text() for rrset in reply.answer] == [
                f"{NAMES[0][0]}. 5 IN A 10.96.0.1"]
