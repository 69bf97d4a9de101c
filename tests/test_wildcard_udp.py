"""A server listening on 0.0.0.0 answers UDP from the address each query was sent to."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import dns.message
import pytest
from livecluster import ServerProcess

from dnsserver.serve import transport

EXAMPLE = Path(__file__).resolve().parent.parent / "dnsserver" / "example" / "cluster.yaml"


def test_replies_leave_from_the_address_asked() -> None:
    proc = ServerProcess(["--manifests", str(EXAMPLE)], listen="0.0.0.0:0")
    try:
        for address in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(2)
                query = dns.message.make_query("kubernetes.default.svc.cluster.local", "A")
                sock.sendto(query.to_wire(), (address, proc.port))
                data, source = sock.recvfrom(4096)
                assert source == (address, proc.port)
                reply = dns.message.from_wire(data)
                assert reply.id == query.id
                assert [r.to_text() for rrset in reply.answer for r in rrset] == ["10.96.0.1"]
    finally:
        proc.stop()


# -- the batched and the one-by-one paths, in process ------------------------------------------

ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def _reply_to(data: bytes) -> bytes:
    return data[:2] + b"R" + data[2:]  # the ID, and the query to tell which one it was


def _serve_burst(handle: transport.Handle, *, batches: bool, queries: int = 120
                 ) -> tuple[list[tuple[bytes, tuple[str, int], tuple[str, int]]], bool]:
    """Send ``queries`` datagrams from 3 clients to 3 addresses before the server reads any;
    return (query, the address it was sent to, where its reply came from) per reply, and
    whether the batched path served them."""

    async def run() -> tuple[list[tuple[bytes, tuple[str, int], tuple[str, int]]], bool]:
        udp = transport.WildcardUdp(handle, "0.0.0.0", 0, batches=batches)
        port = udp._sock.getsockname()[1]
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        sent: dict[bytes, tuple[str, int]] = {}
        try:
            for n in range(queries):  # all in the socket's buffer: batches of many
                destination = (ADDRESSES[n % 3], port)
                query = n.to_bytes(2, "big") + b"query %d" % n
                clients[n // 3 % 3].sendto(query, destination)
                sent[query] = destination
            got: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []
            deadline = time.monotonic() + 5
            for client in clients:
                client.setblocking(False)
            while time.monotonic() < deadline and len(got) < len(sent):
                await asyncio.sleep(0.01)
                for client in clients:
                    with contextlib.suppress(BlockingIOError):
                        while True:
                            data, source = client.recvfrom(4096)
                            query = data[:2] + data[3:]
                            got.append((query, sent[query], source))
            await asyncio.sleep(0.05)
            return got, hasattr(udp, "_batches")
        finally:
            udp.close()
            for client in clients:
                client.close()

    return asyncio.run(run())


@pytest.mark.parametrize("batches", [True, False])
def test_every_reply_leaves_from_the_address_its_query_went_to(batches: bool) -> None:
    def handle(data: bytes, tcp: bool, client: str, port: int) -> bytes:
        assert client == "127.0.0.1" and port > 0 and not tcp
        return _reply_to(data)

    got, batched = _serve_burst(handle, batches=batches)
    assert batched == (batches and sys.platform.startswith("linux"))
    assert len(got) == 120
    assert len({query for query, _, _ in got}) == 120
    for _query, destination, source in got:
        assert source == destination


@pytest.mark.parametrize("batches", [True, False])
def test_queries_without_reply_and_replies_that_wait_keep_their_addresses(batches: bool) -> None:
    """Some queries of a batch get no reply (dropped) or a reply later (an upstream's): the
    others' replies still go to their own client, from their own destination."""

    async def later(data: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return _reply_to(data)

    def handle(data: bytes, tcp: bool, client: str, port: int
               ) -> bytes | Coroutine[Any, Any, bytes | None] | None:
        n = int.from_bytes(data[:2], "big")
        if n % 5 == 1:
            return None
        if n % 5 == 2:
            return later(data)
        return _reply_to(data)

    got, _ = _serve_burst(handle, batches=batches)
    assert sorted(int.from_bytes(q[:2], "big") for q, _, _ in got) == [
        n for n in range(120) if n % 5 != 1]
    for _query, destination, source in got:
        assert source == destination


def test_a_reply_is_the_handlers_byte_for_byte() -> None:
    """A real query through the batched path: the reply is the handler's, byte for byte."""
    query = dns.message.make_query("kubernetes.default.svc.cluster.local", "A").to_wire()
    seen: list[tuple[str, int]] = []

    def handle(data: bytes, tcp: bool, client: str, port: int) -> bytes:
        seen.append((client, port))
        return b"\x00" * 3000 + data  # longer than a query: slots are not query-sized

    async def run() -> tuple[bytes, tuple[str, int], int]:
        udp = transport.WildcardUdp(handle, "0.0.0.0", 0)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.bind(("127.0.0.1", 0))
                client.setblocking(False)
                client.sendto(query, ("127.0.0.2", udp._sock.getsockname()[1]))
                loop = asyncio.get_running_loop()
                data, source = await asyncio.wait_for(loop.sock_recvfrom(client, 65535), 5)
                return data, source, client.getsockname()[1]
        finally:
            udp.close()

    data, source, client_port = asyncio.run(run())
    assert data == b"\x00" * 3000 + query
    assert source[0] == "127.0.0.2"
    assert seen == [("127.0.0.1", client_port)]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("batches", [True, False])
@pytest.mark.parametrize("destination", ["::1", "127.0.0.1"])  # IPv4 arrives mapped on "::"
def test_ipv6_wildcard_replies_from_the_address_asked(batches: bool, destination: str) -> None:
    def handle(data: bytes, tcp: bool, client: str, port: int) -> bytes:
        return _reply_to(data)

    async def run() -> list[tuple[bytes, tuple[Any, ...]]]:
        udp = transport.WildcardUdp(handle, "::", 0, batches=batches)
        family = socket.AF_INET6 if ":" in destination else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as client:
                client.setblocking(False)
                for n in range(40):
                    client.sendto(n.to_bytes(2, "big") + b"q", (destination, udp._sock.getsockname()[1]))
                loop = asyncio.get_running_loop()
                return [await asyncio.wait_for(loop.sock_recvfrom(client, 4096), 5)
                        for _ in range(40)]
        finally:
            udp.close()

    replies = asyncio.run(run())
    assert sorted(data for data, _ in replies) == sorted(
        n.to_bytes(2, "big") + b"Rq" for n in range(40))
    assert {source[0] for _, source in replies} == {destination}
