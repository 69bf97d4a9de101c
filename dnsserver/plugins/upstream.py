"""Forwarding to upstream resolvers, like CoreDNS's ``forward`` (SPEC §2.20, §4.5, §4.7).

:class:`Forwarder` sends one client query to one of its upstreams and returns a complete reply
for the client. It never raises (a bug or every upstream failing gives SERVFAIL). Its options
come from a ``forward`` line (:mod:`dnsserver.plugins.forward` reads them).

**One exchange** (:meth:`Forwarder.exchange`):

1. More than ``max_concurrent`` exchanges in flight → REFUSED at once, counted in
   :attr:`Forwarder.rejected` (``coredns_forward_max_concurrent_rejects_total``).
2. The upstreams are ordered by ``policy``: ``random`` (CoreDNS's default), ``round_robin``
   or ``sequential``. Upstreams marked down are skipped; when every one is down, one picked at
   random is tried anyway (:attr:`Forwarder.healthcheck_broken`, CoreDNS's
   ``coredns_forward_healthcheck_broken_total``), or with ``failfast_all_unhealthy`` none is
   and the answer is SERVFAIL at once. Each upstream is tried at most once; with
   ``max_connect_attempts`` N, the exchange gives up after N failed tries.
3. A try goes over the client's transport (CoreDNS's default), over TCP with ``force_tcp``, or
   over UDP with ``prefer_udp`` (which wins over the client's TCP, and loses to ``force_tcp``).
   The client's bytes are sent with a fresh random ID. Over UDP a datagram whose ID, QR bit,
   question name (compared case-insensitively), type or class does not match is ignored and we
   keep waiting (:attr:`UpstreamState.mismatched`). A UDP reply with TC=1 is the answer (the
   client retries over TCP), except with ``prefer_udp``: then the same upstream is asked again
   over TCP. Each of UDP and TCP waits ``read_timeout`` at most; nothing goes past
   ``deadline`` (from the start of the exchange).
4. Connections are kept for the next exchange, as CoreDNS's are: after a reply, a socket (UDP)
   or connection (TCP) goes back to its upstream's idle stack and the next try to that
   upstream over that transport takes the most recent one, if it has been idle for less than
   ``expire`` (else every idle one of that transport is closed and a new one opened; ``expire
   0`` never reuses one). Idle ones are closed ``expire`` after their last use. A kept TCP
   connection the upstream has closed meanwhile is dropped and the try repeated on another at
   once. A socket that saw a timeout or an error is closed, never kept.
5. Timeout, socket error, or a bad TCP reply: the upstream's failure counts go up and the next
   one is tried. An upstream's reply is its answer whatever its rcode, unless the rcode is one
   of ``failover_rcodes`` and another upstream is left to try: then that one is asked, and when
   none is left the last such reply is the answer.
6. The reply gets the client's ID and the client's question bytes (the case it sent; an
   upstream that lower-cases the question does not undo 0x20). Everything else is the
   upstream's: rcode, flags (RA, AA, AD, TC), TTLs, and its OPT record. The client's OPT goes
   upstream as it came (no EDNS added or removed).
7. All tries failed → SERVFAIL made here, flagged like CoreDNS's: QR, opcode, RD and CD from the
   query, no AA, no RA; with an OPT (our 1232 bytes, DO mirrored) if the query had one.

ICMP "port unreachable" is not seen before the read timeout (``asyncio_dgram`` queues the error
for the next call), so a closed port costs ``read_timeout`` like a silent one.

**Health** (CoreDNS ``pkg/proxy/health.go``): ``max_fails`` consecutive failed tries mark an
upstream down (0 = never). While down, a task sends it ``<health_check_domain> IN NS`` (RD set
unless ``health_check_recursion`` is off; over TCP with ``force_tcp``) every
``health_check_interval`` seconds, waiting at most ``min(read_timeout, 1 s)``; any reply with
the right ID marks it up again, as does a successful real query. :attr:`Forwarder.states` has
one :class:`UpstreamState` per upstream with its counters for metrics.

**Not done** (CoreDNS extras): TLS upstreams. The reply is not truncated for the client's UDP
limit: see :func:`fit_udp`, which the caller applies to UDP clients.

:class:`ForwardRouter` picks a Forwarder by longest zone suffix (stub domains, the ``.``
default); :func:`parse_stub_domain` reads ``example.corp=10.0.0.2:53,10.0.0.3``.
:func:`points_at_us` finds upstreams that are our own listeners.

**Wiring** (for the handler and transport): a Forwarder needs no running loop to be built,
only to forward; await :meth:`Forwarder.close` (or :meth:`ForwardRouter.close`) at shutdown: it
also closes the kept connections. Only replies with ``Exchange.upstream`` set go into
:class:`dnsserver.plugins.cache.Cache`; apply :func:`fit_udp` with
:func:`dnsserver.serve.wire.udp_limit` before sending over UDP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import secrets
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, TypeVar

import asyncio_dgram

from dnsserver.config.resolvconf import Upstream, UpstreamError, parse_upstream
from dnsserver.plugins.chain import BugLog
from dnsserver.serve import wire
from zones import names
from zones.records import FORMERR, NS, OPT, REFUSED, SERVFAIL

log = logging.getLogger("dnsserver.forward")

POLICIES = ("random", "round_robin", "sequential")
MAX_UPSTREAMS = 15  # CoreDNS's limit per forward line
HEALTH_CHECK_TIMEOUT = 1.0  # CoreDNS hcReadTimeout
DEFAULT_EXPIRE = 10.0  # CoreDNS: idle upstream connections are kept this long
_QR, _TC = 0x80, 0x02

ReplyObserver = Callable[[Upstream, int, float], None]
T = TypeVar("T")


class ForwardConfigError(ValueError):
    """The forwarding configuration cannot be used."""


class _TryFailed(Exception):
    """One try at one upstream failed (the message says why)."""


class Exchange(NamedTuple):
    """A reply for the client, and the upstream that gave it (None: we made it ourselves, so
    it must not be cached: REFUSED over the limit, SERVFAIL when every try failed, FORMERR)."""

    reply: bytes
    upstream: Upstream | None
    error: str = ""  # why we made the reply ourselves, for the errors plugin


class UpstreamState:
    """One upstream's health and counters (for ``coredns_proxy_*`` / ``coredns_forward_*``),
    and its idle connections."""

    __slots__ = ("consecutive_failures", "down", "failed_tries", "health_check_failures",
                 "health_checks", "idle", "mismatched", "rcodes", "requests", "tcp_retries",
                 "upstream")

    def __init__(self, upstream: Upstream, expire: float = DEFAULT_EXPIRE) -> None:
        self.upstream = upstream
        self.down = False
        self.consecutive_failures = 0  # tries and health checks since a reply (max_fails)
        self.requests = 0  # tries sent to it
        self.failed_tries = 0  # tries that got no usable reply, ever
        self.rcodes: dict[int, int] = {}  # replies by rcode
        self.tcp_retries = 0  # UDP replies with TC=1 retried over TCP (prefer_udp)
        self.mismatched = 0  # datagrams ignored: wrong ID, question or not a reply
        self.health_checks = 0
        self.health_check_failures = 0  # coredns_proxy_healthcheck_failures_total
        self.idle = _Idle(expire)

    def __repr__(self) -> str:
        state = "down" if self.down else "up"
        failing = self.consecutive_failures
        return f"<UpstreamState {self.upstream} {state} consecutive_failures={failing}>"


class Forwarder:
    """Forwards queries to ``upstreams``; see the module docstring for the whole behaviour."""

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        policy: str = "random",
        read_timeout: float = 2.0,
        deadline: float = 5.0,
        max_concurrent: int | None = None,
        max_fails: int = 2,
        max_connect_attempts: int = 0,
        health_check_interval: float = 0.5,
        health_check_domain: str = ".",
        health_check_recursion: bool = True,
        force_tcp: bool = False,
        prefer_udp: bool = False,
        expire: float = DEFAULT_EXPIRE,
        failover_rcodes: Iterable[int] = (),
        failfast_all_unhealthy: bool = False,
        on_reply: ReplyObserver | None = None,
    ) -> None:
        if not upstreams:
            raise ForwardConfigError("forward needs at least one upstream")
        if len(upstreams) > MAX_UPSTREAMS:
            raise ForwardConfigError(f"forward takes at most {MAX_UPSTREAMS} upstreams")
        if policy not in POLICIES:
            raise ForwardConfigError(f"policy {policy!r}: expected one of {', '.join(POLICIES)}")
        self.states = tuple(UpstreamState(upstream, expire) for upstream in upstreams)
        self.policy = policy
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.max_concurrent = max_concurrent
        self.max_fails = max_fails
        self.max_connect_attempts = max_connect_attempts  # 0: no cap
        self.health_check_interval = health_check_interval
        self.health_check_name = zone_to_wire(health_check_domain)
        self.health_check_recursion = health_check_recursion
        self.force_tcp = force_tcp
        self.prefer_udp = prefer_udp
        self.failover_rcodes = frozenset(failover_rcodes)
        self.failfast_all_unhealthy = failfast_all_unhealthy
        self.on_reply = on_reply
        self.in_flight = 0
        self.rejected = 0  # coredns_forward_max_concurrent_rejects_total
        self.healthcheck_broken = 0  # coredns_forward_healthcheck_broken_total
        self._next = 0  # round_robin position
        self._health_tasks: dict[UpstreamState, asyncio.Task[None]] = {}
        self._closed = False
        self._log_bug = BugLog(log, "bug while forwarding a query; answering SERVFAIL")

    @property
    def upstreams(self) -> tuple[Upstream, ...]:
        return tuple(state.upstream for state in self.states)

    async def exchange(self, query: bytes, *, tcp: bool = False) -> Exchange:
        """The reply for the client to ``query`` (from an upstream or made here) and the
        upstream that gave it; ``tcp``: the client asked over TCP. Never raises."""
        try:
            parsed = wire.parse_query(query)
        except (wire.FormError, struct.error):
            return Exchange(_formerr(query), None)
        if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
            self.rejected += 1
            return Exchange(wire.error_reply(query, parsed, REFUSED), None,
                            f"concurrent queries exceeded maximum {self.max_concurrent}")
        self.in_flight += 1
        try:
            return await self._exchange(query, parsed, tcp)
        except Exception as exc:  # a bug: SERVFAIL, logged once per place
            self._log_bug(exc)
            return Exchange(wire.error_reply(query, parsed, SERVFAIL), None, f"bug: {exc!r}")
        finally:
            self.in_flight -= 1

    async def _exchange(self, query: bytes, parsed: wire.Query, tcp: bool) -> Exchange:
        loop = asyncio.get_running_loop()
        question_end = parsed.question_end
        deadline = loop.time() + self.deadline
        question = query[12:question_end]
        candidates = self._candidates()
        over_tcp = self.force_tcp or (tcp and not self.prefer_udp)
        kept: tuple[bytes, Upstream] | None = None  # the last reply with a failover rcode
        failed_tries = 0
        error = "no healthy proxies" if not candidates else "no upstream tried in time"
        for position, state in enumerate(candidates):
            if loop.time() >= deadline:
                break
            if self.max_connect_attempts and failed_tries >= self.max_connect_attempts:
                break
            state.requests += 1
            started = time.monotonic()
            try:
                reply = await self._try(state, query, question, deadline, over_tcp)
            except (OSError, TimeoutError, _TryFailed, asyncio_dgram.TransportClosed,
                    asyncio.IncompleteReadError) as exc:
                self._failed(state, exc)
                failed_tries += 1
                error = _failure_text(state.upstream, over_tcp, exc)
                continue
            rcode = response_rcode(reply) if self.failover_rcodes else reply[3] & 0x0F
            self._succeeded(state, reply[3] & 0x0F)
            if self.on_reply is not None:
                self.on_reply(state.upstream, reply[3] & 0x0F, time.monotonic() - started)
            if rcode in self.failover_rcodes and position + 1 < len(candidates):
                kept = (reply, state.upstream)
                continue
            return Exchange(_for_client(reply, query, question_end), state.upstream)
        if kept is not None:
            return Exchange(_for_client(kept[0], query, question_end), kept[1])
        return Exchange(wire.error_reply(query, parsed, SERVFAIL), None, error)

    def _candidates(self) -> list[UpstreamState]:
        states = self.states
        if self.policy == "random":
            ordered = random.sample(states, len(states)) if len(states) > 1 else list(states)
        elif self.policy == "round_robin":
            start = self._next % len(states)
            self._next = start + 1
            ordered = [*states[start:], *states[:start]]
        else:
            ordered = list(states)
        healthy = [state for state in ordered if not state.down]
        if healthy:
            return healthy
        self.healthcheck_broken += 1  # all down: the health check itself may be broken
        if self.failfast_all_unhealthy:
            return []
        return [random.choice(states)]

    async def _try(
        self, state: UpstreamState, query: bytes, question: bytes, deadline: float, tcp: bool
    ) -> bytes:
        """One upstream's reply to ``query`` over TCP or UDP (then TCP on TC=1 with
        ``prefer_udp``), checked against ours."""
        loop = asyncio.get_running_loop()
        query_id = secrets.token_bytes(2)  # unpredictable, unlike random's (RFC 5452 §9.2)
        outgoing = query_id + query[2:]
        if tcp:
            return await self._tcp(state, outgoing, question, min(
                deadline, loop.time() + self.read_timeout))
        reply = await self._udp(state, outgoing, question, min(
            deadline, loop.time() + self.read_timeout))
        if reply[2] & _TC and self.prefer_udp:
            state.tcp_retries += 1
            reply = await self._tcp(state, outgoing, question, min(
                deadline, loop.time() + self.read_timeout))
        return reply

    async def _udp(
        self, state: UpstreamState, outgoing: bytes, question: bytes, until: float
    ) -> bytes:
        stream = state.idle.take_udp() or await _connect_udp(state.upstream)
        try:
            async with asyncio.timeout_at(until):
                await stream.send(outgoing)
                while True:
                    reply, _ = await stream.recv()
                    if _matches(reply, outgoing, question):
                        break
                    state.mismatched += 1
        except BaseException:
            stream.close()
            raise
        state.idle.give_udp(stream)
        return bytes(reply)

    async def _tcp(
        self, state: UpstreamState, outgoing: bytes, question: bytes, until: float
    ) -> bytes:
        framed = len(outgoing).to_bytes(2, "big") + outgoing
        async with asyncio.timeout_at(until):
            while True:
                kept = state.idle.take_tcp()
                connection = kept or await _TcpConnection.open(state.upstream)
                try:
                    reply = await connection.exchange(framed)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    connection.close()
                    if kept is not None and _closed_by_peer(exc):
                        continue  # the upstream closed an idle connection: take another
                    if isinstance(exc, asyncio.IncompleteReadError):
                        raise _TryFailed(f"tcp connection closed after {len(exc.partial)} "
                                         "bytes") from None
                    raise
                except BaseException:
                    connection.close()
                    raise
                break
        if not _matches(reply, outgoing, question):
            connection.close()
            raise _TryFailed("tcp reply does not match the query")
        state.idle.give_tcp(connection)
        return reply

    def _failed(self, state: UpstreamState, exc: BaseException) -> None:
        state.failed_tries += 1
        state.consecutive_failures += 1
        if self.max_fails > 0 and state.consecutive_failures >= self.max_fails and not state.down:
            state.down = True
            log.warning(
                "upstream %s is down after %d failed tries (last: %s); health-checking it "
                "every %gs", state.upstream, state.consecutive_failures, _describe(exc),
                self.health_check_interval,
            )
            self._start_health_check(state)

    def _succeeded(self, state: UpstreamState, rcode: int) -> None:
        state.rcodes[rcode] = state.rcodes.get(rcode, 0) + 1
        state.consecutive_failures = 0
        if state.down:
            state.down = False
            log.info("upstream %s answers again", state.upstream)

    # -- health checks --------------------------------------------------------------------

    def _start_health_check(self, state: UpstreamState) -> None:
        if self._closed:
            return
        task = self._health_tasks.get(state)
        if task is None or task.done():
            self._health_tasks[state] = asyncio.get_running_loop().create_task(
                self._health_check(state), name=f"health check {state.upstream}"
            )

    async def _health_check(self, state: UpstreamState) -> None:
        """While ``state`` is down: probe now, then every ``health_check_interval``."""
        while state.down and not self._closed:
            state.health_checks += 1
            if await self.probe(state.upstream):
                state.consecutive_failures = 0
                if state.down:
                    state.down = False
                    log.info("upstream %s is healthy again", state.upstream)
                return
            state.health_check_failures += 1
            state.consecutive_failures += 1
            await asyncio.sleep(self.health_check_interval)

    async def probe(self, upstream: Upstream) -> bool:
        """True when ``upstream`` answers the health check (``<domain> IN NS``, RD unless
        ``no_rec``; over TCP with ``force_tcp``) at all, any rcode, within the timeout."""
        query_id = secrets.token_bytes(2)
        flags = b"\x01\x00" if self.health_check_recursion else b"\x00\x00"
        ping = (query_id + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + self.health_check_name
                + struct.pack(">HH", NS, 1))
        timeout = min(self.read_timeout, HEALTH_CHECK_TIMEOUT)
        try:
            async with asyncio.timeout(timeout):
                if self.force_tcp:
                    connection = await _TcpConnection.open(upstream)
                    try:
                        reply = await connection.exchange(len(ping).to_bytes(2, "big") + ping)
                    finally:
                        connection.close()
                    return reply[:2] == query_id and bool(reply[2] & _QR)
                stream = await _connect_udp(upstream)
                try:
                    await stream.send(ping)
                    while True:
                        datagram, _ = await stream.recv()
                        if len(datagram) >= wire.HEADER_LENGTH and datagram[:2] == query_id and (
                            datagram[2] & _QR
                        ):
                            return True
                finally:
                    stream.close()
        except (OSError, TimeoutError, asyncio_dgram.TransportClosed,
                asyncio.IncompleteReadError):
            return False

    async def close(self) -> None:
        """Stop the health checks and close the kept connections. Exchanges in flight finish
        on their own; the Forwarder must not be used afterwards."""
        self._closed = True
        tasks = list(self._health_tasks.values())
        self._health_tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for state in self.states:
            state.idle.close()


# -- connections kept for the next exchange -------------------------------------------------

UdpStream = asyncio_dgram.aio.DatagramClient


class _TcpConnection:
    """One TCP connection to an upstream: one exchange at a time, length-prefixed."""

    __slots__ = ("reader", "used", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = 0.0

    @classmethod
    async def open(cls, upstream: Upstream) -> _TcpConnection:
        reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
        return cls(reader, writer)

    async def exchange(self, framed: bytes) -> bytes:
        self.writer.write(framed)
        await self.writer.drain()
        length = int.from_bytes(await self.reader.readexactly(2), "big")
        return await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def _closed_by_peer(exc: BaseException) -> bool:
    """A kept connection the upstream had closed: nothing at all came back (CoreDNS's
    ``ErrCachedClosed``), not a reply cut short."""
    if isinstance(exc, asyncio.IncompleteReadError):
        return not exc.partial
    return isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError))


class _Idle:
    """An upstream's idle connections, most recently used last, for ``expire`` seconds."""

    __slots__ = ("_sweep", "expire", "tcp", "udp")

    def __init__(self, expire: float) -> None:
        self.expire = expire
        self.udp: list[tuple[float, UdpStream]] = []
        self.tcp: list[_TcpConnection] = []
        self._sweep: asyncio.TimerHandle | None = None

    def take_udp(self) -> UdpStream | None:
        if self.udp and time.monotonic() - self.udp[-1][0] < self.expire:
            return self.udp.pop()[1]
        for _, stream in self.udp:  # the most recent has expired: so has every other one
            stream.close()
        self.udp.clear()
        return None

    def take_tcp(self) -> _TcpConnection | None:
        while self.tcp and time.monotonic() - self.tcp[-1].used < self.expire:
            connection = self.tcp.pop()
            if not connection.reader.at_eof():
                return connection
            connection.close()  # the upstream closed it while it was idle
        for connection in self.tcp:
            connection.close()
        self.tcp.clear()
        return None

    def give_udp(self, stream: UdpStream) -> None:
        if self.expire <= 0:
            stream.close()
            return
        self.udp.append((time.monotonic(), stream))
        self._schedule()

    def give_tcp(self, connection: _TcpConnection) -> None:
        if self.expire <= 0:
            connection.close()
            return
        connection.used = time.monotonic()
        self.tcp.append(connection)
        self._schedule()

    def _schedule(self) -> None:
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.expire, self._expire)

    def _expire(self) -> None:
        """Close what has been idle for ``expire``; look again while anything is left."""
        self._sweep = None
        cutoff = time.monotonic() - self.expire
        while self.udp and self.udp[0][0] <= cutoff:
            self.udp.pop(0)[1].close()
        while self.tcp and self.tcp[0].used <= cutoff:
            self.tcp.pop(0).close()
        if self.udp or self.tcp:
            self._schedule()

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for _, stream in self.udp:
            stream.close()
        for connection in self.tcp:
            connection.close()
        self.udp.clear()
        self.tcp.clear()

    def __len__(self) -> int:
        return len(self.udp) + len(self.tcp)


