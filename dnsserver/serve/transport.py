"""UDP and TCP listeners; both hand each message to one ``handle(bytes, tcp) -> bytes | None``.

TCP follows RFC 7766: several (pipelined) queries per connection, answered in order; a
connection with no complete query for ``idle_timeout`` seconds is closed; at most
``max_connections`` are open, and a new one beyond that closes the longest-idle one. A client
that stops reading its replies stops being read (back-pressure), so it cannot fill our memory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("dnsserver.transport")

# (message, tcp, IP, port) -> a reply, None, or a coroutine for a reply that waits on an upstream
Handle = Callable[[bytes, bool, str, int], "bytes | Coroutine[Any, Any, bytes | None] | None"]


@dataclass(frozen=True, slots=True)
class Limits:
    idle_timeout: float = 10.0
    max_connections: int = 1000


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, handle: Handle) -> None:
        self._handle = handle
        self._sendto: Callable[..., None] | None = None
        self._pending: set[asyncio.Task[bytes | None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sendto = transport.sendto  # type: ignore[attr-defined]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._sendto = None
        for task in self._pending:
            task.cancel()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        reply = self._handle(data, False, addr[0], addr[1])  # type: ignore[arg-type]
        if reply is None or self._sendto is None:
            return
        if reply.__class__ is bytes:
            self._sendto(reply, addr)
            return
        task = asyncio.get_running_loop().create_task(reply)  # type: ignore[arg-type]
        self._pending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(lambda done: self._send_later(done, addr))

    def _send_later(self, task: asyncio.Task[bytes | None], addr: object) -> None:
        self._pending.discard(task)
        if task.cancelled() or task.exception() is not None or self._sendto is None:
            return
        reply = task.result()
        if reply is not None:
            self._sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)  # ICMP errors from clients that went away


Address = tuple[Any, ...]
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python names it from 3.12
WILDCARDS = ("0.0.0.0", "::", "")


class WildcardUdp:
    """UDP on a wildcard address, answering from the address each query was sent to.

    A socket bound to 0.0.0.0 sends from whatever address the route picks, so on a host with
    several addresses a reply can come from another address than the query went to, and the
    client drops it. The destination of each query is read with ``IP_PKTINFO`` /
    ``IPV6_PKTINFO`` and the reply is sent from it, as CoreDNS's library does.
    """

    BATCH = 64  # datagrams read per wake-up

    def __init__(self, handle: Handle, host: str, port: int) -> None:
        family = _family(host or "0.0.0.0")
        self._handle = handle
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                self._level, self._kind = socket.IPPROTO_IPV6, socket.IPV6_PKTINFO
            else:
                self._sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                self._level, self._kind = socket.IPPROTO_IP, IP_PKTINFO
            self._sock.bind((host or "0.0.0.0", port))
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)
        self._pending: set[asyncio.Task[bytes | None]] = set()
        self._closed = False

    def _readable(self) -> None:
        for _ in range(self.BATCH):
            try:
                data, ancillary, _flags, addr = self._sock.recvmsg(65535, 256)
            except BlockingIOError:
                return
            except OSError as exc:  # ICMP errors of earlier replies surface here
                log.debug("udp error: %s", exc)
                continue
            source = self._source(ancillary)
            reply = self._handle(data, False, addr[0], addr[1])
            if reply is None:
                continue
            if isinstance(reply, bytes):
                self._send(reply, addr, source)
                continue
            task = self._loop.create_task(reply)
            self._pending.add(task)
            task.add_done_callback(functools.partial(self._send_later, addr=addr, source=source))

    def _source(self, ancillary: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
        """The control message that makes the reply leave from the query's destination."""
        for level, kind, value in ancillary:
            if level == self._level and kind == self._kind:
                if kind == IP_PKTINFO and len(value) >= 12:  # ifindex, spec_dst, addr
                    return [(level, kind, b"\x00" * 4 + value[8:12] + b"\x00" * 4)]
                if len(value) >= 20:  # in6_pktinfo: addr, ifindex
                    return [(level, kind, value[:20])]
        return []

    def _send(self, reply: bytes, addr: Address, source: list[tuple[int, int, bytes]]) -> None:
        if self._closed:
            return
        try:
            self._sock.sendmsg([reply], source, 0, addr)
        except OSError as exc:  # a full buffer or a vanished route: UDP clients retry
            log.debug("udp send failed: %s", exc)

    def _send_later(self, task: asyncio.Task[bytes | None], *, addr: Address,
                    source: list[tuple[int, int, bytes]]) -> None:
        self._pending.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        reply = task.result()
        if reply is not None:
            self._send(reply, addr, source)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        for task in self._pending:
            task.cancel()
        self._sock.close()


