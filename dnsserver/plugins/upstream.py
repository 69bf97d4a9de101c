"""Forwarding to upstream resolvers, like CoreDNS's ``forward`` (SPEC §2.20, §4.5, §4.7).

:class:`Forwarder` sends one client query to one of its upstreams and returns a complete reply
for the client. It never raises (a bug or every upstream failing gives SERVFAIL).

**One exchange** (:meth:`Forwarder.exchange`; :meth:`Forwarder.forward` returns just the bytes):

1. More than ``max_concurrent`` exchanges in flight → REFUSED at once, counted in
   :attr:`Forwarder.rejected` (``coredns_forward_max_concurrent_rejects_total``).
2. The upstreams are ordered by ``policy``: ``random`` (CoreDNS's default), ``round_robin``
   or ``sequential``. Upstreams marked down are skipped; when every one is down, one picked at
   random is tried anyway (:attr:`Forwarder.healthcheck_broken`, CoreDNS's
   ``coredns_forward_healthcheck_broken_total``). Each upstream is tried at most once.
3. A try sends the client's bytes with a fresh random ID over UDP from a new connected socket
   (``asyncio_dgram``; the kernel drops datagrams from other addresses, the random source port
   and ID defeat blind spoofing). A datagram whose ID, QR bit, question name (compared
   case-insensitively), type or class does not match is ignored and we keep waiting:
   :attr:`UpstreamState.mismatched`. A reply with TC=1 is retried over TCP to the same upstream
   (a new connection, 2-byte length framing). Each of UDP and TCP waits ``read_timeout``
   at most; nothing goes past ``deadline`` (from the start of the exchange).
4. Timeout, socket error, or a bad TCP reply: the upstream's failure counts go up and the next
   one is tried. An upstream's SERVFAIL (any rcode it sends) is its answer and is returned.
5. The reply gets the client's ID and the client's question bytes (the case it sent; an
   upstream that lower-cases the question does not undo 0x20). Everything else is the
   upstream's: rcode, flags (RA, AA, AD), TTLs, and its OPT record. The client's OPT goes
   upstream as it came (no EDNS added or removed).
6. All tries failed → SERVFAIL made here, flagged like CoreDNS's: QR, opcode, RD and CD from the
   query, no AA, no RA; with an OPT (our 1232 bytes, DO mirrored) if the query had one.

ICMP "port unreachable" is not seen before the read timeout (``asyncio_dgram`` queues the error
for the next call), so a closed port costs ``read_timeout`` like a silent one.

**Health** (CoreDNS ``pkg/proxy/health.go``): ``max_fails`` consecutive failed tries mark an
upstream down (0 = never). While down, a task sends it ``. IN NS`` (RD set) every
``health_check_interval`` seconds, waiting at most ``min(read_timeout, 1 s)``; any reply with
the right ID marks it up again, as does a successful real query. :attr:`Forwarder.states` has
one :class:`UpstreamState` per upstream with its counters for metrics.

**Not done** (CoreDNS extras): connection reuse, ``force_tcp``/``prefer_udp``, TLS, ``except``,
``next``/``failover``. The reply is not truncated for the client's UDP limit: see
:func:`fit_udp`, which the caller applies to UDP clients.

:class:`ForwardRouter` picks a Forwarder by longest zone suffix (stub domains, the ``.``
default); :func:`parse_stub_domain` reads ``example.corp=10.0.0.2:53,10.0.0.3``.
:func:`points_at_us` and :func:`check_no_loop` find upstreams that are our own listeners.

**Wiring** (for the handler and transport): a Forwarder needs no running loop to be built,
only to forward; await :meth:`Forwarder.close` (or :meth:`ForwardRouter.close`) at shutdown.
Only replies with ``Exchange.upstream`` set go into :class:`dnsserver.plugins.cache.Cache`; apply
:func:`fit_udp` with :func:`dnsserver.serve.wire.udp_limit` before sending over UDP. Check loops
after binding (port 0 picks the port): ``check_no_loop(upstreams, listeners.addresses)``.
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
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import asyncio_dgram

from dnsserver.config.resolvconf import Upstream, UpstreamError, parse_upstream
from dnsserver.serve import wire
from zones.records import FORMERR, NS, OPT, REFUSED, SERVFAIL

log = logging.getLogger("dnsserver.forward")

POLICIES = ("random", "round_robin", "sequential")
MAX_UPSTREAMS = 15  # CoreDNS's limit per forward line
HEALTH_CHECK_TIMEOUT = 1.0  # CoreDNS hcReadTimeout
_QR, _TC = 0x80, 0x02

ReplyObserver = Callable[[Upstream, int, float], None]


class ForwardConfigError(ValueError):
    """The forwarding configuration cannot be used."""


class LoopError(ForwardConfigError):
    """An upstream is this server itself: every forwarded query would come back to us."""


class _TryFailed(Exception):
    """One try at one upstream failed (the message says why)."""


class Exchange(NamedTuple):
    """A reply for the client, and the upstream that gave it (None: we made it ourselves, so
    it must not be cached: REFUSED over the limit, SERVFAIL when every try failed, FORMERR)."""

    reply: bytes
    upstream: Upstream | None


class UpstreamState:
    """One upstream's health and counters (for ``coredns_proxy_*`` / ``coredns_forward_*``)."""

    __slots__ = ("down", "fails", "failures", "health_check_failures", "health_checks",
                 "mismatched", "rcodes", "requests", "tcp_retries", "upstream")

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.down = False
        self.fails = 0  # consecutive failures (tries and health checks)
        self.requests = 0  # tries sent to it
        self.failures = 0  # tries that got no usable reply
        self.rcodes: dict[int, int] = {}  # replies by rcode
        self.tcp_retries = 0  # UDP replies with TC=1 retried over TCP
        self.mismatched = 0  # datagrams ignored: wrong ID, question or not a reply
        self.health_checks = 0
        self.health_check_failures = 0  # coredns_proxy_healthcheck_failures_total

    def __repr__(self) -> str:
        state = "down" if self.down else "up"
        return f"<UpstreamState {self.upstream} {state} fails={self.fails}>"


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
        health_check_interval: float = 0.5,
        on_reply: ReplyObserver | None = None,
    ) -> None:
        if not upstreams:
            raise ForwardConfigError("forward needs at least one upstream")
        if len(upstreams) > MAX_UPSTREAMS:
            raise ForwardConfigError(f"forward takes at most {MAX_UPSTREAMS} upstreams")
        if policy not in POLICIES:
            raise ForwardConfigError(f"policy {policy!r}: expected one of {', '.join(POLICIES)}")
        self.states = tuple(UpstreamState(upstream) for upstream in upstreams)
        self.policy = policy
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.max_concurrent = max_concurrent
        self.max_fails = max_fails
        self.health_check_interval = health_check_interval
        self.on_reply = on_reply
        self.in_flight = 0
        self.rejected = 0  # coredns_forward_max_concurrent_rejects_total
        self.healthcheck_broken = 0  # coredns_forward_healthcheck_broken_total
        self._next = 0  # round_robin position
        self._health_tasks: dict[UpstreamState, asyncio.Task[None]] = {}
        self._closed = False
        self._logged_bugs: set[tuple[str, str, int]] = set()

    @property
    def upstreams(self) -> tuple[Upstream, ...]:
        return tuple(state.upstream for state in self.states)

    async def forward(self, query: bytes) -> bytes:
        """The reply for the client to ``query`` (from an upstream or made here)."""
        return (await self.exchange(query)).reply

    async def exchange(self, query: bytes) -> Exchange:
        """Like :meth:`forward`, and says which upstream answered. Never raises."""
        try:
            parsed = wire.parse_query(query)
        except (wire.FormError, struct.error):
            return Exchange(_formerr(query), None)
        if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
            self.rejected += 1
            return Exchange(wire.error_reply(query, parsed, REFUSED), None)
        self.in_flight += 1
        try:
            return await self._exchange(query, parsed)
        except Exception as exc:  # a bug: SERVFAIL, logged once per place
            self._log_bug(exc)
            return Exchange(wire.error_reply(query, parsed, SERVFAIL), None)
        finally:
            self.in_flight -= 1

    async def _exchange(self, query: bytes, parsed: wire.Query) -> Exchange:
        loop = asyncio.get_running_loop()
        question_end = parsed.question_end
        deadline = loop.time() + self.deadline
        question = query[12:question_end]
        for state in self._candidates():
            if loop.time() >= deadline:
                break
            state.requests += 1
            started = time.monotonic()
            try:
                reply = await self._try(state, query, question, deadline)
            except (OSError, TimeoutError, _TryFailed, asyncio_dgram.TransportClosed) as exc:
                self._failed(state, exc)
                continue
            rcode = reply[3] & 0x0F
            self._succeeded(state, rcode)
            if self.on_reply is not None:
                self.on_reply(state.upstream, rcode, time.monotonic() - started)
            return Exchange(_for_client(reply, query, question_end), state.upstream)
        return Exchange(wire.error_reply(query, parsed, SERVFAIL), None)

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
        return [random.choice(states)]

    async def _try(
        self, state: UpstreamState, query: bytes, question: bytes, deadline: float
    ) -> bytes:
        """One upstream's reply to ``query`` (UDP, then TCP on TC=1), checked against ours."""
        loop = asyncio.get_running_loop()
        upstream = state.upstream
        query_id = secrets.token_bytes(2)  # unpredictable, unlike random's (RFC 5452 §9.2)
        outgoing = query_id + query[2:]
        reply = await self._udp(state, outgoing, question, min(
            deadline, loop.time() + self.read_timeout))
        if reply[2] & _TC:
            state.tcp_retries += 1
            reply = await _tcp(upstream, outgoing, question, min(
                deadline, loop.time() + self.read_timeout))
        return reply

    async def _udp(
        self, state: UpstreamState, outgoing: bytes, question: bytes, until: float
    ) -> bytes:
        stream = await _connect_udp(state.upstream)
        try:
            async with asyncio.timeout_at(until):
                await stream.send(outgoing)
                while True:
                    reply, _ = await stream.recv()
                    if _matches(reply, outgoing, question):
                        return bytes(reply)
                    state.mismatched += 1
        finally:
            stream.close()

    def _failed(self, state: UpstreamState, exc: BaseException) -> None:
        state.failures += 1
        state.fails += 1
        if self.max_fails > 0 and state.fails >= self.max_fails and not state.down:
            state.down = True
            log.warning(
                "upstream %s is down after %d failed tries (last: %s); health-checking it "
                "every %gs", state.upstream, state.fails, _describe(exc),
                self.health_check_interval,
            )
            self._start_health_check(state)

    def _succeeded(self, state: UpstreamState, rcode: int) -> None:
        state.rcodes[rcode] = state.rcodes.get(rcode, 0) + 1
        state.fails = 0
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
                state.fails = 0
                if state.down:
                    state.down = False
                    log.info("upstream %s is healthy again", state.upstream)
                return
            state.health_check_failures += 1
            state.fails += 1
            await asyncio.sleep(self.health_check_interval)

    async def probe(self, upstream: Upstream) -> bool:
        """True when ``upstream`` answers ``. IN NS`` at all (any rcode), within the timeout."""
        query_id = secrets.token_bytes(2)
        ping = query_id + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x00" + struct.pack(
            ">HH", NS, 1)
        timeout = min(self.read_timeout, HEALTH_CHECK_TIMEOUT)
        try:
            stream = await _connect_udp(upstream)
        except OSError:
            return False
        try:
            async with asyncio.timeout(timeout):
                await stream.send(ping)
                while True:
                    reply, _ = await stream.recv()
                    if len(reply) >= wire.HEADER_LENGTH and reply[:2] == query_id and (
                        reply[2] & _QR
                    ):
                        return True
        except (OSError, TimeoutError, asyncio_dgram.TransportClosed):
            return False
        finally:
            stream.close()

    async def close(self) -> None:
        """Stop the health checks. Exchanges in flight finish on their own (their sockets are
        per query); the Forwarder must not be used afterwards."""
        self._closed = True
        tasks = list(self._health_tasks.values())
        self._health_tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _log_bug(self, exc: Exception) -> None:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        signature = (type(exc).__name__, frame.filename, frame.lineno or 0)
        if signature not in self._logged_bugs:
            self._logged_bugs.add(signature)
            log.error("bug while forwarding a query; answering SERVFAIL", exc_info=exc)


