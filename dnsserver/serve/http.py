"""The HTTP side: ``/health`` (:8080), ``/ready`` (:8181) and ``/metrics`` (:9153).

One tiny asyncio HTTP/1.1 responder serves all three; endpoints configured on the same address
share a listener. Every response closes its connection, so a probe on a kept-alive connection
never reads a stale ready state (CoreDNS#4099).

- ``/health`` is 200 while the process works, lame duck included (CoreDNS ``health``).
- ``/ready`` is 200 once the zone is synced; 503 with the reason before, and "Shutting down"
  from the first moment of a lame-duck shutdown, so traffic moves away while we still answer.
- ``/metrics`` is the server's Prometheus registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("dnsserver.ops")

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Response]
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


Address = tuple[str, int]
Endpoints = dict[Address, dict[str, str]]  # configured address -> path -> endpoint name


def endpoints(health: Address | None, ready: Address | None,
              metrics: Address | None) -> Endpoints:
    """Which paths each address serves; endpoints on one address share its listener."""
    found: Endpoints = {}
    for address, path in ((health, "/health"), (ready, "/ready"), (metrics, "/metrics")):
        if address is not None:
            found.setdefault(address, {})[path] = path
    return found


class OpsServer:
    """HTTP listeners for the operational endpoints.

    A reload changes them in two steps that keep every unchanged address listening (a probe
    never meets a closed port): :meth:`open` listens on the new addresses (all or none),
    then :meth:`use` switches to the new endpoints and closes the addresses they dropped;
    :meth:`abandon` closes what :meth:`open` opened instead.
    """

    def __init__(
        self,
        *,
        health: Address | None,
        ready: Address | None,
        metrics: Address | None,
        readiness: Callable[[], str | None],
        registry: CollectorRegistry,
    ) -> None:
        """``readiness`` returns None when ready, else the reason (the 503 body)."""
        self._readiness = readiness
        self._registry = registry
        self._handlers: dict[str, Route] = {
            "/health": self._health, "/ready": self._ready, "/metrics": self._metrics}
        self._endpoints = endpoints(health, ready, metrics)
        self._servers: dict[Address, asyncio.Server] = {}
        self.addresses: dict[str, Address] = {}  # path -> bound address

    async def start(self) -> None:
        """Listen on every address, or on none: one that cannot be bound closes the others."""
        await self.open(self._endpoints)
        self._publish()

    async def open(self, wanted: Endpoints) -> list[Address]:
        """Also listen on the addresses of ``wanted`` not open yet; all or none."""
        opened: list[Address] = []
        try:
            for address in wanted:
                if address not in self._servers:
                    host, port = address
                    self._servers[address] = await asyncio.start_server(
                        lambda r, w, at=address: self._serve(r, w, at),  # type: ignore[misc]
                        host or None, port, reuse_address=True,
                    )
                    opened.append(address)
        except BaseException:
            await self._close(opened)
            raise
        return opened

    async def use(self, wanted: Endpoints) -> None:
        """Serve ``wanted`` from now on (its addresses are open) and close the others."""
        self._endpoints = wanted
        self._publish()
        await self._close([a for a in self._servers if a not in wanted])

    async def abandon(self, opened: list[Address]) -> None:
        await self._close(opened)

    async def stop(self) -> None:
        await self._close(list(self._servers))

    async def _close(self, addresses: list[Address]) -> None:
        closing = [self._servers.pop(a) for a in addresses if a in self._servers]
        for server in closing:
            server.close()
        for server in closing:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    def _publish(self) -> None:
        self.addresses = {}
        for address, paths in self._endpoints.items():
            server = self._servers.get(address)
            if server is None:
                continue
            bound = server.sockets[0].getsockname()
            for path in paths:
                self.addresses[path] = (address[0] or "0.0.0.0", int(bound[1]))

    def _health(self) -> Response:
        return Response(200, b"OK")

    def _ready(self) -> Response:
        reason = self._readiness()
        if reason is None:
            return Response(200, b"OK")
        return Response(503, reason.encode())

    def _metrics(self) -> Response:
        return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: Address,
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            response = self._route(head, self._endpoints.get(address, {}))
            writer.write(
                f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n".encode()
                + response.body
            )
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass  # a client that does not finish its request gets nothing
        finally:
            writer.close()

    def _route(self, head: bytes, paths: dict[str, str]) -> Response:
        if len(head) > MAX_REQUEST:
            return Response(404, b"")
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3:
            return Response(404, b"")
        method, target = parts[0], parts[1].decode("latin-1").split("?", 1)[0]
        route = self._handlers.get(target) if target in paths else None
        if route is None:
            return Response(404, b"404 page not found\n")
        if method not in (b"GET", b"HEAD"):
            return Response(405, b"")
        return route()