async def _connect_udp(upstream: Upstream) -> UdpStream:
    """A UDP socket connected to ``upstream``: the kernel drops datagrams from anyone else.

    ``asyncio_dgram.connect``, not ``from_socket``: the latter pokes a private attribute that
    uvloop's transport does not have. The host is an IP literal, so nothing is resolved.
    """
    stream: UdpStream = await asyncio_dgram.connect((upstream.host, upstream.port))
    return stream


def _past_question(reply: bytes) -> tuple[wire.Cursor, int]:
    """A cursor just past ``reply``'s question section, and how many records follow it
    (:class:`wire.FormError` or :class:`struct.error` when the reply is cut short)."""
    cursor = wire.Cursor(reply, wire.HEADER_LENGTH)
    qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", reply, 4)
    for _ in range(qdcount):
        cursor.name(allow_pointers=True)
        cursor.take(4)
    return cursor, ancount + nscount + arcount


def response_rcode(reply: bytes) -> int:
    """A reply's whole rcode: the header's four bits and its OPT record's upper eight."""
    rcode = reply[3] & 0x0F
    if reply[10:12] == b"\x00\x00":
        return rcode
    try:
        cursor, records = _past_question(reply)
        for _ in range(records):
            cursor.name(allow_pointers=True)
            rtype = cursor.u16()
            cursor.take(2)
            extended = cursor.take(1)[0]
            cursor.take(3)
            cursor.take(cursor.u16())
            if rtype == OPT:
                return rcode | extended << 4
    except (wire.FormError, struct.error):
        pass
    return rcode


