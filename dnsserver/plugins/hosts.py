"""CoreDNS's ``hosts`` plugin: answers from a hosts file and inline entries.

Not built yet: the Corefile's ``hosts`` is refused at start with its line.
"""

from __future__ import annotations

from dnsserver.config.directives import Directive, ParseContext, Unsupported
from dnsserver.plugins.chain import PluginOptions


def parse(directive: Directive, context: ParseContext) -> PluginOptions | None:
    """The options of a ``hosts`` directive."""
    context.soft(Unsupported.at(directive.name, "hosts: not implemented yet"))
    return None
