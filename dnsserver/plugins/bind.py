"""CoreDNS's ``bind`` plugin: its options and their parser.

::

    bind ADDRESS...               # IP addresses; interface names and ``except`` are refused

A server block listens on these addresses instead of every one (``0.0.0.0``); the Corefile's
builder requires every block on the port to bind the same ones.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dnsserver.config import directives
from dnsserver.config.directives import BadValue, Directive, ParseContext, arity


@dataclass(frozen=True, slots=True)
class BindOptions:
    """``bind``: the addresses, in order, each once."""

    addresses: tuple[str, ...]


def parse(directive: Directive, context: ParseContext) -> BindOptions:
    """``bind ADDRESS...``: listen on these IP addresses instead of 0.0.0.0."""
    tokens = arity(directive, "bind", 1, None)
    addresses: list[str] = []
    for token in tokens:
        try:
            host = str(ipaddress.ip_address(token.text))
        except ValueError:
            raise BadValue.at(token, f"bind: {token.text!r} is not an IP address (interface "
                              "names are not supported)") from None
        if host not in addresses:
            addresses.append(host)
    directives.options(directive, context, "bind", {}, unsupported=("except",))
    return BindOptions(tuple(addresses))