def _matches(reply: bytes, outgoing: bytes, question: bytes) -> bool:
    """True when ``reply`` answers ``outgoing``: same ID, QR set, one question equal to ours
    with the name compared case-insensitively (RFC 5452 §9.1)."""
    end = 12 + len(question)
    if len(reply) < end or reply[:2] != outgoing[:2] or not reply[2] & _QR:
        return False
    if reply[4:6] != b"\x00\x01" or reply[end - 4 : end] != question[-4:]:
        return False
    name = reply[12 : end - 4]
    return name == question[:-4] or name.lower() == question[:-4].lower()


def _for_client(reply: bytes, query: bytes, question_end: int) -> bytes:
    """``reply`` with the client's ID and question bytes (same length: only the case differs)."""
    if reply[12:question_end] == query[12:question_end]:
        return query[:2] + reply[2:]
    return query[:2] + reply[2:12] + query[12:question_end] + reply[question_end:]


def _formerr(query: bytes) -> bytes:
    if len(query) < wire.HEADER_LENGTH:
        query = query.ljust(wire.HEADER_LENGTH, b"\x00")
    return wire.header_only(query, FORMERR)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return str(exc) or type(exc).__name__


# -- fitting a forwarded reply into a UDP datagram ------------------------------------------


def fit_udp(reply: bytes, limit: int) -> bytes:
    """``reply`` if it fits in ``limit`` bytes, else its header and question with TC=1 (and its
    OPT record, if it had one), so the client retries over TCP. ``limit`` comes from
    :func:`dnsserver.serve.wire.udp_limit` of the client's query."""
    if len(reply) <= limit or len(reply) < wire.HEADER_LENGTH:
        return reply
    try:
        cursor, records = _past_question(reply)
        question_end = cursor.offset
        opt = b""
        for _ in range(records):
            start = cursor.offset
            cursor.name(allow_pointers=True)
            rtype = cursor.u16()
            cursor.take(6)
            cursor.take(cursor.u16())
            if rtype == OPT:
                opt = reply[start : cursor.offset]
    except (wire.FormError, struct.error):
        return reply[:2] + bytes((reply[2] | _TC, reply[3])) + b"\x00" * 8
    counts = reply[4:6] + struct.pack(">HHH", 0, 0, 1 if opt else 0)  # QDCOUNT kept
    return reply[:2] + bytes((reply[2] | _TC, reply[3])) + counts + reply[12:question_end] + opt


