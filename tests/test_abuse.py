"""Abusive clients against the real server on loopback, with small limits (RFC 7766 §6.2.3, §10).

A server with ``--max-tcp-connections 50 --tcp-idle-timeout 2`` serving the example cluster plus
a headless Service of 200 endpoints (:func:`bench.fuzz.big_headless`) meets: zero-length and
huge length prefixes, half-sent messages, a slowloris client, more connections than the limit,
1,000 idle connections (default limit), 200 pipelined queries in one write, and clients that
never read their replies. Throughout, a side probe asserts that UDP answers and that a new TCP
client is answered. Then amplification: ANY is answered minimally (RFC 8482) and the big
Service truncates properly over UDP and is complete over TCP.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from conftest import RunningServer, StartServer, closed_by_peer, read_reply

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `bench` is not installed; plain `pytest` does not add the root
    sys.path.insert(0, str(REPO))

from bench import fuzz  # noqa: E402

pytestmark = pytest.mark.timeout(120)

LIMIT = 50
IDLE = 2.0
PROBE_NAME = "kubernetes.default.svc.cluster.local"
PROBE_ANSWER = [f"{PROBE_NAME}. 5 IN A 10.96.0.1"]
BIG = f"{fuzz.BIG_SERVICE}.{fuzz.BIG_NAMESPACE}.svc.cluster.local"
BIG_IPS = {f"10.250.{i // 250}.{i % 250 + 1}" for i in range(fuzz.BIG_ENDPOINTS)}
PROBE_DEADLINE = 2.0  # seconds for the UDP and the TCP side probe together


# -- servers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fuzz.write_manifests(tmp_path_factory.mktemp("abuse-manifests"))


@pytest.fixture(scope="module")
def limited(dns_server: StartServer, manifests: Path) -> RunningServer:
    """Small limits: 50 connections, closed after 2 s without a complete query."""
    return dns_server(manifests, "--max-tcp-connections", str(LIMIT), "--tcp-idle-timeout",
                      str(IDLE))


@pytest.fixture(scope="module")
def roomy_idle(dns_server: StartServer, manifests: Path) -> RunningServer:
    """50 connections, but a long idle timeout: eviction is then the only reason to close."""
    return dns_server(manifests, "--max-tcp-connections", str(LIMIT), "--tcp-idle-timeout", "30")


@pytest.fixture(scope="module")
def ten(dns_server: StartServer, manifests: Path) -> RunningServer:
    """At most 10 connections and a long idle timeout: eviction alone closes them."""
    return dns_server(manifests, "--max-tcp-connections", "10", "--tcp-idle-timeout", "30")


@pytest.fixture(scope="module")
def fresh(dns_server: StartServer, manifests: Path) -> RunningServer:
    """Like ``limited``, in its own process: memory is measured there, before any other abuse
    has grown (and fragmented) the heap."""
    return dns_server(manifests, "--max-tcp-connections", str(LIMIT), "--tcp-idle-timeout",
                      str(IDLE + 0.5))


@pytest.fixture(scope="module")
def defaults(dns_server: StartServer, manifests: Path) -> RunningServer:
    """Default limits (1,000 connections, 10 s idle); started with room for 1,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return dns_server(manifests, "--log-level", "info")


# -- helpers -------------------------------------------------------------------------------------


def framed(wire: bytes) -> bytes:
    return struct.pack(">H", len(wire)) + wire


def query_wire(name: str = PROBE_NAME, rdtype: str = "A", ident: int | None = None) -> bytes:
    message = dns.message.make_query(name, rdtype)
    if ident is not None:
        message.id = ident
    return message.to_wire()


def is_closed_now(sock: socket.socket) -> bool:
    """Has the server closed it already? (No waiting; unread replies count as open.)"""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def rss_mb(server: RunningServer) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found, status
    return int(found.group(1)) / 1024


def open_fds(server: RunningServer) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def side_probe(server: RunningServer) -> None:
    """UDP answers, and a new TCP client is answered, promptly."""
    started = time.monotonic()
    reply = server.query(PROBE_NAME, "A")
    assert [rrset.to_text() for rrset in reply.answer] == PROBE_ANSWER
    with socket.create_connection((server.host, server.port), timeout=PROBE_DEADLINE) as sock:
        sock.settimeout(PROBE_DEADLINE)
        query = query_wire(ident=4321)
        sock.sendall(framed(query))
        reply = read_reply(sock)
    assert reply.id == 4321
    assert [rrset.to_text() for rrset in reply.answer] == PROBE_ANSWER
    elapsed = time.monotonic() - started
    assert elapsed < PROBE_DEADLINE, f"side probe took {elapsed:.2f} s"