async def _connect_udp(upstream: Upstream) -> asyncio_dgram.aio.DatagramClient:
    """A UDP socket connected to ``upstream``: the kernel drops datagrams from anyone else.

    ``asyncio_dgram.connect``, not ``from_socket``: the latter pokes a private attribute that
    uvloop's transport does not have. The host is an IP literal, so nothing is resolved.
    """
    stream: asyncio_dgram.aio.DatagramClient = await asyncio_dgram.connect(
        (upstream.host, upstream.port)
    )
    return stream


async def _tcp(upstream: Upstream, outgoing: bytes, question: bytes, until: float) -> bytes:
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout_at(until):
            reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
            writer.write(len(outgoing).to_bytes(2, "big") + outgoing)
            await writer.drain()
            length = int.from_bytes(await reader.readexactly(2), "big")
            reply = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise _TryFailed(f"tcp connection closed after {len(exc.partial)} bytes") from None
    finally:
        if writer is not None:
            writer.close()
    if not _matches(reply, outgoing, question):
        raise _TryFailed("tcp reply does not match the query")
    return reply


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
        cursor = wire.Cursor(reply, wire.HEADER_LENGTH)
        qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", reply, 4)
        for _ in range(qdcount):
            cursor.name(allow_pointers=True)
            cursor.take(4)
        question_end = cursor.offset
        opt = b""
        for _ in range(ancount + nscount + arcount):
            start = cursor.offset
            cursor.name(allow_pointers=True)
            rtype = cursor.u16()
            cursor.take(6)
            cursor.take(cursor.u16())
            if rtype == OPT:
                opt = reply[start : cursor.offset]
    except (wire.FormError, struct.error):
        return reply[:2] + bytes((reply[2] | _TC, reply[3])) + b"\x00" * 8
    counts = struct.pack(">HHHH", qdcount, 0, 0, 1 if opt else 0)
    return reply[:2] + bytes((reply[2] | _TC, reply[3])) + counts + reply[12:question_end] + opt


