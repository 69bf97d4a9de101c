"""CoreDNS's ``loop``: find a forwarding loop by sending ourselves a probe, and stop if it
comes back.

At start the plugin asks its own server for ``<random>.<random>.<zone> HINFO`` over UDP (zone:
the server block's first zone). The query walks the chain like any other: when it is
forwarded and an upstream sends it back to us, the plugin sees the same name again. Seen a
third time (the probe and two returns), that is a loop: the server logs it and exits with
status 1, as CoreDNS does, rather than forward every query in circles until they time out.
Probing ends at the first reply (no loop), or after 30 seconds; from then on the plugin only
passes queries on. Every query, the probe included, goes on to the next plugin.

Besides this probe, ``forward`` refuses an upstream that is one of our own listening
addresses when it is configured (:func:`dnsserver.plugins.upstream.points_at_us`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncio_dgram
import dnslib

from dnsserver.config.directives import Directive, ParseContext, UnknownOption, arity
from dnsserver.plugins import chain
from zones import names

log = logging.getLogger("dnsserver.loop")

HINFO = 13
PROBE_WINDOW = 30.0  # seconds of probing after the start (CoreDNS)
PROBE_TIMEOUT = 2.0  # one probe's wait for a reply
RETRY_PAUSE = 1.0
LOOP_SIGHTINGS = 3  # the probe itself, then two returns


@dataclass(frozen=True, slots=True)
class LoopOptions:
    """``loop``: probe ``zone`` (the server block's first zone) for a forwarding loop."""

    zone: str

    @property
    def plugin(self) -> str:
        return "loop"

    def build(self, context: chain.BuildContext) -> Loop:
        return Loop(self.zone, context)


def parse(directive: Directive, context: ParseContext) -> LoopOptions:
    """``loop`` takes no arguments and no block."""
    arity(directive, "loop", 0, 0)
    if directive.body:
        option = directive.body[0].name
        raise UnknownOption.at(option, f"loop: unknown option {option.text!r}")
    return LoopOptions(context.zones[0] if context.zones else ".")


def probe_name(zone: str, rng: random.Random | None = None) -> str:
    """``<N1>.<N2>.<zone>``: two random non-negative 63-bit numbers, as CoreDNS makes it."""
    draw = (rng or random.SystemRandom()).getrandbits
    labels = f"{draw(63)}.{draw(63)}"
    return labels if zone == "." else f"{labels}.{zone}"


class Loop:
    """The probe, and the count of its sightings while probing."""

    name = "loop"

    def __init__(self, zone: str, context: chain.BuildContext) -> None:
        self.zone = zone
        self.probe = probe_name(zone)
        self._key = names.to_wire(self.probe)
        self._context = context
        self.enabled = True
        self.sightings = 0
        self._task: asyncio.Task[None] | None = None

    def serve(self, request: chain.Request, next_plugin: chain.Next) -> chain.Reply:
        if self.enabled and request.qtype == HINFO and request.key == self._key:
            self.sightings += 1
            if self.sightings >= LOOP_SIGHTINGS:
                self.enabled = False
                self._context.fatal(
                    f"Loop ({request.client} -> {self._listen_text()}) detected for zone "
                    f"{self.zone!r}: query 'HINFO {self.probe}.' came back to this server "
                    f"{self.sightings - 1} times; see the README's section on loop")
        return next_plugin(request)

    def interception(self) -> chain.Interception:
        # Only a probe inside a cluster zone could be answered by the fast path.
        if any(names.to_wire(z) != b"\x00" and chain.in_zone(self._key, names.to_wire(z))
               for z in self._context.cluster_zones):
            return chain.Interception(names=frozenset({self._key}))
        return chain.NOTHING

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._probe())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _probe(self) -> None:
        deadline = time.monotonic() + PROBE_WINDOW
        query = dnslib.DNSRecord.question(self.probe, "HINFO").pack()
        try:
            while self.enabled and time.monotonic() < deadline:
                if await _ask(self._target(), bytes(query)):
                    break  # answered, and not looped (yet): no loop
                self.sightings = 0
                await asyncio.sleep(RETRY_PAUSE)
        finally:
            self.enabled = False

    def _target(self) -> tuple[str, int]:
        host, port = _first(self._context.listen_addresses())
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return host, port

    def _listen_text(self) -> str:
        host, port = self._target()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _first(addresses: Sequence[tuple[str, int]]) -> tuple[str, int]:
    return addresses[0] if addresses else ("127.0.0.1", 53)


async def _ask(target: tuple[str, int], query: bytes) -> bool:
    """Whether ``query`` sent to ``target`` over UDP got any reply within the timeout."""
    try:
        stream = await asyncio_dgram.connect(target)
    except OSError:
        return False
    try:
        await stream.send(query)
        await asyncio.wait_for(stream.recv(), PROBE_TIMEOUT)
    except (OSError, TimeoutError, asyncio_dgram.TransportClosed):
        return False
    finally:
        stream.close()
    return True