# -- stub domains ---------------------------------------------------------------------------


def zone_to_wire(zone: str) -> bytes:
    """A zone as typed (``example.corp``, ``Example.Corp.``, ``.``) in the lower-cased wire form
    of :func:`zones.names.to_wire`; :class:`ForwardConfigError` when it is not a domain name
    (an empty label, a label or name too long, not ASCII)."""
    text = zone.strip().rstrip(".")
    if text and "" in text.split("."):
        raise ForwardConfigError(f"{zone!r} is not a domain name")
    try:
        return names.to_wire(text)
    except ValueError:
        raise ForwardConfigError(f"{zone!r} is not a domain name") from None


def longest_suffix(routes: Mapping[bytes, T], name: bytes) -> T | None:
    """The value of the longest zone in ``routes`` (lower-case wire zones, ``b"\\x00"`` the
    root) that is ``name`` (a lower-case wire name) or a parent of it."""
    offset = 0
    end = len(name) - 1
    while offset < end:
        found = routes.get(name[offset:])
        if found is not None:
            return found
        offset += name[offset] + 1
    return routes.get(b"\x00")


class ForwardRouter:
    """Which :class:`Forwarder` serves a name: the longest matching zone suffix wins, ``.`` is
    the default (optional). Zones are given as text (``example.corp``, ``.``)."""

    def __init__(self, routes: Mapping[str, Forwarder]) -> None:
        self.routes = {zone_to_wire(zone): forwarder for zone, forwarder in routes.items()}

    def route(self, qname_lower_wire: bytes) -> Forwarder | None:
        """The Forwarder for a lower-cased wire name (uncompressed, ending in ``\\x00``)."""
        return longest_suffix(self.routes, qname_lower_wire)

    async def close(self) -> None:
        for forwarder in {id(f): f for f in self.routes.values()}.values():
            await forwarder.close()