# -- stub domains ---------------------------------------------------------------------------


def zone_to_wire(zone: str) -> bytes:
    """``example.corp`` (or ``.``) → lower-cased wire form ``\\x07example\\x04corp\\x00``."""
    text = zone.strip().rstrip(".").lower()
    if not text:
        return b"\x00"
    labels = text.split(".")
    if any(not label or len(label) > 63 for label in labels) or len(text) > 253:
        raise ForwardConfigError(f"{zone!r} is not a domain name")
    return b"".join(bytes((len(label),)) + label.encode("ascii") for label in labels) + b"\x00"


class ForwardRouter:
    """Which :class:`Forwarder` serves a name: the longest matching zone suffix wins, ``.`` is
    the default (optional). Zones are given as text (``example.corp``, ``.``)."""

    def __init__(self, routes: Mapping[str, Forwarder]) -> None:
        self.routes = {zone_to_wire(zone): forwarder for zone, forwarder in routes.items()}
        self._default = self.routes.get(b"\x00")

    def route(self, qname_lower_wire: bytes) -> Forwarder | None:
        """The Forwarder for a lower-cased wire name (uncompressed, ending in ``\\x00``)."""
        routes = self.routes
        offset = 0
        end = len(qname_lower_wire) - 1
        while offset < end:
            forwarder = routes.get(qname_lower_wire[offset:])
            if forwarder is not None:
                return forwarder
            offset += qname_lower_wire[offset] + 1
        return self._default

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


def check_no_loop(
    upstreams: Iterable[Upstream], listen_addresses: Iterable[tuple[str, int]], *, what: str = "."
) -> None:
    """Raise :class:`LoopError` when an upstream of ``what`` is this server (SPEC §4.5)."""
    loops = points_at_us(upstreams, listen_addresses)
    if loops:
        raise LoopError(
            f"forward {what}: upstream {', '.join(map(str, loops))} is this server's own "
            "listen address; every query would loop back to us (see CoreDNS's loop plugin, "
            "coredns/coredns#2087: systemd-resolved's 127.0.0.53 in resolv.conf is the usual cause)"
        )


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


__all__ = [
    "POLICIES", "Exchange", "ForwardConfigError", "ForwardRouter", "Forwarder", "LoopError",
    "Upstream", "UpstreamError", "UpstreamState", "check_no_loop", "fit_udp", "is_loopback",
    "parse_stub_domain", "parse_upstream", "parse_upstreams", "points_at_us", "zone_to_wire",
]