class TcpConnections:
    """The open TCP connections of one server, for the bound and for shutdown."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open: dict[TcpProtocol, None] = {}  # insertion order = least recently active first

    def add(self, conn: TcpProtocol) -> None:
        while len(self.open) >= self.limits.max_connections:
            oldest = next(iter(self.open))
            oldest.close()
            self.open.pop(oldest, None)
        self.open[conn] = None

    def touch(self, conn: TcpProtocol) -> None:
        if conn in self.open:
            del self.open[conn]
            self.open[conn] = None

    def remove(self, conn: TcpProtocol) -> None:
        self.open.pop(conn, None)

    def close_all(self) -> None:
        for conn in list(self.open):
            conn.close()
        self.open.clear()


class TcpProtocol(asyncio.Protocol):
    def __init__(self, handle: Handle, connections: TcpConnections) -> None:
        self._handle = handle
        self._connections = connections
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._last_query = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._client = ""
        self._port = 0
        self._pending: set[asyncio.Task[bytes | None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if peer else ""
        self._port = int(peer[1]) if peer else 0
        self._connections.add(self)
        self._schedule_idle_check(self._connections.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.remove(self)
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None
        for task in self._pending:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        # While the client is not reading our replies, queries stay in the buffer unanswered
        # (and reading stops): its replies cannot pile up in our memory.
        while len(buffer) >= 2 and self._transport is not None and not self._paused:
            length = buffer[0] << 8 | buffer[1]
            if length == 0:  # no DNS message is empty: the stream is broken
                self.close()
                return
            if len(buffer) < 2 + length:
                return
            message = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            self._last_query = time.monotonic()
            self._connections.touch(self)
            reply = self._handle(message, True, self._client, self._port)
            if reply is None:
                continue
            if isinstance(reply, bytes):
                self._write(reply)
                continue
            # Waits on an upstream: answered when it replies, out of order (RFC 7766 §6.2.1.1).
            task = asyncio.get_running_loop().create_task(reply)
            self._pending.add(task)
            task.add_done_callback(self._write_later)

    def _write(self, reply: bytes) -> None:
        if self._transport is not None:
            self._transport.write(len(reply).to_bytes(2, "big") + reply)

    def _write_later(self, task: asyncio.Task[bytes | None]) -> None:
        self._pending.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        reply = task.result()
        if reply is not None:
            self._write(reply)

    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None:
            self._transport.resume_reading()
            self.data_received(b"")  # the queries that waited

    def close(self) -> None:
        """Close now: a connection with replies the client does not read is aborted, since a
        graceful close would wait for the client forever."""
        transport = self._transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def _schedule_idle_check(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        idle = time.monotonic() - self._last_query
        remaining = self._connections.limits.idle_timeout - idle
        if remaining <= 0:
            self.close()
        else:
            self._schedule_idle_check(remaining)


class DnsListeners:
    """UDP and TCP sockets on every listen address, all serving one handle function.

    Addresses are opened and closed one by one, so a reload that changes the list keeps the
    sockets of the addresses it keeps: no query to them is dropped.
    """

    def __init__(self, handle: Handle, limits: Limits | None = None) -> None:
        self._handle = handle
        self.connections = TcpConnections(limits or Limits())
        self._open: dict[
            tuple[str, int], tuple[asyncio.Server, asyncio.DatagramTransport | WildcardUdp]
        ] = {}
        self._bound: dict[tuple[str, int], tuple[str, int]] = {}  # configured -> bound

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return list(self._bound.values())

    async def start(self, listen: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Also listen on the addresses of ``listen`` not open yet; all of them or none (one
        that cannot be bound closes those this call opened). Returns the ones opened."""
        opened: list[tuple[str, int]] = []
        try:
            for address in listen:
                if address not in self._open:
                    await self._start_one(address)
                    opened.append(address)
        except BaseException:
            for address in opened:
                await self._stop_one(address)
            raise
        return opened

    def bound(self, listen: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Where the open addresses among ``listen`` are bound (port 0 made a port)."""
        return [self._bound[address] for address in listen if address in self._bound]

    async def close_others(self, listen: list[tuple[str, int]]) -> None:
        """Stop listening on the open addresses that are not in ``listen``."""
        for address in [a for a in self._open if a not in listen]:
            await self._stop_one(address)

    async def close(self, addresses: list[tuple[str, int]]) -> None:
        for address in addresses:
            if address in self._open:
                await self._stop_one(address)

    async def _start_one(self, address: tuple[str, int]) -> None:
        """Bind TCP first, so that port 0 picks one port that UDP then shares."""
        loop = asyncio.get_running_loop()
        host, port = address
        tcp = await loop.create_server(
            lambda: TcpProtocol(self._handle, self.connections), host, port,
            family=_family(host), reuse_address=True, backlog=1024,
        )
        bound_port = tcp.sockets[0].getsockname()[1]
        udp: asyncio.DatagramTransport | WildcardUdp
        try:
            if host in WILDCARDS:
                udp = WildcardUdp(self._handle, host, bound_port)
            else:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: UdpProtocol(self._handle), local_addr=(host, bound_port),
                    family=_family(host),
                )
        except OSError:
            tcp.close()
            raise
        self._open[address] = (tcp, udp)
        self._bound[address] = (host, bound_port)

    async def _stop_one(self, address: tuple[str, int]) -> None:
        """Stop accepting on ``address``; its open TCP connections end when idle."""
        tcp, udp = self._open.pop(address)
        self._bound.pop(address, None)
        tcp.close()
        udp.close()

    async def stop(self) -> None:
        """Stop accepting, close UDP, close every TCP connection, then wait for the servers."""
        for tcp, udp in self._open.values():
            tcp.close()
            udp.close()
        self.connections.close_all()
        for tcp, _ in self._open.values():
            await tcp.wait_closed()
        self._open.clear()
        self._bound.clear()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