def connect(server: RunningServer, *, small_buffers: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small_buffers:  # a client that reads nothing: let its window close early
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.settimeout(5.0)
    sock.connect((server.host, server.port))
    return sock


@contextlib.contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def settle(server: RunningServer, baseline: int, timeout: float = 5.0) -> None:
    """Wait until the server holds no more descriptors than ``baseline`` (our closes arrived)."""
    assert wait_until(lambda: open_fds(server) <= baseline, timeout), (
        f"the server still holds {open_fds(server)} descriptors, {baseline} at rest")


def stuff_without_reading(socks: list[socket.socket], *, cap: int = 8_000_000,
                          stall: float = 0.3, limit: float = 20.0) -> list[int]:
    """Pipeline queries with large answers into every socket and never read: send until each
    socket's send blocks for ``stall`` seconds (the server stopped reading it). Bytes sent
    per socket; a socket reaching ``cap`` means no back-pressure."""
    frame = framed(query_wire(f"_http._tcp.{BIG}", "SRV")) * 64
    sent = [0] * len(socks)
    last_progress = [time.monotonic()] * len(socks)
    for sock in socks:
        sock.setblocking(False)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        active = False
        for index, sock in enumerate(socks):
            if sent[index] >= cap or time.monotonic() - last_progress[index] > stall:
                continue
            active = True
            try:
                sent[index] += sock.send(frame)
                last_progress[index] = time.monotonic()
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):  # closed by the server
                last_progress[index] = 0.0
        if not active:
            break
        time.sleep(0.002)
    return sent


# -- malformed streams --------------------------------------------------------------------------


def test_zero_length_prefix_is_closed(limited: RunningServer) -> None:
    with connect(limited) as sock:
        sock.sendall(b"\x00\x00")
        assert closed_by_peer(sock, 1.0)
    with connect(limited) as sock:  # a good query first is still answered
        sock.sendall(framed(query_wire(ident=7)) + b"\x00\x00" + framed(query_wire(ident=8)))
        assert read_reply(sock).id == 7
        assert closed_by_peer(sock, 1.0)
    side_probe(limited)


def test_huge_length_prefix_without_body_is_closed_when_idle(limited: RunningServer) -> None:
    """40 connections announce 65,535 bytes and send none (or almost all) of them: no memory
    is set aside for what was announced, and all are closed by the idle timeout."""
    baseline = open_fds(limited)
    before = rss_mb(limited)
    with sockets() as opened:
        for index in range(40):
            sock = connect(limited)
            opened.append(sock)
            body = b"" if index % 2 else b"x" * 65_000
            sock.sendall(b"\xff\xff" + body)
        started = time.monotonic()
        side_probe(limited)
        grown = rss_mb(limited) - before
        assert grown < 20, f"RSS grew {grown:.1f} MB for 40 half-announced messages"
        for sock in opened:
            assert closed_by_peer(sock, IDLE + 3 - (time.monotonic() - started))
        assert time.monotonic() - started < IDLE + 3
    settle(limited, baseline)
    side_probe(limited)


