"""UDP and TCP listeners; both hand each message to one ``handle(bytes, tcp) -> bytes | None``.

TCP follows RFC 7766: several (pipelined) queries per connection, answered in order; a
connection with no complete query for ``idle_timeout`` seconds is closed; at most
``max_connections`` are open, and a new one beyond that closes the longest-idle one. A client
that stops reading its replies stops being read (back-pressure), so it cannot fill our memory.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import logging
import mmap
import os
import socket
import struct
import sys
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
_U32, _SIZE, _POINTER = struct.Struct("@I"), struct.Struct("@N"), struct.Struct("@P")
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python names it from 3.12
WILDCARDS = ("0.0.0.0", "::", "")


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("length", ctypes.c_uint)]


def _mmsg_calls() -> tuple[Any, Any] | None:
    """libc's ``recvmmsg`` and ``sendmmsg`` (Linux), or None where there are none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                         ctypes.c_void_p]
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


class _Batches:
    """Buffers for ``recvmmsg``/``sendmmsg``: COUNT datagrams in, COUNT replies out, one system
    call each way. Message i is read into slot i (data, source address, control message); its
    reply is copied into out slot k (k <= i: some queries have no reply now) whose header
    points at address i and whose control message carries the query's destination.

    Data slots are 64 KiB, as a single ``recvmsg`` reads, in anonymous maps: only the pages a
    datagram touches are ever in memory.
    """

    COUNT = 32
    SLOT = 65535
    NAME = 28  # sockaddr_in6, which holds a sockaddr_in too
    HEADER = socket.CMSG_LEN(0)  # struct cmsghdr
    CONTROL = socket.CMSG_SPACE(20)  # one in6_pktinfo, or one in_pktinfo

    def __init__(self, family: socket.AddressFamily, level: int, kind: int) -> None:
        count, slot, name, control = self.COUNT, self.SLOT, self.NAME, self.CONTROL
        self.v6 = family == socket.AF_INET6
        info = 20 if self.v6 else 12  # in6_pktinfo, in_pktinfo
        self.cmsg_header = struct.pack("@Nii", socket.CMSG_LEN(info), level, kind)
        self._data, self._out = mmap.mmap(-1, count * slot), mmap.mmap(-1, count * slot)
        self._names = ctypes.create_string_buffer(count * name)
        self._control_in = ctypes.create_string_buffer(count * control)
        self._control_out = ctypes.create_string_buffer(count * control)
        self.headers_in, self.headers_out = (_Mmsghdr * count)(), (_Mmsghdr * count)()
        self._iov_in, self._iov_out = (_Iovec * count)(), (_Iovec * count)()
        address = ctypes.addressof
        data = address(ctypes.c_char.from_buffer(self._data))
        out = address(ctypes.c_char.from_buffer(self._out))
        self.names_at = address(self._names)
        sockaddr_length = 28 if self.v6 else 16
        for i in range(count):
            self._iov_in[i] = _Iovec(data + i * slot, slot)
            self._iov_out[i] = _Iovec(out + i * slot, 0)
            self.headers_in[i].hdr = _Msghdr(
                self.names_at + i * name, name, address(self._iov_in[i]), 1,
                address(self._control_in) + i * control, control, 0)
            self.headers_out[i].hdr = _Msghdr(
                self.names_at + i * name, sockaddr_length, address(self._iov_out[i]), 1,
                address(self._control_out) + i * control, socket.CMSG_SPACE(info), 0)
        self.names = memoryview(self._names).cast("B")
        self.control_in = memoryview(self._control_in).cast("B")
        self.control_out = memoryview(self._control_out).cast("B")
        for i in range(count):
            self.control_out[i * control : i * control + self.HEADER] = self.cmsg_header
        # What the kernel overwrites (lengths, flags) and we re-point (names) is reset from
        # these before each call.
        self.headers_in_template = bytes(self.headers_in)
        self.headers_out_template = bytes(self.headers_out)
        self.headers_in_at = address(self.headers_in)
        self.headers_out_at = address(self.headers_out)
        # Byte views made once: a view of a ctypes array costs a microsecond to make.
        self.headers_in_bytes = memoryview(self.headers_in).cast("B")
        self.headers_out_bytes = memoryview(self.headers_out).cast("B")
        self.data = memoryview(self._data)
        self.out = memoryview(self._out)
        self.iov_out = memoryview(self._iov_out).cast("B")
        self.header_size = ctypes.sizeof(_Mmsghdr)
        self.length_at = _Mmsghdr.length.offset
        self.iov_size, self.iov_length_at = ctypes.sizeof(_Iovec), _Iovec.length.offset
        self.name_at = _Mmsghdr.hdr.offset + _Msghdr.name.offset

    def address(self, i: int) -> Address:
        """The source address of message i, as ``recvmsg`` gives it."""
        raw = self.names[i * self.NAME : (i + 1) * self.NAME].tobytes()
        port = raw[2] << 8 | raw[3]
        if not self.v6:
            return (socket.inet_ntoa(raw[4:8]), port)
        flowinfo = int.from_bytes(raw[4:8], "big")
        scope = int.from_bytes(raw[24:28], sys.byteorder)
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope)

    def pktinfo(self, i: int) -> bytes | None:
        """The pktinfo of message i, None when it came without one."""
        start = i * self.CONTROL
        if self.control_in[start : start + self.HEADER] != self.cmsg_header:
            return None
        end = start + self.HEADER + (20 if self.v6 else 12)
        return self.control_in[start + self.HEADER : end].tobytes()