def parse_upstreams(texts: Iterable[str]) -> tuple[Upstream, ...]:
    """Upstreams from ``IP``, ``IP:PORT`` or ``[V6]:PORT`` texts, each possibly a comma- or
    space-separated list; raises :class:`ForwardConfigError`."""
    upstreams = []
    for text in texts:
        for part in text.replace(",", " ").split():
            try:
                upstreams.append(parse_upstream(part))
            except UpstreamError as exc:
                raise ForwardConfigError(str(exc)) from None
    return tuple(upstreams)


def parse_stub_domain(text: str) -> tuple[str, tuple[Upstream, ...]]:
    """``example.corp=10.0.0.2:53,10.0.0.3`` → (``example.corp``, its upstreams)."""
    zone, sep, rest = text.partition("=")
    if not sep or not zone.strip():
        raise ForwardConfigError(f"{text!r}: expected ZONE=IP[:PORT][,IP[:PORT]…]")
    zone_to_wire(zone)  # validates
    upstreams = parse_upstreams([rest])
    if not upstreams:
        raise ForwardConfigError(f"{text!r}: no upstream after '='")
    normal = zone.strip().rstrip(".").lower() or "."
    return normal, upstreams


# -- loop detection -------------------------------------------------------------------------


def is_loopback(upstream: Upstream) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    address = ipaddress.ip_address(upstream.host.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def points_at_us(
    upstreams: Iterable[Upstream], listen_addresses: Iterable[tuple[str, int]]
) -> list[Upstream]:
    """The upstreams that are one of our own listeners: the same IP and port, or a loopback IP
    on the port of a wildcard listener (``0.0.0.0`` takes every IPv4 loopback address, ``::``
    both families). Empty when there is no loop."""
    listen = [(_ip(host), port) for host, port in listen_addresses]
    loops = []
    for upstream in upstreams:
        address = _ip(upstream.host)
        for host, port in listen:
            if port != upstream.port:
                continue
            if address == host or (host.is_unspecified and is_loopback(upstream) and (
                host.version == 6 or address.version == 4
            )):
                loops.append(upstream)
                break
    return loops


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


__all__ = [
    "POLICIES", "Exchange", "ForwardConfigError", "ForwardRouter", "Forwarder",
    "Upstream", "UpstreamError", "UpstreamState", "fit_udp", "is_loopback",
    "longest_suffix", "parse_stub_domain", "parse_upstream", "parse_upstreams", "points_at_us",
    "response_rcode", "zone_to_wire",
]


def _failure_text(upstream: Upstream, tcp: bool, exc: BaseException) -> str:
    """What a failed try says in the errors plugin's line (CoreDNS: the Go net error)."""
    reason = "i/o timeout" if isinstance(exc, TimeoutError) else (
        exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or
        type(exc).__name__)
    return f"{'tcp' if tcp else 'udp'} {upstream}: {reason}"
