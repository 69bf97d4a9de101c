"""CoreDNS's ``template`` plugin: answers built from a template for names matching a regex.

Not built yet: the Corefile's ``template`` is refused at start with its line.
"""

from __future__ import annotations

from dnsserver.config.directives import Directive, ParseContext, Unsupported
from dnsserver.plugins.chain import PluginOptions


def parse(directive: Directive, context: ParseContext) -> PluginOptions | None:
    """The options of a ``template`` directive."""
    context.soft(Unsupported.at(directive.name, "template: not implemented yet"))
    return None
