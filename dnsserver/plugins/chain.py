"""The plugin chain of the slow path: CoreDNS's fixed order, and what leaves the fast path.

CoreDNS runs every query through its plugins in the order of ``core/plugin.cfg``, whatever
order the Corefile writes them in. We keep that order for the queries the slow path answers:
:data:`ORDER` is the one place it is written. A plugin either answers (returns a reply) or
hands the query to the next one (``next_plugin(request)``), as CoreDNS's ``Next``.

The hot path (:meth:`~dnsserver.serve.handler.Handler.handle`) does not walk this chain: it
answers the common query from the cluster zone's pre-encoded index. A plugin placed before
``kubernetes`` that could answer a name the index holds must say so with an
:class:`Interception`; the handler sends such queries to the slow path. A plugin that
intercepts nothing costs the hot path nothing.

A plugin module (``dnsserver/plugins/hosts.py`` …) holds, readable alone: a frozen options
dataclass (:class:`PluginOptions`), the parser that builds it from the Corefile directive
(``parse(directive, context) -> Options``, errors with ``file:line``), and the
:class:`Plugin` its ``build`` makes. The Config carries the options; the server builds the
plugins, starts them, and closes them on reload or shutdown.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dnsserver.serve import wire

# CoreDNS's plugin.cfg order, for the plugins this server has. ``cache`` sits before
# ``rewrite`` there; ours caches forwarded replies only, inside ``forward`` (README). ``loop``
# comes after ``kubernetes`` in CoreDNS; before it here, it sees the same queries: it only
# counts its own probe's name and hands every query on.
ORDER = ("rewrite", "template", "hosts", "loop", "kubernetes", "forward")

# A reply, nothing (drop), or a reply that waits on an upstream.
Reply = bytes | None | Coroutine[Any, Any, bytes | None]


Counter = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class Request:
    """One query on the slow path, parsed once and handed down the chain."""

    data: bytes  # the message as received (or as a plugin such as rewrite changed it)
    query: wire.Query
    key: bytes  # the question's name, lower-case wire form
    tcp: bool
    client: str  # the client's IP address
    count: Counter  # count(qtype, rcode, plugin name) once per reply, for the metrics

    @property
    def qtype(self) -> int:
        return self.query.qtype


Next = Callable[[Request], Reply]


class BugLog:
    """Logs a bug with its traceback once per place (exception type, file, line): a bug every
    query meets answers SERVFAIL each time but fills the log once."""

    __slots__ = ("_logger", "_message", "_seen")

    def __init__(self, logger: logging.Logger, message: str) -> None:
        self._logger = logger
        self._message = message
        self._seen: set[tuple[str, str, int]] = set()

    def __call__(self, exc: Exception) -> None:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        place = (type(exc).__name__, frame.filename, frame.lineno or 0)
        if place not in self._seen:
            self._seen.add(place)
            self._logger.error(self._message, exc_info=exc)


@dataclass(frozen=True, slots=True)
class Interception:
    """Which queries a plugin before ``kubernetes`` may answer, so the fast path leaves them.

    ``names``: exact lower-case wire names; ``zones``: lower-case wire zones (a name at or
    below one, of a type in ``qtypes``; ``qtypes`` None means every type). A zone of ``b"\\x00"``
    (the root) with ``qtypes`` None takes every query off the fast path.
    """

    names: frozenset[bytes] = frozenset()
    zones: tuple[bytes, ...] = ()
    qtypes: frozenset[int] | None = None

    @property
    def empty(self) -> bool:
        return not self.names and not self.zones


NOTHING = Interception()


class Plugin(Protocol):
    """One Corefile plugin on the slow path. ``start`` runs once the event loop runs (a
    plugin that reloads a file starts its task there); ``close`` stops what ``start`` began."""

    @property
    def name(self) -> str:
        """CoreDNS's name of the plugin (``hosts``), as metrics label it."""
        ...

    def serve(self, request: Request, next_plugin: Next) -> Reply:
        """Answer ``request``, or return ``next_plugin(request)``."""
        ...

    def interception(self) -> Interception:
        """The queries this plugin may answer that the cluster zone's index also holds."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class FixedPlugin:
    """The part of :class:`Plugin` shared by a plugin that starts nothing and intercepts what
    it decided when it was built (``_interception``): rewrite, template."""

    _interception: Interception

    def interception(self) -> Interception:
        return self._interception

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _no_addresses() -> Sequence[tuple[str, int]]:
    return ()


def _nothing() -> None:
    pass


def _raise_fatal(message: str) -> None:
    raise SystemExit(message)


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a plugin may need from the server when it is built."""

    cluster_zones: tuple[str, ...]  # the kubernetes plugin's zones, lower case, no dot
    # The addresses the server listens on (known once it has bound them).
    listen_addresses: Callable[[], Sequence[tuple[str, int]]] = _no_addresses
    # Stop the server at once with status 1, logging ``message`` (CoreDNS's log.Fatal).
    fatal: Callable[[str], None] = _raise_fatal
    # Call (on the event loop) when ``interception()`` would now say something else: a
    # reloaded hosts file, say. The fast path then asks every plugin again.
    interception_changed: Callable[[], None] = _nothing


class PluginOptions(Protocol):
    """A plugin's parsed options: frozen, comparable (a reload rebuilds only what changed)."""

    @property
    def plugin(self) -> str:
        """The plugin's name in :data:`ORDER`."""
        ...

    def build(self, context: BuildContext) -> Plugin:
        """The running plugin for these options."""
        ...


def ordered(plugins: Iterable[Plugin]) -> list[Plugin]:
    """``plugins`` in CoreDNS's order (:data:`ORDER`); several of one name keep theirs."""
    return sorted(plugins, key=lambda plugin: ORDER.index(plugin.name))



def compose(plugins: Sequence[Plugin], last: Next) -> Next:
    """One callable that runs ``plugins`` in order, then ``last``."""
    handler = last
    for plugin in reversed(plugins):
        handler = _link(plugin, handler)
    return handler


def _link(plugin: Plugin, next_plugin: Next) -> Next:
    serve = plugin.serve
    return lambda request: serve(request, next_plugin)


def in_zone(key: bytes, zone: bytes) -> bool:
    """Whether the wire name ``key`` is ``zone`` or below it (both lower case)."""
    if zone in (b"\x00", key):
        return True
    if not key.endswith(zone):
        return False
    # the suffix must start at a label boundary
    position = 0
    boundary = len(key) - len(zone)
    while position < boundary:
        position += key[position] + 1
    return position == boundary


class FastPathGuard:
    """Whether a query must leave the fast path because a plugin before ``kubernetes`` may
    answer it. Built once per configuration from the plugins' :class:`Interception`."""

    __slots__ = ("_names", "_rules")

    def __init__(self, interceptions: Iterable[Interception]) -> None:
        names: set[bytes] = set()
        rules: list[tuple[bytes, frozenset[int] | None]] = []
        for interception in interceptions:
            names |= interception.names
            rules.extend((zone, interception.qtypes) for zone in interception.zones)
        self._names = frozenset(names)
        self._rules = tuple(rules)

    @property
    def empty(self) -> bool:
        return not self._names and not self._rules

    def __call__(self, key: bytes, qtype: int) -> bool:
        if key in self._names:
            return True
        for zone, qtypes in self._rules:  # a loop, not any(): no generator per query
            if (qtypes is None or qtype in qtypes) and in_zone(key, zone):
                return True
        return False
