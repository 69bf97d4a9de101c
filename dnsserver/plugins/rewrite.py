"""CoreDNS's ``rewrite`` plugin: rewrites the query (and the reply back) before it is answered.

Not built yet: the Corefile's ``rewrite`` is refused at start with its line.
"""

from __future__ import annotations

from dnsserver.config.directives import Directive, ParseContext, Unsupported
from dnsserver.plugins.chain import PluginOptions


def parse(directive: Directive, context: ParseContext) -> PluginOptions | None:
    """The options of a ``rewrite`` directive."""
    context.soft(Unsupported.at(directive.name, "rewrite: not implemented yet"))
    return None
