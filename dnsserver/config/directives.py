"""The parts of a Corefile every plugin's parser reads: tokens, directives, errors, values.

A plugin's options parser (``dnsserver/plugins/*.py``) takes a :class:`Directive` (the
plugin's line and its block) and raises a :class:`CorefileError` subclass that names the file
and line. :mod:`dnsserver.config.corefile` reads the text into directives and calls them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Self

from dnsserver.config.settings import ConfigError, normalize_zone, parse_duration

# -- errors and warnings -------------------------------------------------------------------

class CorefileError(ConfigError):
    """The Corefile cannot be used."""

    def __init__(self, path: str, line: int, detail: str) -> None:
        super().__init__(f"{path}:{line}: {detail}")
        self.path = path
        self.line = line
        self.detail = detail

    @classmethod
    def at(cls, token: Token, detail: str) -> Self:
        return cls(token.file, token.line, detail)


class CorefileSyntaxError(CorefileError):
    """Braces, quotes, snippets or imports do not fit together."""


class UnknownPlugin(CorefileError):
    """A directive names a plugin this server does not have."""


class UnknownOption(CorefileError):
    """A plugin's block holds an option that plugin does not have."""


class Unsupported(CorefileError):
    """A CoreDNS plugin, option or form whose behaviour this server does not implement."""


class BadValue(CorefileError):
    """An argument is missing, extra or malformed: a number, duration, address or zone."""


class Conflict(CorefileError):
    """Two parts of the Corefile contradict each other: a zone served twice, a plugin twice."""


@dataclass(frozen=True, slots=True)
class CorefileWarning:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"



@dataclass(frozen=True, slots=True)
class Token:
    text: str
    file: str
    line: int
    end_line: int  # differs from line only for a quoted token spanning lines
    quoted: bool = False

    @property
    def opens(self) -> bool:
        return self.text == "{" and not self.quoted

    @property
    def closes(self) -> bool:
        return self.text == "}" and not self.quoted

    @property
    def is_brace(self) -> bool:
        return self.opens or self.closes



@dataclass(frozen=True, slots=True)
class Directive:
    """One line: a plugin (or option) name, its arguments, and its block if it has one."""

    name: Token
    args: tuple[Token, ...]
    body: tuple[Directive, ...] | None



# -- values every parser uses --------------------------------------------------------------

def arity(directive: Directive, what: str, low: int, high: int | None) -> tuple[Token, ...]:
    """``directive``'s arguments, if there are ``low`` to ``high`` (None: any) of them."""
    count = len(directive.args)
    if low <= count and (high is None or count <= high):
        return directive.args
    if high is None:
        expected = f"at least {low} argument{'s' * (low != 1)}"
    elif low == high:
        expected = "no arguments" if low == 0 else f"{low} argument{'s' * (low != 1)}"
    else:
        expected = f"{low} to {high} arguments"
    token = directive.args[high] if high is not None and count > high else directive.name
    raise BadValue.at(token, f"{what}: expected {expected}, got {count}")


def integer(token: Token, what: str, low: int, high: int | None) -> int:
    if not token.text.isdigit():
        raise BadValue.at(token, f"{what}: {token.text!r} is not a whole number")
    value = int(token.text)
    if value < low or (high is not None and value > high):
        limit = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise BadValue.at(token, f"{what}: {value} is out of range ({limit})")
    return value


def duration(token: Token, what: str) -> float:
    try:
        return parse_duration(token.text)
    except ConfigError as exc:
        raise BadValue.at(token, f"{what}: {exc}") from None


# -- what a plugin's parser is given -------------------------------------------------------

@dataclass(slots=True)
class ParseContext:
    """What a plugin's options parser may know and do besides reading its directive.

    ``zones``: the server block's zones (lower case, no trailing dot; ``"."`` the root), the
    default zones of a plugin that takes zone arguments. ``lenient``: turn refusals into
    warnings (``--lenient``); :meth:`soft` does that for an error that leaves a part out.
    """

    zones: tuple[str, ...]
    lenient: bool = False
    warnings: list[CorefileWarning] = field(default_factory=list)

    def warn(self, token: Token, message: str) -> None:
        self.warnings.append(CorefileWarning(token.file, token.line, message))

    def soft(self, error: CorefileError) -> None:
        """Raise ``error``, or keep it as a warning in lenient mode (the part is left out)."""
        if not self.lenient:
            raise error
        self.warnings.append(CorefileWarning(error.path, error.line, f"{error.detail}; ignored"))


# -- zones and option blocks, as every plugin reads them ----------------------------------

def zones(token: Token, what: str) -> tuple[str, ...]:
    """A zone argument as CoreDNS reads one (``[dns://]ZONE[:PORT]``) in our spelling; a CIDR
    is the reverse zones it spans, whole octets (IPv4) or nibbles (IPv6): ``10.0.0.0/23`` is
    ``0.0.10.in-addr.arpa`` and ``1.0.10.in-addr.arpa``."""
    text = token.text.partition("://")[2] or token.text
    head, colon, port = text.rpartition(":")
    if colon and port.isdigit() and "/" not in text and ":" not in head:
        text = head
    if "/" not in text:
        try:
            return (normalize_zone(text),)
        except ConfigError as exc:
            raise BadValue.at(token, f"{what}: {exc}") from None
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise BadValue.at(token, f"{what}: {text!r} is not a CIDR network") from None
    return reverse_zones(network)


def reverse_zones(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[str, ...]:
    """The reverse zones a network spans, as CoreDNS splits it: on whole octets (IPv4) or
    nibbles (IPv6), a prefix between two boundaries spread over the next boundary's zones."""
    step = 8 if network.version == 4 else 4
    boundary = -(-network.prefixlen // step) * step
    labels_kept = boundary // step
    found = []
    for subnet in network.subnets(new_prefix=boundary):
        labels = subnet.network_address.reverse_pointer.split(".")
        found.append(".".join(labels[len(labels) - 2 - labels_kept:]))  # + in-addr.arpa
    return tuple(found)


def zone_list(tokens: Iterable[Token], what: str, *, refuse_duplicates: bool = False
              ) -> tuple[str, ...]:
    """The zones of several arguments, in order, each once; with ``refuse_duplicates`` a zone
    given twice is a :class:`Conflict` instead."""
    found: dict[str, None] = {}
    for token in tokens:
        for zone in zones(token, what):
            if zone in found and refuse_duplicates:
                raise Conflict.at(token, f"{what}: duplicate zone {zone!r}")
            found[zone] = None
    return tuple(found)


def options(directive: Directive, context: ParseContext, plugin: str,
            handlers: Mapping[str, Callable[[Directive], None]],
            *, unsupported: Collection[str] = ()) -> None:
    """Run the handler of each option in ``directive``'s block, in order. An option in
    ``unsupported`` (CoreDNS has it, this server does not) and an unknown one are refused
    through :meth:`ParseContext.soft`, so ``--lenient`` leaves them out with a warning."""
    for option in directive.body or ():
        name = option.name.text
        if option.body is not None:
            raise BadValue.at(option.name, f"{plugin} {name}: takes no block")
        handler = handlers.get(name)
        if handler is not None:
            handler(option)
        elif name in unsupported:
            context.soft(Unsupported.at(option.name, f"{plugin}: option {name!r} is not "
                                        "supported"))
        else:
            context.soft(UnknownOption.at(option.name, f"{plugin}: unknown option {name!r}"))