def test_half_sent_messages(limited: RunningServer) -> None:
    query = framed(query_wire(ident=99))
    with connect(limited) as idle, connect(limited) as finishing:
        idle.sendall(query[: len(query) // 2])
        finishing.sendall(query[: len(query) // 2])
        side_probe(limited)
        time.sleep(0.3)
        finishing.sendall(query[len(query) // 2 :])
        assert read_reply(finishing).id == 99
        assert closed_by_peer(idle, IDLE + 2)
    side_probe(limited)


def test_slowloris_is_closed_by_the_idle_timeout(limited: RunningServer) -> None:
    """One byte every 0.5 s: only complete queries reset the idle timer, so the connection is
    closed about 2 s after it opened, long before the query would be complete."""
    data = framed(query_wire())
    with connect(limited) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        dribbled = 0
        closed = False
        while time.monotonic() - started < IDLE + 3:
            sock.sendall(data[dribbled : dribbled + 1])
            dribbled += 1
            if dribbled == 2:
                side_probe(limited)
            if closed_by_peer(sock, 0.5):
                closed = True
                break
        lasted = time.monotonic() - started
    assert closed, f"still open after {lasted:.1f} s and {dribbled} bytes"
    assert dribbled >= 3, "closed before it was idle"
    assert lasted < IDLE + 2.5  # the whole query would take 30 s at this pace
    side_probe(limited)


# -- connection bounds ---------------------------------------------------------------------------


def test_more_connections_than_the_limit_closes_the_longest_idle(
    roomy_idle: RunningServer,
) -> None:
    """50 open (the limit), the oldest made active again; 10 more evict the 10 longest idle."""
    server = roomy_idle
    baseline = open_fds(server)
    with sockets() as first:
        for _ in range(LIMIT):
            first.append(connect(server))
        first[0].sendall(framed(query_wire(ident=1)))
        assert read_reply(first[0]).id == 1  # now the most recently active
        with sockets() as newer:
            for index in range(10):
                sock = connect(server)
                newer.append(sock)
                sock.sendall(framed(query_wire(ident=100 + index)))
                assert read_reply(sock).id == 100 + index
            assert wait_until(lambda: all(is_closed_now(sock) for sock in first[1:11]), 60.0)  # a condition; room for a loaded machine
            closed = [index for index, sock in enumerate(first) if is_closed_now(sock)]
            assert closed == list(range(1, 11)), "not the 10 longest idle were closed"
            first[0].sendall(framed(query_wire(ident=2)))
            assert read_reply(first[0]).id == 2
            assert open_fds(server) <= baseline + LIMIT
            reply = server.query(PROBE_NAME, "A")
            assert [rrset.to_text() for rrset in reply.answer] == PROBE_ANSWER
    settle(server, baseline)
    side_probe(server)


def test_1000_idle_connections_at_the_default_limit(defaults: RunningServer) -> None:
    server = defaults
    baseline = open_fds(server)
    with sockets() as opened:
        for _ in range(1000):
            opened.append(connect(server))
        assert wait_until(lambda: open_fds(server) >= baseline + 1000, 60.0), open_fds(server)
        reply = server.query(PROBE_NAME, "A")  # UDP meanwhile
        assert [rrset.to_text() for rrset in reply.answer] == PROBE_ANSWER
        for index, sock in enumerate(opened):  # every one of them is still served
            sock.sendall(framed(query_wire(ident=index)))
        for index, sock in enumerate(opened):
            assert read_reply(sock).id == index
        side_probe(server)  # the 1,001st: the longest idle one (the first) makes room
        assert closed_by_peer(opened[0], 2.0)
        assert not is_closed_now(opened[1])
    settle(server, baseline, timeout=10.0)


def test_connections_that_never_read_do_not_escape_the_limit(ten: RunningServer) -> None:
    """10 connections (the limit) that never read stop being read; 5 new clients must evict
    the 5 longest idle of them, replies pending or not: the server holds at most 10."""
    server = ten
    baseline = open_fds(server)
    with sockets() as opened:
        for _ in range(10):
            opened.append(connect(server, small_buffers=True))
        sent = stuff_without_reading(opened)
        assert all(count < 8_000_000 for count in sent), f"no back-pressure: sent {sent}"
        for index in range(5):
            sock = connect(server)
            opened.append(sock)
            sock.sendall(framed(query_wire(ident=index)))
            assert read_reply(sock).id == index
        reply = server.query(PROBE_NAME, "A")
        assert [rrset.to_text() for rrset in reply.answer] == PROBE_ANSWER
        held = open_fds(server) - baseline
        assert held <= 10, (f"the server holds {held} client connections; the limit is 10 "
                            "(evicted connections with unread replies stay open)")
    settle(server, baseline)


# -- pipelining and back-pressure ----------------------------------------------------------------


def test_200_pipelined_queries_in_one_write(limited: RunningServer) -> None:
    names = [PROBE_NAME, BIG, "web.default.svc.cluster.local", "missing.default.svc.cluster.local",
             "api.shop.svc.cluster.local", f"_http._tcp.{BIG}"]
    queries = []
    for index in range(200):
        name = names[index % len(names)]
        rdtype = "SRV" if name.startswith("_") else "A"
        queries.append((query_wire(name, rdtype, ident=index), name, rdtype))
    expected = {(name, rdtype): _describe(limited.query(name, rdtype, tcp=True))
                for name, rdtype in {(n, t) for _, n, t in queries}}
    with connect(limited) as sock:
        sock.sendall(b"".join(framed(wire) for wire, _, _ in queries))
        side_probe(limited)
        for index, (_, name, rdtype) in enumerate(queries):
            reply = read_reply(sock)
            assert reply.id == index, "replies out of order"
            assert _describe(reply) == expected[(name, rdtype)]
    side_probe(limited)


def _describe(message: dns.message.Message) -> tuple[int, int, list[str], list[str]]:
    def lines(section: list[dns.rrset.RRset]) -> list[str]:
        return sorted(line for rrset in section for line in rrset.to_text().splitlines())

    return (message.rcode(), message.flags & dns.flags.TC, lines(message.answer),
            lines(message.additional))


def test_clients_that_never_read_are_held_back(fresh: RunningServer) -> None:
    """Four clients pipeline queries with 15 kB answers and never read. A burst arrives while
    the server is busy (stopped with SIGSTOP for a moment), as a burst can: ~88 kB of queries
    on each connection at once. The server must stop reading them once their replies back up
    (back-pressure: they cannot send on), buffer little for each (RFC 7766 §6.2.3: one client
    must not exhaust the server) and keep serving others."""
    server = fresh
    baseline = open_fds(server)
    before = rss_mb(server)
    with sockets() as opened:
        for _ in range(4):
            opened.append(connect(server, small_buffers=True))
        with stopped(server):
            burst = stuff_without_reading(opened, stall=0.05, limit=2.0)
        sent = stuff_without_reading(opened)
        assert all(count < 8_000_000 for count in sent), f"no back-pressure: sent {sent}"
        side_probe(server)
        grown = rss_mb(server) - before
        print(f"\nnever-reading clients: sent {burst} then {sent} bytes of queries; server RSS "
              f"{before:.1f} -> {before + grown:.1f} MB")
        assert grown < 4 * 2 + 8, (
            f"the server's RSS grew {grown:.1f} MB for 4 clients that never read (sent {burst} "
            f"bytes of queries in a burst, then {sent}): it answers a whole read's worth of "
            "queries after writing has been paused")
    settle(server, baseline, timeout=IDLE + 5)
    side_probe(server)


@contextlib.contextmanager
def stopped(server: RunningServer) -> Iterator[None]:
    """The server process stopped (SIGSTOP) for the duration: it is busy, as far as the
    clients can tell; the kernel queues what they send."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def test_clients_that_never_read_are_closed_when_idle(limited: RunningServer) -> None:
    """A client that stops reading stops being read, so no complete query resets its idle
    timer: it is closed after the idle timeout, replies pending or not."""
    server = limited
    baseline = open_fds(server)
    with sockets() as opened:
        opened.append(connect(server, small_buffers=True))
        stuff_without_reading(opened)
        stopped = time.monotonic()
        side_probe(server)
        released = wait_until(lambda: open_fds(server) <= baseline, IDLE + 4)
        assert released, (f"a never-reading connection is still open "
                          f"{time.monotonic() - stopped:.0f} s after it stopped being read "
                          f"(idle timeout {IDLE:.0f} s)")
    settle(server, baseline)
    side_probe(server)


# -- amplification -------------------------------------------------------------------------------


def test_any_is_answered_minimally(limited: RunningServer) -> None:
    """RFC 8482: ANY on a name with records gets no records (NODATA here), never all of them."""
    for name in (BIG, PROBE_NAME, "web.default.svc.cluster.local", f"_http._tcp.{BIG}"):
        query = dns.message.make_query(name, "ANY")
        wire = query.to_wire()
        with limited.udp_socket() as sock:
            sock.send(wire)
            reply_wire = sock.recv(65535)
        reply = dns.message.from_wire(reply_wire)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer == []
        assert not reply.flags & dns.flags.TC
        assert len(reply_wire) <= len(wire) + 100, f"{len(reply_wire)} bytes for ANY {name}"


def test_big_answer_truncates_over_udp_and_is_complete_over_tcp(limited: RunningServer) -> None:
    full = limited.query(BIG, "A", tcp=True)
    assert not full.flags & dns.flags.TC
    assert {r[0].address for r in full.answer} == BIG_IPS
    for payload in (None, 512, 1232, 1400):
        options = {} if payload is None else {"use_edns": 0, "payload": payload}
        wire = dns.message.make_query(BIG, "A", **options).to_wire()  # type: ignore[arg-type]
        with limited.udp_socket() as sock:
            sock.send(wire)
            reply_wire = sock.recv(65535)
        assert len(reply_wire) <= (payload or 512)
        reply = dns.message.from_wire(reply_wire, one_rr_per_rrset=True)  # whole records only
        assert reply.flags & dns.flags.TC
        addresses = {r[0].address for r in reply.answer}
        assert addresses and addresses < BIG_IPS
        assert len(reply_wire) + 16 > (payload or 512), "room for another record was left"
    fits = limited.query(BIG, "A", use_edns=0, payload=4096)
    assert not fits.flags & dns.flags.TC
    assert {r[0].address for r in fits.answer} == BIG_IPS
    srv = limited.query(f"_http._tcp.{BIG}", "SRV", tcp=True)
    assert len(srv.answer) == fuzz.BIG_ENDPOINTS
    assert not srv.flags & dns.flags.TC
    udp_srv = limited.query(f"_http._tcp.{BIG}", "SRV")
    assert udp_srv.flags & dns.flags.TC
    assert all(rrset.rdtype == dns.rdatatype.SRV for rrset in udp_srv.answer)


def test_no_tracebacks_after_the_abuse(limited: RunningServer, roomy_idle: RunningServer,
                                       ten: RunningServer, fresh: RunningServer,
                                       defaults: RunningServer) -> None:
    for server in (limited, roomy_idle, ten, fresh, defaults):
        server.read_output()
        assert server.process.poll() is None
        assert not [line for line in server.output if "Traceback" in line], server.output
        side_probe(server)
