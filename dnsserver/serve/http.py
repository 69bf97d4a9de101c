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


class OpsServer:
    """HTTP listeners for the operational endpoints."""

    def __init__(
        self,
        *,
        health: tuple[str, int] | None,
        ready: tuple[str, int] | None,
        metrics: tuple[str, int] | None,
        readiness: Callable[[], str | None],
        registry: CollectorRegistry,
    ) -> None:
        """``readiness`` returns None when ready, else the reason (the 503 body)."""
        self._readiness = readiness
        self._registry = registry
        self._routes: dict[tuple[str, int], dict[str, Route]] = {}
        for address, path, route in (
            (health, "/health", self._health),
            (ready, "/ready", self._ready),
            (metrics, "/metrics", self._metrics),
        ):
            if address is not None:
                self._routes.setdefault(address, {})[path] = route
        self._servers: list[asyncio.Server] = []
        self.addresses: dict[str, tuple[str, int]] = {}  # path -> bound address

    async def start(self) -> None:
        for (host, port), routes in self._routes.items():
            server = await asyncio.start_server(
                lambda r, w, routes=routes: self._serve(r, w, routes),  # type: ignore[misc]
                host or None, port, reuse_address=True,
            )
            bound = server.sockets[0].getsockname()
            for path in routes:
                self.addresses[path] = (host or "0.0.0.0", int(bound[1]))
            self._servers.append(server)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._servers.clear()

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
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        routes: dict[str, Route],
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            response = self._route(head, routes)
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

    def _route(self, head: bytes, routes: dict[str, Route]) -> Response:
        if len(head) > MAX_REQUEST:
            return Response(404, b"")
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3:
            return Response(404, b"")
        method, target = parts[0], parts[1].decode("latin-1").split("?", 1)[0]
        route = routes.get(target)
        if route is None:
            return Response(404, b"404 page not found\n")
        if method not in (b"GET", b"HEAD"):
            return Response(405, b"")
        return route()