class WildcardUdp:
    """UDP on a wildcard address, answering from the address each query was sent to.

    A socket bound to 0.0.0.0 sends from whatever address the route picks, so on a host with
    several addresses a reply can come from another address than the query went to, and the
    client drops it. The destination of each query is read with ``IP_PKTINFO`` /
    ``IPV6_PKTINFO`` and the reply is sent from it, as CoreDNS's library does.

    On Linux, datagrams are read and replies sent up to 32 at a time (``recvmmsg``,
    ``sendmmsg``): the control messages cost one system call per datagram each way, which a
    socket bound to one address does not pay, and batching wins that back.
    """

    BATCH = 64  # datagrams read per wake-up
    CONTROL_SIZE = socket.CMSG_SPACE(20)  # room for one in6_pktinfo (or one in_pktinfo)
    MAX_SOURCES = 256  # destinations whose reply control message is kept

    def __init__(self, handle: Handle, host: str, port: int, *, batches: bool = True) -> None:
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
        self._pending: set[asyncio.Task[bytes | None]] = set()
        # A query's control message -> its reply's: a server sees the same few destinations
        # (its own addresses) again and again, so most replies reuse one built before.
        self._sources: dict[tuple[int, int, bytes], list[tuple[int, int, bytes]]] = {}
        self._closed = False
        calls = _mmsg_calls() if batches else None
        if calls is not None:
            self._recvmmsg, self._sendmmsg = calls
            self._batches = _Batches(family, self._level, self._kind)
            self._loop.add_reader(self._sock.fileno(), self._read_batches)
        else:
            self._loop.add_reader(self._sock.fileno(), self._read_each)

    def _read_batches(self) -> None:
        """Read up to BATCH datagrams, COUNT per ``recvmmsg``; answer them; send the replies
        with one ``sendmmsg``. The hot path: per datagram, a few slices and no system call."""
        b = self._batches
        recvmmsg, handle, fd = self._recvmmsg, self._handle, self._sock.fileno()
        count, slot, name, control, header = b.COUNT, b.SLOT, b.NAME, b.CONTROL, b.HEADER
        data, out, names, control_in, control_out = (
            b.data, b.out, b.names, b.control_in, b.control_out)
        headers, replies, iov_out = b.headers_in_bytes, b.headers_out_bytes, b.iov_out
        headers_in_template, headers_out_template = b.headers_in_template, b.headers_out_template
        header_size, length_at = b.header_size, b.length_at
        iov_size, iov_length_at, name_at, names_at = (
            b.iov_size, b.iov_length_at, b.name_at, b.names_at)
        cmsg_header, v6, ntoa = b.cmsg_header, b.v6, socket.inet_ntoa
        u32, size_t, pointer = _U32.unpack_from, _SIZE.pack_into, _POINTER.pack_into
        # in_pktinfo: the reply leaves from the query's header destination (spec_dst := addr,
        # ifindex 0); in6_pktinfo: the query's destination and interface, as they came.
        info_in, info_out, info_length = (header, header, 20) if v6 else (header + 8, header + 4, 4)
        for _ in range(self.BATCH // count):
            headers[:] = headers_in_template
            got = recvmmsg(fd, b.headers_in_at, count, socket.MSG_DONTWAIT, None)
            if got < 0:
                code = ctypes.get_errno()
                if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return
                log.debug("udp error: %s", os.strerror(code))  # ICMP errors of earlier replies
                continue
            replies[:] = headers_out_template
            k = 0
            for i in range(got):
                start = i * slot
                query = data[start : start + u32(headers, i * header_size + length_at)[0]]
                at = i * name
                if v6:
                    client = socket.inet_ntop(socket.AF_INET6, names[at + 8 : at + 24])
                else:
                    client = ntoa(names[at + 4 : at + 8])
                reply = handle(query.tobytes(), False, client, names[at + 2] << 8 | names[at + 3])
                if reply is None:
                    continue
                c = i * control
                if (reply.__class__ is not bytes or len(reply) > slot
                        or control_in[c : c + header] != cmsg_header):
                    self._reply_alone(reply, i)  # an upstream's coroutine, or no pktinfo
                    continue
                size = len(reply)
                out[k * slot : k * slot + size] = reply
                size_t(iov_out, k * iov_size + iov_length_at, size)
                if k != i:
                    pointer(replies, k * header_size + name_at, names_at + at)
                co = k * control
                control_out[co + info_out : co + info_out + info_length] = (
                    control_in[c + info_in : c + info_in + info_length])
                k += 1
            if k:
                self._send_batch(k)
            if got < count:
                return

    def _send_batch(self, count: int) -> None:
        """``sendmmsg`` the first ``count`` replies; one that fails is dropped (a full buffer,
        a vanished route: UDP clients retry), the rest are still sent."""
        b = self._batches
        start = 0
        while start < count:
            at = b.headers_out_at + start * b.header_size
            sent = self._sendmmsg(self._sock.fileno(), at, count - start, 0)
            if sent < 0:
                log.debug("udp send failed: %s", os.strerror(ctypes.get_errno()))
                sent = 1
            start += sent

    def _reply_alone(self, reply: bytes | Coroutine[Any, Any, bytes | None], i: int) -> None:
        """The reply to message i of a batch, outside the batch."""
        b = self._batches
        addr = b.address(i)
        info = b.pktinfo(i)
        source = [] if info is None else self._source([(self._level, self._kind, info)])
        if isinstance(reply, bytes):
            self._send(reply, addr, source)
            return
        task = self._loop.create_task(reply)
        self._pending.add(task)
        task.add_done_callback(functools.partial(self._send_later, addr=addr, source=source))

    def _read_each(self) -> None:
        """Read, answer and reply to up to BATCH datagrams, one system call each way (where
        there is no ``recvmmsg``). Method lookups are hoisted, and nothing but the reply's
        control message is looked up per datagram."""
        recvmsg, sendmsg, handle = self._sock.recvmsg, self._sock.sendmsg, self._handle
        sources, control_size = self._sources, self.CONTROL_SIZE
        for _ in range(self.BATCH):
            try:
                data, ancillary, _flags, addr = recvmsg(65535, control_size)
            except BlockingIOError:
                return
            except OSError as exc:  # ICMP errors of earlier replies surface here
                log.debug("udp error: %s", exc)
                continue
            source = sources.get(ancillary[0]) if len(ancillary) == 1 else None
            if source is None:
                source = self._source(ancillary)
            reply = handle(data, False, addr[0], addr[1])
            if reply is None:
                continue
            if reply.__class__ is bytes:
                try:
                    sendmsg((reply,), source, 0, addr)
                except OSError as exc:  # a full buffer or a vanished route: UDP clients retry
                    log.debug("udp send failed: %s", exc)
                continue
            task = self._loop.create_task(reply)  # type: ignore[arg-type]
            self._pending.add(task)
            task.add_done_callback(functools.partial(self._send_later, addr=addr, source=source))

    def _source(self, ancillary: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
        """The control message that makes the reply leave from the query's destination."""
        for cmsg in ancillary:
            level, kind, value = cmsg
            if level == self._level and kind == self._kind:
                if kind == IP_PKTINFO and len(value) >= 12:  # ifindex, spec_dst, addr
                    source = [(level, kind, b"\x00" * 4 + value[8:12] + b"\x00" * 4)]
                elif len(value) >= 20:  # in6_pktinfo: addr, ifindex
                    source = [(level, kind, value[:20])]
                else:
                    continue
                if len(ancillary) == 1 and len(self._sources) < self.MAX_SOURCES:
                    self._sources[cmsg] = source
                return source
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
